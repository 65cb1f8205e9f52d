"""Paper trading crypto on Alpaca follows the 24/7 calendar (issue 23, items 2 and 3), on the local fake.

A crypto pair (``BTC/USD``) trades while the equity market is closed (nights, weekends): its orders are
fractional and ``gtc`` (the fake, like Alpaca, refuses ``day`` for crypto with HTTP 400), and the loop wakes
at the end of its next bar, not at the equity market's next open. A stock in the same run still waits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import requests

from live import Journal, LiveLoop, LivePolicy, OrderRequest
from live.broker import OrderRejected

from fake_alpaca_trading import API_KEY, SECRET_KEY, FakeAlpaca, FakeServer, crypto_hourly_bars, hourly_bars, session_days
from live_helpers import assert_journal_matches_broker, broker_for, paper_config, preprocessing_for

pytestmark = [pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
              pytest.mark.timeout(60)]

SATURDAY_NOON = pd.Timestamp("2024-03-09 12:00:30", tz="UTC")  # the equity market is closed all day
PAIR = "BTC/USD"


class AlwaysLong:
    """A policy that always asks for a long position (action 1), so every cycle with a new bar trades."""

    name = "always_long"

    def __init__(self, preprocessing) -> None:
        self.preprocessing = preprocessing

    def reset(self) -> None:
        pass

    def act(self, observation: np.ndarray) -> int:
        return 1


def crypto_market() -> dict[str, pd.DataFrame]:
    """BTC/USD hourly bars, every hour from 2024-01-01 to past the Saturday the tests trade on."""
    return {PAIR: crypto_hourly_bars("2024-01-01", 24 * 75, seed=3)}


@pytest.fixture
def no_proxy(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)


def open_run(bars: dict[str, pd.DataFrame], tmp_path, **broker_options) -> tuple[FakeServer, LiveLoop]:
    """A fake Alpaca on Saturday noon with ``bars``, and a loop trading all of them with :class:`AlwaysLong`."""
    srv = FakeServer(FakeAlpaca(bars, "1Hour", SATURDAY_NOON))
    pre = preprocessing_for(bars, train_bars=400)
    policy = LivePolicy(AlwaysLong(pre), pre, "discrete", False, "always_long")
    loop = LiveLoop(policy, broker_for(srv.fake, **broker_options), Journal(tmp_path / "j.sqlite", durable=False),
                    list(bars), paper_config(), run_name="crypto", run_dir=tmp_path, write_monitor=False)
    return srv, loop


def order_posts(fake: FakeAlpaca) -> list[dict]:
    return [r for r in fake.requests if r["method"] == "POST" and r["path"] == "/v2/orders"]


def test_crypto_trades_on_a_saturday_with_a_fractional_gtc_order(no_proxy, tmp_path):
    # whole shares for stocks (fractional=False) must not round a crypto quantity
    srv, loop = open_run(crypto_market(), tmp_path, fractional=False)
    try:
        fake = srv.fake
        assert not fake.is_open()
        loop.run(once=True)
        posts = order_posts(fake)
        assert len(posts) == 1 and posts[0]["body"]["symbol"] == PAIR
        assert posts[0]["body"]["time_in_force"] == "gtc"
        qty = float(posts[0]["body"]["qty"])
        assert 0 < qty and qty != round(qty)  # about 100,000 / 40,000: fractional, not whole coins
        # it fills while the equity market is closed (the fake fills before serving the next request)
        assert loop.broker.positions()[PAIR].qty == pytest.approx(qty)  # Alpaca's "BTCUSD", the run's "BTC/USD"
        order = fake.order_list()[0]
        assert order["status"] == "filled" and float(order["filled_qty"]) == qty
        # the decided bar is the newest complete one: 11:00-12:00, closed at noon on the Saturday
        assert [pd.Timestamp(d["bar_time"]) for d in loop.journal.decisions()] == [
            pd.Timestamp("2024-03-09 11:00", tz="UTC")]
    finally:
        srv.close()


def test_crypto_only_run_wakes_at_the_next_hours_end_not_mondays_open(no_proxy, tmp_path):
    srv, loop = open_run(crypto_market(), tmp_path)
    try:
        loop.start()
        report = loop.cycle()
        assert not report.is_open and report.orders
        poll = pd.Timedelta(seconds=loop.config.loop.poll_seconds)
        assert loop.next_wake(report) == report.at + poll  # its order is open: polled now, not on Monday
        report = loop.cycle()  # books the fill; nothing is open any more
        assert report.fills and not loop.journal.orders(pending_only=True)
        wake = loop.next_wake(report)
        delay = pd.Timedelta(seconds=loop.config.loop.bar_delay_seconds)
        assert wake == pd.Timestamp("2024-03-09 13:00", tz="UTC") + delay
        assert wake < report.clock.next_open  # Monday 09:30 New York
    finally:
        srv.close()


def test_crypto_run_keeps_trading_through_the_weekend_every_hour(no_proxy, tmp_path):
    srv, loop = open_run(crypto_market(), tmp_path)
    try:
        loop.run(until=SATURDAY_NOON + pd.Timedelta(hours=5, minutes=1))
        decided = [pd.Timestamp(d["bar_time"]) for d in loop.journal.decisions()]
        assert decided == list(pd.date_range("2024-03-09 11:00", periods=6, freq="h", tz="UTC"))
        assert not any(srv.fake.is_open(r["at"]) for r in srv.fake.requests)  # all of it while stocks are closed
        assert not [a for a in loop.journal.alerts() if a["kind"] == "stale_data"]
        assert_journal_matches_broker(loop, srv.fake)
    finally:
        srv.close()


def test_stock_in_the_same_run_is_not_ordered_on_a_saturday(no_proxy, tmp_path):
    bars = crypto_market()
    bars["AAPL"] = hourly_bars(session_days("2024-01-02", 60), seed=5)
    srv, loop = open_run(bars, tmp_path)
    try:
        loop.run(once=True)
        assert [p["body"]["symbol"] for p in order_posts(srv.fake)] == [PAIR]
        decided = {d["symbol"]: d for d in loop.journal.decisions()}
        assert set(decided) == {PAIR, "AAPL"}
        assert decided["AAPL"]["executed_at"] is None  # it waits for Monday's open
        assert decided[PAIR]["executed_at"] is not None
    finally:
        srv.close()


def test_fake_refuses_a_crypto_day_order_like_alpaca(no_proxy, tmp_path):
    srv = FakeServer(FakeAlpaca(crypto_market(), "1Hour", SATURDAY_NOON))
    try:
        body = {"symbol": PAIR, "qty": "0.5", "side": "buy", "type": "market", "time_in_force": "day",
                "client_order_id": "day-order"}
        answer = requests.post(f"{srv.fake.url}/v2/orders", json=body, timeout=5,
                               headers={"APCA-API-KEY-ID": API_KEY, "APCA-API-SECRET-KEY": SECRET_KEY})
        assert answer.status_code == 400 and "time_in_force" in answer.json()["message"]
        assert srv.fake.order_list() == []
    finally:
        srv.close()


def test_refused_crypto_order_is_one_line_naming_the_pair(no_proxy, tmp_path):
    srv = FakeServer(FakeAlpaca(crypto_market(), "1Hour", SATURDAY_NOON))
    try:
        broker = broker_for(srv.fake)
        with pytest.raises(OrderRejected) as caught:  # 1,000 coins at ~40,000: beyond the buying power
            broker.submit_order(OrderRequest(PAIR, "buy", 1000.0, "too-big", 1.0, 40_000.0))
        message = str(caught.value)
        assert "\n" not in message and PAIR in message and "HTTP 403" in message
    finally:
        srv.close()
