"""Trading calendars per asset class: when a market trades, when its bars close, how many bars make a year.

Two asset classes (the same two as :mod:`features.universe`; a symbol with ``/`` is a crypto pair):

- ``us_equity``: the New York Stock Exchange's regular sessions (``XNYS`` from the ``exchange_calendars``
  library): its holidays (no session, so no bar and no gap) and its early closes (13:00 New York on
  some holiday eves, e.g. 2019-11-29 and 2019-12-24), 09:30-16:00 New York otherwise. Extended hours
  are not sessions. The calendar covers :data:`CALENDAR_START` to about a year ahead of the installed
  library; asking outside that range is an error, never a guess.
- ``crypto``: trades round the clock, every day. A day's session is the UTC calendar day, so its close
  is the next day's 00:00 UTC (what ``session_close`` returns); a bar closes at its end (its timestamp
  plus its length), whatever the weekday.

Bars are stamped at their start (as Alpaca stamps them). ``periods_per_year`` is what annualises a
Sharpe ratio or a volatility (see :mod:`sim.metrics`):

- crypto: 365 days a year, so 8,760 hours and 525,600 minutes, 365/7 weeks, 12 months;
- us_equity: measured from the calendar, not a literal: the mean number of XNYS sessions per year over
  :data:`AVERAGE_YEARS` (2015-2024: 251.6) for ``1Day``, and the mean trading time per year over the same
  years (1,629.4 hours: about 251.6 sessions of 6.5 hours less the early closes) divided by the bar
  length for intraday bars (``1Hour``: 1,629.4; a bar that is partly outside the session counts for the
  part inside); 365.25/7 weeks and 12 months.
"""

from __future__ import annotations

import datetime as dt
import warnings
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .bars import Timeframe
from .parquet_cache import is_crypto_symbol

#: The asset classes a calendar exists for (the same as :data:`features.universe.ASSET_CLASSES`).
ASSET_CLASSES: tuple[str, ...] = ("us_equity", "crypto")
#: The exchange_calendars code of the US equity calendar (New York Stock Exchange).
EQUITY_CALENDAR_CODE = "XNYS"
#: The first date the US equity calendar knows (the embedded daily bars start in 1999).
CALENDAR_START = "1990-01-01"
#: The years (first, last, inclusive) over which US equity sessions and trading hours per year are averaged.
AVERAGE_YEARS: tuple[int, int] = (2015, 2024)

_NS = 1_000_000_000
_DAY_NS = 86_400 * _NS


class CalendarError(ValueError):
    """An unknown asset class or timeframe, or a date the calendar does not cover (one line)."""


def asset_class_of(symbol: str) -> str:
    """``"crypto"`` for a pair in Alpaca's spelling (it has a ``/``: ``"BTC/USD"``), else ``"us_equity"``.

    The rule of :func:`features.parquet_cache.is_crypto_symbol` and of the universe files.

    :param symbol: a ticker or a crypto pair.
    :raises CalendarError: ``symbol`` is not a non-empty string.
    """
    if not isinstance(symbol, str) or not symbol.strip():
        raise CalendarError(f"symbol={symbol!r}: expected a ticker ('AAPL') or a crypto pair ('BTC/USD')")
    return "crypto" if is_crypto_symbol(symbol) else "us_equity"


def parse_timeframe(timeframe: str | Timeframe) -> Timeframe:
    """``timeframe`` as a :class:`features.bars.Timeframe`; one that is not understood is a :class:`CalendarError`.

    :param timeframe: ``"1Day"``, ``"1Hour"``, ``"15Min"``... or a Timeframe.
    """
    if isinstance(timeframe, Timeframe):
        return timeframe
    try:
        return Timeframe.parse(timeframe)
    except ValueError as error:
        raise CalendarError(str(error)) from None


def _utc(ts: Any) -> pd.Timestamp:
    """``ts`` as a UTC timestamp (a naive one is taken to be UTC already)."""
    try:
        stamp = pd.Timestamp(ts)
    except (TypeError, ValueError):
        raise CalendarError(f"time {ts!r} is not a timestamp (expected e.g. '2019-11-29 18:00+00:00')") from None
    if stamp is pd.NaT:
        raise CalendarError(f"time {ts!r} is not a timestamp (NaT)")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _date(value: Any) -> pd.Timestamp:
    """The calendar date of ``value`` as a naive midnight timestamp (a tz-aware time: its UTC date)."""
    stamp = _utc(value)
    return stamp.tz_localize(None).normalize()


class MarketCalendar:
    """When one asset class trades (see the module docstring). Build with :func:`calendar_for`."""

    asset_class: str = ""
    name: str = ""

    def sessions(self, start: Any, end: Any) -> pd.DatetimeIndex:
        """The session dates from ``start`` to ``end`` (inclusive) as naive midnight timestamps.

        :param start: first date (a time counts for its UTC date).
        :param end: last date.
        """
        raise NotImplementedError

    def session_close(self, date: Any) -> pd.Timestamp:
        """The close of the session on ``date`` (UTC).

        :param date: a session date.
        :raises CalendarError: ``date`` is not a session.
        """
        raise NotImplementedError

    def is_trading_time(self, ts: Any) -> bool:
        """Whether the market trades at ``ts`` (a session's open <= ts < its close).

        :param ts: a time (naive means UTC).
        """
        raise NotImplementedError

    def next_bar_close(self, ts: Any, timeframe: str | Timeframe) -> pd.Timestamp:
        """The close (UTC) of the first bar that completes strictly after ``ts``: when to look for the next bar.

        :param ts: the current time (naive means UTC).
        :param timeframe: the bar length, intraday or ``1Day``.
        :raises CalendarError: a timeframe longer than a day.
        """
        raise NotImplementedError

    def follows(self, timestamps_ns: np.ndarray, timeframe: str | Timeframe) -> bool:
        """Whether every bar lies on this calendar: a daily bar's UTC date is a session, an intraday bar
        overlaps a session; weekly and monthly bars always do. Bars outside the dates the calendar covers
        do not.

        :param timestamps_ns: the bars' start times, int64 UTC nanoseconds.
        :param timeframe: the bars' length.
        """
        raise NotImplementedError

    def periods_per_year(self, timeframe: str | Timeframe) -> float:
        """Bars of ``timeframe`` in a year of this market (see the module docstring for the source).

        :param timeframe: the bar length.
        """
        raise NotImplementedError

    def session_bounds(self, start: Any, end: Any) -> tuple[np.ndarray, np.ndarray]:
        """Opens and closes (int64 UTC nanoseconds) of the sessions from ``start`` to ``end`` (dates, inclusive).

        :param start: first date (a time counts for its UTC date).
        :param end: last date.
        """
        raise NotImplementedError

    def daily_closes(self, dates: pd.DatetimeIndex) -> np.ndarray:
        """Close of each date's daily bar as int64 UTC nanoseconds (vectorised :meth:`session_close`).

        A us_equity date that is no session (a holiday or weekend in synthetic data) closes at the
        exchange's regular close time on that date.

        :param dates: naive midnight timestamps.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.asset_class!r}, {self.name!r})"


def _next_daily_only(tf: Timeframe, what: str) -> None:
    """Refuse bars longer than one day for ``next_bar_close``."""
    if not tf.is_intraday and not (tf.unit == "Day" and tf.amount == 1):
        raise CalendarError(f"{what}: next_bar_close knows intraday and 1Day bars; timeframe {tf} is neither")


class CryptoCalendar(MarketCalendar):
    """Round the clock, every day; a day's session is its UTC calendar day."""

    asset_class = "crypto"
    name = "24/7 (UTC days)"

    def sessions(self, start: Any, end: Any) -> pd.DatetimeIndex:
        return pd.date_range(_date(start), _date(end), freq="D").as_unit("ns")

    def session_close(self, date: Any) -> pd.Timestamp:
        return (_date(date) + pd.Timedelta(days=1)).tz_localize("UTC")

    def is_trading_time(self, ts: Any) -> bool:
        _utc(ts)
        return True

    def next_bar_close(self, ts: Any, timeframe: str | Timeframe) -> pd.Timestamp:
        tf = parse_timeframe(timeframe)
        _next_daily_only(tf, "crypto")
        step = tf.seconds * _NS
        now = _utc(ts).as_unit("ns").value
        return pd.Timestamp((now // step + 1) * step, tz="UTC")

    def periods_per_year(self, timeframe: str | Timeframe) -> float:
        tf = parse_timeframe(timeframe)
        if tf.unit == "Month":
            return 12.0 / tf.amount
        return 365.0 * 86_400 / tf.seconds

    def follows(self, timestamps_ns: np.ndarray, timeframe: str | Timeframe) -> bool:
        parse_timeframe(timeframe)
        return True

    def session_bounds(self, start: Any, end: Any) -> tuple[np.ndarray, np.ndarray]:
        opens = self.sessions(start, end).tz_localize("UTC").asi8
        return opens, opens + _DAY_NS

    def daily_closes(self, dates: pd.DatetimeIndex) -> np.ndarray:
        days = pd.DatetimeIndex(dates).as_unit("ns").asi8
        return np.asarray(days + _DAY_NS, dtype=np.int64)


class EquityCalendar(MarketCalendar):
    """The New York Stock Exchange's regular sessions, holidays and early closes (``exchange_calendars``)."""

    asset_class = "us_equity"

    def __init__(self, code: str = EQUITY_CALENDAR_CODE, start: str = CALENDAR_START) -> None:
        """:param code: the exchange_calendars code. :param start: the first date covered."""
        import exchange_calendars

        self.name = code
        with warnings.catch_warnings():  # the library's own use of a pandas API that pandas is deprecating
            warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
            self._calendar = exchange_calendars.get_calendar(code, start=start)
        schedule = self._calendar.schedule
        self._dates = pd.DatetimeIndex(schedule.index).as_unit("ns")
        self._opens = pd.DatetimeIndex(schedule["open"]).as_unit("ns").asi8
        self._closes = pd.DatetimeIndex(schedule["close"]).as_unit("ns").asi8
        self._tz = str(self._calendar.tz)
        self._regular_close: dt.time = self._calendar.close_times[-1][1]
        self._first = self._dates[0]
        self._last = self._dates[-1]

    # ------------------------------------------------------------------ helpers
    def _check_range(self, first: pd.Timestamp, last: pd.Timestamp, what: str) -> None:
        """Refuse dates outside the calendar (their holidays are not known)."""
        if first < self._first or last > self._last:
            raise CalendarError(
                f"{what} {first.date()}..{last.date()} is outside the {self.name} calendar "
                f"({self._first.date()}..{self._last.date()}); its holidays there are not known"
            )

    def _session_at_or_after(self, now_ns: int, what: str) -> int:
        """Index of the first session whose close is strictly after ``now_ns``."""
        index = int(np.searchsorted(self._closes, now_ns, side="right"))
        if index >= len(self._closes) or now_ns < self._opens[0] - 7 * _DAY_NS:
            raise CalendarError(
                f"{what} {pd.Timestamp(now_ns, tz='UTC')} is outside the {self.name} calendar "
                f"({self._first.date()}..{self._last.date()})"
            )
        return index

    # ------------------------------------------------------------------ API
    def sessions(self, start: Any, end: Any) -> pd.DatetimeIndex:
        first, last = _date(start), _date(end)
        self._check_range(first, last, "sessions")
        lo = int(np.searchsorted(self._dates.asi8, first.as_unit("ns").value, side="left"))
        hi = int(np.searchsorted(self._dates.asi8, last.as_unit("ns").value, side="right"))
        return self._dates[lo:hi]

    def session_close(self, date: Any) -> pd.Timestamp:
        day = _date(date)
        self._check_range(day, day, "session date")
        position = int(np.searchsorted(self._dates.asi8, day.as_unit("ns").value))
        if position >= len(self._dates) or self._dates[position] != day:
            raise CalendarError(f"{day.date()} is not a {self.name} session (a weekend or an exchange holiday)")
        return pd.Timestamp(int(self._closes[position]), tz="UTC")

    def session_bounds(self, start: Any, end: Any) -> tuple[np.ndarray, np.ndarray]:
        first, last = _date(start), _date(end)
        self._check_range(first, last, "sessions")
        lo = int(np.searchsorted(self._dates.asi8, first.as_unit("ns").value, side="left"))
        hi = int(np.searchsorted(self._dates.asi8, last.as_unit("ns").value, side="right"))
        return self._opens[lo:hi].copy(), self._closes[lo:hi].copy()

    def is_trading_time(self, ts: Any) -> bool:
        now = _utc(ts).as_unit("ns").value
        index = self._session_at_or_after(now, "time")
        return bool(self._opens[index] <= now)

    def next_bar_close(self, ts: Any, timeframe: str | Timeframe) -> pd.Timestamp:
        tf = parse_timeframe(timeframe)
        _next_daily_only(tf, self.name)
        now = _utc(ts).as_unit("ns").value
        index = self._session_at_or_after(now, "time")
        close = int(self._closes[index])
        if not tf.is_intraday:
            return pd.Timestamp(close, tz="UTC")
        start = max(now, int(self._opens[index]))  # before the open: the session's first bar
        step = tf.seconds * _NS
        return pd.Timestamp(min((start // step + 1) * step, close), tz="UTC")

    def follows(self, timestamps_ns: np.ndarray, timeframe: str | Timeframe) -> bool:
        tf = parse_timeframe(timeframe)
        stamps = np.asarray(timestamps_ns, dtype=np.int64)
        if stamps.size == 0 or tf.unit in ("Week", "Month"):
            return True
        if stamps.min() < self._opens[0] - _DAY_NS or stamps.max() >= self._closes[-1]:
            return False  # outside the dates the calendar covers: whether they are sessions is not known
        if tf.unit == "Day":
            days = stamps - stamps % _DAY_NS  # the bar's UTC date (bars are stamped 00:00-23:59 UTC on it)
            positions = np.clip(np.searchsorted(self._dates.asi8, days), 0, len(self._dates) - 1)
            return bool(np.all(self._dates.asi8[positions] == days))
        index = np.searchsorted(self._closes, stamps, side="right")  # the first session closing after the start
        return bool(np.all((index < len(self._closes))
                           & (self._opens[np.minimum(index, len(self._opens) - 1)] < stamps + tf.seconds * _NS)))

    def periods_per_year(self, timeframe: str | Timeframe) -> float:
        tf = parse_timeframe(timeframe)
        if tf.unit == "Month":
            return 12.0 / tf.amount
        if tf.unit == "Week":
            return 365.25 / 7 / tf.amount
        sessions, seconds = self._yearly_averages()
        if tf.unit == "Day":
            return sessions / tf.amount
        return seconds / tf.seconds

    @lru_cache(maxsize=1)
    def _yearly_averages(self) -> tuple[float, float]:
        """Mean sessions and mean trading seconds per year over :data:`AVERAGE_YEARS`."""
        first, last = AVERAGE_YEARS
        lo = int(np.searchsorted(self._dates.asi8, pd.Timestamp(f"{first}-01-01").as_unit("ns").value))
        hi = int(np.searchsorted(self._dates.asi8, pd.Timestamp(f"{last + 1}-01-01").as_unit("ns").value))
        years = last - first + 1
        seconds = float(np.sum(self._closes[lo:hi] - self._opens[lo:hi])) / _NS
        return (hi - lo) / years, seconds / years

    def daily_closes(self, dates: pd.DatetimeIndex) -> np.ndarray:
        days = pd.DatetimeIndex(dates).as_unit("ns")
        if len(days) == 0:
            return np.zeros(0, dtype=np.int64)
        self._check_range(days.min(), days.max(), "daily bars' dates")
        positions = np.clip(np.searchsorted(self._dates.asi8, days.asi8), 0, len(self._dates) - 1)
        is_session = self._dates.asi8[positions] == days.asi8
        clock = self._regular_close
        regular = (
            (days + pd.Timedelta(hours=clock.hour, minutes=clock.minute, seconds=clock.second))
            .tz_localize(self._tz, ambiguous=True, nonexistent="shift_forward")
            .tz_convert("UTC").as_unit("ns").asi8
        )
        return np.where(is_session, self._closes[positions], regular).astype(np.int64)


def calendar_for(asset_class: str) -> MarketCalendar:
    """The calendar of ``asset_class`` (built once, then cached).

    :param asset_class: one of :data:`ASSET_CLASSES`.
    :raises CalendarError: an unknown asset class.
    """
    if not isinstance(asset_class, str) or asset_class not in ASSET_CLASSES:
        raise CalendarError(f"asset class {asset_class!r} is not known; expected one of {', '.join(ASSET_CLASSES)}")
    return _build_calendar(asset_class)


@lru_cache(maxsize=None)
def _build_calendar(asset_class: str) -> MarketCalendar:
    """A new calendar of a known asset class (cached by :func:`calendar_for`)."""
    return CryptoCalendar() if asset_class == "crypto" else EquityCalendar()


def resolve_calendar(calendar: "str | MarketCalendar") -> MarketCalendar:
    """``calendar`` itself, or the calendar of the asset class it names.

    :param calendar: a :class:`MarketCalendar` or an asset class.
    """
    if isinstance(calendar, MarketCalendar):
        return calendar
    if not isinstance(calendar, str):
        raise CalendarError(f"calendar {calendar!r}: expected an asset class ({', '.join(ASSET_CLASSES)}) or a MarketCalendar")
    return calendar_for(calendar)


#: What a dataset records for a symbol whose bars follow no known calendar (synthetic bars on every business
#: day, hourly FX): its metrics are annualised by the bars' measured frequency (:func:`sim.metrics.bars_per_year`).
NO_CALENDAR = "none"


def calendar_named(name: str) -> MarketCalendar:
    """The calendar a dataset records by ``name`` (``"XNYS"`` or ``"24/7 (UTC days)"``).

    :param name: a calendar's :attr:`MarketCalendar.name`.
    :raises CalendarError: no calendar has that name (:data:`NO_CALENDAR` names none).
    """
    for asset_class in ASSET_CLASSES:
        calendar = calendar_for(asset_class)
        if calendar.name == name:
            return calendar
    known = [calendar_for(a).name for a in ASSET_CLASSES]
    raise CalendarError(f"calendar {name!r} is not known; expected one of {known}")


def bars_calendar(symbol: str, timestamps_ns: np.ndarray, timeframe: str | Timeframe) -> str:
    """The calendar ``symbol``'s bars follow: its asset class's (``"XNYS"`` for a stock, ``"24/7 (UTC days)"``
    for a pair) when every bar lies on it (:meth:`MarketCalendar.follows`), else :data:`NO_CALENDAR`.

    :param symbol: the ticker or pair (its asset class by :func:`asset_class_of`).
    :param timestamps_ns: its bars' start times, int64 UTC nanoseconds.
    :param timeframe: the bars' length.
    """
    calendar = calendar_for(asset_class_of(symbol))
    return calendar.name if calendar.follows(timestamps_ns, timeframe) else NO_CALENDAR


def timeline_calendar(calendars: Sequence[str]) -> str:
    """The calendar of a timeline that is the union of symbols' bar times: round the clock if any symbol
    trades round the clock, the one calendar all symbols share, else :data:`NO_CALENDAR`.

    :param calendars: each symbol's recorded calendar.
    """
    names = set(calendars)
    crypto = calendar_for("crypto").name
    if crypto in names:
        return crypto
    return names.pop() if len(names) == 1 else NO_CALENDAR


def annualisation(calendar: str, timeframe: str | Timeframe, timestamps_ns: np.ndarray) -> tuple[float, str]:
    """Bars per year for annualised metrics, and the rule that gave it (for reports).

    A known calendar gives its :meth:`MarketCalendar.periods_per_year` (crypto: 365 days, 8,760 hours; XNYS:
    its sessions and trading hours per year); :data:`NO_CALENDAR` measures the bars' frequency over
    ``timestamps_ns`` (:func:`sim.metrics.bars_per_year`).

    :param calendar: a calendar name (as a dataset records it) or :data:`NO_CALENDAR`.
    :param timeframe: the bars' length.
    :param timestamps_ns: the bars' times (used only with :data:`NO_CALENDAR`).
    """
    tf = parse_timeframe(timeframe)
    if calendar == NO_CALENDAR:
        from sim.metrics import bars_per_year

        periods = float(bars_per_year(timestamps_ns))
        return periods, f"measured: {periods:,.1f} bars a year (the bars follow no known calendar)"
    periods = float(calendar_named(calendar).periods_per_year(tf))
    return periods, f"{calendar} calendar: {periods:,.1f} {tf} bars a year"


__all__ = [
    "ASSET_CLASSES", "AVERAGE_YEARS", "CALENDAR_START", "CalendarError", "CryptoCalendar", "EQUITY_CALENDAR_CODE",
    "EquityCalendar", "MarketCalendar", "NO_CALENDAR", "annualisation", "asset_class_of", "bars_calendar",
    "calendar_for", "calendar_named", "parse_timeframe", "resolve_calendar", "timeline_calendar",
]
