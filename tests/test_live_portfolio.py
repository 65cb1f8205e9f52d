"""``paper_trade --portfolio``: one account allocating across the symbols, traded through the live loop.

On ``--broker sim`` the replay (one account over the dataset's test split) must end with the fills and equity of
``envs.portfolio_backtest.backtest_portfolio`` on the same data, split and costs - called as it is, never
re-implemented - however the run was stopped and resumed; an order journalled but not sent is sent once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from agents.portfolio_baselines import fit_allocation_policy
from envs.portfolio_backtest import backtest_portfolio
from experiments import paper_trade
from experiments.common import run_cli
from features import synthetic_bars
from features.dataset import DatasetConfig, build_market_data
from features.panel import Panel
from features.preprocessing import Preprocessing
from live import Journal, PaperConfig
from live.portfolio import PortfolioLiveLoop, PortfolioSimBroker
from live_helpers import (assert_journal_matches_broker, broker_for, fake, market, paper_config,  # noqa: F401
                          preprocessing_for, server, until)
from sim.engine import Costs

pytestmark = pytest.mark.timeout(120)

SYMBOLS = ["AAA", "BBB", "CCC"]
LOOSE_RISK = {"risk": {"max_daily_loss": 0.99, "max_orders_per_day": 1000}, "alerts": {"daily_loss": 0.99}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Three synthetic symbols (400 daily bars, a 60-bar test split), saved, and a loose-risk paper config."""
    root = tmp_path_factory.mktemp("portfolio")
    bars = {name: synthetic_bars(400, seed=seed) for seed, name in enumerate(SYMBOLS)}
    data = build_market_data(bars, DatasetConfig(window=4))
    dataset = data.save(root / "dataset")
    config = root / "paper.yaml"
    config.write_text(yaml.safe_dump(LOOSE_RISK))
    return {"root": root, "data": data, "panel": Panel.from_market_data(data), "dataset": dataset, "config": config}


def argv(setup, runs, name, policy, *extra):
    return ["--portfolio", "--policy", policy, "--broker", "sim", "--dataset", str(setup["dataset"]), "--no-progress",
            "--config", str(setup["config"]), "--runs-dir", str(runs), "--run-name", name, *extra]


def account_curve(journal):
    """The account's equity per bar: the symbols' marks added up."""
    by_bar: dict[str, float] = {}
    for mark in journal.equity():
        by_bar[mark["bar_time"]] = by_bar.get(mark["bar_time"], 0.0) + mark["equity"]
    keys = sorted(by_bar)
    return [pd.Timestamp(k) for k in keys], np.array([by_bar[k] for k in keys])


def fill_table(journal):
    """(bar, symbol) keys and (units, price, commission) of every fill, sorted by bar then symbol."""
    rows = sorted(journal.fills(), key=lambda f: (f["bar_time"], f["symbol"]))
    return ([(pd.Timestamp(f["bar_time"]), f["symbol"]) for f in rows],
            np.array([[f["units"], f["price"], f["commission"]] for f in rows]))


def outcome(journal):
    keys, numbers = fill_table(journal)
    stamps, equity = account_curve(journal)
    return keys, numbers, stamps, equity


def assert_same_as_backtest(journal, reference):
    """Same fills (bar, symbol, units, price, commission) and equity curve as the backtest, to 1e-9 relative."""
    keys, numbers = fill_table(journal)
    ref = reference.fills.sort_values(["timestamp", "symbol"], kind="stable")
    assert len(keys) == len(ref) >= len(SYMBOLS)  # the policy does trade (buy and hold: one buy each)
    assert keys == list(zip(pd.to_datetime(ref["timestamp"], utc=True), ref["symbol"]))
    expected = ref[["units", "fill_price", "commission"]].to_numpy()
    np.testing.assert_allclose(numbers, expected, rtol=1e-9, atol=0)
    stamps, equity = account_curve(journal)
    assert stamps == list(reference.timestamps)
    np.testing.assert_allclose(equity, reference.equity, rtol=1e-9, atol=0)
    worst = max(float(np.max(np.abs(numbers / expected - 1))), float(np.max(np.abs(equity / reference.equity - 1))))
    print(f"{reference.policy}: {len(keys)} fills, {len(equity)} marks, max relative difference {worst:.3g}")


def sells_before_buys(journal):
    """Within each bar, every sell was booked before every buy."""
    by_bar: dict[str, list[float]] = {}
    for fill in journal.fills():
        by_bar.setdefault(fill["bar_time"], []).append(fill["units"])
    mixed = 0
    for units in by_bar.values():
        signs = [u > 0 for u in units]
        assert signs == sorted(signs), units
        mixed += 0 < sum(signs) < len(signs)
    return mixed


@pytest.mark.parametrize(("method", "every"), [("equal_weight", 5), ("buy_and_hold", None), ("minimum_variance", 10)])
def test_sim_replay_of_an_allocation_equals_the_portfolio_backtest(tmp_path, setup, method, every):
    extra = ["--rebalance-every", str(every)] if every else []
    paper_trade.main(argv(setup, tmp_path / "runs", "replay", method, *extra))
    journal = Journal(tmp_path / "runs" / "replay" / "journal.sqlite", durable=False)
    policy = fit_allocation_policy(method, setup["panel"], "train", rebalance_every=every or 21)
    reference = backtest_portfolio(policy, setup["panel"], "test", Costs())
    assert_same_as_backtest(journal, reference)
    mixed = sells_before_buys(journal)
    if method != "buy_and_hold":
        assert mixed > 0  # rebalances that sell some assets and buy others: the sells went first
    assert not [a for a in journal.alerts() if a["kind"] in ("reconciliation", "stale_data")]


def test_a_portfolio_run_stopped_and_resumed_ends_as_one_never_interrupted(tmp_path, setup):
    runs = tmp_path / "runs"
    paper_trade.main(argv(setup, runs, "whole", "equal_weight", "--rebalance-every", "3"))
    whole = outcome(Journal(runs / "whole" / "journal.sqlite", durable=False))
    for cycles in ("7", "10", "25"):  # stops at a close and at an open, mid-run
        reason = paper_trade.main(argv(setup, runs, "parts", "equal_weight", "--rebalance-every", "3",
                                       "--max-cycles", cycles))
        assert reason == f"{cycles} cycles"
    (runs / "parts" / "KILL").write_text("")
    assert paper_trade.main(argv(setup, runs, "parts", "equal_weight", "--rebalance-every", "3")).startswith("killed")
    (runs / "parts" / "KILL").unlink()
    assert paper_trade.main(argv(setup, runs, "parts", "equal_weight", "--rebalance-every", "3")) == "replay finished"
    parts = outcome(Journal(runs / "parts" / "journal.sqlite", durable=False))
    assert parts[0] == whole[0] and parts[2] == whole[2]
    np.testing.assert_array_equal(parts[1], whole[1])
    np.testing.assert_array_equal(parts[3], whole[3])
    # a finished run started again does not trade again
    paper_trade.main(argv(setup, runs, "parts", "equal_weight", "--rebalance-every", "3"))
    again = outcome(Journal(runs / "parts" / "journal.sqlite", durable=False))
    assert again[0] == whole[0]
    np.testing.assert_array_equal(again[3], whole[3])


class Crash(Exception):
    """The process dies here (the test's stand-in for SIGKILL)."""


def loop_for(setup, run_dir, policy, crash=None):
    broker = PortfolioSimBroker(setup["panel"], "test", Costs())
    config = PaperConfig.from_dict(LOOSE_RISK)
    journal = Journal(run_dir / "journal.sqlite", durable=False)
    loop = PortfolioLiveLoop(policy, Preprocessing.of(setup["data"]), broker, journal, SYMBOLS, config,
                             run_name="crash", run_dir=run_dir, crash=crash, write_monitor=False)
    return loop, broker, journal


@pytest.mark.parametrize("point", ["after_intent", "after_submit", "after_decide"])
def test_an_order_journalled_but_not_sent_is_sent_once_on_restart(tmp_path, setup, point):
    policy = fit_allocation_policy("equal_weight", setup["panel"], "train", rebalance_every=4)
    whole, _, journal = loop_for(setup, tmp_path / "whole", policy)
    whole.run()
    expected = outcome(journal)
    seen = {"n": 0}

    def crash(name):
        if name == point:
            seen["n"] += 1
            if seen["n"] == 5:  # mid-run, and mid-plan for the order points (3 orders per rebalance)
                raise Crash(name)

    first, _, journal = loop_for(setup, tmp_path / "run", policy, crash)
    with pytest.raises(Crash):
        first.run()
    pending = [row for row in journal.orders() if row["status"] == "intent"]
    assert len(pending) == (1 if point != "after_decide" else 0)
    journal.close()
    again, broker, journal = loop_for(setup, tmp_path / "run", policy)
    assert again.run() == "replay finished"
    got = outcome(journal)
    assert got[0] == expected[0] and got[2] == expected[2]
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[3], expected[3])
    cids = [row["client_order_id"] for row in journal.orders()]
    assert len(cids) == len(set(cids)) == len(journal.fills())  # every intent sent once and filled once
    if pending:
        assert journal.order(pending[0]["client_order_id"])["status"] == "filled"
        assert pending[0]["client_order_id"] in broker.orders


def test_portfolio_mistakes_are_one_line(tmp_path, setup, capsys):
    runs = tmp_path / "runs"
    code = run_cli(paper_trade.main, argv(setup, runs, "bad", "equal_wieght"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "equal_wieght" in err and "equal_weight" in err
    code = run_cli(paper_trade.main, argv(setup, runs, "one", "equal_weight", "--symbols", "AAA"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "at least 2 assets" in err
    code = run_cli(paper_trade.main, argv(setup, runs, "unknown", "equal_weight", "--symbols", "AAA", "ZZZ"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "ZZZ" in err
    assert not runs.exists() or not any(runs.iterdir())  # a mistake leaves no run folder behind


class Recording:
    """The equal-weight allocation, rebalanced every 5 bars, keeping every observation it is shown."""

    action_transform = "weights"
    rebalance_every = 5

    def __init__(self, allocation) -> None:
        self.allocation = allocation
        self.seen: list[np.ndarray] = []

    def reset(self) -> None:
        self.seen = []

    def act(self, observation: np.ndarray) -> np.ndarray:
        self.seen.append(np.array(observation, dtype=np.float64))
        return self.allocation.act(observation)


def test_the_loop_observes_what_the_portfolio_env_observes(tmp_path, setup):
    """Each decision's observation (the symbols' feature windows built from the broker's bars, then the account's
    weights) equals the one the backtest's PortfolioCore shows the policy at the same bar."""
    allocation = fit_allocation_policy("equal_weight", setup["panel"], "train", rebalance_every=5)
    live, reference = Recording(allocation), Recording(allocation)
    loop, _, journal = loop_for(setup, tmp_path, live)
    loop.run()
    result = backtest_portfolio(reference, setup["panel"], "test", Costs())
    assert len(live.seen) == len(reference.seen) + 1  # the loop also decides on the last bar (never executed)
    got, expected = np.stack(live.seen[:-1]), np.stack(reference.seen)
    weights = slice(got.shape[1] - len(SYMBOLS) - 1, None)
    assert np.abs(expected[:, weights][:, :-1]).max() > 0.2  # the account holds assets, not only cash
    print(f"observation: features differ by {np.abs(got - expected)[:, :weights.start].max():.3g}, weights by "
          f"{np.abs(got - expected)[:, weights].max():.3g}")
    np.testing.assert_allclose(got[:, weights], expected[:, weights], rtol=0, atol=1e-7)  # float32 weights
    np.testing.assert_allclose(got[:, :weights.start], expected[:, :weights.start], rtol=0, atol=1e-5)
    assert_same_as_backtest(journal, result)


class Tilt:
    """60% in the first asset on the first decision, then 60% in the last: the second rebalance sells one asset
    and buys another."""

    action_transform = "weights"
    rebalance_every = None

    def __init__(self) -> None:
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def act(self, observation: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.array([0.6, 0.2, 0.2, 0.0]) if self.calls == 1 else np.array([0.2, 0.2, 0.6, 0.0])


@pytest.mark.parametrize("server", [tuple(SYMBOLS)], indirect=True)
def test_the_portfolio_loop_on_alpaca_sends_sells_before_buys_with_client_order_ids(tmp_path, fake):
    from live import client_order_id

    bars, _ = market(tuple(SYMBOLS))
    journal = Journal(tmp_path / "journal.sqlite", durable=False)
    loop = PortfolioLiveLoop(Tilt(), preprocessing_for(bars), broker_for(fake), journal, SYMBOLS, paper_config(),
                             run_name="paper_test", run_dir=tmp_path, write_monitor=False)
    loop.run(until=until(fake, 2, tuple(SYMBOLS)))
    orders = fake.order_list()
    decided = sorted({row["bar_time"] for row in journal.decisions()})[:2]
    first = [o for o in orders if o["client_order_id"].split("-")[2] == pd.Timestamp(decided[0]).strftime("%Y%m%dT%H%M")]
    second = [o for o in orders if o not in first]
    assert [o["side"] for o in first] == ["buy"] * 3
    assert [(o["symbol"], o["side"]) for o in second[:1]] == [("AAA", "sell")] and second[-1]["symbol"] == "CCC"
    assert [o["side"] for o in second] == sorted(o["side"] for o in second)[::-1]  # every sell before every buy
    for order in orders:
        bar = pd.Timestamp(journal.order(order["client_order_id"])["bar_time"])
        assert order["client_order_id"] == client_order_id("paper_test", order["symbol"], bar, "rebalance")
        assert order["status"] == "filled"
    held = {s: fake.positions[s]["qty"] * fake.price(s) for s in SYMBOLS}
    total = sum(held.values()) + fake.cash
    assert held["CCC"] / total == pytest.approx(0.6, abs=0.01) and fake.cash >= 0
    assert_journal_matches_broker(loop, fake)
