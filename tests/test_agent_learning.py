"""Evidence that the agents learn: a planted edge is found, and no edge means (almost) no trading.

PPO and DQN alike, each with its package defaults (``configs/ppo.yaml``, ``configs/dqn.yaml``) and a
short budget; seeded, so the runs are deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.baselines import CashPolicy, RandomPolicy
from agents.config import AgentConfig
from agents.evaluation import evaluate_policy
from agents.saved_agent import load_agent
from agents.training import train_agent
from features import DatasetConfig, build_market_data, synthetic_bars
from sim.engine import Costs

COSTS = Costs()  # 0.10% commission + 5 bps slippage per side: always on
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
STEPS = {"ppo": 60_000, "dqn": 100_000}  # DQN: its package default budget


def _market(phi: float) -> object:
    bars = synthetic_bars(4500, phi=phi, sigma=0.02, seed=1)
    return build_market_data({"SYN": bars}, DatasetConfig(window=8))


def _train(tmp_path, data, algo: str) -> tuple[dict, object]:
    settings = AgentConfig.from_yaml(CONFIGS / f"{algo}.yaml").to_dict()
    steps = STEPS[algo]
    settings.update({"total_timesteps": steps, "eval_freq": steps // 3, "seed": 0})
    summary = train_agent(AgentConfig.from_dict(settings), data, tmp_path / "run", progress=False)
    return summary, load_agent(tmp_path / "run" / "best", data)


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_finds_a_planted_edge_well_above_costs(tmp_path, algo):
    data = _market(phi=-0.3)
    summary, agent = _train(tmp_path, data, algo)
    assert summary["fallback"] is None, summary["validation_history"]
    validation = evaluate_policy(agent, data, "validation", COSTS, agent.env_settings)
    random = evaluate_policy(RandomPolicy(seed=0), data, "validation", COSTS, {})
    cash = evaluate_policy(CashPolicy(), data, "validation", COSTS, {})
    assert validation["log_return"] > 0.2  # clearly positive after costs
    assert validation["log_return"] > cash["log_return"] + 0.2
    assert validation["log_return"] > random["log_return"] + 0.2
    assert validation["tstat"] >= 1.5
    held_out = evaluate_policy(agent, data, "test", COSTS, agent.env_settings)
    assert held_out["log_return"] > 0.0


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_without_edge_trades_rarely_and_loses_little(tmp_path, algo):
    data = _market(phi=0.0)
    summary, agent = _train(tmp_path, data, algo)
    for split in ("validation", "test"):
        result = evaluate_policy(agent, data, split, COSTS, agent.env_settings)
        n_bars = int(np.diff(data.split_ranges[split][0])[0])
        # the original models traded thousands of times; here at most a few round trips
        assert result["n_orders"] <= 10, (split, result["n_orders"], summary["validation_history"])
        # and lose little more than those round trips cost (about 0.3% each)
        assert result["total_return"] > -0.05, (split, result["total_return"])
        assert n_bars > 600
