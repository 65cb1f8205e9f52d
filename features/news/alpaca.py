"""News from Alpaca's news API (via alpaca-py's ``NewsClient``) and the per-symbol news cache.

alpaca-py 0.44's ``NewsClient.get_news`` calls ``GET {base}/v1beta1/news`` with ``symbols``, ``start``,
``end`` (RFC 3339), ``sort``, ``include_content``, ``exclude_contentless``, ``limit`` (50 a page) and
``page_token``, and follows ``next_page_token`` until the server stops sending one. The answer is
``{"news": [article, ...], "next_page_token": ...}``; an article has ``id`` (int), ``headline``,
``summary``, ``source``, ``author``, ``created_at`` / ``updated_at`` (RFC 3339), ``symbols`` (list),
``url``, ``content``, ``images``. ``created_at`` is the publication time used everywhere here.

Network behaviour is the bars client's (:mod:`features.alpaca_source`): the same keys, connect/read
timeouts on every page, retries with exponential backoff on 429/5xx/network errors honouring
``Retry-After``, alpaca-py's own retry switched off, keys never in a message or log, and
:class:`~features.alpaca_source.AlpacaDataError` when the retries run out.

Crypto pairs: the rest of this package spells a pair as Alpaca's trading and bars APIs do, ``BTC/USD``;
the news API spells it without the slash, ``BTCUSD``, both in the ``symbols`` parameter and in the
articles' ``symbols`` lists (Alpaca's news docs show an article naming ``"BTCUSD"`` and ``"DOGEUSD"``
next to ``"TSLA"``). So a request for ``BTC/USD`` asks for ``BTCUSD``, and its articles' ``BTCUSD`` rows
come back, and are cached, as ``BTC/USD`` (:func:`features.news.frame.select_symbols`).

The cache: ``{cache_dir}/articles/{NAME}.parquet`` holds one symbol's articles (one row per article,
de-duplicated by id, the latest download winning) and, in the file's metadata, the time ranges already
downloaded; ``NAME`` is the bars cache's name of the symbol (:func:`features.parquet_cache.symbol_dir_name`:
``AAPL.parquet``, ``BTC~USD.parquet`` for ``BTC/USD``, whose rows read back as ``BTC/USD``). A request
downloads only the parts of its range not yet covered, so extending a range fetches just the new days
and a covered range needs no network (nor keys). The file is replaced atomically. Coverage stops :data:`SETTLE` before "now": articles reach the API a little after their
publication time, so the most recent minutes are fetched again next time.

Known limit: Alpaca serves an article's latest version. A headline edited after publication is seen
with its edited text at its original ``created_at``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from ..alpaca_source import (
    _STATUS_HINTS,
    DEFAULT_BACKOFF_BASE_S,
    DEFAULT_BACKOFF_MAX_S,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT_S,
    _check_network_options,
    _resolve_keys,
    call_alpaca,
    install_retrying_session,
    _utc,
)
from ..parquet_cache import symbol_dir_name
from .frame import NEWS_COLUMNS, empty_news, news_api_symbol, select_symbols, validate_news

logger = logging.getLogger(__name__)

ARTICLES_DIR = "articles"
#: Coverage ends this long before "now" (articles appear in the API shortly after publication).
SETTLE = pd.Timedelta(minutes=15)
_COVERAGE_KEY = b"trading_rl_news_coverage"

_NEWS_HINTS: dict[int, str] = {
    **_STATUS_HINTS,
    404: "check url_override: give the host only (e.g. 'https://data.alpaca.markets'); alpaca-py adds "
    "'/v1beta1/news'",
    422: "the request was rejected as invalid: check the symbol and the dates",
    429: "rate limited: wait a minute and try again, or fetch fewer symbols at a time",
}

Interval = tuple[pd.Timestamp, pd.Timestamp]


def news_cache_path(symbol: str, cache_dir: str | Path) -> Path:
    """``{cache_dir}/articles/{NAME}.parquet``, ``NAME`` being the bars cache's name of the symbol
    (:func:`features.parquet_cache.symbol_dir_name`: ``AAPL``, or ``BTC~USD`` for ``BTC/USD``).

    :param symbol: a ticker or a crypto pair as Alpaca's trading and bars APIs spell it.
    :param cache_dir: the news cache root.
    :raises ValueError: a symbol that cannot be a file name (a path separator other than a pair's one
        ``/``, a ``~``, ``.``/``..``).
    """
    return Path(cache_dir) / ARTICLES_DIR / f"{symbol_dir_name(symbol)}.parquet"


def read_cached_news(symbol: str, cache_dir: str | Path) -> tuple[pd.DataFrame, list[Interval]]:
    """One symbol's cached articles and the time ranges downloaded (empty when nothing is cached).

    :raises ValueError: the file is unreadable or its rows fail validation (delete it to re-download).
    """
    import pyarrow.parquet as pq

    path = news_cache_path(symbol, cache_dir)
    if not path.is_file():
        return empty_news(), []
    try:
        table = pq.read_table(path)
        metadata = table.schema.metadata or {}
        coverage = [
            (pd.Timestamp(a), pd.Timestamp(b)) for a, b in json.loads(metadata.get(_COVERAGE_KEY, b"[]").decode())
        ]
        frame = table.to_pandas()
    except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
        raise ValueError(
            f"{symbol}: cached news file {path} is unreadable ({type(exc).__name__}: {exc}); delete it and "
            f"fetch again with source='alpaca'"
        ) from exc
    return validate_news(frame, f"cached news file {path}"), coverage


def write_cached_news(news: pd.DataFrame, symbol: str, cache_dir: str | Path, coverage: list[Interval]) -> Path:
    """Write one symbol's articles and coverage atomically (temp file + ``os.replace``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = news_cache_path(symbol, cache_dir)
    frame = validate_news(news, f"news for {symbol}")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    spans = json.dumps([[a.isoformat(), b.isoformat()] for a, b in merge_intervals(coverage)])
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _COVERAGE_KEY: spans.encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".parquet.tmp", dir=path.parent)
    os.close(fd)
    temp = Path(temp_name)
    try:
        pq.write_table(table, temp)
        with open(temp, "r+b") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping union of closed intervals."""
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def missing_intervals(start: pd.Timestamp, end: pd.Timestamp, covered: Iterable[Interval]) -> list[Interval]:
    """The parts of ``[start, end]`` outside ``covered`` (their ends may touch covered ones)."""
    merged = merge_intervals(covered)
    gaps: list[Interval] = []
    cursor = start  # everything before it is covered (or outside the range)
    for a, b in merged:
        if b < cursor:
            continue
        if a > end:
            break
        if a > cursor:
            gaps.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < end or (cursor == end and not any(a <= end <= b for a, b in merged)):
        gaps.append((cursor, end))
    return gaps


def fetch_alpaca_news(
    symbol: str,
    start: str | datetime | pd.Timestamp,
    end: str | datetime | pd.Timestamp | None = None,
    *,
    api_key: str | None = None,
    secret_key: str | None = None,
    url_override: str | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    read_timeout: float = DEFAULT_READ_TIMEOUT_S,
    max_retries: int = DEFAULT_MAX_RETRIES,
    backoff_base: float = DEFAULT_BACKOFF_BASE_S,
    backoff_max: float = DEFAULT_BACKOFF_MAX_S,
    sleep: Callable[[float], Any] | None = None,
) -> pd.DataFrame:
    """Download the articles naming ``symbol`` published in ``[start, end]``, every page of them.

    :param symbol: the ticker (``"AAPL"``) or crypto pair (``"BTC/USD"``); the request spells a pair as
        the news API does (``BTCUSD``, :func:`features.news.frame.news_api_symbol`), and its articles'
        rows come back as ``symbol``.
    :param start: earliest publication time (inclusive); naive times are UTC.
    :param end: latest publication time (inclusive); None: now.
    :param api_key: Alpaca key id; None reads ``APCA_API_KEY_ID``.
    :param secret_key: Alpaca secret key; None reads ``APCA_API_SECRET_KEY``.
    :param url_override: base URL of the data API (a proxy or a test server); None uses Alpaca's.
    :param connect_timeout: seconds allowed to open a connection, per attempt.
    :param read_timeout: seconds of silence allowed while waiting for an answer, per attempt.
    :param max_retries: retries of one page after a 429, a 5xx, a connection error or a timeout.
    :param backoff_base: wait before the first retry, in seconds; it doubles on each further retry.
    :param backoff_max: longest backoff wait, in seconds.
    :param sleep: called with the seconds to wait before each retry; None uses :func:`time.sleep`.
    :return: a validated news frame of ``symbol``'s rows (articles with an empty headline are dropped).
    :raises ValueError: missing keys or a bad argument.
    :raises AlpacaDataError: an error answer, or none, after the retries.
    """
    from alpaca.data.historical.news import NewsClient
    from alpaca.data.requests import NewsRequest

    symbol_dir_name(symbol)  # a name the cache can hold (and a pair that is BASE/QUOTE)
    api_key, secret_key = _resolve_keys(api_key, secret_key)
    _check_network_options(connect_timeout, read_timeout, max_retries, backoff_base, backoff_max, sleep)
    start_ts = _utc(start, "start")
    end_ts = _utc(end, "end") if end is not None else pd.Timestamp.now(tz="UTC")
    if start_ts > end_ts:
        raise ValueError(f"start={start_ts} is after end={end_ts}")
    span = f"{start_ts} to {end_ts}"
    where = url_override or "Alpaca's news API"

    client = NewsClient(api_key, secret_key, raw_data=True, url_override=url_override)
    session, redact = install_retrying_session(
        client, symbol=symbol, keys=(api_key, secret_key), connect_timeout=connect_timeout,
        read_timeout=read_timeout, max_retries=max_retries, backoff_base=backoff_base, backoff_max=backoff_max,
        sleep=sleep, what="news",
    )
    request = NewsRequest(
        symbols=news_api_symbol(symbol), start=start_ts.to_pydatetime(), end=end_ts.to_pydatetime(), sort="asc",
        include_content=False, exclude_contentless=False,
    )
    raw = call_alpaca(lambda: client.get_news(request), session=session, redact=redact, symbol=symbol,
                      where=where, span=span, request_name="news", hints=_NEWS_HINTS,
                      connect_timeout=connect_timeout, read_timeout=read_timeout)
    return select_symbols(wire_articles((raw or {}).get("news") or [], symbol), [symbol])


def wire_articles(articles: list[dict[str, Any]], symbol: str = "?") -> pd.DataFrame:
    """Alpaca's wire articles as a validated news frame, one row per symbol each names."""
    rows = []
    dropped = 0
    for article in articles:
        headline = str(article.get("headline") or "").strip()
        if not headline:
            dropped += 1
            continue
        for named in article.get("symbols") or []:
            rows.append(
                {
                    "published_at": article.get("created_at"),
                    "id": str(article.get("id", "")),
                    "symbol": str(named),
                    "headline": headline,
                    "summary": article.get("summary") or "",
                    "source": article.get("source") or "",
                }
            )
    if dropped:
        logger.warning("%s: %d news article(s) without a headline were left out", symbol, dropped)
    if not rows:
        return empty_news()
    return validate_news(pd.DataFrame(rows, columns=list(NEWS_COLUMNS)), f"Alpaca news for {symbol}")


def download_news_to_cache(
    symbols: str | Iterable[str],
    start: str | datetime | pd.Timestamp,
    end: str | datetime | pd.Timestamp | None = None,
    cache_dir: str | Path = "data/news",
    **fetch_options: Any,
) -> dict[str, Path | None]:
    """Bring each symbol's cache up to ``[start, end]``, downloading only the ranges not yet covered.

    Each missing range is written as soon as it arrives, so a failure keeps what came before it.
    Keys are needed only when something is missing.

    :param symbols: one ticker or crypto pair (``"BTC/USD"``), or several.
    :param start: earliest publication time (inclusive); naive times are UTC.
    :param end: latest publication time (inclusive); None: now.
    :param cache_dir: the news cache root.
    :param fetch_options: passed to :func:`fetch_alpaca_news` (keys, ``url_override``, network settings).
    :return: ``{symbol: cache file}`` (None for a symbol that has no file: nothing was ever fetched).
    """
    symbols = [symbols] if isinstance(symbols, str) else list(symbols)
    if not symbols:
        raise ValueError("symbols is empty; pass at least one symbol")
    for symbol in symbols:
        news_cache_path(symbol, cache_dir)
    now = pd.Timestamp.now(tz="UTC")
    start_ts = _utc(start, "start")
    end_ts = min(_utc(end, "end"), now) if end is not None else now
    if start_ts > end_ts:
        raise ValueError(f"start={start_ts} is after end={end_ts} (or in the future)")
    settled = now - SETTLE
    written: dict[str, Path | None] = {}
    for symbol in symbols:
        cached, coverage = read_cached_news(symbol, cache_dir)
        gaps = missing_intervals(start_ts, end_ts, coverage)
        if gaps:
            _resolve_keys(fetch_options.get("api_key"), fetch_options.get("secret_key"))
        for gap_start, gap_end in gaps:
            fresh = fetch_alpaca_news(symbol, gap_start, gap_end, **fetch_options)
            cached = pd.concat([cached, fresh], ignore_index=True) if len(fresh) else cached
            if gap_start <= min(gap_end, settled):
                coverage = coverage + [(gap_start, min(gap_end, settled))]
            write_cached_news(cached, symbol, cache_dir, coverage)
        path = news_cache_path(symbol, cache_dir)
        written[symbol] = path if path.is_file() else None
    return written


__all__ = [
    "download_news_to_cache", "fetch_alpaca_news", "merge_intervals", "missing_intervals", "news_cache_path",
    "read_cached_news", "write_cached_news",
]
