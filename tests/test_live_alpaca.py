"""The Alpaca broker and the live loop against a local fake of Alpaca's paper API (tests/fake_alpaca_trading.py).

alpaca-py's real ``TradingClient`` and data client talk HTTP to the fake; the fake's clock moves only when
the loop sleeps. Orders carry a client_order_id derived from (run, symbol, bar, intent): a retry or a restart
finds the order it already sent. A crash at each named point of the loop - in-process, and a real SIGKILL of
a forked process - is followed by a restart that ends with the same orders as a run never interrupted.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections import Counter

import pandas as pd
import pytest
import requests

from live import Journal, OrderRequest
from live.broker import BrokerError
from live.loop import CRASH_POINTS

from fake_alpaca_trading import API_KEY, SECRET_KEY, FillMode, Rule, market_close, market_open
from live_helpers import (
    assert_journal_matches_broker,
    broker_for,
    make_loop,
    market,
    paper_config,
    start_fake,
)

pytestmark = [pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
              pytest.mark.timeout(60)]


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    srv = start_fake()
    yield srv
    srv.close()


@pytest.fixture
def fake(server):
    return server.fake


def days_ahead(fake, n):
    """The fake's clock n trading days later (just before that day's close + the loop's delay)."""
    _, days = market(("AAPL",))
    today = fake.now.tz_convert("America/New_York").date()
    k = days.index(today) if today in days else 0
    return market_close(days[k + n]) + pd.Timedelta(seconds=20)


def order_keys(fake):
    return [(o["client_order_id"], o["side"], o["qty"]) for o in fake.order_list()]


# ---- the broker speaks alpaca-py's wire format ---------------------------------------------------------

def test_broker_reads_clock_calendar_account_and_sends_idempotent_orders(fake):
    broker = broker_for(fake)
    clock = broker.clock()
    assert clock.timestamp == fake.now and not clock.is_open
    assert clock.next_open > clock.timestamp and clock.next_close > clock.next_open
    sessions = broker.calendar(clock.timestamp.date(), clock.timestamp.date() + pd.Timedelta(days=7))
    assert sessions and all(s.open.tz_convert("America/New_York").strftime("%H:%M") == "09:30" for s in sessions)
    account = broker.account()
    assert (account.cash, account.equity) == (100_000.0, 100_000.0)
    bars = broker.bars("AAPL", "1Day", 50)
    assert len(bars) == 50 and bars.index[-1] == pd.Timestamp(fake.now.tz_convert("America/New_York").date(),
                                                              tz="America/New_York").tz_convert("UTC")
    fake.set_now(clock.next_open + pd.Timedelta(minutes=1))
    price = broker.reference_price("AAPL")
    request = OrderRequest("AAPL", "buy", 10.5, "cid-1", 1.0, price)
    first = broker.submit_order(request)
    again = broker.submit_order(request)  # Alpaca answers 422 (id taken): the broker returns the same order
    assert first.id == again.id and len(fake.order_list()) == 1
    order = broker.order_by_client_id("cid-1")
    assert order.status == "filled" and order.filled_qty == 10.5 and order.filled_avg_price == price
    assert broker.order_by_client_id("never-sent") is None
    position = broker.positions()["AAPL"]
    assert position.qty == 10.5 and position.cost_basis == pytest.approx(10.5 * price)
    assert broker.open_orders() == []


def test_loop_decides_after_the_close_and_orders_only_while_the_market_is_open(fake, tmp_path):
    loop = make_loop(fake, tmp_path)
    loop.run(until=days_ahead(fake, 6))
    posts = [r for r in fake.requests if r["method"] == "POST" and r["path"] == "/v2/orders"]
    assert len(posts) >= 2
    assert all(fake.is_open(r["at"]) for r in posts)  # no order while the market is closed
    for decision in loop.journal.decisions():
        decided = pd.Timestamp(decision["decided_at"])
        assert not fake.is_open(decided) and decided >= market_close(pd.Timestamp(decision["bar_time"])
                                                                     .tz_convert("America/New_York").date())
    for row in loop.journal.orders():
        assert pd.Timestamp(row["created_at"]) >= market_open(pd.Timestamp(row["created_at"]).tz_convert("America/New_York").date())
    intents = Counter((row["symbol"], row["bar_time"], row["intent"]) for row in loop.journal.orders())
    assert max(intents.values()) == 1
    assert_journal_matches_broker(loop, fake)
    assert not [a for a in loop.journal.alerts() if a["kind"] == "reconciliation"]


def test_hourly_bars_are_decided_and_ordered_at_each_bar_close(monkeypatch, tmp_path):
    from fake_alpaca_trading import FakeAlpaca, FakeServer, hourly_bars, session_days
    from live import Journal, LiveLoop
    from live_helpers import live_policy

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    days = session_days("2024-01-02", 60)
    bars = {"AAPL": hourly_bars(days, seed=5)}
    srv = FakeServer(FakeAlpaca(bars, "1Hour", market_open(days[50]) + pd.Timedelta(minutes=40)))
    try:
        fake = srv.fake
        loop = LiveLoop(live_policy(bars), broker_for(fake), Journal(tmp_path / "j.sqlite", durable=False), ["AAPL"],
                        paper_config(), run_name="hourly", run_dir=tmp_path, write_monitor=False)
        loop.run(until=market_close(days[51]))
        decided = [pd.Timestamp(d["bar_time"]) for d in loop.journal.decisions()]
        assert len(decided) >= 10 and all(t.minute == 0 for t in decided)
        orders = loop.journal.orders()
        assert len(orders) >= 3
        for row in orders:
            created, bar = pd.Timestamp(row["created_at"]), pd.Timestamp(row["bar_time"])
            assert fake.is_open(created)
            if bar.tz_convert("America/New_York").hour < 15:  # at once (the session's last bar: at the next open)
                assert created - (bar + pd.Timedelta(hours=1)) < pd.Timedelta(minutes=1)
        assert_journal_matches_broker(loop, fake)
    finally:
        srv.close()


def test_too_few_bars_for_the_policy_is_refused_and_alerted(fake, tmp_path):
    fake.bars["AAPL"] = fake.bars["AAPL"].iloc[290:]  # about 30 bars have closed by the fake's clock
    fake.closes["AAPL"] = fake.closes["AAPL"][290:]
    loop = make_loop(fake, tmp_path)
    loop.run(max_cycles=2)
    assert loop.journal.decisions() == []
    alert = [a for a in loop.journal.alerts() if a["kind"] == "stale_data"]
    assert alert and "the policy needs 57" in alert[0]["message"]


# ---- reconciliation ---------------------------------------------------------------------------------------

def test_reconciliation_alerts_and_adopts_what_the_journal_cannot_explain(fake, tmp_path):
    loop = make_loop(fake, tmp_path)
    loop.run(until=days_ahead(fake, 2))
    # someone trades by hand: a position change and an open order this run never sent
    fake.positions.setdefault("AAPL", {"qty": 0.0, "cost": 0.0})
    fake.positions["AAPL"]["qty"] += 7.0
    fake.positions["AAPL"]["cost"] += 7.0 * 100
    fake.set_now(broker_for(fake).clock().next_open + pd.Timedelta(minutes=1))
    fake.fill_modes["AAPL"] = FillMode("hold")
    status, order = fake.accept({"symbol": "AAPL", "qty": "1", "side": "buy", "client_order_id": "manual-1"})
    fake.fill_modes.clear()
    assert status == 200
    loop.cycle()
    kinds = [a["message"] for a in loop.journal.alerts() if a["kind"] == "reconciliation"]
    assert any("the broker holds" in m for m in kinds) and any("manual-1" in m for m in kinds)
    assert loop.journal.sleeves()["AAPL"].units == fake.positions["AAPL"]["qty"]
    fields = {r["field"] for r in loop.journal.reconciliations()}
    assert {"units", "foreign_order"} <= fields


# ---- restarts: no duplicate order, no lost fill -------------------------------------------------------------

class InjectedCrash(BaseException):
    """Stands for the process dying at a named point (BaseException: nothing in the loop catches it)."""


def crash_at(point, nth=1):
    seen = {"n": 0}

    def crash(name):
        if name == point:
            seen["n"] += 1
            if seen["n"] == nth:
                raise InjectedCrash(point)

    return crash


def reference_orders(tmp_path_factory, end):
    srv = start_fake()
    try:
        loop = make_loop(srv.fake, tmp_path_factory.mktemp("reference"))
        loop.run(until=end)
        return order_keys(srv.fake)
    finally:
        srv.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The orders of a run never interrupted, over five trading days."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NO_PROXY", "127.0.0.1,localhost")
        srv = start_fake()
        end = days_ahead(srv.fake, 5)
        srv.close()
        return end, reference_orders(tmp_path_factory, end)


@pytest.mark.parametrize("point", [p for p in CRASH_POINTS if p != "after_cancel"])
def test_restart_after_a_crash_at_each_point_ends_with_the_uninterrupted_orders(fake, tmp_path, reference, point):
    end, expected = reference
    assert len(expected) >= 3
    first = make_loop(fake, tmp_path, crash=crash_at(point, nth=2))
    with pytest.raises(InjectedCrash):
        first.run(until=end)
    resumed = make_loop(fake, tmp_path)  # a new process: same journal file, nothing in memory
    resumed.run(until=end)
    assert order_keys(fake) == expected
    assert_journal_matches_broker(resumed, fake)


def _forked_run(fake, tmp_path, point, end):
    """Run the loop in a forked child that SIGKILLs itself at ``point``; return its exit signal."""
    pid = os.fork()
    if pid == 0:  # the child: its own journal connection; the fake's clock moves over HTTP
        try:
            session = requests.Session()

            def advance(seconds):
                session.post(f"{fake.url}/_test/advance", json={"seconds": seconds}, timeout=5)

            def crash(name):
                if name == point:
                    os.kill(os.getpid(), signal.SIGKILL)

            loop = make_loop(fake, tmp_path, crash=crash, broker=broker_for(fake, sleep=advance))
            loop.run(until=end)
        finally:
            os._exit(3)  # never reached when killed; never return into pytest
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None


@pytest.mark.parametrize("point", ["after_intent", "after_submit"])
def test_sigkill_then_restart_sends_no_duplicate_and_loses_no_fill(fake, tmp_path, reference, point):
    end, expected = reference
    assert _forked_run(fake, tmp_path, point, end) == signal.SIGKILL
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:  # what the killed process left behind
        statuses = [row[0] for row in db.execute("SELECT status FROM orders")]
    assert statuses[-1] == "intent"  # killed between the journal's intent and the broker's answer
    resumed = make_loop(fake, tmp_path)
    resumed.run(until=end)
    assert order_keys(fake) == expected
    assert_journal_matches_broker(resumed, fake)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_decide", "after_book", "after_sync"])
def test_sigkill_at_more_points_then_restart(fake, tmp_path, reference, point):
    end, expected = reference
    assert _forked_run(fake, tmp_path, point, end) == signal.SIGKILL
    resumed = make_loop(fake, tmp_path)
    resumed.run(until=end)
    assert order_keys(fake) == expected
    assert_journal_matches_broker(resumed, fake)


# ---- failures are one line: the endpoint, the status, what to check --------------------------------------

@pytest.mark.parametrize("status, check", [(403, "APCA_API_SECRET_KEY"), (401, "APCA_API_KEY_ID"),
                                           (404, "without /v2"), (500, "status.alpaca.markets")])
def test_broker_errors_name_the_endpoint_the_status_and_what_to_check(fake, status, check):
    fake.add_rule(Rule("GET", "/v2/account", status=status, payload={"message": f"no ({API_KEY})"}, times=10))
    with pytest.raises(BrokerError) as info:
        broker_for(fake).account()
    text = str(info.value)
    assert info.value.status_code == status and "\n" not in text
    assert text.startswith(f"account: GET {fake.url}/v2/account answered HTTP {status} ('no (***)')")
    assert check in text and f"broker.trading_url (now {fake.url})" in text and API_KEY not in text
    assert ("after 4 attempts" in text) == (status == 500)  # broker_for: max_retries=3


def test_an_unreachable_trading_api_is_named_with_what_the_network_did(fake):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(BrokerError) as info:
        broker_for(fake, trading_url=url).clock()
    text = str(info.value)
    assert text.startswith(f"clock: GET {url}/v2/clock could not be reached (Connection refused) after 4 attempts — ")
    assert f"broker.trading_url (now {url})" in text and info.value.status_code is None


def test_a_data_api_error_names_broker_data_url(fake):
    fake.add_rule(Rule("GET", "/v2/stocks/trades/latest", status=403, times=10))
    with pytest.raises(BrokerError, match=rf"AAPL latest trade: GET {fake.url}/v2/stocks/trades/latest answered HTTP "
                                          rf"403 .*broker\.data_url"):
        broker_for(fake).reference_price("AAPL")


# ---- keys ------------------------------------------------------------------------------------------------

def test_keys_never_reach_the_journal_the_logs_or_the_page(fake, tmp_path, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    echo = {"message": f"bad request from {API_KEY} / {SECRET_KEY}"}
    fake.add_rule(Rule("GET", "/v2/positions", status=500, payload=echo, times=10))
    fake.add_rule(Rule("POST", "/v2/orders", status=422, payload=echo, times=1))
    loop = make_loop(fake, tmp_path, write_monitor=True)
    loop.run(until=days_ahead(fake, 2))
    texts = {"log": caplog.text, "jsonl": (tmp_path / "cycles.jsonl").read_text(),
             "page": (tmp_path / "monitor.html").read_text(),
             "journal": b"".join(p.read_bytes() for p in tmp_path.glob("journal.sqlite*")).decode("latin-1")}
    assert "***" in texts["jsonl"]  # the echoed keys were there, masked
    for where, text in texts.items():
        assert API_KEY not in text and SECRET_KEY not in text, where


def test_the_entry_point_trades_a_saved_bundle_with_keys_from_the_environment(fake, tmp_path, monkeypatch, capsys):
    import torch
    import yaml

    from experiments import paper_trade
    from experiments.common import run_cli
    from features import DatasetConfig, LabelConfig, build_market_data
    from features.preprocessing import Preprocessing
    from supervised.bundle import save_bundle
    from supervised.models import ModelConfig
    from supervised.trainer import TrainConfig, train_classifier

    bars, _ = market(("AAPL",))
    data = build_market_data({"AAPL": bars["AAPL"].iloc[:250]},
                             DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4)))
    torch.manual_seed(0)
    result = train_classifier(data, ModelConfig(kind="mlp", hidden_size=8, dropout=0.0),
                              TrainConfig(epochs=1, batch_size=128, num_threads=1), progress=False)
    bundle = tmp_path / "sup" / "model"
    save_bundle(bundle, result.classifier, result.model_config, preprocessing=Preprocessing.of(data), label=data.label,
                threshold=0.0, dataset_hashes=data.hashes)  # threshold 0: always long, so it orders
    config = tmp_path / "paper.yaml"
    config.write_text(yaml.safe_dump({"broker": {"trading_url": fake.url, "data_url": fake.url, "read_timeout": 2},
                                      "loop": {"history_bars": 200}}))
    argv = ["--policy", str(tmp_path / "sup"), "--symbols", "AAPL", "--config", str(config), "--once",
            "--runs-dir", str(tmp_path / "runs"), "--run-name", "paper_cli"]
    assert run_cli(paper_trade.main, argv) == 2  # no keys in the environment
    assert "APCA_API_KEY_ID" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing written
    monkeypatch.setenv("APCA_API_KEY_ID", API_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    assert run_cli(paper_trade.main, argv) == 0  # after the close: decides, orders nothing
    fake.set_now(broker_for(fake).clock().next_open + pd.Timedelta(seconds=5))
    assert run_cli(paper_trade.main, argv) == 0  # resumed at the open: sends the decided order
    out = capsys.readouterr()
    assert out.out.count("stopped: one cycle") == 2 and "resumed" in out.out
    assert SECRET_KEY not in out.out + out.err and API_KEY not in out.out + out.err
    run = tmp_path / "runs" / "paper_cli"
    journal = Journal(run / "journal.sqlite")
    assert [d["target"] for d in journal.decisions()] == [1.0]
    assert [o["client_order_id"] for o in fake.order_list()] == [o["client_order_id"] for o in journal.orders()]
    assert (run / "monitor.html").exists() and (run / "cycles.jsonl").read_text().count("\n") == 2
