"""Gymnasium environments over the market simulator.

Importing this package registers ``TradingEnv-v0``::

    import gymnasium as gym
    import envs  # noqa: F401  (or gym.make("envs:TradingEnv-v0") with no import)
    env = gym.make("TradingEnv-v0")
"""

from gymnasium.envs.registration import register, registry

from .backtest import BacktestResult, Policy, backtest
from .core import EnvConfig, TradingCore, default_market_data, resolve_data
from .layout import STATE_FIELDS, ObservationLayout
from .rewards import REWARDS
from .trading_env import TradingEnv
from .vec_env import TradingVecEnv

ENV_ID = "TradingEnv-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="envs.trading_env:TradingEnv")

__all__ = [
    "ENV_ID",
    "REWARDS",
    "STATE_FIELDS",
    "BacktestResult",
    "EnvConfig",
    "ObservationLayout",
    "Policy",
    "TradingCore",
    "TradingEnv",
    "TradingVecEnv",
    "backtest",
    "default_market_data",
    "resolve_data",
]
