"""The validated bars frame every source returns, and the checks that guard it.

A bars frame has a UTC ``DatetimeIndex`` named ``timestamp`` (strictly increasing) and float64
columns ``open, high, low, close, volume`` plus ``vwap`` where the source knows it.
Gaps (nights, weekends, holidays) are allowed and reported by :func:`find_gaps`; they are never
forward-filled into bars that did not trade. A series has one timeframe: a run of bars closer together
than a bar (hourly bars inside daily ones) is refused by :func:`check_spacing`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .calendars import MarketCalendar

OHLC_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS: tuple[str, ...] = ("vwap",)

_TIMEFRAME_RE = re.compile(r"^(\d+)(Min|Hour|Day|Week|Month)$")
_UNIT_SECONDS = {"Min": 60, "Hour": 3600, "Day": 86400, "Week": 7 * 86400, "Month": 30 * 86400}
# How much shorter than a bar a step may be (calendar bars are stamped in local time or at a session's
# close: a daylight-saving change is an hour, an early close three); intraday steps are exact.
_DAY_SLACK_SECONDS = 6 * 3600


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
    column, a non-datetime index, unsorted or duplicate timestamps, NaN or infinite OHLC, volume
    or vwap (a NaN vwap means "unknown" and is kept), non-positive prices,
    ``high < max(open, close)``, ``low > min(open, close)``, negative volume.

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
    _check_unique_columns(symbol, [str(c) for c in bars.columns])
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
    for k, column in enumerate(OHLC_COLUMNS):
        _first_bad(symbol, frame, ~np.isfinite(ohlc[:, k]), f"non-finite (NaN or inf) {column}", column)
    if "vwap" in frame.columns:
        _first_bad(symbol, frame, np.isinf(frame["vwap"].to_numpy()), "infinite vwap (NaN means unknown; inf is an error)", "vwap")
    _first_bad(symbol, frame, (ohlc <= 0).any(axis=1), "non-positive price (every price must be > 0)")
    o, h, l, c = ohlc.T
    _first_bad(symbol, frame, h < np.maximum(o, c), "high < max(open, close)")
    _first_bad(symbol, frame, l > np.minimum(o, c), "low > min(open, close)")
    volume = frame["volume"].to_numpy()
    _first_bad(symbol, frame, ~np.isfinite(volume), "non-finite (NaN or inf) volume", "volume")
    _first_bad(symbol, frame, volume < 0, "negative volume", "volume")
    return frame


def _check_unique_columns(symbol: str, columns: list[str]) -> None:
    """Refuse columns whose names are equal ignoring case (``close`` and ``Close``): which one is the price?"""
    seen: dict[str, list[str]] = {}
    for name in columns:
        seen.setdefault(name.lower(), []).append(name)
    clashes = [names for names in seen.values() if len(names) > 1]
    if clashes:
        raise BarsValidationError(
            f"{symbol}: columns {clashes[0]} are the same column ignoring case (column names are not "
            f"case-sensitive); keep one of them and drop or rename the others"
        )


def _first_bad(symbol: str, frame: pd.DataFrame, bad: np.ndarray, what: str, column: str | None = None) -> None:
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        values = frame.iloc[row].to_dict()
        where = f"column '{column}', " if column else ""
        raise BarsValidationError(
            f"{symbol}: {what} at {where}row {row} ({frame.index[row]}): {values} ({int(bad.sum())} bad row(s) in all)"
        )


def infer_timeframe(index: pd.DatetimeIndex, symbol: str = "?") -> Timeframe | None:
    """The bar length of ``index`` from its median spacing (robust to nights, weekends and gaps).

    Spacings are rounded to the unit that divides them: whole weeks -> ``"<n>Week"``, 27-32 days ->
    ``"1Month"``, whole days -> ``"<n>Day"``, whole hours -> ``"<n>Hour"``, whole minutes -> ``"<n>Min"``.
    Returns None with fewer than 3 bars (too few to tell).

    :param index: the bars' timestamps (sorted).
    :param symbol: the symbol, for the message when the spacing fits no unit.
    """
    if len(index) < 3:
        return None
    seconds = float(np.median(np.diff(index.as_unit("ns").asi8))) / 1e9
    day = 86_400.0
    if 27 * day <= seconds <= 32 * day:
        return Timeframe(1, "Month")
    for unit, size in (("Week", 7 * day), ("Day", day), ("Hour", 3600.0), ("Min", 60.0)):
        amount = seconds / size
        if amount >= 1 and abs(amount - round(amount)) < 1e-9:
            return Timeframe(int(round(amount)), unit)
    raise BarsValidationError(
        f"{symbol}: cannot infer the timeframe: the median spacing of the bars is {seconds:g} s, not a whole "
        f"number of minutes; pass timeframe= explicitly (e.g. '1Hour')"
    )


def resolve_timeframe(index: pd.DatetimeIndex, timeframe: str | Timeframe | None, symbol: str = "?") -> Timeframe:
    """The bars' timeframe: the explicit one checked against the index, or the inferred one.

    :param index: the bars' timestamps.
    :param timeframe: the declared bar length, or None to infer it.
    :param symbol: the symbol, for messages.
    :raises BarsValidationError: when the declared timeframe contradicts the bars' spacing, the bars
        hold a run at a shorter spacing (:func:`check_spacing`), or none is declared and too few bars are
        given to infer one.
    """
    declared = Timeframe.parse(timeframe) if isinstance(timeframe, str) else timeframe
    inferred = infer_timeframe(index, symbol)
    if declared is None:
        if inferred is None:
            raise BarsValidationError(
                f"{symbol}: {len(index)} bar(s) are too few to infer the timeframe; pass timeframe= explicitly"
            )
        check_spacing(index, inferred, symbol)
        return inferred
    if inferred is not None and inferred.seconds != declared.seconds and not (
        declared.unit == "Month" and inferred.unit == "Month"
    ):
        raise BarsValidationError(
            f"{symbol}: timeframe={str(declared)!r} contradicts the bars, whose median spacing is {inferred} "
            f"({inferred.seconds:g} s); pass timeframe={str(inferred)!r} or None to infer it, or resample the bars"
        )
    check_spacing(index, declared, symbol)
    return declared


def check_spacing(index: pd.DatetimeIndex, timeframe: Timeframe, symbol: str = "?") -> None:
    """Refuse bars at two spacings: a run of two or more consecutive steps shorter than one bar.

    Longer steps are gaps (nights, weekends, holidays, missing bars) and are fine, and so is a lone short
    step (a session that opens at 09:30 in hourly bars). A step counts as short when it is below the bar
    length: exactly for intraday bars, by more than 6 hours for daily ones (local-midnight stamps move
    with daylight saving; early closes), by more than half a bar for weekly and monthly ones.

    :param index: the bars' timestamps (sorted).
    :param timeframe: the bars' timeframe.
    :param symbol: the symbol, for the message.
    :raises BarsValidationError: naming the symbol, the first bar of the run and both spacings.
    """
    steps = np.diff(index.as_unit("ns").asi8)
    short = steps < _shortest_step_ns(timeframe)
    runs = short[:-1] & short[1:]
    if not runs.any():
        return
    first = int(np.flatnonzero(runs)[0])
    raise BarsValidationError(
        f"{symbol}: bars at two spacings: the timeframe is {timeframe} ({_duration(timeframe.seconds)} apart) "
        f"but from {index[first]} on bars are {_duration(steps[first] / 1e9)} apart ({int(short.sum())} "
        f"step(s) shorter than a bar in all); one series has one timeframe: load the {_duration(steps[first] / 1e9)} "
        f"bars separately or resample them to {timeframe}"
    )


def _shortest_step_ns(timeframe: Timeframe) -> int:
    """The shortest step between bars of ``timeframe`` that is not a second, shorter timeframe."""
    seconds = timeframe.seconds
    if timeframe.unit == "Day":
        seconds -= _DAY_SLACK_SECONDS
    elif timeframe.unit in ("Week", "Month"):
        seconds //= 2
    return seconds * 1_000_000_000


def _duration(seconds: float) -> str:
    """``90`` -> ``"1.5 min"``, ``3600`` -> ``"1 h"``, ``86400`` -> ``"1 day"`` (for messages)."""
    for size, unit in ((86400, "day"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def find_gaps(
    bars: pd.DataFrame,
    timeframe: str | Timeframe | None = "1Day",
    calendar: "str | MarketCalendar | None" = None,
) -> pd.DataFrame:
    """List the gaps between consecutive bars that are longer than one bar (nights, weekends, holidays).

    :param bars: a validated bars frame.
    :param timeframe: the bar length; for daily bars, a gap is more than one calendar day; None infers it.
    :param calendar: None (the default): any step longer than one bar is a gap (nights, weekends and
        holidays included). An asset class (``"us_equity"``, ``"crypto"``) or a
        :class:`features.calendars.MarketCalendar`: a gap is a bar missing from the market's calendar:
        us_equity daily bars: a missing exchange session (weekends and holidays are not gaps; a bar is
        on its UTC date's session); us_equity intraday bars: a missing bar of the ``timeframe`` grid that
        overlaps a session; crypto (24/7): any missing bar, as with None.
    :return: a frame with columns ``before``, ``after``, ``missing_bars`` (bar lengths skipped, approx.,
        without a calendar; the number of missing sessions or session bars with one).
    """
    if timeframe is None:
        tf = infer_timeframe(bars.index) or Timeframe(1, "Day")
    else:
        tf = Timeframe.parse(timeframe) if isinstance(timeframe, str) else timeframe
    stamps = bars.index.as_unit("ns").asi8  # pandas 3 indexes default to "us"
    if len(stamps) < 2:
        return pd.DataFrame({"before": [], "after": [], "missing_bars": []})
    step_ns = tf.seconds * 1_000_000_000
    deltas = np.diff(stamps)
    if calendar is not None:
        from .calendars import resolve_calendar

        market = resolve_calendar(calendar)
        if market.asset_class == "us_equity":
            missing = _missing_session_bars(bars.index, tf, market)
            mask = missing > 0
            return pd.DataFrame(
                {"before": bars.index[:-1][mask], "after": bars.index[1:][mask], "missing_bars": missing[mask]}
            )
    mask = deltas > step_ns
    return pd.DataFrame(
        {
            "before": bars.index[:-1][mask],
            "after": bars.index[1:][mask],
            "missing_bars": (deltas[mask] // step_ns - 1).astype(np.int64),
        }
    )


def _missing_session_bars(index: pd.DatetimeIndex, tf: Timeframe, market: "MarketCalendar") -> np.ndarray:
    """For each pair of consecutive bars, how many bars the calendar expects strictly between them.

    Daily bars: sessions whose date is strictly between the two bars' UTC dates (``nDay``: divided by n).
    Intraday bars: starts ``k * tf`` (on the UTC epoch grid) whose bar ``[start, start + tf)`` overlaps a
    session, strictly between the two bars' starts.

    :param index: the bars' timestamps (UTC, sorted).
    :param tf: the bar length (intraday or ``nDay``).
    :param market: a us_equity calendar.
    """
    stamps = index.tz_convert("UTC") if index.tz is not None else index.tz_localize("UTC")
    if tf.is_intraday:
        step = tf.seconds * 1_000_000_000
        times = stamps.as_unit("ns").asi8
        opens, closes = market.session_bounds(stamps[0] - pd.Timedelta(days=1), stamps[-1] + pd.Timedelta(days=1))
        first, last = (times[0] // step) * step, times[-1]
        starts = np.arange(first, last + step, step, dtype=np.int64)
        session = np.searchsorted(closes, starts, side="right")  # first session closing after the start
        inside = session < len(closes)
        inside[inside] = opens[session[inside]] < starts[inside] + step
        expected = starts[inside]
    else:
        if tf.unit != "Day":
            raise ValueError(f"find_gaps with a calendar knows intraday and nDay bars; timeframe {tf} is neither")
        dates = stamps.tz_localize(None).normalize()
        expected = market.sessions(dates[0], dates[-1]).as_unit("ns").asi8
        times = dates.as_unit("ns").asi8
    lo = np.searchsorted(expected, times[:-1], side="right")
    hi = np.searchsorted(expected, times[1:], side="left")
    missing = np.maximum(hi - lo, 0)
    if not tf.is_intraday:
        missing = missing // tf.amount
    return missing.astype(np.int64)


def large_overnight_moves(bars: pd.DataFrame, threshold: float = 0.40) -> pd.DataFrame:
    """Bars whose open differs from the previous close by more than ``threshold`` (a likely unadjusted split).

    :param bars: a validated bars frame.
    :param threshold: absolute overnight return that is flagged.
    """
    prev_close = bars["close"].shift(1)
    overnight = bars["open"] / prev_close - 1.0
    return pd.DataFrame({"overnight_return": overnight[overnight.abs() > threshold]})
