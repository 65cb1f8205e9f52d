"""Path-dependent labels: "profit target hit before stop loss within the horizon".

The label of bar t looks at bars t+1 .. t+horizon against the entry price ``close[t]``:

- 1.0 when some bar's high reaches ``close[t] * (1 + profit)`` before any bar's low reaches
  ``close[t] * (1 - stop)``;
- 0.0 when the stop is reached first, or neither is reached within the horizon;
- NaN when fewer than ``horizon`` bars follow t (no full horizon, no label).

When one bar touches both the target and the stop, the order inside the bar is unknown: the stop is
counted (the conservative reading). Labels look forward by design and are never observations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .bars import validate_bars


@dataclass(frozen=True)
class LabelConfig:
    """The label definition: take profit ``profit``, stop loss ``stop``, within ``horizon`` bars."""

    profit: float = 0.05
    stop: float = 0.02
    horizon: int = 8

    def __post_init__(self) -> None:
        if not self.profit > 0:
            raise ValueError(f"label profit={self.profit} must be > 0 (a fraction, 0.05 = +5%)")
        if not 0 < self.stop < 1:
            raise ValueError(f"label stop={self.stop} must be in (0, 1) (a fraction, 0.02 = -2%)")
        horizon = self.horizon
        if isinstance(horizon, (bool, np.bool_)) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"label horizon={self.horizon} must be a positive integer number of bars")


def label_array(
    close: np.ndarray, high: np.ndarray, low: np.ndarray, profit: float, stop: float, horizon: int
) -> np.ndarray:
    """The labels of :mod:`features.labels` on numpy arrays (float64: 1.0, 0.0 or NaN).

    :param close: close prices.
    :param high: high prices.
    :param low: low prices.
    :param profit: take-profit fraction.
    :param stop: stop-loss fraction.
    :param horizon: number of future bars examined.
    """
    LabelConfig(profit, stop, horizon)
    n = len(close)
    labels = np.full(n, np.nan)
    m = n - horizon  # bars 0 .. m-1 have a full horizon
    if m <= 0:
        return labels
    target = close[:m] * (1.0 + profit)
    stop_price = close[:m] * (1.0 - stop)
    decided = np.zeros(m, dtype=bool)
    out = np.zeros(m)
    for k in range(1, horizon + 1):
        stopped = low[k : m + k] <= stop_price
        hit = (high[k : m + k] >= target) & ~stopped  # both in one bar: the stop counts
        out[hit & ~decided] = 1.0
        decided |= hit | stopped
    labels[:m] = out
    return labels


def make_labels(bars: pd.DataFrame, profit: float = 0.05, stop: float = 0.02, horizon: int = 8) -> pd.Series:
    """Binary labels "+profit before -stop within horizon bars" for each bar (NaN without a full horizon).

    :param bars: a bars frame (validated here).
    :param profit: take-profit fraction of the entry close (0.05 = +5%).
    :param stop: stop-loss fraction of the entry close (0.02 = -2%).
    :param horizon: bars examined after the entry bar.
    :return: float Series on the bars' index named ``label``.
    """
    bars = validate_bars(bars)
    values = label_array(
        bars["close"].to_numpy(), bars["high"].to_numpy(), bars["low"].to_numpy(), profit, stop, horizon
    )
    return pd.Series(values, index=bars.index, name="label")
