"""Synthetic OHLCV markets with a planted, known edge (numpy only).

Log returns follow

``r_t = mu_t + phi * r_{t-1} + signal * sigma * z_{t-1} + sigma * e_t``

with four plantable structures, each 0 (absent) by default:

* ``phi``: an AR(1) edge visible in past returns;
* ``signal``: an edge carried by an observable standard-normal series ``z`` (hidden by default; with
  ``signal_carrier="volume"`` it drives the bar's volume, ``volume = 1e6 * exp(0.3 * z)``, so the edge is
  seen only through volume);
* ``regime_drift``: a two-state Markov drift ``mu_t = +regime_drift`` (up) or ``-regime_drift`` (down),
  each state kept with probability ``regime_persistence`` per bar (mean stay ``1 / (1 - p)`` bars);
* ``period_drift``: a calendar drift ``mu_t = period_drift[t % len(period_drift)]`` (with business-day
  bars starting on a Monday, as :func:`features.synthetic_bars` builds them, a 5-long tuple is a
  day-of-week effect).

``expected_return[t]`` is what the planted rule says about bar ``t + 1`` at the close of bar ``t``:
``E[r_{t+1} | everything up to t, the regime included]``; an oracle that knows the rule (but not the
noise) trades on it. Opens gap from the previous close by a fraction of the bar's move so that
next-open fills differ from closes; highs and lows bracket open and close.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SIGNAL_CARRIERS: tuple[str, ...] = ("hidden", "volume")


def generate_ohlcv(
    n_bars: int = 3000,
    *,
    phi: float = 0.0,
    signal: float = 0.0,
    sigma: float = 0.02,
    start_price: float = 100.0,
    overnight_fraction: float = 0.0,
    signal_carrier: str = "hidden",
    regime_drift: float = 0.0,
    regime_persistence: float = 0.98,
    period_drift: Sequence[float] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Arrays ``open, high, low, close, volume, signal, regime, expected_return`` (float64) of a market.

    :param n_bars: number of bars.
    :param phi: AR(1) coefficient of log returns (0 = no edge).
    :param signal: loading of the next return on the ``signal`` series, in units of ``sigma`` (0 = no edge).
    :param sigma: standard deviation of the return innovation per bar.
    :param start_price: first open.
    :param overnight_fraction: fraction of each bar's return realised between previous close and open
        (0: open equals previous close, so a next-open fill earns the whole next return).
    :param signal_carrier: ``"hidden"`` (the signal is only returned) or ``"volume"`` (it sets the volume).
    :param regime_drift: drift per bar of the up regime (the down regime has its negative; 0 = no regimes).
    :param regime_persistence: probability of staying in the current regime at each bar, in [0, 1).
    :param period_drift: drift per bar by position in a repeating calendar cycle (None = no calendar edge).
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
    if signal_carrier not in SIGNAL_CARRIERS:
        raise ValueError(f"signal_carrier={signal_carrier!r} is not known; expected one of {list(SIGNAL_CARRIERS)}")
    if not 0 <= regime_persistence < 1:
        raise ValueError(f"regime_persistence={regime_persistence} must be in [0, 1)")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n_bars)
    noise = rng.standard_normal(n_bars) * sigma
    # the draws above come first so that markets without regimes or calendars keep their old paths
    regime = np.ones(n_bars)
    if regime_drift:
        switch = np.random.default_rng([seed, 1]).random(n_bars) >= regime_persistence
        regime[0] = 1.0 if np.random.default_rng([seed, 2]).random() < 0.5 else -1.0
        for t in range(1, n_bars):
            regime[t] = -regime[t - 1] if switch[t] else regime[t - 1]
    drift = regime * regime_drift
    if period_drift is not None:
        cycle = np.asarray(period_drift, dtype=np.float64)
        if cycle.ndim != 1 or len(cycle) < 1:
            raise ValueError(f"period_drift={period_drift!r} must be a non-empty sequence of drifts")
        drift = drift + cycle[np.arange(n_bars) % len(cycle)]
    returns = np.empty(n_bars)
    returns[0] = drift[0] + noise[0]
    for t in range(1, n_bars):
        returns[t] = drift[t] + phi * returns[t - 1] + signal * sigma * z[t - 1] + noise[t]
    # what the rule says at the close of t about bar t + 1 (the regime may switch in between)
    next_regime = regime * (2 * regime_persistence - 1) if regime_drift else regime
    expected = next_regime * regime_drift + phi * returns + signal * sigma * z
    if period_drift is not None:
        expected = expected + cycle[(np.arange(n_bars) + 1) % len(cycle)]
    close = start_price * np.exp(np.cumsum(returns))
    prev_close = np.concatenate([[start_price], close[:-1]])
    open_ = prev_close * np.exp(overnight_fraction * returns)
    spread = np.abs(rng.standard_normal(n_bars)) * sigma * 0.5
    high = np.maximum(open_, close) * np.exp(spread)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.standard_normal(n_bars)) * sigma * 0.5)
    volume_noise = z if signal_carrier == "volume" else rng.standard_normal(n_bars)
    volume = np.round(1e6 * np.exp(0.3 * volume_noise))
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume, "signal": z,
            "regime": regime, "expected_return": expected}
