"""Learning options measured by ``benchmarks/bench_learning.py`` (issue 26): each trains, saves and reloads as
the agent it was trained as, and a bad setting is a one-line error naming it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sb3_contrib import QRDQN

from agents.callbacks import CheckpointRule
from agents.evaluation import evaluate_policy
from agents.saved_agent import load_agent
from agents.training import train_agent
from envs.backtest import backtest
from features import DatasetConfig, build_market_data, synthetic_bars
from sim.engine import Costs

from dqn_helpers import dqn_config, planted_market


@pytest.fixture(scope="module")
def data():
    return planted_market()



def test_qrdqn_trains_saves_and_reloads_as_qrdqn_acting_on_its_mean_quantile(tmp_path, data):
    summary = train_agent(dqn_config(dqn={"n_quantiles": 7, "n_steps": 1}), data, tmp_path / "run", progress=False)
    assert summary["fallback"] is None
    best = tmp_path / "run" / "best"
    meta = json.loads((best / "agent.json").read_text())
    assert meta["model_class"] == "QRDQN" and meta["config"]["dqn"]["n_quantiles"] == 7
    agent = load_agent(best, data)
    assert isinstance(agent.model, QRDQN) and agent.model.policy.quantile_net.n_quantiles == 7
    observations = np.random.default_rng(0).normal(size=(32, agent.model.observation_space.shape[0]))
    with torch.no_grad():
        quantiles = agent.model.policy.quantile_net(torch.as_tensor(observations, dtype=torch.float32))
    assert quantiles.shape == (32, 7, 2)
    np.testing.assert_array_equal(agent.act_many(observations.astype(np.float32)),
                                  quantiles.mean(dim=1).argmax(dim=1).numpy())
    first = backtest(agent, data, "test", **agent.env_settings)
    again = backtest(load_agent(best, data), data, "test", **agent.env_settings)
    np.testing.assert_array_equal(first.equity, again.equity)


def test_plain_dqn_records_its_model_class_and_an_unknown_one_is_refused(tmp_path, data):
    train_agent(dqn_config(), data, tmp_path / "run", progress=False)
    path = tmp_path / "run" / "best" / "agent.json"
    meta = json.loads(path.read_text())
    assert meta["model_class"] == "DQN"
    path.write_text(json.dumps({**meta, "model_class": "Rainbow"}))
    with pytest.raises(ValueError, match=r"model_class 'Rainbow' is not known for algo 'dqn'"):
        load_agent(tmp_path / "run" / "best", data)


@pytest.mark.parametrize("overrides, message", [
    ({"dqn": {"n_quantiles": -1}}, "dqn.n_quantiles=-1"),
    ({"dqn": {"n_quantiles": 2.5}}, "dqn.n_quantiles: expected int"),
    ({"dqn": {"n_quantiles": 5, "double_q": True}}, "dqn.double_q=true and dqn.n_quantiles"),
])
def test_bad_learning_options_are_named(overrides, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        dqn_config(**overrides)


class _Alternating:
    """Long every other bar: many orders on every symbol."""

    name = "alternating"

    def reset(self) -> None:
        self.k = 0

    def act(self, observation: np.ndarray) -> int:
        self.k += 1
        return self.k % 2


def test_checkpoint_score_charges_each_symbols_orders_against_that_symbols_return():
    bars = {"AAA": synthetic_bars(400, seed=1), "BBB": synthetic_bars(400, seed=2), "CCC": synthetic_bars(400, seed=3)}
    data = build_market_data(bars, DatasetConfig(window=8))
    settings = {"action_mode": "discrete", "allow_short": False, "fill_at": "next_open"}
    metrics = evaluate_policy(_Alternating(), data, "validation", Costs(), settings)
    per_symbol = metrics["per_symbol"].values()
    assert metrics["n_symbols"] == 3 and all(s["n_orders"] > 10 for s in per_symbol)
    expected = np.mean([s["log_return"] - 0.0015 * s["n_orders"] for s in per_symbol])
    assert CheckpointRule("cash", turnover_penalty=0.0015).score(metrics) == pytest.approx(expected, abs=1e-12)
