"""The checkpoint rule: a bull market cannot make a policy that loses to buy-and-hold look good."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from agents.baselines import BuyAndHoldPolicy
from agents.callbacks import CheckpointRule
from agents.config import AgentConfig
from agents.evaluation import buy_and_hold_bar_returns, evaluate_policy
from features import DatasetConfig, build_market_data
from sim.engine import Costs
from sim.synthetic import generate_ohlcv

COSTS = Costs()
SETTINGS = {"action_mode": "discrete", "allow_short": False, "fill_at": "next_open"}


def _bull_market():
    arrays = generate_ohlcv(2000, sigma=0.01, period_drift=(0.003,), seed=4)
    index = pd.date_range("2015-01-05", periods=2000, freq="B", tz="UTC", name="timestamp")
    bars = pd.DataFrame({k: arrays[k] for k in ("open", "high", "low", "close", "volume")}, index=index)
    return build_market_data({"BULL": bars}, DatasetConfig(window=8))


class _MostlyLong:
    """Long 90% of bars at random, trading often: rides the drift, loses to holding."""

    name = "mostly_long"

    def reset(self) -> None:
        self._rng = np.random.default_rng(0)

    def act(self, observation: np.ndarray) -> int:
        return int(self._rng.random() < 0.9)


def test_a_long_biased_churner_beats_cash_but_not_buy_and_hold_and_is_refused():
    data = _bull_market()
    benchmark = buy_and_hold_bar_returns(data, "validation", COSTS, SETTINGS)
    policy = _MostlyLong()
    policy.reset()
    metrics = evaluate_policy(policy, data, "validation", COSTS, SETTINGS, benchmark_returns=benchmark)
    assert metrics["tstat"] >= 1.5 and metrics["log_return"] > 0.3  # the bull window makes it look good
    assert metrics["excess_tstat"] < 0 and metrics["excess_log_return"] < 0
    assert CheckpointRule("cash", min_tstat=1.5).qualifies(metrics)
    assert not CheckpointRule("cash_and_buy_and_hold", min_tstat=1.5, min_excess_tstat=0.0).qualifies(metrics)
    # Jensen's alpha sees the same thing: market exposure, no skill
    assert 0.7 < metrics["beta"] < 1.0 and metrics["alpha"] < 0 and metrics["alpha_tstat"] < 0
    assert not CheckpointRule("cash_and_alpha", min_tstat=1.5, min_excess_tstat=0.0).qualifies(metrics)


def test_alpha_credits_timing_that_loses_to_holding_through_a_bull_window():
    """In the market one bar in three when it is about to rise (a stand-in for timing skill), paying a round
    trip each time: less than holding through a strong bull window, but plain positive alpha."""
    from agents.evaluation import alpha_tstat

    rng = np.random.default_rng(1)
    market = rng.normal(0.003, 0.01, 600)
    timed = np.where((market > 0) & (np.arange(600) % 3 == 0), market - 0.003, 0.0)
    excess = timed - market
    alpha, t, beta = alpha_tstat(timed, market)
    metrics = {"tstat": timed.mean() / timed.std(ddof=1) * np.sqrt(600), "alpha_tstat": t,
               "excess_tstat": excess.mean() / excess.std(ddof=1) * np.sqrt(600)}
    assert metrics["tstat"] > 1.0 and metrics["excess_tstat"] < -2 and t > 2 and alpha > 0
    assert CheckpointRule("cash_and_alpha", min_tstat=1.0).qualifies(metrics)
    assert not CheckpointRule("cash_and_buy_and_hold", min_tstat=1.0).qualifies(metrics)


def test_alpha_tstat_is_the_ols_intercept_t_statistic():
    from agents.evaluation import alpha_tstat

    rng = np.random.default_rng(0)
    market = rng.normal(0.001, 0.01, 500)
    returns = 0.0005 + 0.6 * market + rng.normal(0, 0.004, 500)
    alpha, t, beta = alpha_tstat(returns, market)
    x = np.column_stack([np.ones(500), market])
    coef, ssr, *_ = np.linalg.lstsq(x, returns, rcond=None)
    se = np.sqrt(ssr[0] / 498 * np.linalg.inv(x.T @ x)[0, 0])
    assert (alpha, beta) == pytest.approx(tuple(coef), rel=1e-9) and t == pytest.approx(coef[0] / se, rel=1e-9)
    assert alpha_tstat(np.zeros(500), market) == (0.0, 0.0, 0.0)  # cash: nothing to test
    assert alpha_tstat(returns, np.full(500, 0.001)) == (0.0, 0.0, 0.0)  # a constant benchmark: beta undetermined


def test_buy_and_hold_has_no_excess_over_itself():
    data = _bull_market()
    benchmark = buy_and_hold_bar_returns(data, "validation", COSTS, SETTINGS)
    metrics = evaluate_policy(BuyAndHoldPolicy(), data, "validation", COSTS, SETTINGS, benchmark_returns=benchmark)
    assert metrics["excess_tstat"] == 0.0 and metrics["excess_log_return"] == pytest.approx(0.0, abs=1e-12)


def test_turnover_is_charged_in_the_score():
    rule = CheckpointRule("cash", turnover_penalty=0.0015)
    assert rule.score({"log_return": 0.30, "n_orders": 100}) == pytest.approx(0.15)
    assert "0.0015 x orders" in rule.describe()


def test_the_default_rule_and_its_thresholds():
    config = AgentConfig()
    rule = CheckpointRule.of(config)
    assert config.selection_rule == "cash_and_buy_and_hold" and rule.needs_buy_and_hold
    assert rule.min_excess_tstat == 0.0
    # disabling the cash test (as smoke tests do to keep any checkpoint) disables the buy-and-hold one too
    assert CheckpointRule.of(AgentConfig(min_tstat=-1e9)).min_excess_tstat == -1e9
    with pytest.raises(ValueError, match="selection_rule='sharpe' is not known"):
        AgentConfig(selection_rule="sharpe")


def test_the_summary_and_agent_json_name_the_rule(tmp_path):
    from agents.training import train_agent

    data = _bull_market()
    config = AgentConfig.from_dict({"total_timesteps": 512, "n_envs": 2, "eval_freq": 512,
                                    "ppo": {"n_steps": 64, "batch_size": 64}, "env": {"episode_length": 32}})
    summary = train_agent(config, data, tmp_path / "run", progress=False)
    meta = json.loads((tmp_path / "run" / "best" / "agent.json").read_text())
    assert summary["selection_rule"] == meta["selection_rule"] == CheckpointRule.of(config).describe()
    assert "buy-and-hold" in summary["selection_rule"]
