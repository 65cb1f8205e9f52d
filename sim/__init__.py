"""The market simulator: fills, costs, positions, equity, trade log and metrics (numpy only).

The env (``envs``) and the backtester (``sim.backtest``) both drive :class:`Simulator`, so rewards and
backtest equity come from the same code. :class:`PortfolioSimulator` is the same rule for an account that holds
several assets (``PortfolioEnv-v0`` and the portfolio backtester drive it); with one asset it gives
:class:`Simulator`'s numbers (tested to 1e-9 for every cost model, fill time, shorts and fees).
"""

from .costs import (
    FixedBpsSlippage,
    SlippageModel,
    SpreadSlippage,
    VolatilityScaledSlippage,
    VolumeScaledSlippage,
    make_slippage,
)
from .engine import FILL_AT, Costs, Simulator, StepResult
from .portfolio import PortfolioSimulator, PortfolioStep
from .metrics import bars_per_year, compute_metrics, drawdown_curve, format_metrics_table, metrics_to_json
from .synthetic import generate_ohlcv

__all__ = [
    "FILL_AT",
    "Costs",
    "FixedBpsSlippage",
    "SlippageModel",
    "PortfolioSimulator",
    "PortfolioStep",
    "Simulator",
    "SpreadSlippage",
    "StepResult",
    "VolatilityScaledSlippage",
    "VolumeScaledSlippage",
    "bars_per_year",
    "compute_metrics",
    "drawdown_curve",
    "format_metrics_table",
    "generate_ohlcv",
    "make_slippage",
    "metrics_to_json",
]
