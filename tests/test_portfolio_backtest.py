"""The portfolio backtester (envs/portfolio_backtest.py) and the allocation baseline policies
(agents/portfolio_baselines.py) on tiny synthetic universes of 3 symbols."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from agents.portfolio_baselines import AllocationPolicy, CashPolicy, fit_allocation_policy
from envs.portfolio_backtest import CLOSE_ONLY_NOTE, backtest_portfolio, universe_buy_and_hold
from features import DatasetConfig, build_market_data, synthetic_bars
from features.panel import Panel
from sim.metrics import bars_per_year

SYMBOLS = ("AAA", "BBB", "CCC")
ZERO_COSTS = {"commission": 0.0, "fixed_fee": 0.0, "slippage": 0.0, "borrow_rate": 0.0}


def make_bars(n_bars: int = 300, close_only: bool = False) -> dict[str, pd.DataFrame]:
    """{symbol: bars} of 3 synthetic assets with overnight gaps (open != previous close).

    :param n_bars: bars per symbol.
    :param close_only: set open = high = low = close (a close-only source).
    """
    bars = {}
    for i, symbol in enumerate(SYMBOLS):
        frame = synthetic_bars(n_bars, seed=11 * i + 3, start_price=40.0 + 30.0 * i, sigma=0.01 + 0.01 * i,
                               overnight_fraction=0.3)
        if close_only:
            for column in ("open", "high", "low"):
                frame[column] = frame["close"]
        bars[symbol] = frame
    return bars


def make_panel(bars: dict[str, pd.DataFrame]) -> Panel:
    return Panel.from_market_data(build_market_data(bars, DatasetConfig(window=8)))


@pytest.fixture(scope="module")
def panel() -> Panel:
    return make_panel(make_bars())


class WrongLength:
    """A policy whose actions have one value too few (no cash entry)."""

    action_transform = "weights"
    rebalance_every = None
    name = "wrong_length"

    def reset(self) -> None:
        pass

    def act(self, observation: np.ndarray) -> list[float]:
        return [0.5, 0.25, 0.25]


def test_buy_and_hold_sends_one_order_per_asset_all_on_the_first_step(panel: Panel) -> None:
    policy = fit_allocation_policy("buy_and_hold", panel)
    assert policy.rebalance_every is None
    result = backtest_portfolio(policy, panel, "test")
    assert result.n_orders == len(SYMBOLS) == result.metrics["n_orders"]
    assert (result.fills["step"] == 0).all()
    assert sorted(result.fills["symbol"]) == sorted(SYMBOLS)
    # decided at the split's first close, filled at the next open
    assert (result.fills["row"] == panel.split_range("test")[0] + 1).all()


def test_equal_weight_rebalanced_differs_from_buy_and_hold_only_by_rebalancing_orders(panel: Panel) -> None:
    every = 10
    held = backtest_portfolio(fit_allocation_policy("buy_and_hold", panel), panel, "test")
    rebalanced = backtest_portfolio(fit_allocation_policy("equal_weight", panel, rebalance_every=every), panel, "test")
    first = rebalanced.fills[rebalanced.fills["step"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, held.fills)
    later = rebalanced.fills[rebalanced.fills["step"] > 0]
    assert len(later) > 0 and (later["step"] % every == 0).all()
    # the same account until the first rebalancing order fills (step `every`, at the next open)
    assert np.array_equal(rebalanced.equity[: every + 1], held.equity[: every + 1])
    assert rebalanced.equity[every + 1] != held.equity[every + 1]


def test_buy_and_hold_with_zero_costs_ends_at_the_arithmetic_of_first_fills_and_last_closes(panel: Panel) -> None:
    cash = 50_000.0
    policy = fit_allocation_policy("buy_and_hold", panel)
    result = backtest_portfolio(policy, panel, "test", ZERO_COSTS, initial_cash=cash)
    start, end = panel.split_range("test")
    first_open = panel.open[start + 1]
    fills = result.fills.set_index("symbol").loc[panel.symbols]
    np.testing.assert_array_equal(fills["fill_price"].to_numpy(), first_open)
    expected = float(np.sum(policy.weights * cash / first_open * panel.close[end - 1]))
    assert result.equity[-1] == pytest.approx(expected, rel=1e-9, abs=0.0)
    assert result.total_costs == 0.0


def test_reported_costs_equal_the_fill_logs_commission_plus_slippage(panel: Panel) -> None:
    policy = fit_allocation_policy("inverse_volatility", panel, rebalance_every=5)
    result = backtest_portfolio(policy, panel, "test", {"commission": 0.002, "slippage": 12.0})
    from_log = float(result.fills["commission"].sum() + result.fills["slippage"].sum())
    assert result.n_orders > len(SYMBOLS)
    assert result.total_costs == pytest.approx(from_log, rel=1e-12)
    assert result.metrics["costs_paid"] == pytest.approx(from_log, rel=1e-12)
    assert result.turnover == pytest.approx(result.fills["notional"].sum() / result.equity.mean(), rel=1e-12)


def test_policy_fit_uses_only_the_train_rows() -> None:
    bars = make_bars()
    base = make_panel(bars)
    train_end = pd.Timestamp(int(base.timestamps[base.split_range("train")[1] - 1]), tz="UTC")
    shocked = {symbol: frame.copy() for symbol, frame in bars.items()}
    frame = shocked["AAA"]
    after = frame.index > train_end
    factor = np.exp(np.random.default_rng(0).normal(0.0, 0.08, int(after.sum())))  # far more volatile later
    frame.loc[after, ["open", "high", "low", "close"]] = frame.loc[after, ["open", "high", "low", "close"]].mul(
        factor, axis=0)
    changed = make_panel(shocked)
    assert changed.split_rows == base.split_rows
    assert not np.array_equal(changed.close[changed.split_range("test")[0]:], base.close[base.split_range("test")[0]:])
    np.testing.assert_array_equal(fit_allocation_policy("inverse_volatility", changed).weights,
                                  fit_allocation_policy("inverse_volatility", base).weights)
    # the same shock on all rows does move the weights: the fit would have seen it
    assert not np.allclose(fit_allocation_policy("inverse_volatility", changed, split="test").weights,
                           fit_allocation_policy("inverse_volatility", base, split="test").weights)


def test_the_same_backtest_twice_gives_the_same_numbers(panel: Panel) -> None:
    policy = fit_allocation_policy("minimum_variance", panel, rebalance_every=7)
    one = backtest_portfolio(policy, panel, "test")
    two = backtest_portfolio(policy, panel, "test")
    assert np.array_equal(one.equity, two.equity)
    assert np.array_equal(one.weights, two.weights)
    pd.testing.assert_frame_equal(one.fills, two.fills)
    assert one.metrics == two.metrics


def test_result_has_one_row_per_split_row_with_utc_times_and_the_timelines_annualisation(panel: Panel) -> None:
    result = backtest_portfolio(CashPolicy(panel.symbols), panel, "validation")
    start, end = panel.split_range("validation")
    assert len(result.equity) == end - start and result.equity.dtype == np.float64
    assert result.weights.shape == (end - start, len(SYMBOLS) + 1)
    assert str(result.timestamps.tz) == "UTC"
    assert np.array_equal(result.timestamps.as_unit("ns").asi8, panel.timestamps[start:end])
    assert result.metrics["periods_per_year"] == pytest.approx(bars_per_year(panel.timestamps))
    assert result.n_orders == 0 and (result.equity == 100_000.0).all() and (result.weights[:, -1] == 1.0).all()
    assert result.notes == []


def test_save_writes_the_files_and_leaves_no_temp_files(panel: Panel, tmp_path) -> None:
    result = backtest_portfolio(fit_allocation_policy("equal_weight", panel, rebalance_every=10), panel, "test")
    folder = tmp_path / "run"
    paths = result.save(folder)
    names = {"equity.csv", "weights.csv", "fills.csv", "metrics.json", "equity.png"}
    assert set(os.listdir(folder)) == names and {p.name for p in paths.values()} == names
    assert os.listdir(tmp_path) == ["run"]
    payload = json.loads((folder / "metrics.json").read_text())
    assert payload["metrics"]["n_orders"] == result.n_orders and payload["rebalance_every"] == 10
    equity = pd.read_csv(folder / "equity.csv")
    assert len(equity) == len(result.equity) and list(pd.read_csv(folder / "weights.csv").columns)[-1] == "cash"
    assert len(pd.read_csv(folder / "fills.csv")) == result.n_orders


def test_universe_buy_and_hold_is_equal_weights_bought_once(panel: Panel) -> None:
    result = universe_buy_and_hold(panel, "test", ZERO_COSTS)
    assert result.n_orders == len(SYMBOLS) and (result.fills["step"] == 0).all()
    start = panel.split_range("test")[0]
    values = result.fills.set_index("symbol").loc[panel.symbols, "notional"].to_numpy()
    np.testing.assert_allclose(values, 100_000.0 / len(SYMBOLS), rtol=1e-12)
    assert result.fills["row"].iloc[0] == start + 1


def test_wrong_length_action_is_a_one_line_error_naming_the_expected_size(panel: Panel) -> None:
    with pytest.raises(ValueError, match=r"policy wrong_length, step 0 .*action has 3 values; expected 4") as info:
        backtest_portfolio(WrongLength(), panel, "test")
    assert "\n" not in str(info.value)


def test_policy_for_other_symbols_is_refused(panel: Panel) -> None:
    policy = AllocationPolicy("equal_weight", [0.5, 0.5], ["AAA", "BBB"], 21)
    with pytest.raises(ValueError, match=r"symbols=\['AAA', 'BBB'\] differ from the given Panel's"):
        backtest_portfolio(policy, panel, "test")


def test_close_only_data_adds_the_fill_note() -> None:
    panel = make_panel(make_bars(close_only=True))
    assert panel.close_only.all()
    result = backtest_portfolio(fit_allocation_policy("equal_weight", panel), panel, "test")
    assert result.notes == [CLOSE_ONLY_NOTE] and CLOSE_ONLY_NOTE == "close-only data: orders fill at the next close"
    assert "note: close-only data" in result.table()


def test_describe_says_where_the_weights_were_fitted_and_how_they_are_kept(panel: Panel) -> None:
    assert fit_allocation_policy("minimum_variance", panel, rebalance_every=21).describe() == (
        "minimum variance (skfolio MeanRisk, variance): refit on train rows, rebalanced every 21 bars")
    assert fit_allocation_policy("buy_and_hold", panel, rebalance_every=21).describe().endswith(
        "refit on train rows, bought once, then held")


def test_plot_refuses_a_benchmark_of_other_rows_and_a_pickled_result_needs_one(panel: Panel, tmp_path) -> None:
    import pickle

    result = backtest_portfolio(fit_allocation_policy("equal_weight", panel), panel, "test")
    other = universe_buy_and_hold(panel, "validation")
    with pytest.raises(ValueError, match=r"benchmark covers \d+ rows from .*: run it on the same universe and split"):
        result.save(tmp_path / "a", benchmark=other)
    assert not (tmp_path / "a").exists()
    copy = pickle.loads(pickle.dumps(result))
    assert np.array_equal(copy.equity, result.equity) and copy.benchmark_of is None
    with pytest.raises(ValueError, match=r"pass benchmark=universe_buy_and_hold"):
        copy.save(tmp_path / "b")
    copy.save(tmp_path / "c", plot=False)
    assert sorted(os.listdir(tmp_path / "c")) == ["equity.csv", "fills.csv", "metrics.json", "weights.csv"]


def test_a_schedule_other_than_the_policys_is_said_in_the_description(panel: Panel) -> None:
    result = backtest_portfolio(fit_allocation_policy("buy_and_hold", panel), panel, "test", rebalance_every=10)
    assert result.description.endswith("bought once, then held (this backtest: rebalanced every 10 bars)")
    assert result.rebalance_every == 10 and (result.fills["step"] % 10 == 0).all() and result.n_orders > 3
