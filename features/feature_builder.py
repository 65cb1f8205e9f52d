"""The causal, scale-free feature matrix of one symbol's bars: :func:`build_features`.

One model is trained across assets whose prices differ by orders of magnitude, so every feature is
scale-free: a price level only ever appears divided by another price level of the same bar. Every
value at bar ``t`` uses bars ``0..t`` only (see :mod:`features.indicators`). Columns, in order, with
``{n}`` the configured window(s) (see :class:`FeatureConfig`):

==========================  =============================================================================
``ret_{n}``                 simple return over n bars, ``close[t] / close[t-n] - 1``
``logret_{n}``              log return over n bars
``sma_ratio_{n}``           ``close / SMA(close, n) - 1``
``ema_ratio_{n}``           ``close / EMA(close, n) - 1`` (EMA seeded with the SMA of its first n bars)
``rsi_{n}``                 Wilder RSI scaled to [0, 1] (RSI / 100)
``macd_line``               ``(EMA(fast) - EMA(slow)) / close``
``macd_signal``             ``EMA(MACD line, signal) / close``
``macd_hist``               ``(MACD line - signal line) / close``
``bb_bandwidth_{n}``        Bollinger ``(upper - lower) / middle`` (already scale-free)
``bb_percent_b_{n}``        Bollinger %B: 0 at the lower band, 1 at the upper, 0.5 on zero-width bands
``atr_ratio_{n}``           ``ATR / close`` (Wilder ATR)
``adx_{n}``                 Wilder ADX scaled to [0, 1]
``plus_di_{n}``             +DI scaled to [0, 1]
``minus_di_{n}``            -DI scaled to [0, 1]
``stoch_k_{k}``             stochastic %K scaled to [0, 1]
``stoch_d_{k}_{d}``         stochastic %D (SMA of %K over d) scaled to [0, 1]
``obv_flow_{n}``            ``(OBV[t] - OBV[t-n]) / sum(volume[t-n+1..t])``: net signed volume share, [-1, 1]
``vwap_dist_{n}``           ``close / VWAP_n - 1``; VWAP_n weights each bar's ``vwap`` column by volume
                            when the bars have one (typical price ``(h + l + c) / 3`` where absent/NaN)
``rvol_{n}``                realised volatility: sample std of the last n 1-bar log returns (per bar)
``volume_z_{n}``            z-score of ``log1p(volume)`` within the last n bars (log: volume is heavy-tailed)
``dow_sin``, ``dow_cos``    day of week (UTC) on the unit circle, period 7 (calendar features on)
``hour_sin``, ``hour_cos``  time of day (UTC, fractional hours) on the unit circle, period 24 (intraday only)
==========================  =============================================================================

Degenerate windows (flat prices, zero volume) give defined values, not NaN: see
:mod:`features.indicators`. The first :func:`warmup_bars` rows may hold NaN; after them clean
bars give no NaN.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from . import indicators as ind
from .bars import Timeframe, validate_bars

_DAY_NS = 86_400 * 1_000_000_000


@dataclass(frozen=True)
class FeatureConfig:
    """Windows of every feature; the defaults are the textbook ones. Tuples may be empty to drop a family.

    :param return_windows: horizons (bars) of ``ret_{n}``.
    :param log_return_windows: horizons (bars) of ``logret_{n}``.
    :param sma_windows: windows of ``sma_ratio_{n}``.
    :param ema_windows: spans of ``ema_ratio_{n}``.
    :param rsi_window: Wilder RSI period.
    :param macd_fast: fast EMA span of MACD.
    :param macd_slow: slow EMA span of MACD.
    :param macd_signal: signal EMA span of MACD.
    :param bollinger_window: Bollinger window.
    :param bollinger_k: Bollinger band width in standard deviations.
    :param atr_window: Wilder ATR period.
    :param adx_window: Wilder ADX/DI period.
    :param stochastic_k: stochastic %K look-back.
    :param stochastic_d: stochastic %D smoothing.
    :param obv_window: bars over which the OBV change is taken.
    :param vwap_window: bars of the rolling VWAP.
    :param volatility_windows: windows of ``rvol_{n}``.
    :param volume_zscore_window: window of ``volume_z_{n}``.
    :param calendar: add day-of-week (always) and hour-of-day (intraday bars) sin/cos.
    """

    return_windows: tuple[int, ...] = (1, 5, 20)
    log_return_windows: tuple[int, ...] = (1,)
    sma_windows: tuple[int, ...] = (5, 10, 20, 50)
    ema_windows: tuple[int, ...] = (5, 10, 20, 50)
    rsi_window: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    bollinger_window: int = 20
    bollinger_k: float = 2.0
    atr_window: int = 14
    adx_window: int = 14
    stochastic_k: int = 14
    stochastic_d: int = 3
    obv_window: int = 20
    vwap_window: int = 20
    volatility_windows: tuple[int, ...] = (10, 20)
    volume_zscore_window: int = 20
    calendar: bool = True

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "calendar":
                if not isinstance(value, (bool, np.bool_)):
                    raise ValueError(f"calendar={value!r} must be True or False")
            elif field.name == "bollinger_k":
                if not np.isfinite(value) or value <= 0:
                    raise ValueError(f"bollinger_k={value!r} must be a positive number")
            elif field.name.endswith("windows"):
                windows = tuple(value) if isinstance(value, (list, tuple)) else (value,)
                object.__setattr__(self, field.name, windows)
                for n in windows:
                    _check_int(field.name, n)
                if len(set(windows)) != len(windows):
                    raise ValueError(f"{field.name}={windows} repeats a window")
            else:
                _check_int(field.name, value)
        if self.macd_fast >= self.macd_slow:
            raise ValueError(f"macd_fast={self.macd_fast} must be shorter than macd_slow={self.macd_slow}")
        for name in ("volatility_windows", "volume_zscore_window"):
            if min(np.atleast_1d(getattr(self, name)), default=2) < 2:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 2 (a std needs 2 values)")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "FeatureConfig":
        """Build from a mapping (e.g. a YAML section); unknown keys are an error, missing keys take defaults.

        :param d: field name -> value; lists become tuples.
        """
        d = dict(d or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in valid]
        if unknown:
            raise ValueError(f"unknown feature config key(s) {unknown}; valid keys are {valid}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (tuples as lists), the inverse of :meth:`from_dict`."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer (a number of bars)")


def feature_names(config: FeatureConfig | None = None, intraday: bool = False) -> list[str]:
    """The columns :func:`build_features` returns, in order.

    :param config: the feature windows; None uses the defaults.
    :param intraday: whether the bars are shorter than a day (adds ``hour_sin``, ``hour_cos``).
    """
    c = config or FeatureConfig()
    names = [f"ret_{n}" for n in c.return_windows]
    names += [f"logret_{n}" for n in c.log_return_windows]
    names += [f"sma_ratio_{n}" for n in c.sma_windows]
    names += [f"ema_ratio_{n}" for n in c.ema_windows]
    names += [f"rsi_{c.rsi_window}", "macd_line", "macd_signal", "macd_hist"]
    names += [f"bb_bandwidth_{c.bollinger_window}", f"bb_percent_b_{c.bollinger_window}"]
    names += [f"atr_ratio_{c.atr_window}"]
    names += [f"adx_{c.adx_window}", f"plus_di_{c.adx_window}", f"minus_di_{c.adx_window}"]
    names += [f"stoch_k_{c.stochastic_k}", f"stoch_d_{c.stochastic_k}_{c.stochastic_d}"]
    names += [f"obv_flow_{c.obv_window}", f"vwap_dist_{c.vwap_window}"]
    names += [f"rvol_{n}" for n in c.volatility_windows]
    names += [f"volume_z_{c.volume_zscore_window}"]
    if c.calendar:
        names += ["dow_sin", "dow_cos"] + (["hour_sin", "hour_cos"] if intraday else [])
    return names


def warmup_bars(config: FeatureConfig | None = None) -> int:
    """How many leading rows may hold NaN; from this row on, clean bars give no NaN.

    :param config: the feature windows; None uses the defaults.
    """
    c = config or FeatureConfig()
    first_valid = [
        *c.return_windows,
        *c.log_return_windows,
        *(n - 1 for n in c.sma_windows),
        *(n - 1 for n in c.ema_windows),
        c.rsi_window,
        c.macd_slow + c.macd_signal - 2,
        c.bollinger_window - 1,
        c.atr_window,
        2 * c.adx_window - 1,
        c.stochastic_k + c.stochastic_d - 2,
        c.obv_window,
        c.vwap_window - 1,
        *c.volatility_windows,  # log returns start at bar 1
        c.volume_zscore_window - 1,
    ]
    return max(first_valid, default=0)


def is_intraday(index: pd.DatetimeIndex, timeframe: str | Timeframe | None = None) -> bool:
    """Whether bars are shorter than a day: from ``timeframe`` if given, else the index's median spacing.

    :param index: the bars' timestamps.
    :param timeframe: the bar length (``"1Hour"``, ``Timeframe``) or None to infer it.
    """
    if timeframe is not None:
        tf = Timeframe.parse(timeframe) if isinstance(timeframe, str) else timeframe
        return tf.is_intraday
    if len(index) < 2:
        return False
    return bool(np.median(np.diff(index.asi8)) < _DAY_NS)


def build_features(
    bars: pd.DataFrame,
    config: FeatureConfig | None = None,
    timeframe: str | Timeframe | None = None,
    symbol: str = "?",
) -> pd.DataFrame:
    """Causal, scale-free features of one symbol's bars, one row per bar (see the module docstring).

    :param bars: a bars frame (validated here by :func:`features.bars.validate_bars`).
    :param config: the feature windows; None uses the defaults.
    :param timeframe: the bar length, which decides the hour-of-day features; None infers it from the
        median spacing of the index (pass it explicitly when the frame may hold only a few bars).
    :param symbol: the symbol, used in error messages.
    :return: float64 frame with the bars' (validated, UTC) index and columns :func:`feature_names`.
    """
    c = config or FeatureConfig()
    frame = validate_bars(bars, symbol)
    intraday = is_intraday(frame.index, timeframe)
    o, h, l, close, volume = (frame[k].to_numpy(np.float64) for k in ("open", "high", "low", "close", "volume"))
    cols: dict[str, np.ndarray] = {}

    for n in c.return_windows:
        cols[f"ret_{n}"] = ind.simple_returns(close, n)
    for n in c.log_return_windows:
        cols[f"logret_{n}"] = ind.log_returns(close, n)
    for n in c.sma_windows:
        cols[f"sma_ratio_{n}"] = close / ind.sma(close, n) - 1.0
    for n in c.ema_windows:
        cols[f"ema_ratio_{n}"] = close / ind.ema(close, n) - 1.0

    cols[f"rsi_{c.rsi_window}"] = ind.rsi(close, c.rsi_window) / 100.0
    line, signal, hist = ind.macd(close, c.macd_fast, c.macd_slow, c.macd_signal)
    cols["macd_line"], cols["macd_signal"], cols["macd_hist"] = line / close, signal / close, hist / close
    bandwidth, percent_b = ind.bollinger(close, c.bollinger_window, c.bollinger_k)
    cols[f"bb_bandwidth_{c.bollinger_window}"] = bandwidth
    cols[f"bb_percent_b_{c.bollinger_window}"] = percent_b
    cols[f"atr_ratio_{c.atr_window}"] = ind.atr(h, l, close, c.atr_window) / close
    adx, plus_di, minus_di = ind.adx(h, l, close, c.adx_window)
    cols[f"adx_{c.adx_window}"] = adx / 100.0
    cols[f"plus_di_{c.adx_window}"] = plus_di / 100.0
    cols[f"minus_di_{c.adx_window}"] = minus_di / 100.0
    percent_k, percent_d = ind.stochastic(h, l, close, c.stochastic_k, c.stochastic_d)
    cols[f"stoch_k_{c.stochastic_k}"] = percent_k / 100.0
    cols[f"stoch_d_{c.stochastic_k}_{c.stochastic_d}"] = percent_d / 100.0

    cols[f"obv_flow_{c.obv_window}"] = _obv_flow(close, volume, c.obv_window)
    price = ind.typical_price(h, l, close)
    if "vwap" in frame.columns:
        bar_vwap = frame["vwap"].to_numpy(np.float64)
        price = np.where(np.isfinite(bar_vwap) & (bar_vwap > 0), bar_vwap, price)
    cols[f"vwap_dist_{c.vwap_window}"] = close / ind.rolling_vwap(price, volume, c.vwap_window) - 1.0

    one_bar_log = ind.log_returns(close, 1)
    for n in c.volatility_windows:
        cols[f"rvol_{n}"] = ind.realised_volatility(one_bar_log, n)
    cols[f"volume_z_{c.volume_zscore_window}"] = ind.volume_zscore(np.log1p(volume), c.volume_zscore_window)

    if c.calendar:
        cols.update(_calendar(frame.index, intraday))
    names = feature_names(c, intraday)
    table = pd.DataFrame({k: cols[k] for k in names}, index=frame.index, dtype=np.float64)
    check_finite_after_warmup(table, warmup_bars(c), symbol)
    return table


def check_finite_after_warmup(table: pd.DataFrame, warmup: int, symbol: str = "?") -> None:
    """Raise ``ValueError`` naming the column and first bar of a NaN/inf feature after the warm-up rows.

    Clean bars never give one (see :mod:`features.indicators`); absurd ones (a price of 1e300 whose
    square overflows) do, and a silently zero-filled feature would be a wrong number downstream.

    :param table: the feature frame of one symbol.
    :param warmup: leading rows allowed to hold NaN (:func:`warmup_bars`).
    :param symbol: the symbol, for the message.
    """
    values = table.to_numpy()[warmup:]
    bad = ~np.isfinite(values)
    if bad.any():
        rows, columns = np.nonzero(bad)  # row-major: the first hit is the earliest bar
        row, column = int(rows[0]) + warmup, int(columns[0])
        names = sorted({str(table.columns[k]) for k in np.unique(columns)})
        raise ValueError(
            f"{symbol}: feature '{table.columns[column]}' is {values[row - warmup, column]} at row {row} "
            f"({table.index[row]}), after the {warmup} warm-up rows; non-finite columns: {names}. "
            f"The bars around that row are absurd (check prices/volume there); features are never zero-filled"
        )


def _obv_flow(close: np.ndarray, volume: np.ndarray, n: int) -> np.ndarray:
    """OBV change over ``n`` bars over the volume traded in them: stationary, in [-1, 1], 0 with no volume."""
    level = ind.obv(close, volume)
    change = np.full(level.shape, np.nan)
    change[n:] = level[n:] - level[:-n]
    traded = ind.rolling_sum(volume, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        flow = np.where(traded > 0, change / traded, 0.0)
    flow[np.isnan(change)] = np.nan
    return flow


def _calendar(index: pd.DatetimeIndex, intraday: bool) -> dict[str, np.ndarray]:
    day_angle = 2.0 * np.pi * index.day_of_week.to_numpy(np.float64) / 7.0
    out = {"dow_sin": np.sin(day_angle), "dow_cos": np.cos(day_angle)}
    if intraday:
        hours = (index.asi8 % _DAY_NS) / 3.6e12  # UTC fractional hour of the day
        hour_angle = 2.0 * np.pi * hours / 24.0
        out.update(hour_sin=np.sin(hour_angle), hour_cos=np.cos(hour_angle))
    return out
