"""backtest(): the same books as the env, baselines worked out by hand, and the saved report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from envs import BacktestResult, TradingEnv, backtest
from features import DatasetConfig, build_market_data, synthetic_bars
from sim import Costs

METRIC_KEYS = {
    "total_return", "cagr", "annual_volatility", "sharpe", "sortino", "calmar", "max_drawdown",
    "max_drawdown_peak", "max_drawdown_trough", "max_drawdown_duration_bars", "win_rate",
    "profit_factor", "avg_trade_pnl", "avg_trade_return", "avg_bars_held", "exposure", "turnover",
    "annual_turnover", "n_trades", "costs_paid", "final_equity", "start_equity", "n_bars",
    "periods_per_year",
}


@pytest.fixture(scope="module")
def market():
    bars = {"SYN": synthetic_bars(400, seed=0, overnight_fraction=0.3),
            "ALT": synthetic_bars(400, seed=1, start_price=50.0, overnight_fraction=0.3)}
    return build_market_data(bars, DatasetConfig(window=8))


class Replay:
    """Plays a fixed list of actions (then repeats the last one)."""

    name = "replay"

    def __init__(self, actions) -> None:
        self.actions = list(actions)
        self.k = 0

    def reset(self) -> None:
        self.k = 0

    def act(self, observation: np.ndarray):
        action = self.actions[min(self.k, len(self.actions) - 1)]
        self.k += 1
        return action


class Constant:
    def __init__(self, action, name: str) -> None:
        self.action, self.name = action, name

    def reset(self) -> None:
        pass

    def act(self, observation: np.ndarray):
        return self.action


@pytest.mark.parametrize(
    "settings",
    [
        {"allow_short": True},
        {"action_mode": "continuous", "allow_short": True},
        {"fill_at": "close"},
    ],
)
def test_env_rewards_reproduce_backtest_equity(market, settings) -> None:
    costs = Costs(commission=0.001, fixed_fee=0.5, slippage=5.0, borrow_rate=1e-4)
    rng = np.random.default_rng(1)
    lo, hi = market.split_range("train", "ALT")
    n_steps = hi - 1 - lo
    if settings.get("action_mode") == "continuous":
        actions = [np.array([a], np.float32) for a in np.repeat(rng.uniform(-1, 1, n_steps // 3 + 1), 3)[:n_steps]]
    else:
        actions = list(rng.integers(0, 3 if settings.get("allow_short") else 2, n_steps))

    result = backtest(Replay(actions), market, "train", costs, symbol="ALT", **settings)

    env = TradingEnv(market, symbol="ALT", split="train", random_start=False, min_equity=0.0, commission=0.001,
                     fixed_fee=0.5, slippage=5.0, borrow_rate=1e-4, **settings)
    _, info = env.reset(seed=123)
    equity, rewards, done = [info["equity"]], [], False
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        equity.append(info["equity"])
        rewards.append(reward)
        done = terminated or truncated
    assert done and len(rewards) == n_steps

    np.testing.assert_allclose(result.equity, equity, rtol=1e-12, atol=0)
    np.testing.assert_allclose(result.rewards, rewards, rtol=1e-12, atol=1e-15)
    growth = np.log(result.equity[-1] / result.equity[0])
    assert np.sum(rewards) == pytest.approx(growth, rel=1e-9, abs=1e-12)
    assert result.rewards.sum() == pytest.approx(growth, rel=1e-9, abs=1e-12)
    assert result.metrics["final_equity"] == pytest.approx(equity[-1], rel=1e-12)
    assert len(result.fills["row"]) > 20
    assert result.metrics["costs_paid"] == pytest.approx(env.core.sim.costs_paid[0], rel=1e-12)


def test_cash_policy_is_flat(market) -> None:
    result = backtest(Constant(0, "cash"), market, "test", symbol="SYN")
    assert np.all(result.equity == 100_000.0)
    assert np.all(result.position == 0.0)
    assert len(result.fills["row"]) == 0 and len(result.trades["net_pnl"]) == 0
    metrics = result.metrics
    assert metrics["n_trades"] == 0 and metrics["total_return"] == 0.0 and metrics["costs_paid"] == 0.0
    assert metrics["max_drawdown"] == 0.0 and metrics["exposure"] == 0.0 and metrics["sharpe"] == 0.0


def test_buy_and_hold_is_one_fill_and_tracks_the_price(market) -> None:
    result = backtest(Constant(1, "buy_and_hold"), market, "validation", symbol="SYN")
    lo, hi = market.split_range("validation", "SYN")
    assert result.fills["row"].tolist() == [lo + 1]
    assert len(result.trades["net_pnl"]) == 0  # still open at the end: no closed round trip
    open_ = market.open[lo + 1]
    fill = open_ * 1.0005
    units = 100_000.0 / (fill * 1.001)  # the units, their slippage and commission fit in the equity
    entry_costs = units * open_ * 5e-4 + 0.001 * units * fill
    cash = 100_000.0 - units * fill - 0.001 * units * fill
    assert cash == pytest.approx(0.0, abs=1e-6)
    closes = market.close[lo + 1: hi]
    np.testing.assert_allclose(result.equity[1:], cash + units * closes, rtol=1e-12)
    # equity is the price path of what was left after the entry costs
    np.testing.assert_allclose(result.equity[1:], (100_000.0 - entry_costs) * closes / open_, rtol=1e-12)
    assert result.metrics["costs_paid"] == pytest.approx(entry_costs, rel=1e-12)
    assert result.metrics["exposure"] == pytest.approx((len(result.equity) - 1) / len(result.equity))
    assert len(result.equity) == hi - lo
    np.testing.assert_array_equal(result.timestamps, market.timestamps[lo:hi].astype("datetime64[ns]"))


def test_default_data_and_costs() -> None:
    result = backtest(Constant(1, "buy_and_hold"))
    assert isinstance(result, BacktestResult)
    assert result.split == "test" and result.policy == "buy_and_hold"
    assert "commission 0.1000%" in result.costs and "fixed 5 bps" in result.costs
    assert len(result.fills["row"]) == 1 and result.metrics["costs_paid"] > 0


def test_metrics_keys_and_save(market, tmp_path) -> None:
    actions = [1, 1, 0, 0, 2, 2, 2, 1, 0, 2] * 10
    result = backtest(Replay(actions), market, "train", symbol="ALT", allow_short=True)
    assert METRIC_KEYS <= set(result.metrics)
    assert result.metrics["n_trades"] == len(result.trades["net_pnl"]) > 5
    assert "replay on ALT (train)" in result.table()

    paths = result.save(tmp_path / "report")
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"trades.csv", "equity.csv", "metrics.json",
                                                                 "equity.png"}
    payload = json.loads(paths["metrics"].read_text())
    assert payload["policy"] == "replay" and payload["symbol"] == "ALT" and payload["split"] == "train"
    assert METRIC_KEYS <= set(payload["metrics"])
    assert payload["metrics"]["final_equity"] == pytest.approx(result.equity[-1])
    trades = pd.read_csv(paths["trades"])
    assert list(trades.columns[:2]) == ["entry_time", "exit_time"] and len(trades) == result.metrics["n_trades"]
    assert (pd.to_datetime(trades["exit_time"]) >= pd.to_datetime(trades["entry_time"])).all()
    np.testing.assert_allclose(trades["net_pnl"], result.trades["net_pnl"], rtol=1e-12)
    equity = pd.read_csv(paths["equity"], index_col="timestamp")
    assert list(equity.columns) == ["equity", "drawdown", "position"] and len(equity) == len(result.equity)
    np.testing.assert_allclose(equity["equity"], result.equity, rtol=1e-12)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_without_trades(market, tmp_path) -> None:
    result = backtest(Constant(0, "cash"), market, "test", symbol="SYN")
    paths = result.save(tmp_path, plot=False)
    assert "plot" not in paths and not (tmp_path / "equity.png").exists()
    assert len(pd.read_csv(paths["trades"])) == 0
    json.loads(paths["metrics"].read_text())


def test_backtest_rejects_settings_it_fixes(market) -> None:
    for setting in ({"random_start": True}, {"episode_length": 10}, {"min_equity": 0.5}):
        with pytest.raises(ValueError, match=next(iter(setting))):
            backtest(Constant(0, "cash"), market, "test", **setting)
