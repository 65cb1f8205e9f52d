"""Gymnasium environments over the market simulator.

Importing this package registers ``TradingEnv-v0`` (one asset) and ``PortfolioEnv-v0`` (a universe, one account)::

    import gymnasium as gym
    import envs  # noqa: F401  (or gym.make("envs:TradingEnv-v0") with no import)
    env = gym.make("TradingEnv-v0")
    env = gym.make("PortfolioEnv-v0")  # or gym.make("envs:PortfolioEnv-v0")
"""

from gymnasium.envs.registration import register, registry

from .backtest import BacktestResult, Policy, backtest
from .core import EnvConfig, TradingCore, default_market_data, resolve_data
from .layout import STATE_FIELDS, ObservationLayout
from .portfolio_core import PortfolioConfig, PortfolioCore, PortfolioLayout, default_universe, resolve_panel
from .portfolio_env import PortfolioEnv, PortfolioVecEnv
from .portfolio_backtest import PortfolioBacktestResult, backtest_portfolio, universe_buy_and_hold
from .rewards import REWARDS
from .trading_env import TradingEnv
from .vec_env import TradingVecEnv

ENV_ID = "TradingEnv-v0"
PORTFOLIO_ENV_ID = "PortfolioEnv-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="envs.trading_env:TradingEnv")
if PORTFOLIO_ENV_ID not in registry:
    register(id=PORTFOLIO_ENV_ID, entry_point="envs.portfolio_env:PortfolioEnv")

__all__ = [
    "ENV_ID",
    "PORTFOLIO_ENV_ID",
    "PortfolioBacktestResult",
    "PortfolioConfig",
    "PortfolioCore",
    "PortfolioEnv",
    "PortfolioLayout",
    "PortfolioVecEnv",
    "default_universe",
    "resolve_panel",
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
    "backtest_portfolio",
    "universe_buy_and_hold",
    "default_market_data",
    "resolve_data",
]
