"""Path-dependent labels: "profit target hit before stop loss within the horizon".

The label of bar t looks at bars t+1 .. t+horizon against the entry price ``close[t]``:

- 1.0 when some bar's high reaches ``close[t] * (1 + profit)`` before any bar's low reaches
  ``close[t] * (1 - stop)``;
- 0.0 when the stop is reached first, or neither is reached within the horizon;
- NaN when fewer than ``horizon`` bars follow t (no full horizon, no label).

When one bar touches both the target and the stop, the order inside the bar is unknown: the stop is
counted (the conservative reading). Labels look forward by design and are never observations.

Two kinds of barrier (``LabelConfig.barrier``):

- ``"fixed"`` (default): ``profit`` and ``stop`` are fractions of the entry close (+5% / -2%).
- ``"volatility"`` (the triple-barrier method of Lopez de Prado): ``profit`` and ``stop`` are multiples
  of the volatility expected over the horizon, ``sigma_t * sqrt(horizon)``, where ``sigma_t`` is the
  sample std of the last ``volatility_window`` one-bar log returns up to and including bar t (causal).
  Target ``close[t] * (1 + profit * sigma_t * sqrt(horizon))``, stop ``close[t] * (1 - stop * ...)``
  (capped below 100%). Bars without a full volatility window have no label. This gives a market of
  small hourly moves (EUR/USD) positives that +5% in 8 hours never would.

A label set that cannot train - a split whose positive rate is below a floor - is refused by
:func:`check_positive_rate`, naming the settings, the rate and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .bars import validate_bars


BARRIERS: tuple[str, ...] = ("fixed", "volatility")
MAX_STOP_FRACTION = 0.99  # a volatility-scaled stop never reaches a zero price


@dataclass(frozen=True)
class LabelConfig:
    """The label definition: take profit ``profit``, stop loss ``stop``, within ``horizon`` bars.

    :param profit: ``"fixed"``: fraction of the entry close (0.05 = +5%); ``"volatility"``: multiple of
        the horizon volatility.
    :param stop: as ``profit``, for the stop (``"fixed"``: in (0, 1)).
    :param horizon: bars examined after the entry bar.
    :param barrier: ``"fixed"`` or ``"volatility"`` (see the module docstring).
    :param volatility_window: bars of the causal volatility estimate of ``"volatility"`` barriers.
    """

    profit: float = 0.05
    stop: float = 0.02
    horizon: int = 8
    barrier: str = "fixed"
    volatility_window: int = 20

    def __post_init__(self) -> None:
        if self.barrier not in BARRIERS:
            raise ValueError(f"label barrier={self.barrier!r} is not known; expected one of {list(BARRIERS)}")
        if self.barrier == "fixed":
            if not self.profit > 0:
                raise ValueError(f"label profit={self.profit} must be > 0 (a fraction, 0.05 = +5%)")
            if not 0 < self.stop < 1:
                raise ValueError(f"label stop={self.stop} must be in (0, 1) (a fraction, 0.02 = -2%)")
        else:
            for name in ("profit", "stop"):
                if not getattr(self, name) > 0:
                    raise ValueError(
                        f"label {name}={getattr(self, name)} must be > 0 (a multiple of the horizon volatility)"
                    )
        for name in ("horizon", "volatility_window"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"label {name}={value} must be a positive integer number of bars")
        if self.volatility_window < 2:
            raise ValueError(f"label volatility_window={self.volatility_window} must be >= 2 (a std needs 2 returns)")

    def describe(self) -> str:
        """e.g. ``+5.0% before -2.0% within 8 bars`` or ``+2 sigma before -1 sigma within 8 bars (...)``."""
        if self.barrier == "fixed":
            return f"+{self.profit:.1%} before -{self.stop:.1%} within {self.horizon} bars"
        return (f"+{self.profit:g} sigma before -{self.stop:g} sigma within {self.horizon} bars "
                f"(sigma: {self.volatility_window}-bar volatility x sqrt({self.horizon}))")

    def to_dict(self) -> dict:
        return {"profit": self.profit, "stop": self.stop, "horizon": self.horizon, "barrier": self.barrier,
                "volatility_window": self.volatility_window}

    def labels(self, close: np.ndarray, high: np.ndarray, low: np.ndarray) -> np.ndarray:
        """The labels of one symbol's bars under this definition (float64: 1, 0 or NaN)."""
        if self.barrier == "fixed":
            return label_array(close, high, low, self.profit, self.stop, self.horizon)
        sigma = horizon_volatility(close, self.volatility_window, self.horizon)
        labels = label_array(close, high, low, self.profit * sigma, np.minimum(self.stop * sigma, MAX_STOP_FRACTION),
                             self.horizon)
        labels[~np.isfinite(sigma)] = np.nan
        return labels


def horizon_volatility(close: np.ndarray, window: int, horizon: int) -> np.ndarray:
    """``std(last window one-bar log returns up to t) * sqrt(horizon)`` per bar (NaN before ``window`` returns).

    :param close: close prices.
    :param window: returns in the estimate.
    :param horizon: bars the volatility is scaled to.
    """
    logret = np.diff(np.log(close))
    sigma = np.full(len(close), np.nan)
    if len(logret) >= window:
        windows = np.lib.stride_tricks.sliding_window_view(logret, window)
        sigma[window:] = windows.std(axis=1, ddof=1)  # bar t uses returns ending at t
    return sigma * np.sqrt(horizon)


def check_positive_rate(labels: np.ndarray, split: str, label: "LabelConfig | dict", floor: float = 0.005,
                        timeframe: str = "") -> None:
    """Refuse labels that cannot train: fewer than ``floor`` positives in ``split``.

    :param labels: the split's labels (no NaN).
    :param split: its name, for the message.
    :param label: the label definition (a :class:`LabelConfig` or its dict).
    :param floor: minimum share of positives.
    :param timeframe: the bars' timeframe, for the message.
    """
    config = label if isinstance(label, LabelConfig) else LabelConfig(**label)
    rate = float(np.mean(labels)) if len(labels) else 0.0
    if rate < floor:
        fix = (
            "use volatility-scaled barriers (labels: {barrier: volatility, profit: 2.0, stop: 1.0}) or a smaller profit target"
            if config.barrier == "fixed" else "lower the profit multiple or raise the stop multiple / horizon"
        )
        on = f" on {timeframe} bars" if timeframe else ""
        raise ValueError(
            f"labels '{config.describe()}'{on} give {rate:.2%} positives in the {split} split ({int(np.sum(labels))} of "
            f"{len(labels)}), below the floor of {floor:.2%}: a classifier cannot learn from that; {fix}"
        )


def label_array(
    close: np.ndarray, high: np.ndarray, low: np.ndarray, profit: float | np.ndarray, stop: float | np.ndarray,
    horizon: int
) -> np.ndarray:
    """The labels of :mod:`features.labels` on numpy arrays (float64: 1.0, 0.0 or NaN).

    :param close: close prices.
    :param high: high prices.
    :param low: low prices.
    :param profit: take-profit fraction, one for all bars or one per bar.
    :param stop: stop-loss fraction, one for all bars or one per bar.
    :param horizon: number of future bars examined.
    """
    if np.ndim(profit) == 0 and np.ndim(stop) == 0:
        LabelConfig(float(profit), float(stop), horizon)
    n = len(close)
    labels = np.full(n, np.nan)
    m = n - horizon  # bars 0 .. m-1 have a full horizon
    if m <= 0:
        return labels
    profit = np.broadcast_to(np.asarray(profit, dtype=np.float64), (n,))[:m]
    stop = np.broadcast_to(np.asarray(stop, dtype=np.float64), (n,))[:m]
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


def make_labels(bars: pd.DataFrame, profit: float = 0.05, stop: float = 0.02, horizon: int = 8,
                barrier: str = "fixed", volatility_window: int = 20) -> pd.Series:
    """Binary labels "+profit before -stop within horizon bars" for each bar (NaN without a full horizon).

    :param bars: a bars frame (validated here).
    :param profit: take-profit: fraction of the entry close (0.05 = +5%), or a volatility multiple.
    :param stop: stop-loss: fraction of the entry close (0.02 = -2%), or a volatility multiple.
    :param horizon: bars examined after the entry bar.
    :param barrier: ``"fixed"`` or ``"volatility"`` (see the module docstring).
    :param volatility_window: bars of the volatility estimate of ``"volatility"`` barriers.
    :return: float Series on the bars' index named ``label``.
    """
    bars = validate_bars(bars)
    config = LabelConfig(profit, stop, horizon, barrier, volatility_window)
    values = config.labels(bars["close"].to_numpy(), bars["high"].to_numpy(), bars["low"].to_numpy())
    return pd.Series(values, index=bars.index, name="label")
