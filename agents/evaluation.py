"""Validation of a policy across every symbol of a split, as the trading metrics the callbacks log."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.backtest import backtest_many
from features.market_data import MarketData
from sim.engine import Costs


def _tstat(values: np.ndarray) -> float:
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return float(values.mean() / spread * np.sqrt(len(values))) if spread > 1e-15 else 0.0


def alpha_tstat(returns: np.ndarray, benchmark: np.ndarray) -> tuple[float, float, float]:
    """Jensen's alpha: OLS of per-bar ``returns`` on ``benchmark`` returns with an intercept.

    :return: ``(alpha per bar, its t statistic, beta)``; t is 0 when the fit is degenerate (a policy in cash
        has no variance; a constant benchmark leaves beta undetermined).
    """
    n = len(returns)
    if n < 3 or len(benchmark) != n:
        return 0.0, 0.0, 0.0
    x = benchmark - benchmark.mean()
    sxx = float(x @ x)
    if sxx <= 1e-30:
        return 0.0, 0.0, 0.0
    beta = float(x @ (returns - returns.mean())) / sxx
    alpha = float(returns.mean() - beta * benchmark.mean())
    residuals = returns - alpha - beta * benchmark
    variance = float(residuals @ residuals) / (n - 2)
    se = np.sqrt(variance * (1.0 / n + benchmark.mean() ** 2 / sxx))
    return alpha, (alpha / se if se > 1e-15 else 0.0), beta


def buy_and_hold_bar_returns(data: MarketData, split: str, costs: Costs, env_settings: dict[str, Any],
                             symbols: list[str] | None = None) -> np.ndarray:
    """Per-bar log returns of buy-and-hold over ``split``, pooled over symbols in the order
    :func:`evaluate_policy` pools a policy's (the benchmark of ``excess_tstat``)."""
    from .baselines import BuyAndHoldPolicy

    settings = {**env_settings, "action_mode": "discrete"}
    policy = BuyAndHoldPolicy(allow_short=bool(env_settings.get("allow_short", False)))
    results = backtest_many(policy, data, split, [costs], list(symbols or data.symbols), **settings)
    return np.concatenate([np.diff(np.log(np.maximum(result.equity, 1e-12))) for result in results])


def evaluate_policy(policy: Any, data: MarketData, split: str, costs: Costs, env_settings: dict[str, Any],
                    symbols: list[str] | None = None, benchmark_returns: np.ndarray | None = None) -> dict[str, Any]:
    """Backtest ``policy`` on each symbol of ``split`` and summarise.

    :param policy: backtester policy.
    :param data: the dataset.
    :param split: ``"validation"`` (checkpoint choice) or ``"test"`` (reporting).
    :param costs: cost models.
    :param env_settings: env settings of the policy (action_mode, allow_short, window, fill_at).
    :param symbols: symbols to run; None takes all.
    :param benchmark_returns: per-bar log returns of a benchmark pooled the same way (see
        :func:`buy_and_hold_bar_returns`); adds ``excess_tstat``, ``excess_log_return`` and Jensen's ``alpha``
        (per bar), ``alpha_tstat`` and ``beta`` of the per-bar returns on the benchmark's (:func:`alpha_tstat`).
    :return: ``tstat`` (t statistic of the pooled per-bar log returns against 0, the cash baseline),
        ``log_return`` (mean over symbols of log final/initial equity), ``total_return``, ``sharpe``,
        ``max_drawdown`` (worst), ``n_trades``, ``n_orders``, ``turnover``, ``costs_paid`` (sums), ``n_bars``,
        ``n_symbols``,
        ``per_symbol``, and with a benchmark ``excess_tstat`` (t statistic of per-bar log return minus the
        benchmark's) and ``excess_log_return`` (mean over symbols of the log return minus the benchmark's).
    """
    per_symbol = {}
    bar_returns = []
    names = list(symbols or data.symbols)
    # every symbol in lockstep: one batched policy call per bar instead of one per symbol
    for symbol, result in zip(names, backtest_many(policy, data, split, [costs], names, **env_settings)):
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
    metrics = {
        "tstat": _tstat(pooled),
        "log_return": float(np.mean([r["log_return"] for r in rows])),
        "total_return": float(np.mean([r["total_return"] for r in rows])),
        "sharpe": float(np.mean([r["sharpe"] for r in rows])),
        "max_drawdown": float(np.max([r["max_drawdown"] for r in rows])),
        "n_trades": int(sum(r["n_trades"] for r in rows)),
        "n_orders": int(sum(r["n_orders"] for r in rows)),
        "turnover": float(np.mean([r["turnover"] for r in rows])),
        "costs_paid": float(sum(r["costs_paid"] for r in rows)),
        "exposure": float(np.mean([r["exposure"] for r in rows])),
        "n_bars": int(len(pooled)),
        "n_symbols": len(rows),
        "per_symbol": per_symbol,
    }
    if benchmark_returns is not None:
        if len(benchmark_returns) != len(pooled):
            raise ValueError(f"benchmark has {len(benchmark_returns)} bar returns; the policy has {len(pooled)}")
        excess = pooled - benchmark_returns
        metrics["excess_tstat"] = _tstat(excess)
        metrics["excess_log_return"] = float(excess.sum() / len(rows))
        alpha, t, beta = alpha_tstat(pooled, np.asarray(benchmark_returns, dtype=np.float64))
        metrics.update(alpha=alpha, alpha_tstat=float(t), beta=beta)
    return metrics
