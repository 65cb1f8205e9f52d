"""One entry point for news from every source: :func:`load_news`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .alpaca import download_news_to_cache, missing_intervals, read_cached_news
from .config import DEFAULT_NEWS_CACHE_DIR, NEWS_SOURCES
from .frame import check_time_format, empty_news, read_news_file, select_symbols, select_time, validate_news

logger = logging.getLogger(__name__)


def load_news(
    symbols: str | Iterable[str],
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    source: str = "alpaca",
    cache_dir: str | Path = DEFAULT_NEWS_CACHE_DIR,
    path: str | Path | None = None,
    time_format: str | None = None,
    **alpaca_options: Any,
) -> pd.DataFrame:
    """Load the articles naming ``symbols`` published in ``[start, end]`` as one validated news frame.

    :param symbols: one symbol or several: tickers, or crypto pairs spelt as Alpaca's bars spell them
        (``"BTC/USD"``; Alpaca's news API and a user's file may name them ``BTCUSD``, the rows come back as
        ``BTC/USD``).
    :param start: earliest publication time kept (inclusive; naive = UTC); needed for ``"alpaca"``.
    :param end: latest publication time kept (inclusive); None: everything (``"alpaca"``: up to now).
    :param source: ``"alpaca"`` (download what the cache lacks, then read the cache; keys from
        ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``, needed only when something is missing),
        ``"parquet"`` (``path``, or the cache offline when ``path`` is None) or ``"csv"`` (``path``).
    :param cache_dir: root of the news cache (``{cache_dir}/articles/{NAME}.parquet``, ``NAME`` being
        :func:`features.parquet_cache.symbol_dir_name` of the symbol: ``AAPL``, ``BTC~USD``).
    :param path: your own CSV/Parquet file of headlines (see :func:`features.news.read_news_file`).
    :param time_format: the strptime format of the times in ``path`` (e.g. ``"%d/%m/%Y %H:%M"``; times
        without ``%z`` are UTC); None: ISO 8601 only (any other spelling is refused, never guessed).
    :param alpaca_options: for ``"alpaca"``: passed to :func:`features.news.fetch_alpaca_news`
        (``api_key``, ``secret_key``, ``url_override``, ``connect_timeout``, ``read_timeout``,
        ``max_retries``, ``backoff_base``, ``backoff_max``, ``sleep``).
    :return: columns ``published_at`` (UTC), ``id``, ``symbol``, ``headline``, ``summary``, ``source``;
        one row per (article, requested symbol it names), sorted by time. No article is an empty frame.
    """
    symbols = [symbols] if isinstance(symbols, str) else list(symbols)
    if not symbols:
        raise ValueError("symbols is empty; pass at least one symbol")
    if source not in NEWS_SOURCES:
        raise ValueError(f"source={source!r} is not known; expected one of {list(NEWS_SOURCES)}")
    start_ts, end_ts = _as_utc(start, "start"), _as_utc(end, "end")
    if start_ts is not None and end_ts is not None and start_ts > end_ts:
        raise ValueError(f"start={start_ts} is after end={end_ts}")
    if alpaca_options and source != "alpaca":
        raise ValueError(f"{sorted(alpaca_options)} apply to source='alpaca' only (source={source!r})")
    check_time_format(time_format, "time_format")
    if time_format is not None and path is None:
        raise ValueError(
            f"time_format={time_format!r} applies to your own file (path=); source={source!r} without a path "
            f"reads times that carry their own format"
        )

    if source == "csv" or (source == "parquet" and path is not None):
        if path is None:
            raise ValueError("source='csv' needs path=: the CSV file of your headlines")
        news = read_news_file(path, symbols, time_format)
    elif source == "alpaca":
        if start_ts is None:
            raise ValueError("source='alpaca' needs a start date (start=...)")
        download_news_to_cache(symbols, start_ts, end_ts, cache_dir, **alpaca_options)
        news = _read_caches(symbols, cache_dir, start_ts, end_ts, warn=False)
    else:
        news = _read_caches(symbols, cache_dir, start_ts, end_ts, warn=True)
    return select_time(news, start_ts, end_ts)


def _read_caches(
    symbols: list[str], cache_dir: str | Path, start: pd.Timestamp | None, end: pd.Timestamp | None, warn: bool
) -> pd.DataFrame:
    frames = []
    for symbol in symbols:
        cached, coverage = read_cached_news(symbol, cache_dir)
        if not coverage and not len(cached):
            raise FileNotFoundError(
                f"{symbol}: no cached news under {Path(cache_dir) / 'articles'}; fetch it first with "
                f"python -m experiments.fetch_news --symbols {symbol} --start ... (needs APCA_API_KEY_ID / "
                f"APCA_API_SECRET_KEY), or use source='alpaca', or give your own file with path="
            )
        if warn and start is not None:
            stop = end if end is not None else max(b for _, b in coverage) if coverage else start
            gaps = missing_intervals(start, stop, coverage)
            if gaps:
                logger.warning(
                    "%s: the news cache does not cover %s; bars there will count no news (fetch them with "
                    "source='alpaca')", symbol, ", ".join(f"{a} .. {b}" for a, b in gaps[:3]),
                )
        frames.append(select_symbols(cached, [symbol]))
    if not frames:
        return empty_news()
    return validate_news(pd.concat(frames, ignore_index=True), "the news cache")


def _as_utc(value: str | pd.Timestamp | None, name: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}={value!r} is not a date or timestamp") from exc
    if pd.isna(stamp):
        raise ValueError(f"{name}={value!r} is not a date or timestamp")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


__all__ = ["load_news"]
