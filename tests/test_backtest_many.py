"""backtest_many (every symbol x cost level in lockstep, one batched forward pass per bar) gives what
one backtest per pair gives: the re-scoring the benchmark relies on is the backtester itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.baselines import make_baseline
from agents.supervised_policy import SupervisedThresholdPolicy
from envs.backtest import backtest, backtest_many
from features import DatasetConfig, build_market_data, synthetic_bars
from features.preprocessing import Preprocessing
from sim.engine import Costs
from supervised.bundle import load_model, save_bundle
from supervised.models import ModelConfig, build_model

COSTS = [Costs(0.0, slippage=0.0), Costs(0.001, slippage=5.0), Costs(0.002, fixed_fee=1.0, slippage=20.0)]


@pytest.fixture(scope="module")
def data():
    bars = {"A": synthetic_bars(400, phi=-0.2, seed=0), "B": synthetic_bars(380, seed=1, start_price=30.0)}
    return build_market_data(bars, DatasetConfig(window=8))


def check_same(policy, data, **settings) -> int:
    many = backtest_many(policy, data, "test", COSTS, data.symbols, **settings)
    pairs = [(s, c) for s in data.symbols for c in COSTS]
    orders = 0
    for (symbol, cost), result in zip(pairs, many):
        single = backtest(policy, data, "test", cost, symbol=symbol, **settings)
        assert result.symbol == symbol and result.costs == cost.describe()
        np.testing.assert_allclose(result.equity, single.equity, rtol=1e-12)
        np.testing.assert_array_equal(result.fills["row"], single.fills["row"])
        assert result.metrics["n_orders"] == single.metrics["n_orders"]
        orders += single.metrics["n_orders"]
    return orders


@pytest.mark.parametrize("name", ["buy_and_hold", "random", "sma_crossover"])
def test_baselines_score_the_same_in_lockstep(data, name) -> None:
    assert check_same(make_baseline(name, data, seed=3), data) > 0


def threshold_policy(data, tmp_path) -> SupervisedThresholdPolicy:
    torch.manual_seed(0)
    config = ModelConfig(kind="lstm", window=8, n_features=data.n_features, n_assets=2, hidden_size=8)
    model = build_model(config)
    save_bundle(tmp_path / "m", model, config, preprocessing=Preprocessing.of(data), label=data.label,
                threshold=0.5, dataset_hashes={})
    loaded = load_model(tmp_path / "m")
    rows = data.sample_indices("test")
    median = float(np.median(loaded.predict_proba(data.windows(rows), data.row_asset_ids[rows])))
    return SupervisedThresholdPolicy(loaded, entry_threshold=median, exit_threshold=median - 0.01, max_holding=5)


def test_supervised_threshold_policy_scores_the_same_in_lockstep(data, tmp_path) -> None:
    assert check_same(threshold_policy(data, tmp_path), data) > 20


class EventPathOnly:
    """The same policy without ``act_path``: the backtester must step it bar by bar."""

    def __init__(self, policy) -> None:
        self.policy, self.preprocessing = policy, policy.preprocessing

    def reset(self) -> None:
        self.policy.reset()

    def act(self, observation):
        return self.policy.act(observation)

    def batch_actor(self, n):
        return self.policy.batch_actor(n)


@pytest.mark.parametrize("costs", [COSTS, [Costs(0.001, fixed_fee=150_000.0)]], ids=["costs", "buys-never-fill"])
def test_the_threshold_policy_fast_path_equals_the_event_path(data, tmp_path, monkeypatch, costs) -> None:
    """The whole split's probabilities in one forward pass per symbol, then the simulator only where the
    target changes: the event path's equity and fills. Where a buy cannot fill (a fee above equity), the
    policy's assumed position is wrong and the backtester falls back to the event path."""
    policy = threshold_policy(data, tmp_path)
    calls = []
    predict = policy.model.predict_proba
    monkeypatch.setattr(policy.model, "predict_proba", lambda w, a: calls.append(len(w)) or predict(w, a))
    fast = backtest_many(policy, data, "test", costs, data.symbols)
    n_bars = sum(len(r.equity) - 1 for r in fast[:: len(costs)])
    event = backtest_many(EventPathOnly(policy), data, "test", costs, data.symbols)
    orders = 0
    for a, b in zip(fast, event):
        np.testing.assert_allclose(a.equity, b.equity, rtol=1e-12)
        np.testing.assert_array_equal(a.fills["row"], b.fills["row"])
        np.testing.assert_array_equal(a.fills["fill_price"], b.fills["fill_price"])
        assert a.metrics["n_orders"] == b.metrics["n_orders"]
        orders += a.metrics["n_orders"]
    if len(costs) > 1:
        assert orders > 20
        assert calls[: len(data.symbols)] == [len(r.equity) - 1 for r in fast[:: len(costs)]]  # one pass per symbol
    else:
        assert orders == 0 and sum(calls) > n_bars  # the fast path ran, failed its check, the event path decided


def test_a_saved_agent_scores_the_same_in_lockstep(data, tmp_path) -> None:
    from agents.config import AgentConfig
    from agents.saved_agent import load_agent
    from agents.training import train_agent

    config = AgentConfig.from_dict({"total_timesteps": 512, "n_envs": 2, "eval_freq": 512, "min_tstat": -1e9,
                                    "min_improvement": -1e9, "ppo": {"n_steps": 64, "batch_size": 64},
                                    "env": {"episode_length": 32}})
    train_agent(config, data, tmp_path / "run", progress=False)
    agent = load_agent(tmp_path / "run" / "best")
    check_same(agent, data, **agent.env_settings)


def test_the_backtest_plot_draws_buy_and_hold_on_the_same_bars(data, tmp_path, monkeypatch) -> None:
    import importlib

    from experiments import backtest as cli

    module = importlib.import_module("envs.backtest")  # the module: `envs.backtest` the attribute is the function

    drawn = []
    monkeypatch.setattr(module, "_plot_equity", lambda result, path, benchmark=None: drawn.append((result, benchmark)))
    data.save(tmp_path / "ds")
    cli.main(["--policy", "sma_crossover", "--dataset", str(tmp_path / "ds"), "--runs-dir", str(tmp_path / "runs"),
              "--run-name", "bt"])
    assert [r.symbol for r, _ in drawn] == data.symbols
    for result, benchmark in drawn:
        assert benchmark is not None and benchmark.policy == "buy_and_hold"
        np.testing.assert_array_equal(benchmark.timestamps, result.timestamps)
