"""Validation of a policy across every symbol of a split, as the trading metrics the callbacks log."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.backtest import backtest
from features.market_data import MarketData
from sim.engine import Costs


def evaluate_policy(policy: Any, data: MarketData, split: str, costs: Costs, env_settings: dict[str, Any],
                    symbols: list[str] | None = None) -> dict[str, Any]:
    """Backtest ``policy`` on each symbol of ``split`` and summarise.

    :param policy: backtester policy.
    :param data: the dataset.
    :param split: ``"validation"`` (checkpoint choice) or ``"test"`` (reporting).
    :param costs: cost models.
    :param env_settings: env settings of the policy (action_mode, allow_short, window, fill_at).
    :param symbols: symbols to run; None takes all.
    :return: ``tstat`` (t statistic of the pooled per-bar log returns against 0, the cash baseline),
        ``log_return`` (mean over symbols of log final/initial equity), ``total_return``, ``sharpe``,
        ``max_drawdown`` (worst), ``n_trades``, ``n_orders``, ``turnover``, ``costs_paid`` (sums), and
        ``per_symbol``.
    """
    per_symbol = {}
    bar_returns = []
    for symbol in symbols or data.symbols:
        result = backtest(policy, data, split, costs, symbol=symbol, **env_settings)
        m = result.metrics
        bar_returns.append(np.diff(np.log(np.maximum(result.equity, 1e-12))))
        per_symbol[symbol] = {
            "log_return": float(np.log(result.equity[-1] / result.equity[0])) if result.equity[-1] > 0 else -np.inf,
            "total_return": m["total_return"],
            "sharpe": m["sharpe"] or 0.0,
            "max_drawdown": m["max_drawdown"],
            "n_trades": m["n_trades"],
            "n_orders": m["n_orders"],
            "turnover": m["turnover"] or 0.0,
            "costs_paid": m["costs_paid"],
            "exposure": m["exposure"] or 0.0,
        }
    rows = list(per_symbol.values())
    pooled = np.concatenate(bar_returns)
    spread = pooled.std(ddof=1) if len(pooled) > 1 else 0.0
    tstat = float(pooled.mean() / spread * np.sqrt(len(pooled))) if spread > 1e-15 else 0.0
    return {
        "tstat": tstat,
        "log_return": float(np.mean([r["log_return"] for r in rows])),
        "total_return": float(np.mean([r["total_return"] for r in rows])),
        "sharpe": float(np.mean([r["sharpe"] for r in rows])),
        "max_drawdown": float(np.max([r["max_drawdown"] for r in rows])),
        "n_trades": int(sum(r["n_trades"] for r in rows)),
        "n_orders": int(sum(r["n_orders"] for r in rows)),
        "turnover": float(np.mean([r["turnover"] for r in rows])),
        "costs_paid": float(sum(r["costs_paid"] for r in rows)),
        "exposure": float(np.mean([r["exposure"] for r in rows])),
        "per_symbol": per_symbol,
    }
