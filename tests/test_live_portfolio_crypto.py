"""``paper_trade --portfolio`` on a universe of US stocks beside a crypto pair (issue 23 item 3): each asset follows its
own calendar.

While the equity market is closed (a weekend, a night) the crypto legs are rebalanced alone: the stocks hold (masked as
not tradable, as the portfolio simulator treats an asset without a bar), the buys fit in the cash there is, and no
stock order is sent. The ``--broker sim`` replay of such a universe - crypto bars every day, stock bars on weekdays -
ends with the fills and equity of ``envs.portfolio_backtest.backtest_portfolio``; on the fake Alpaca a Saturday sends
crypto orders only (gtc, fractional), the loop wakes at the next crypto bar's close, and the stocks trade once the
equity market opens.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from agents.portfolio_baselines import fit_allocation_policy
from envs.portfolio_backtest import backtest_portfolio
from experiments import paper_trade
from features import synthetic_bars
from features.dataset import DatasetConfig, build_market_data
from features.panel import Panel
from features.preprocessing import Preprocessing
from live import Journal, PaperConfig
from live.portfolio import PortfolioLiveLoop, PortfolioSimBroker
from sim.engine import Costs

from fake_alpaca_trading import FakeAlpaca, FakeServer, crypto_hourly_bars, hourly_bars, session_days
from live_helpers import assert_journal_matches_broker, broker_for, paper_config, preprocessing_for

pytestmark = [pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
              pytest.mark.timeout(120)]

PAIR = "BTC/USD"
STOCKS = ["AAA", "BBB"]
SYMBOLS = [*STOCKS, PAIR]
LOOSE_RISK = {"risk": {"max_daily_loss": 0.99, "max_orders_per_day": 1000}, "alerts": {"daily_loss": 0.99}}


def mixed_bars(n_stock_days: int = 200) -> dict[str, pd.DataFrame]:
    """Two stocks with a bar every weekday and BTC/USD with a bar every day (weekends included), at 00:00 UTC."""
    stocks = {s: synthetic_bars(n_stock_days, seed=i, start="2022-01-03") for i, s in enumerate(STOCKS)}
    days = pd.date_range(pd.Timestamp("2022-01-03", tz="UTC"), stocks["AAA"].index[-1], freq="D", name="timestamp")
    pair = synthetic_bars(len(days), seed=7, start="2022-01-03", freq="D", start_price=40_000.0)
    return {**stocks, PAIR: pair}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The mixed universe as a dataset (window 4), its panel, and a loose-risk paper config."""
    root = tmp_path_factory.mktemp("mixed")
    data = build_market_data(mixed_bars(), DatasetConfig(window=4))
    panel = Panel.from_market_data(data)
    start, end = panel.split_range("test")
    assert not panel.has_bar[start:end, :2].all() and panel.has_bar[start:end, 2].all()  # weekends: crypto only
    config = root / "paper.yaml"
    config.write_text(yaml.safe_dump(LOOSE_RISK))
    return {"root": root, "data": data, "panel": panel, "config": config}


def loop_for(setup, run_dir, policy):
    broker = PortfolioSimBroker(setup["panel"], "test", Costs())
    journal = Journal(run_dir / "journal.sqlite", durable=False)
    loop = PortfolioLiveLoop(policy, Preprocessing.of(setup["data"]), broker, journal, SYMBOLS,
                             PaperConfig.from_dict(LOOSE_RISK), run_name="mixed", run_dir=run_dir, write_monitor=False)
    return loop, journal


def outcome(journal):
    """Fills as (bar, symbol) keys and (units, price, commission), sorted; the account's equity per bar."""
    rows = sorted(journal.fills(), key=lambda f: (f["bar_time"], f["symbol"]))
    keys = [(pd.Timestamp(f["bar_time"]), f["symbol"]) for f in rows]
    numbers = np.array([[f["units"], f["price"], f["commission"]] for f in rows])
    by_bar: dict[str, float] = {}
    for mark in journal.equity():
        by_bar[mark["bar_time"]] = by_bar.get(mark["bar_time"], 0.0) + mark["equity"]
    stamps = sorted(by_bar)
    return keys, numbers, [pd.Timestamp(k) for k in stamps], np.array([by_bar[k] for k in stamps])


def assert_same_as_backtest(journal, reference):
    """The run's fills (bar, symbol, units, price, commission) and account equity per bar (one per row of the
    timeline, weekends included) are the backtest's, to 1e-9 relative."""
    keys, numbers, stamps, equity = outcome(journal)
    ref = reference.fills.sort_values(["timestamp", "symbol"], kind="stable")
    assert keys == list(zip(pd.to_datetime(ref["timestamp"], utc=True), ref["symbol"]))
    np.testing.assert_allclose(numbers, ref[["units", "fill_price", "commission"]].to_numpy(), rtol=1e-9, atol=0)
    assert stamps == list(reference.timestamps)
    np.testing.assert_allclose(equity, reference.equity, rtol=1e-9, atol=0)


def weekend(moment: pd.Timestamp) -> bool:
    return pd.Timestamp(moment).weekday() >= 5


@pytest.mark.parametrize(("method", "every"), [("equal_weight", 3), ("minimum_variance", 5)])
def test_sim_replay_of_stocks_beside_crypto_equals_the_portfolio_backtest(tmp_path, setup, method, every):
    policy = fit_allocation_policy(method, setup["panel"], "train", rebalance_every=every)
    loop, journal = loop_for(setup, tmp_path, policy)
    assert loop.run() == "replay finished"
    assert_same_as_backtest(journal, backtest_portfolio(policy, setup["panel"], "test", Costs()))
    keys = outcome(journal)[0]
    # on weekends the crypto leg was rebalanced alone; stocks filled on weekdays only
    assert any(weekend(bar) for bar, symbol in keys if symbol == PAIR)
    assert not [(bar, symbol) for bar, symbol in keys if symbol != PAIR and weekend(bar)]
    assert not [a for a in journal.alerts() if a["kind"] in ("reconciliation", "stale_data")]
    cycles = [json.loads(line) for line in (tmp_path / "cycles.jsonl").read_text().splitlines()]
    assert {c["status"] for c in cycles} == {"ok"}  # nothing was tried while nothing could fill (a bar's close)
    assert {c["is_open"] for c in cycles if weekend(pd.Timestamp(c["at"]))} == {False}


class Shift:
    """90% in the stocks until the decision on the first Friday, then everything in crypto: on the Saturday the stocks
    cannot be sold, so the crypto buy has only the 10% in cash."""

    action_transform = "weights"
    rebalance_every = None

    def __init__(self, switch_after: int) -> None:
        self.switch_after = switch_after
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def act(self, observation: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.array([0.45, 0.45, 0.0, 0.1]) if self.calls <= self.switch_after else np.array([0.0, 0.0, 1.0, 0.0])


def test_a_weekend_rebalance_holds_the_stocks_and_buys_crypto_with_the_cash_there_is(tmp_path, setup):
    panel = setup["panel"]
    start, _ = panel.split_range("test")
    stamps = pd.to_datetime(panel.timestamps[start:], utc=True)
    friday = next(j for j in range(1, len(stamps)) if stamps[j].weekday() == 4)  # decided on by call friday + 1
    loop, journal = loop_for(setup, tmp_path, Shift(friday))
    loop.run()
    reference = backtest_portfolio(Shift(friday), panel, "test", Costs())
    keys, numbers, _, equity = outcome(journal)
    np.testing.assert_allclose(equity, reference.equity, rtol=1e-9, atol=0)
    first = keys[0][0]
    second = [(bar, symbol, units) for (bar, symbol), (units, _, _) in zip(keys, numbers) if bar > first]
    # the Saturday: a crypto buy only, paid from the cash (about 10% of the account), the stocks held
    assert [(symbol, units > 0) for bar, symbol, units in second if weekend(bar)] == [(PAIR, True)]
    saturday = [f for f in journal.fills() if weekend(pd.Timestamp(f["bar_time"]))][0]
    cash_before = 100_000.0 - sum(f["units"] * f["price"] + f["commission"] for f in journal.fills()
                                  if pd.Timestamp(f["bar_time"]) == first)
    spent = saturday["units"] * saturday["price"] + saturday["commission"]
    assert 0 < spent <= cash_before + 1e-6 and cash_before < 0.11 * 100_000
    # Monday: the stocks are sold
    monday = [(symbol, units < 0) for bar, symbol, units in second if not weekend(bar)][:2]
    assert monday == [("AAA", True), ("BBB", True)]
    executed = {d["symbol"]: d["outcome"] for d in journal.decisions() if pd.Timestamp(d["bar_time"]) ==
                pd.Timestamp(saturday["bar_time"]) - pd.Timedelta(days=1)}
    assert executed["AAA"] == executed["BBB"] == "held: its market is closed"


def test_a_mixed_replay_stopped_on_a_weekend_and_resumed_ends_as_one_never_interrupted(tmp_path, setup):
    policy = fit_allocation_policy("equal_weight", setup["panel"], "train", rebalance_every=2)
    stops = []
    for cycles in (9, 6, 4):  # stops at a Wednesday's close, a Saturday's open and a Sunday's close
        loop, journal = loop_for(setup, tmp_path / "parts", policy)
        assert loop.run(max_cycles=cycles) == f"{cycles} cycles"
        stops.append(journal.last_moment())
        journal.close()
    assert [weekend(moment) for moment in stops] == [False, True, True]
    loop, journal = loop_for(setup, tmp_path / "parts", policy)
    assert loop.run() == "replay finished"
    assert_same_as_backtest(journal, backtest_portfolio(policy, setup["panel"], "test", Costs()))


def test_the_replay_clock_is_the_equity_markets_closed_on_weekends(tmp_path, setup):
    broker = PortfolioSimBroker(setup["panel"], "test", Costs())
    seen = []
    while not broker.finished:
        broker.sleep(0.0)
        if broker.phase == "open" and not broker.finished:
            clock = broker.clock()
            seen.append((clock.timestamp, clock.is_open, [broker.can_trade(s) for s in SYMBOLS]))
            if not clock.is_open:
                assert not weekend(clock.next_open) and clock.next_open > clock.timestamp
    assert all(is_open == (not weekend(at)) for at, is_open, _ in seen)
    assert all(trades == [not weekend(at), not weekend(at), True] for at, _, trades in seen)
    assert any(weekend(at) for at, _, _ in seen)
    assert not any(broker.can_trade(s) for s in SYMBOLS)  # at a close nothing fills


def test_paper_trade_cli_replays_a_mixed_universe(tmp_path, setup, capsys):
    dataset = setup["data"].save(tmp_path / "dataset")
    runs = tmp_path / "runs"
    argv = ["--portfolio", "--policy", "equal_weight", "--rebalance-every", "3", "--broker", "sim", "--dataset",
            str(dataset), "--no-progress", "--config", str(setup["config"]), "--runs-dir", str(runs),
            "--run-name", "cli"]
    assert paper_trade.main(argv) == "replay finished"
    journal = Journal(runs / "cli" / "journal.sqlite", durable=False)
    policy = fit_allocation_policy("equal_weight", setup["panel"], "train", rebalance_every=3)
    reference = backtest_portfolio(policy, setup["panel"], "test", Costs())
    _, _, stamps, equity = outcome(journal)
    assert stamps == list(reference.timestamps)
    np.testing.assert_allclose(equity, reference.equity, rtol=1e-9, atol=0)


# ----- on the fake Alpaca -------------------------------------------------------------------------------------
FRIDAY_AFTERNOON = pd.Timestamp("2024-03-08 20:00:30", tz="UTC")  # 15:00:30 in New York: the market is open
SATURDAY_NOON = pd.Timestamp("2024-03-09 12:00:30", tz="UTC")
ALPACA_STOCKS = ["AAPL", "MSFT"]


class Tilt:
    """30% in each asset on the first decision, then 90% in crypto and no stock: the stocks are sold once their
    market opens."""

    action_transform = "weights"
    rebalance_every = None

    def __init__(self) -> None:
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def act(self, observation: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.array([0.3, 0.3, 0.3, 0.1]) if self.calls == 1 else np.array([0.0, 0.0, 0.9, 0.1])


@pytest.fixture
def alpaca(monkeypatch, tmp_path):
    """A fake Alpaca on a Friday afternoon with AAPL and MSFT hourly session bars and BTC/USD hourly bars every hour,
    and a portfolio loop on them (whole shares for stocks: a crypto quantity must stay fractional)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    days = session_days("2024-01-02", 60)
    bars = {s: hourly_bars(days, seed=5 + i, start_price=100.0 + 50 * i) for i, s in enumerate(ALPACA_STOCKS)}
    bars[PAIR] = crypto_hourly_bars("2024-01-01", 24 * 75, seed=3)
    srv = FakeServer(FakeAlpaca(bars, "1Hour", FRIDAY_AFTERNOON))
    journal = Journal(tmp_path / "journal.sqlite", durable=False)
    loop = PortfolioLiveLoop(Tilt(), preprocessing_for(bars, train_bars=400), broker_for(srv.fake, fractional=False),
                             journal, [*ALPACA_STOCKS, PAIR], paper_config(), run_name="mixed", run_dir=tmp_path,
                             write_monitor=False)
    yield srv.fake, loop
    srv.close()


def order_posts(fake: FakeAlpaca, since: pd.Timestamp | None = None) -> list[dict]:
    return [r for r in fake.requests if r["method"] == "POST" and r["path"] == "/v2/orders"
            and (since is None or r["at"] >= since)]


def test_alpaca_on_a_saturday_sends_crypto_orders_only_and_wakes_at_the_next_hour(alpaca):
    fake, loop = alpaca
    loop.run(until=FRIDAY_AFTERNOON + pd.Timedelta(minutes=30))  # Friday: a buy of each at the first decision
    assert sorted(o["symbol"] for o in fake.order_list()) == sorted([*ALPACA_STOCKS, PAIR])
    held = {s: fake.positions[s]["qty"] for s in ALPACA_STOCKS}
    assert all(qty > 0 for qty in held.values())
    fake.set_now(SATURDAY_NOON)
    cash = fake.cash
    report = loop.cycle()
    assert not report.is_open
    posts = order_posts(fake, since=SATURDAY_NOON)
    assert [p["body"]["symbol"] for p in posts] == [PAIR]
    body = posts[0]["body"]
    assert body["side"] == "buy" and body["time_in_force"] == "gtc"
    qty = float(body["qty"])
    assert qty != round(qty)  # fractional, though stocks trade whole shares here
    report = loop.cycle()  # books the fill (the fake fills crypto on a Saturday)
    assert report.fills and not loop.journal.orders(pending_only=True)
    spent = cash - fake.cash
    assert 0 < spent <= cash and fake.cash >= 0  # the buy fitted in the cash there was; nothing was sold for it
    assert {s: fake.positions[s]["qty"] for s in ALPACA_STOCKS} == held  # the stocks held
    decided = {d["symbol"]: d for d in loop.journal.decisions() if pd.Timestamp(d["bar_time"]) ==
               pd.Timestamp("2024-03-09 11:00", tz="UTC")}
    assert set(decided) == set(loop.symbols)
    assert decided["AAPL"]["outcome"] == decided["MSFT"]["outcome"] == "held: its market is closed"
    # its next wake: the end of the next crypto hour, not Monday's open
    wake = loop.next_wake(report)
    assert wake == pd.Timestamp("2024-03-09 13:00", tz="UTC") + pd.Timedelta(seconds=loop.config.loop.bar_delay_seconds)
    assert wake < report.clock.next_open
    assert_journal_matches_broker(loop, fake)


@pytest.mark.slow
def test_alpaca_through_a_weekend_trades_crypto_every_hour_and_stocks_only_when_open(alpaca):
    fake, loop = alpaca
    monday = pd.Timestamp("2024-03-11 14:01", tz="UTC")  # 10:01 New York (summer time): one session bar closed
    loop.run(until=monday)
    orders = fake.order_list()
    stock_orders = [o for o in orders if o["symbol"] != PAIR]
    assert stock_orders and all(fake.is_open(pd.Timestamp(o["submitted_at"])) for o in stock_orders)
    assert [o["side"] for o in stock_orders if pd.Timestamp(o["submitted_at"]) > SATURDAY_NOON] == ["sell", "sell"]
    weekend_orders = [o for o in orders if not fake.is_open(pd.Timestamp(o["submitted_at"]))]
    assert weekend_orders and {o["symbol"] for o in weekend_orders} == {PAIR}
    assert all(o["time_in_force"] == "gtc" for o in weekend_orders)
    weekend_decisions = {pd.Timestamp(d["bar_time"]) for d in loop.journal.decisions()
                         if weekend(pd.Timestamp(d["bar_time"]))}
    assert len(weekend_decisions) == 48  # every crypto hour of Saturday and Sunday
    assert not [a for a in loop.journal.alerts() if a["kind"] == "stale_data"]
    assert_journal_matches_broker(loop, fake)


def test_sim_replay_of_stocks_stamped_at_midnight_new_york_beside_pairs_at_00_utc_equals_the_backtest(tmp_path):
    """Alpaca stamps a stock's day at midnight New York (05:00 UTC in winter) and a pair's at 00:00 UTC: the universe
    lays both on one row per date, and the replay hands the loop each stock's bar of that date, not the day before."""
    bars = mixed_bars()
    for symbol in STOCKS:
        bars[symbol].index = bars[symbol].index.tz_localize(None).tz_localize("America/New_York").tz_convert("UTC")
    data = build_market_data(bars, DatasetConfig(window=4))
    panel = Panel.from_market_data(data)
    setup = {"data": data, "panel": panel, "config": tmp_path / "paper.yaml"}
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(LOOSE_RISK))
    policy = fit_allocation_policy("equal_weight", panel, "train", rebalance_every=3)
    loop, journal = loop_for(setup, tmp_path / "run", policy)
    assert loop.run() == "replay finished"
    reference = backtest_portfolio(policy, panel, "test", Costs())
    # the journal names each bar by its own stamp (a stock's 04:00/05:00 UTC), the backtest by its date's row
    rows = sorted(journal.fills(), key=lambda f: (pd.Timestamp(f["bar_time"]).floor("D"), f["symbol"]))
    ref = reference.fills.sort_values(["timestamp", "symbol"], kind="stable")
    assert [(pd.Timestamp(f["bar_time"]).floor("D"), f["symbol"]) for f in rows] == list(
        zip(pd.to_datetime(ref["timestamp"], utc=True), ref["symbol"]))
    np.testing.assert_allclose([[f["units"], f["price"], f["commission"]] for f in rows],
                               ref[["units", "fill_price", "commission"]].to_numpy(), rtol=1e-9, atol=0)
    by_date: dict[pd.Timestamp, float] = {}
    for mark in journal.equity():
        day = pd.Timestamp(mark["bar_time"]).floor("D")
        by_date[day] = by_date.get(day, 0.0) + mark["equity"]
    assert sorted(by_date) == list(reference.timestamps)
    np.testing.assert_allclose([by_date[d] for d in sorted(by_date)], reference.equity, rtol=1e-9, atol=0)
