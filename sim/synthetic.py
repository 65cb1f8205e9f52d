"""Synthetic OHLCV markets with a planted, known edge (numpy only).

Log returns follow ``r_t = phi * r_{t-1} + signal * z_{t-1} + sigma * e_t`` where ``z`` is an observable
standard-normal signal series; ``phi`` plants an AR(1) edge visible in past returns, ``signal`` an edge
carried by the signal column. Opens gap from the previous close by a fraction of the bar's move so
that next-open fills differ from closes; highs and lows bracket open and close.
"""

from __future__ import annotations

import numpy as np


def generate_ohlcv(
    n_bars: int = 3000,
    *,
    phi: float = 0.0,
    signal: float = 0.0,
    sigma: float = 0.02,
    start_price: float = 100.0,
    overnight_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Arrays ``open, high, low, close, volume, signal`` (float64) of a synthetic market.

    :param n_bars: number of bars.
    :param phi: AR(1) coefficient of log returns (the planted edge in past returns; 0 = no edge).
    :param signal: loading of the next return on the observable ``signal`` series (0 = no edge).
    :param sigma: standard deviation of the return innovation per bar.
    :param start_price: first open.
    :param overnight_fraction: fraction of each bar's return realised between previous close and open
        (0: open equals previous close, so a next-open fill earns the whole next return).
    :param seed: random seed.
    """
    if n_bars < 2:
        raise ValueError(f"n_bars={n_bars} must be at least 2")
    if not -1 < phi < 1:
        raise ValueError(f"phi={phi} must be in (-1, 1) for a stationary AR(1)")
    if sigma <= 0:
        raise ValueError(f"sigma={sigma} must be > 0")
    if not 0 <= overnight_fraction < 1:
        raise ValueError(f"overnight_fraction={overnight_fraction} must be in [0, 1)")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n_bars)
    noise = rng.standard_normal(n_bars) * sigma
    returns = np.empty(n_bars)
    returns[0] = noise[0]
    for t in range(1, n_bars):
        returns[t] = phi * returns[t - 1] + signal * sigma * z[t - 1] + noise[t]
    close = start_price * np.exp(np.cumsum(returns))
    prev_close = np.concatenate([[start_price], close[:-1]])
    open_ = prev_close * np.exp(overnight_fraction * returns)
    spread = np.abs(rng.standard_normal(n_bars)) * sigma * 0.5
    high = np.maximum(open_, close) * np.exp(spread)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.standard_normal(n_bars)) * sigma * 0.5)
    volume = np.round(1e6 * np.exp(0.3 * rng.standard_normal(n_bars)))
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume, "signal": z}
