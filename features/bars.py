"""The validated bars frame every source returns, and the checks that guard it.

A bars frame has a UTC ``DatetimeIndex`` named ``timestamp`` (strictly increasing) and float64
columns ``open, high, low, close, volume`` plus ``vwap`` where the source knows it.
Gaps (nights, weekends, holidays) are allowed and reported by :func:`find_gaps`; they are never
forward-filled into bars that did not trade.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

OHLC_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS: tuple[str, ...] = ("vwap",)

_TIMEFRAME_RE = re.compile(r"^(\d+)(Min|Hour|Day|Week|Month)$")
_UNIT_SECONDS = {"Min": 60, "Hour": 3600, "Day": 86400, "Week": 7 * 86400, "Month": 30 * 86400}


class BarsValidationError(ValueError):
    """Bars that break the frame's contract; the message names the symbol, row and column."""


@dataclass(frozen=True)
class Timeframe:
    """A bar length in Alpaca's spelling (``"1Day"``, ``"1Hour"``, ``"15Min"``)."""

    amount: int
    unit: str

    @classmethod
    def parse(cls, text: str) -> "Timeframe":
        """Parse ``"<n><Min|Hour|Day|Week|Month>"``.

        :param text: the timeframe string, e.g. ``"1Day"``.
        """
        match = _TIMEFRAME_RE.match(str(text))
        if not match or int(match.group(1)) <= 0:
            raise ValueError(
                f"timeframe={text!r} is not understood; expected '<n><unit>' with unit one of "
                f"Min, Hour, Day, Week, Month (e.g. '1Day', '1Hour', '15Min')"
            )
        return cls(int(match.group(1)), match.group(2))

    @property
    def seconds(self) -> int:
        return self.amount * _UNIT_SECONDS[self.unit]

    @property
    def is_intraday(self) -> bool:
        return self.seconds < 86400

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


def validate_bars(bars: pd.DataFrame, symbol: str = "?") -> pd.DataFrame:
    """Check a bars frame and return a clean copy (UTC index, float64 columns, canonical order).

    Rejects, naming the symbol and the first offending row: a missing column, a non-numeric
    column, a non-datetime index, unsorted or duplicate timestamps, NaN in OHLC, non-positive
    prices, ``high < max(open, close)``, ``low > min(open, close)``, negative volume.

    :param bars: frame indexed by timestamp with columns open, high, low, close, volume [, vwap].
    :param symbol: the symbol, used in error messages.
    :return: a validated copy.
    """
    if not isinstance(bars, pd.DataFrame):
        raise BarsValidationError(f"{symbol}: bars must be a pandas DataFrame, got {type(bars).__name__}")
    if len(bars) == 0:
        raise BarsValidationError(f"{symbol}: no bars (empty frame); check the symbol and the date range")
    frame = bars.copy()
    frame.columns = [str(c).lower() for c in frame.columns]
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise BarsValidationError(
            f"{symbol}: missing column(s) {missing}; expected {list(BAR_COLUMNS)} (and optionally 'vwap'), "
            f"got {list(frame.columns)}"
        )
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise BarsValidationError(
            f"{symbol}: index must be a DatetimeIndex of bar timestamps, got {type(frame.index).__name__}"
        )
    index = frame.index
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    frame.index = index.as_unit("ns").rename("timestamp")
    columns = list(BAR_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in frame.columns]
    frame = frame[columns]
    for column in columns:
        if not pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column]):
            raise BarsValidationError(
                f"{symbol}: column '{column}' must be numeric (float), got dtype {frame[column].dtype}"
            )
        frame[column] = frame[column].astype(np.float64)

    stamps = frame.index.asi8
    steps = np.diff(stamps)
    if np.any(steps == 0):
        row = int(np.flatnonzero(steps == 0)[0]) + 1
        raise BarsValidationError(f"{symbol}: duplicate timestamp {frame.index[row]} at row {row}")
    if np.any(steps < 0):
        row = int(np.flatnonzero(steps < 0)[0]) + 1
        raise BarsValidationError(
            f"{symbol}: timestamps not sorted: row {row} ({frame.index[row]}) comes before row {row - 1} "
            f"({frame.index[row - 1]})"
        )
    ohlc = frame[list(OHLC_COLUMNS)].to_numpy()
    _first_bad(symbol, frame, np.isnan(ohlc).any(axis=1), "NaN in open/high/low/close")
    _first_bad(symbol, frame, (ohlc <= 0).any(axis=1), "non-positive price (every price must be > 0)")
    o, h, l, c = ohlc.T
    _first_bad(symbol, frame, h < np.maximum(o, c), "high < max(open, close)")
    _first_bad(symbol, frame, l > np.minimum(o, c), "low > min(open, close)")
    volume = frame["volume"].to_numpy()
    _first_bad(symbol, frame, np.isnan(volume) | (volume < 0), "volume is negative or NaN")
    return frame


def _first_bad(symbol: str, frame: pd.DataFrame, bad: np.ndarray, what: str) -> None:
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        values = frame.iloc[row].to_dict()
        raise BarsValidationError(
            f"{symbol}: {what} at row {row} ({frame.index[row]}): {values} ({int(bad.sum())} bad row(s) in all)"
        )


def find_gaps(bars: pd.DataFrame, timeframe: str | Timeframe = "1Day") -> pd.DataFrame:
    """List the gaps between consecutive bars that are longer than one bar (nights, weekends, holidays).

    :param bars: a validated bars frame.
    :param timeframe: the bar length; for daily bars, a gap is more than one calendar day.
    :return: a frame with columns ``before``, ``after``, ``missing_bars`` (bar lengths skipped, approx.).
    """
    tf = Timeframe.parse(timeframe) if isinstance(timeframe, str) else timeframe
    stamps = bars.index.as_unit("ns").asi8  # pandas 3 indexes default to "us"
    if len(stamps) < 2:
        return pd.DataFrame({"before": [], "after": [], "missing_bars": []})
    step_ns = tf.seconds * 1_000_000_000
    deltas = np.diff(stamps)
    mask = deltas > step_ns
    return pd.DataFrame(
        {
            "before": bars.index[:-1][mask],
            "after": bars.index[1:][mask],
            "missing_bars": (deltas[mask] // step_ns - 1).astype(np.int64),
        }
    )


def large_overnight_moves(bars: pd.DataFrame, threshold: float = 0.40) -> pd.DataFrame:
    """Bars whose open differs from the previous close by more than ``threshold`` (a likely unadjusted split).

    :param bars: a validated bars frame.
    :param threshold: absolute overnight return that is flagged.
    """
    prev_close = bars["close"].shift(1)
    overnight = bars["open"] / prev_close - 1.0
    return pd.DataFrame({"overnight_return": overnight[overnight.abs() > threshold]})
