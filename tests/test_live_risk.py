"""Risk limits, the kill switch and alerts: position and gross caps, orders per day, the daily-loss halt (that
survives a restart), the kill file and SIGTERM (open orders canceled, flatten if configured, clean exit), the
trades-per-day alert and the webhook."""

from __future__ import annotations

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from live.config import PaperConfig
from live.risk import RiskConfig, limit_targets

from fake_alpaca_trading import FillMode
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
PAIR = ("AAPL", "MSFT")



def cycles_until(loop, condition, limit=40):
    """Cycle (sleeping as the loop would) until ``condition()`` holds after a cycle."""
    loop.start()
    for _ in range(limit):
        report = loop.cycle()
        if condition() or loop.stopped:
            return report
        loop.broker.sleep(max((loop.next_wake(report) - report.at).total_seconds(), 0.0))
    raise AssertionError("the condition never held")


def test_limits_cut_targets_per_symbol_and_in_total():
    config = RiskConfig(max_position=0.6, max_position_value=30_000.0, max_gross_exposure=0.5)
    equity = {"A": 100_000.0, "B": 100_000.0, "C": 100_000.0}
    out = limit_targets({"A": 1.0, "B": -1.0}, equity, {"C": 0.25}, config)
    # per symbol: min(0.6, 30k / 100k) = 0.3; in total: 0.3 + 0.3 + 0.25 held > 0.5 x 3 sleeves? no: 0.85 / 3
    assert out["A"] == (0.3, "max position 0.3") and out["B"] == (-0.3, "max position 0.3")
    tight = limit_targets({"A": 1.0, "B": 1.0}, equity, {"C": 1.0}, RiskConfig(max_gross_exposure=0.5))
    assert tight["A"][0] == pytest.approx(0.25) and "gross" in tight["A"][1]  # (1.5 - 1.0) / 2 sleeves


def test_fully_invested_sleeves_are_not_cut_by_rounding_noise():
    equity = {s: 100_000.0 + 0.1 * k / 3 for k, s in enumerate("ABCD")}
    held = {"B": 1.0, "C": 0.9999999999999998, "D": 1.0000000000000002}
    assert limit_targets({"A": 1.0}, equity, held, RiskConfig())["A"] == (1.0, None)


def test_bad_limits_and_unknown_keys_are_refused_by_name():
    with pytest.raises(ValueError, match="max_daily_loss"):
        RiskConfig(max_daily_loss=0)
    with pytest.raises(ValueError, match="stale_bars"):
        RiskConfig(stale_bars=0)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['max_postion'\]"):
        PaperConfig.from_dict({"risk": {"max_postion": 0.5}})


def test_max_position_halves_every_order(fake, tmp_path):
    loop = make_loop(fake, tmp_path, config=paper_config(risk={"max_position": 0.5}))
    loop.run(until=until(fake, 4))
    longs = [d for d in loop.journal.decisions() if d["target"] > 0]
    assert longs and all(d["risk_target"] == 0.5 and d["note"] == "max position 0.5" for d in longs)
    buys = [o for o in loop.journal.orders() if o["side"] == "buy"]
    for order in buys:
        capital = loop.journal.sleeves()["AAPL"].capital
        assert order["qty"] * order["reference_price"] == pytest.approx(0.5 * capital, rel=0.02)
    assert_journal_matches_broker(loop, fake)


@pytest.mark.parametrize("server", [PAIR], indirect=True)
def test_max_orders_per_day_blocks_the_rest_and_alerts(fake, tmp_path):
    loop = make_loop(fake, tmp_path, symbols=PAIR,
                     config=paper_config(risk={"max_orders_per_day": 1}, alerts={"max_trades_per_day": 0}))
    loop.run(until=until(fake, 5, PAIR))
    per_day = {}
    for order in loop.journal.orders():
        per_day[order["trading_day"]] = per_day.get(order["trading_day"], 0) + 1
    assert per_day and max(per_day.values()) == 1
    blocked = [d for d in loop.journal.decisions() if d["outcome"] == "blocked: max orders per day"]
    assert blocked
    kinds = {a["kind"] for a in loop.journal.alerts()}
    assert "trades_per_day" in kinds
    assert_journal_matches_broker(loop, fake)


def test_daily_loss_flattens_halts_and_stays_halted_after_a_restart(fake, tmp_path):
    loop = make_loop(fake, tmp_path, config=paper_config(risk={"max_daily_loss": 0.1}, alerts={"daily_loss": 0.05}))
    cycles_until(loop, lambda: loop.journal.sleeves()["AAPL"].units > 0 and fake.is_open())
    fake.price_overrides["AAPL"] = fake.price("AAPL") * 0.7  # a 30% drop during the day
    result = loop.run(until=until(fake, 2))
    assert result.startswith("halted: daily loss")
    flatten = [o for o in loop.journal.orders() if o["intent"] == "flatten"]
    assert len(flatten) == 1 and flatten[0]["side"] == "sell" and flatten[0]["status"] == "filled"
    assert fake.positions == {}
    kinds = [a["kind"] for a in loop.journal.alerts()]
    assert "daily_loss" in kinds and "halted" in kinds
    assert_journal_matches_broker(loop, fake)
    n_orders = len(fake.order_list())
    fake.price_overrides.clear()
    again = make_loop(fake, tmp_path, config=paper_config(risk={"max_daily_loss": 0.1}))
    assert again.run(until=until(fake, 3)).startswith("halted")  # a restart stays halted
    assert len(fake.order_list()) == n_orders
    decided = len(again.journal.decisions())
    resumed = make_loop(fake, tmp_path, config=paper_config(risk={"max_daily_loss": 0.1}), clear_halt=True)
    resumed.run(until=until(fake, 6))
    assert len(resumed.journal.decisions()) > decided  # deciding again
    assert resumed.journal.meta("halted") is None


def test_kill_file_cancels_open_orders_flattens_and_exits(fake, tmp_path):
    fake.expire_day_orders = False
    fake.fill_modes["AAPL"] = FillMode("partial", fraction=0.5, complete_after=None)
    loop = make_loop(fake, tmp_path, config=paper_config(risk={"flatten_on_kill": True}))
    cycles_until(loop, lambda: any(o["status"] == "partially_filled" for o in fake.order_list()))
    fake.fill_modes.clear()
    (tmp_path / "KILL").touch()
    fake.advance(60)
    assert loop.run(until=until(fake, 2)).startswith("killed: kill file")
    statuses = {o["client_order_id"].rsplit("-", 2)[-2]: o["status"] for o in fake.order_list()}
    assert "canceled" in statuses.values()
    kill = [o for o in loop.journal.orders() if o["intent"] == "kill"]
    assert len(kill) == 1 and kill[0]["side"] == "sell"
    assert fake.positions == {} and not [o for o in fake.order_list() if o["status"] in ("accepted", "partially_filled")]
    assert "killed" in loop.journal.meta("status")
    assert any(a["kind"] == "kill_switch" for a in loop.journal.alerts())
    assert_journal_matches_broker(loop, fake)


def test_sigterm_cancels_open_orders_and_exits_cleanly_keeping_positions(fake, tmp_path):
    fake.expire_day_orders = False
    fake.fill_modes["AAPL"] = FillMode("partial", fraction=0.5, complete_after=None)
    state = {"armed": False}

    def sleep(seconds):
        if state["armed"]:
            state["armed"] = False
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill <pid>` would, while the loop waits
        fake.advance(seconds)

    loop = make_loop(fake, tmp_path, broker=broker_for(fake, sleep=sleep))
    cycles_until(loop, lambda: any(o["status"] == "partially_filled" for o in fake.order_list()))
    state["armed"] = True
    previous = signal.getsignal(signal.SIGTERM)
    assert loop.run(until=until(fake, 3)) == "killed: SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
    assert not [o for o in fake.order_list() if o["status"] in ("accepted", "partially_filled")]
    assert fake.positions["AAPL"]["qty"] > 0  # flatten_on_kill is off: the position stays
    assert_journal_matches_broker(loop, fake)


def test_alerts_reach_the_webhook(fake, tmp_path):
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        fake.lag_bars["AAPL"] = 2
        url = f"http://127.0.0.1:{hook.server_address[1]}/alerts"
        loop = make_loop(fake, tmp_path, config=paper_config(alerts={"webhook_url": url}))
        loop.run(max_cycles=6)
    finally:
        hook.shutdown()
        hook.server_close()
    assert received and received[0]["kind"] == "stale_data" and received[0]["run"] == "paper_test"
    assert received[0]["symbol"] == "AAPL" and "newer bar" in received[0]["message"]
    assert len(received) == len(loop.journal.alerts())  # each alert once, not once per cycle


def test_a_webhook_outage_never_stops_trading(fake, tmp_path):
    loop = make_loop(fake, tmp_path, config=paper_config(alerts={"webhook_url": "http://127.0.0.1:9/down",
                                                                 "max_trades_per_day": 0}))
    loop.run(until=until(fake, 3))
    assert loop.journal.alerts() and fake.order_list()
    assert_journal_matches_broker(loop, fake)
