"""Faults at the broker and in the data, each ending with the journal and the broker in agreement and no
order doubled: 429 with Retry-After, 500s, a hung connection, a connection dropped (or a 500, or silence)
after an order was accepted, partial fills, rejections, stale and missing bars, repeated broker errors."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from fake_alpaca_trading import FillMode, Rule
from live_helpers import (  # noqa: F401  (server and fake are fixtures)
    assert_journal_matches_broker,
    broker_for,
    fake,
    make_loop,
    paper_config,
    server,
    until,
)

pytestmark = [pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
              pytest.mark.timeout(60)]


def recording(fake, waits):
    def sleep(seconds):
        waits.append(seconds)
        fake.advance(seconds)

    return sleep


def one_order_per_intent(fake):
    cids = Counter(o["client_order_id"] for o in fake.order_list())
    assert cids and max(cids.values()) == 1


# ---- reads ------------------------------------------------------------------------------------------------

def test_429_with_retry_after_is_waited_out(fake, tmp_path):
    waits = []
    fake.add_rule(Rule("GET", "/v2/positions", status=429, payload={"message": "too many requests"},
                       headers={"Retry-After": "3"}))
    fake.add_rule(Rule("POST", "/v2/orders", status=429, payload={"message": "too many requests"},
                       headers={"Retry-After": "2"}))  # refused unprocessed: resent after the wait
    loop = make_loop(fake, tmp_path, broker=broker_for(fake, sleep=recording(fake, waits)))
    loop.run(until=until(fake, 3))
    assert 3.0 in waits and 2.0 in waits
    posts = [r for r in fake.requests if r["method"] == "POST"]
    assert len(posts) == len(fake.order_list()) + 1  # the 429 once, then every order once
    one_order_per_intent(fake)
    assert_journal_matches_broker(loop, fake)


def test_500s_on_reads_are_retried_with_backoff(fake, tmp_path):
    waits = []
    fake.add_rule(Rule("GET", "/v2/account", status=500, times=2))
    fake.add_rule(Rule("GET", "/v2/orders:by_client_order_id", status=503, times=1))
    loop = make_loop(fake, tmp_path, broker=broker_for(fake, sleep=recording(fake, waits)))
    report = loop.cycle() if loop.start() is None else None
    assert report.status in ("ok", "alert") and waits[:2] == [0.5, 1.0]
    loop.run(until=until(fake, 2))
    one_order_per_intent(fake)
    assert_journal_matches_broker(loop, fake)


def test_a_hung_request_times_out_and_is_retried(fake, tmp_path):
    fake.add_rule(Rule("GET", "/v2/clock", kind="hang"))
    loop = make_loop(fake, tmp_path, broker=broker_for(fake, read_timeout=0.3))
    loop.start()
    report = loop.cycle()
    assert not report.errors
    assert [r["path"] for r in fake.requests[:2]] == ["/v2/clock", "/v2/clock"]


def test_repeated_broker_errors_raise_an_alert_and_send_nothing(fake, tmp_path):
    fake.add_rule(Rule("GET", "/v2/clock", status=502, times=100))
    loop = make_loop(fake, tmp_path, broker=broker_for(fake, max_retries=0))
    with pytest.raises(Exception):
        loop.start()  # the run cannot even start without the clock
    fake.rules.clear()
    loop.start()
    fake.add_rule(Rule("GET", "/v2/positions", status=502, times=100))
    reports = [loop.cycle() for _ in range(4)]
    assert all(r.status == "broker error" for r in reports)
    alerts = [a for a in loop.journal.alerts() if a["kind"] == "broker_errors"]
    assert len(alerts) == 1 and "3 cycles in a row" in alerts[0]["message"]
    assert fake.order_list() == []


# ---- orders whose answer is lost --------------------------------------------------------------------------

@pytest.mark.parametrize("rule", [
    Rule("POST", "/v2/orders", kind="drop_after_accept"),   # accepted, then the connection dropped
    Rule("POST", "/v2/orders", kind="500_after_accept"),    # accepted, then a 500
    Rule("POST", "/v2/orders", kind="hang_after_accept"),   # accepted, then silence past the read timeout
    Rule("POST", "/v2/orders", status=500),                 # refused with a 500: never accepted
    Rule("POST", "/v2/orders", kind="hang"),                # silence, never accepted
], ids=["dropped-after-accept", "500-after-accept", "hang-after-accept", "500-not-accepted", "hang-not-accepted"])
def test_an_order_whose_answer_is_lost_is_found_by_its_id_and_never_doubled(fake, tmp_path, rule):
    fake.add_rule(rule)
    loop = make_loop(fake, tmp_path, broker=broker_for(fake, read_timeout=0.3))
    loop.run(until=until(fake, 3))
    posts = [r for r in fake.requests if r["method"] == "POST"]
    lookups = [r for r in fake.requests if r["path"] == "/v2/orders:by_client_order_id"]
    accepted_first = rule.kind.endswith("after_accept")
    assert len(posts) == len(fake.order_list()) + (0 if accepted_first else 1)
    assert lookups  # it asked before sending again
    one_order_per_intent(fake)
    assert_journal_matches_broker(loop, fake)
    events = [e["event"] for e in loop.journal.conn.execute("SELECT event FROM order_events")]
    assert "intent" in events


def test_a_retry_that_meets_the_order_already_accepted_returns_it(fake, tmp_path):
    """The resend of an accepted order hits Alpaca's unique client_order_id (422) and gets the first order."""
    from live import OrderRequest

    broker = broker_for(fake)
    fake.set_now(broker.clock().next_open + pd.Timedelta(seconds=5))
    fake.add_rule(Rule("POST", "/v2/orders", kind="drop_after_accept"))
    fake.add_rule(Rule("GET", "/v2/orders:by_client_order_id", status=404, payload={"message": "not yet"}, times=1))
    order = broker.submit_order(OrderRequest("AAPL", "buy", 3.0, "dup-1", 1.0, 100.0))
    assert order.client_order_id == "dup-1"
    assert len(fake.order_list()) == 1
    assert [r["method"] for r in fake.requests if "orders" in r["path"]] == ["POST", "GET", "POST", "GET"]


# ---- fills and rejections ---------------------------------------------------------------------------------

def test_partial_fills_are_booked_as_they_come(fake, tmp_path):
    fake.fill_modes["AAPL"] = FillMode("partial", fraction=0.4, complete_after=2)
    loop = make_loop(fake, tmp_path)
    loop.run(until=until(fake, 3))
    per_order = Counter(f["client_order_id"] for f in loop.journal.fills())
    assert per_order and all(n == 2 for n in per_order.values())  # 40% first, the rest later
    assert {o["status"] for o in fake.order_list()} == {"filled"}
    assert_journal_matches_broker(loop, fake)


def test_a_partial_fill_that_expires_at_the_close_is_booked_as_far_as_it_filled(fake, tmp_path):
    fake.fill_modes["AAPL"] = FillMode("partial", fraction=0.5, complete_after=None)
    loop = make_loop(fake, tmp_path, config=paper_config(loop={"poll_seconds": 300}))
    loop.run(until=until(fake, 4))
    assert {o["status"] for o in fake.order_list()} == {"expired"}
    assert all(float(o["filled_qty"]) > 0 for o in fake.order_list())
    one_order_per_intent(fake)
    assert_journal_matches_broker(loop, fake)


def test_a_partial_fill_still_open_is_canceled_by_the_next_decision(fake, tmp_path):
    fake.expire_day_orders = False  # as a good-till-canceled order would stay
    fake.fill_modes["AAPL"] = FillMode("partial", fraction=0.5, complete_after=None)
    loop = make_loop(fake, tmp_path, config=paper_config(loop={"poll_seconds": 300}))
    loop.run(until=until(fake, 4))
    statuses = [o["status"] for o in fake.order_list()]
    assert "canceled" in statuses and statuses.count("partially_filled") <= 1
    canceled = [o for o in fake.order_list() if o["status"] == "canceled"]
    assert all(float(o["filled_qty"]) > 0 for o in canceled)  # half of it filled, and that half is booked
    one_order_per_intent(fake)
    assert_journal_matches_broker(loop, fake)


def test_an_order_refused_at_the_door_is_journalled_alerted_and_not_retried(fake, tmp_path):
    fake.add_rule(Rule("POST", "/v2/orders", status=403, payload={"code": 40310000, "message": "insufficient buying power"}))
    loop = make_loop(fake, tmp_path)
    loop.run(until=until(fake, 3))
    refused = [o for o in loop.journal.orders() if o["status"] == "rejected"]
    assert len(refused) == 1 and "insufficient buying power" in refused[0]["reason"]
    assert refused[0]["client_order_id"] not in {o["client_order_id"] for o in fake.order_list()}
    posts = [r for r in fake.requests if r["method"] == "POST"]
    assert len(posts) == len(fake.order_list()) + 1  # refused once, not retried
    assert any(a["kind"] == "order_rejected" for a in loop.journal.alerts())
    assert_journal_matches_broker(loop, fake)


def test_an_order_rejected_after_acceptance_is_booked_without_fills(fake, tmp_path):
    fake.fill_modes["AAPL"] = FillMode("reject")
    loop = make_loop(fake, tmp_path)
    loop.run(until=until(fake, 3))
    assert fake.order_list() and {o["status"] for o in fake.order_list()} == {"rejected"}
    assert loop.journal.fills() == []
    assert len([a for a in loop.journal.alerts() if a["kind"] == "order_rejected"]) == len(fake.order_list())
    assert loop.journal.last_target("AAPL") == 0.0  # refused: the next decision asks again
    assert_journal_matches_broker(loop, fake)


# ---- data ---------------------------------------------------------------------------------------------------

def test_stale_bars_get_no_decision_and_an_alert(fake, tmp_path):
    fake.lag_bars["AAPL"] = 3  # the data feed is three bars behind
    loop = make_loop(fake, tmp_path)
    loop.run(max_cycles=6)
    assert loop.journal.decisions() == [] and fake.order_list() == []
    alert = [a for a in loop.journal.alerts() if a["kind"] == "stale_data"]
    assert alert and "3 newer bar(s)" in alert[0]["message"]
    waits = [pd.Timestamp(r["at"]) for r in fake.requests if r["path"] == "/v2/clock"]
    assert waits[-1] - waits[0] >= pd.Timedelta(seconds=60)  # polled, backing off
    fake.lag_bars.clear()  # the feed catches up: a decision on the newest bar only
    loop.cycle()
    assert len(loop.journal.decisions()) == 1


def test_missing_bars_get_no_decision_and_an_alert(fake, tmp_path):
    fake.lag_bars["AAPL"] = 100_000  # no bar at all
    loop = make_loop(fake, tmp_path)
    loop.run(max_cycles=2)
    assert loop.journal.decisions() == [] and fake.order_list() == []
    assert any(a["kind"] == "stale_data" and "no bars" in a["message"] for a in loop.journal.alerts())


# ---- the loop's own arguments --------------------------------------------------------------------------------

@pytest.mark.parametrize("cycles", [0, -1, 2.5])
def test_max_cycles_below_one_is_refused_before_the_loop_asks_the_broker_anything(fake, tmp_path, cycles):
    loop = make_loop(fake, tmp_path)
    with pytest.raises(ValueError, match=r"^max_cycles=(0|-1|2\.5) must be a whole number >= 1$"):
        loop.run(max_cycles=cycles)
    assert fake.requests == [] and fake.order_list() == []
