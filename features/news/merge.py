"""Scored articles -> per-bar sentiment columns, causally.

The rule: an article counts for a bar only if it was published **strictly before that bar's close**:

- intraday bars (stamped at their start, as Alpaca and the embedded EUR/USD stamp them): the close is
  the bar's end, ``timestamp + bar length``;
- daily bars (the embedded data stamps them at midnight UTC, Alpaca at midnight New York, i.e. 04:00 or
  05:00 UTC), ``nDay`` bars on the last of their n days, by asset class
  (:mod:`features.calendars`; a symbol with ``/`` is crypto):

  - ``us_equity``: the New York Stock Exchange session's close on the bar's UTC calendar date, from
    the exchange calendar: 16:00 New York, or 13:00 on an early close (2019-11-29, 2019-12-24), so an
    article at 14:00 on such a day counts for the next session's bar. A date that is no session
    (a holiday or weekend in synthetic data) closes at the regular 16:00. Precedence: an explicit
    ``session_close`` (``news.session_close``, ``"HH:MM"`` in ``session_timezone``) overrides the
    calendar on every date, early closes included (how datasets were merged before the calendar);
    ``session_close=None`` (the default) uses the calendar.
  - ``crypto``: no session: the bar closes at its end, ``timestamp + n days`` (``session_close``
    does not apply).

  Other bar lengths (weeks, months) are refused.

Each article goes to the first bar whose close is after its publication time, so it lands in the bar
during which it became known (an article at 16:00:00 on a daily close belongs to the next day's bar;
weekend articles belong to Monday's). Articles published before the first bar's period (its close minus
one bar length) or after the last bar's close are not used. Nothing is back-filled: a value at bar t
depends only on articles published before bar t's close.

Columns (:data:`features.news.NEWS_FEATURES`), all float64 and defined on every bar:

- ``news_score``: mean score of the bar's articles; 0 with none;
- ``news_count``: number of the bar's articles;
- ``news_score_decayed``: with ``w = 0.5 ** (1 / half_life)``, ``S_t = w S_{t-1} + sum of the bar's
  scores`` and ``C_t = w C_{t-1} + news_count``, the value ``S_t / max(C_t, 1)``: the decay-weighted
  mean score while at least one (decayed) article's worth of news is recent, shrinking towards 0 with
  half-life ``half_life`` bars after that; 0 before any article;
- ``news_bars_since``: bars since the last bar with an article (0 on such a bar), at most
  ``bars_since_cap``, which is also its value before any article.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..bars import Timeframe
from ..calendars import ASSET_CLASSES, CalendarError, asset_class_of, calendar_for
from .config import NEWS_FEATURES, NewsConfig, session_clock

_NS = 1_000_000_000


def bar_close_times(
    index: pd.DatetimeIndex,
    timeframe: str | Timeframe,
    session_close: str | None = None,
    session_timezone: str = "America/New_York",
    asset_class: str = "us_equity",
) -> np.ndarray:
    """Each bar's close as int64 UTC nanoseconds (see the module docstring for the rule).

    :param index: the bars' timestamps (sorted, UTC or naive UTC).
    :param timeframe: the bar length.
    :param session_close: us_equity daily bars: a local close time ``"HH:MM"`` that overrides the
        exchange calendar (early closes included); None: the calendar's close of each session.
    :param session_timezone: the time zone of ``session_close``.
    :param asset_class: ``"us_equity"`` or ``"crypto"`` (whose daily bars close at their end).
    :raises ValueError: for bars longer than intraday that are not ``nDay``, closes that do not increase,
        an unknown asset class, or daily us_equity bars outside the exchange calendar.
    """
    tf = Timeframe.parse(timeframe) if isinstance(timeframe, str) else timeframe
    if asset_class not in ASSET_CLASSES:
        raise CalendarError(f"asset_class={asset_class!r} is not known; expected one of {', '.join(ASSET_CLASSES)}")
    stamps = pd.DatetimeIndex(index)
    stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
    stamps = stamps.as_unit("ns")
    if tf.is_intraday or (tf.unit == "Day" and asset_class == "crypto"):
        closes = stamps.asi8 + tf.seconds * _NS
    elif tf.unit == "Day":
        days = stamps.tz_localize(None).normalize() + pd.Timedelta(days=tf.amount - 1)
        closes = _equity_daily_closes(days, session_close, session_timezone)
    else:
        raise ValueError(
            f"news can be merged into intraday or daily bars; timeframe {tf} is neither (build the dataset from "
            f"daily bars, or leave news off)"
        )
    if len(closes) > 1 and np.any(np.diff(closes) <= 0):
        row = int(np.flatnonzero(np.diff(closes) <= 0)[0]) + 1
        raise ValueError(
            f"bar closes do not increase at row {row} ({stamps[row]}): two {tf} bars on one session date? "
            f"Check the timeframe"
        )
    return np.asarray(closes, dtype=np.int64)


def _equity_daily_closes(days: pd.DatetimeIndex, session_close: str | None, session_timezone: str) -> np.ndarray:
    """us_equity daily closes of ``days`` (naive dates): the explicit ``session_close`` if given, else the calendar's."""
    if session_close is None:
        return calendar_for("us_equity").daily_closes(days)
    hour, minute, second = session_clock(session_close)
    local = days + pd.Timedelta(hours=hour, minutes=minute, seconds=second)
    return (
        local.tz_localize(session_timezone, ambiguous=True, nonexistent="shift_forward")
        .tz_convert("UTC").as_unit("ns").asi8
    )


def _articles_asset_class(scored: pd.DataFrame) -> str:
    """The asset class of the articles' symbol (us_equity when there are none: then no close is used)."""
    if "symbol" not in scored.columns or len(scored) == 0:
        return "us_equity"
    classes = {asset_class_of(str(symbol)) for symbol in pd.unique(scored["symbol"])}
    if len(classes) > 1:
        raise ValueError(
            f"scored articles hold symbols of several asset classes ({', '.join(sorted(classes))}); "
            f"pass one symbol's articles (news_features is per symbol)"
        )
    return classes.pop()


def news_features(
    bars: pd.DataFrame | pd.DatetimeIndex,
    scored: pd.DataFrame,
    timeframe: str | Timeframe,
    settings: NewsConfig | Mapping[str, Any] | None = None,
    asset_class: str | None = None,
) -> pd.DataFrame:
    """The news columns of one symbol's bars.

    :param bars: the bars frame (or its index), sorted.
    :param scored: this symbol's articles with ``published_at`` (UTC) and ``score``
        (:func:`features.news.score_articles`); other symbols' rows must be removed first.
    :param timeframe: the bars' timeframe.
    :param settings: ``half_life``, ``bars_since_cap``, ``session_close``, ``session_timezone``.
    :param asset_class: ``"us_equity"`` or ``"crypto"`` (:func:`features.calendars.asset_class_of` of the
        symbol); None: that of the articles' ``symbol`` column (with no articles the closes decide nothing).
    :return: float64 frame on the bars' index with columns :data:`features.news.NEWS_FEATURES`.
    """
    config = NewsConfig.coerce(settings or {})
    index = bars.index if isinstance(bars, pd.DataFrame) else pd.DatetimeIndex(bars)
    tf = Timeframe.parse(timeframe) if isinstance(timeframe, str) else timeframe
    kind = _articles_asset_class(scored) if asset_class is None else asset_class
    closes = bar_close_times(index, tf, config.session_close, config.session_timezone, kind)
    n = len(closes)
    published = pd.DatetimeIndex(scored["published_at"]).tz_convert("UTC").as_unit("ns").asi8
    scores = scored["score"].to_numpy(np.float64)
    if np.isnan(scores).any():
        raise ValueError("scored articles hold NaN scores; score them with features.news.score_articles")
    row = np.searchsorted(closes, published, side="right")  # the first bar whose close is after it
    first_period_start = closes[0] - _period_ns(tf) if n else 0
    used = (row < n) & (published >= first_period_start)
    count = np.bincount(row[used], minlength=n).astype(np.float64)[:n]
    total = np.bincount(row[used], weights=scores[used], minlength=n)[:n]
    mean = np.divide(total, count, out=np.zeros(n), where=count > 0)

    decay = 0.5 ** (1.0 / config.half_life)
    decayed = np.zeros(n)
    weighted_sum = weighted_count = 0.0
    for t in range(n):  # a recursion: each bar adds to the decayed past, never the other way
        weighted_sum = decay * weighted_sum + total[t]
        weighted_count = decay * weighted_count + count[t]
        decayed[t] = weighted_sum / max(weighted_count, 1.0)

    positions = np.arange(n)
    last = np.maximum.accumulate(np.where(count > 0, positions, -1)) if n else positions
    since = np.where(last >= 0, positions - last, config.bars_since_cap)
    since = np.minimum(since, config.bars_since_cap).astype(np.float64)
    columns = dict(zip(NEWS_FEATURES, (mean, count, decayed, since)))
    return pd.DataFrame(columns, index=index)


def _period_ns(tf: Timeframe) -> int:
    return tf.seconds * _NS


__all__ = ["bar_close_times", "news_features"]
