"""The small DQN setup of the DQN option tests (``test_dqn_options.py``, ``test_learning_options.py``): a planted
AR(1) market and a config that trains in a second."""

from __future__ import annotations

from typing import Any

from agents.config import AgentConfig
from features import DatasetConfig, build_market_data, synthetic_bars
from features.market_data import MarketData


def planted_market() -> MarketData:
    """One AR(1) symbol (phi -0.2, 700 bars, seed 0), window 8."""
    return build_market_data({"SYN": synthetic_bars(700, phi=-0.2, seed=0)}, DatasetConfig(window=8))


def dqn_config(**overrides: Any) -> AgentConfig:
    """A DQN config of 600 steps; a dict override merges into its section, anything else replaces the key.

    :param overrides: top-level keys of the agent config.
    """
    base = {"algo": "dqn", "total_timesteps": 600, "n_envs": 4, "eval_freq": 600, "min_tstat": -1e9,
            "min_improvement": -1e9, "env": {"episode_length": 64},
            "dqn": {"learning_starts": 100, "buffer_size": 2000, "batch_size": 32}}
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return AgentConfig.from_dict(base)
