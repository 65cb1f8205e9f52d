"""Bulk, resumable download of many symbols' bars from Alpaca into the Parquet cache, within the rate limit.

:func:`bulk_download` splits the work into *units*: a batch of symbols of one asset class (stocks, or
crypto pairs; ``symbols_per_request`` of them, asked in one request: Alpaca pages over all of them) times
a time chunk (``chunk_days``). Each unit is fetched (every page), then each symbol's bars are merged into
its ``data.parquet`` and the unit's range is added to the symbol's *metadata*, a small JSON beside the
Parquet (``meta.json``, written atomically after the Parquet). A download that is killed therefore
resumes at the first unit not recorded, and a range recorded as covered is never asked again; rerunning a
finished download sends no request. A range with no bars (a delisted symbol's later chunks) is covered too.

Corporate actions: stock bars are asked with ``adjustment`` (default ``"all"``: splits and dividends) and
the metadata records it. A stock cache written with another adjustment, or a ``data.parquet`` with no
metadata (adjustment unknown), is a one-line :class:`CacheMetadataError` naming the file: adjusted and raw
bars never mix. Crypto has no corporate actions (its adjustment is recorded as None).

Rate limit: every HTTP request (each page and each retry) first takes a token from a :class:`TokenBucket`
(default 200 requests a minute, Alpaca's free plan), whose clock and sleep are injectable; a 429 that still
comes back is retried by :mod:`features.alpaca_source`'s backoff.

Times: ``start`` and ``end`` are inclusive (naive = UTC); internally ranges are half-open
``[start, stop)`` with ``stop = end + 1 s`` (bars are whole minutes). With no ``end`` the download stops at
the last finished bar 15 minutes ago (free plans get SIP data only that late), so no bar still forming is
recorded as covered.
"""

from __future__ import annotations

import json
import math
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from .alpaca_source import (
    _CRYPTO_STATUS_HINTS,
    _STATUS_HINTS,
    DEFAULT_BACKOFF_BASE_S,
    DEFAULT_BACKOFF_MAX_S,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT_S,
    _alpaca_timeframe,
    _bars_frame,
    _check_network_options,
    _enum,
    _optional_keys,
    _resolve_keys,
    call_alpaca,
    install_retrying_session,
)
from .atomic_io import write_text_atomic
from .bars import Timeframe, find_gaps
from .parquet_cache import DEFAULT_CACHE_ROOT, cache_path, is_crypto_symbol, read_cached_bars, write_cached_bars

META_FILE_NAME = "meta.json"
META_VERSION = 1
DEFAULT_RATE_LIMIT = 200  # requests a minute: Alpaca's free plan
DEFAULT_BURST = 10
DEFAULT_SYMBOLS_PER_REQUEST = 50
PAGE_BARS = 10_000  # Alpaca's largest page
PAGES_PER_UNIT = 40  # the chunk length aims at no more than about this many pages per unit (about 12 s of
# requests at 200 a minute; a kill loses the units fetched but not yet stored; fewer, larger units write each
# file less often)
STOCK_WEEK_SHARE = 5 / 7  # stocks trade on weekdays
STOCK_DAY_SHARE = 16 / 24  # intraday stock bars: 04:00-20:00 New York at most (extended hours included)
STORE_QUEUE_UNITS = 4  # fetched units waiting for the store thread (then the fetching waits)
FREE_PLAN_DELAY = pd.Timedelta(minutes=15)
_END_PAD = pd.Timedelta(seconds=1)  # inclusive end <-> exclusive stop
RAW_PAGES = "\x00pages"  # fetch_raw's key of the unparsed page bodies (no symbol is spelt so)
MEMORY_ROWS = 5_000_000  # the store thread keeps up to this many bars of the files it wrote (no re-read)


class CacheMetadataError(ValueError):
    """A cache file whose metadata is missing, unreadable or disagrees with the download (one line)."""


# ----------------------------------------------------------------------------------------------------
# Rate limiter


class TokenBucket:
    """A token bucket that keeps any window of ``window_s`` seconds at ``limit`` requests or fewer.

    It holds at most ``burst`` tokens and refills at ``(limit - burst) / window_s`` tokens a second, so
    ``burst + refill * window_s = limit`` bounds every window. :meth:`acquire` takes one token, waiting
    (with ``sleep``) until there is one.

    :param limit: the most requests in any window.
    :param window_s: the window, in seconds.
    :param burst: tokens available at once (requests sent without waiting after an idle spell).
    :param clock: monotonic seconds (injectable for tests).
    :param sleep: waits a number of seconds (injectable for tests; it must advance ``clock``).
    """

    def __init__(
        self,
        limit: int = DEFAULT_RATE_LIMIT,
        window_s: float = 60.0,
        burst: int = DEFAULT_BURST,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"rate limit={limit!r} must be a whole number of requests >= 1")
        if not isinstance(window_s, (int, float)) or not 0 < window_s < math.inf:
            raise ValueError(f"window_s={window_s!r} must be a positive number of seconds")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst={burst!r} must be a whole number >= 1")
        self.limit, self.window_s = limit, float(window_s)
        self.burst = min(burst, max(1, limit - 1)) if limit > 1 else 1
        self.rate = max(limit - self.burst, 1) / self.window_s
        self.clock, self.sleep = clock, sleep
        self.tokens = float(self.burst)
        self.updated = clock()
        self.waited_s = 0.0  # total time spent waiting for a token
        self.acquired = 0

    def acquire(self) -> None:
        """Take one token, waiting until one is there."""
        while True:
            now = self.clock()
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                self.acquired += 1
                return
            wait = max((1.0 - self.tokens) / self.rate, 1e-6)  # a floor, so float rounding cannot spin
            self.sleep(wait)
            self.waited_s += self.clock() - now


# ----------------------------------------------------------------------------------------------------
# Cache metadata: covered ranges and adjustment


Range = tuple[pd.Timestamp, pd.Timestamp]  # half-open [start, stop), UTC


@dataclass
class CacheMeta:
    """What ``meta.json`` records about one symbol's cached bars of one timeframe.

    :ivar symbol: as Alpaca spells it.
    :ivar timeframe: Alpaca's spelling.
    :ivar adjustment: the corporate-action adjustment of stock bars; None for crypto.
    :ivar feed: the stock feed asked (None: Alpaca's default for the plan); informative only.
    :ivar covered: merged half-open ranges already downloaded (bars or not).
    :ivar bars: how many bars ``data.parquet`` held at the last write.
    """

    symbol: str
    timeframe: str
    adjustment: str | None
    feed: str | None = None
    covered: list[Range] = field(default_factory=list)
    bars: int = 0

    def to_json(self) -> str:
        """The JSON text written to ``meta.json``."""
        return json.dumps({
            "version": META_VERSION, "symbol": self.symbol, "timeframe": self.timeframe,
            "adjustment": self.adjustment, "feed": self.feed, "bars": self.bars,
            "covered": [[a.isoformat(), b.isoformat()] for a, b in self.covered],
        }, indent=1) + "\n"


def metadata_path(symbol: str, timeframe: str, root: str | Path = DEFAULT_CACHE_ROOT) -> Path:
    """``meta.json`` beside the symbol's ``data.parquet``.

    :param symbol: ticker or crypto pair.
    :param timeframe: Alpaca's spelling.
    :param root: the cache root.
    """
    return cache_path(symbol, timeframe, root).with_name(META_FILE_NAME)


def read_metadata(symbol: str, timeframe: str, root: str | Path, adjustment: str | None,
                  feed: str | None = None) -> CacheMeta:
    """The symbol's metadata, checked against the download about to extend it.

    No cache yet gives empty metadata. A ``data.parquet`` that was deleted after its metadata was written
    gives empty coverage (everything is fetched again).

    :param symbol: ticker or crypto pair.
    :param timeframe: Alpaca's spelling.
    :param root: the cache root.
    :param adjustment: the adjustment this download asks (None for crypto).
    :param feed: the feed this download asks (recorded, not checked).
    :raises CacheMetadataError: unreadable metadata, bars with no metadata, or another adjustment.
    """
    data_path, meta_path = cache_path(symbol, timeframe, root), metadata_path(symbol, timeframe, root)
    fresh = CacheMeta(symbol, str(Timeframe.parse(timeframe)), adjustment, feed)
    if not meta_path.is_file():
        if data_path.is_file():
            raise CacheMetadataError(
                f"{data_path}: cached bars with no {META_FILE_NAME} beside them, so their adjustment is unknown "
                f"and they cannot be extended with adjustment={adjustment!r} bars; delete {data_path.parent} "
                f"and run again to download it whole")
        return fresh
    meta = _parse_metadata(meta_path, fresh)
    if meta.adjustment != adjustment:
        raise CacheMetadataError(
            f"{meta_path}: {symbol} {timeframe} bars are cached with adjustment={meta.adjustment!r}, this "
            f"download asks adjustment={adjustment!r}; adjusted and raw bars are never mixed: use "
            f"--adjustment {meta.adjustment} or another --cache-dir, or delete {data_path.parent}")
    if not data_path.is_file() and meta.bars > 0:
        meta.covered, meta.bars = [], 0  # the bars file was deleted: nothing is covered any more
    meta.feed = feed
    return meta


def _parse_metadata(path: Path, fresh: CacheMeta) -> CacheMeta:
    try:
        raw = json.loads(path.read_text())
        covered = [(_stamp(a), _stamp(b)) for a, b in raw["covered"]]
        meta = CacheMeta(str(raw["symbol"]), str(raw["timeframe"]), raw["adjustment"], raw.get("feed"),
                         merge_ranges(covered), int(raw["bars"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CacheMetadataError(
            f"{path}: unreadable cache metadata ({type(exc).__name__}: {exc}); expected JSON with symbol, "
            f"timeframe, adjustment, bars and covered [[start, stop], ...]; delete {path.parent} and run again"
        ) from None
    if (meta.symbol, meta.timeframe) != (fresh.symbol, fresh.timeframe):
        raise CacheMetadataError(
            f"{path}: metadata is for {meta.symbol} {meta.timeframe}, expected {fresh.symbol} {fresh.timeframe}; "
            f"delete {path.parent} and run again")
    return meta


def _stamp(text: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(text)
    if stamp.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return stamp.tz_convert("UTC")


def write_metadata(meta: CacheMeta, root: str | Path) -> Path:
    """Write ``meta.json`` atomically (temp file + rename).

    :param meta: what to write.
    :param root: the cache root.
    """
    path = metadata_path(meta.symbol, meta.timeframe, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, meta.to_json())
    return path


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, non-overlapping half-open ranges covering the same times (touching ranges are joined).

    :param ranges: half-open ``(start, stop)`` pairs; empty ones are dropped.
    """
    merged: list[Range] = []
    for start, stop in sorted(r for r in ranges if r[0] < r[1]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


def missing_ranges(span: Range, covered: list[Range]) -> list[Range]:
    """The parts of ``span`` that ``covered`` (merged) leaves out.

    :param span: a half-open range.
    :param covered: merged half-open ranges.
    """
    missing, cursor = [], span[0]
    for start, stop in covered:
        if stop <= cursor or start >= span[1]:
            continue
        if start > cursor:
            missing.append((cursor, start))
        cursor = max(cursor, stop)
    if cursor < span[1]:
        missing.append((cursor, span[1]))
    return missing


# ----------------------------------------------------------------------------------------------------
# One request (every page) for several symbols of one asset class


@dataclass
class FetchSettings:
    """How requests are sent: keys, server, stock options, network settings, limiter and timing.

    :ivar request_s: total time spent in HTTP requests (waiting on the server), measured.
    """

    api_key: str | None = None
    secret_key: str | None = None
    url_override: str | None = None
    adjustment: str = "all"
    feed: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout: float = DEFAULT_READ_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base: float = DEFAULT_BACKOFF_BASE_S
    backoff_max: float = DEFAULT_BACKOFF_MAX_S
    sleep: Callable[[float], Any] | None = None
    limiter: TokenBucket | None = None
    request_s: float = 0.0
    backoff_s: float = 0.0
    on_page: Callable[[Page], Any] | None = None  # each page as soon as it is received (bulk_download's store)


def fetch_batch(symbols: list[str], timeframe: str, span: Range, settings: FetchSettings) -> dict[str, pd.DataFrame]:
    """Bars of several stocks, or several crypto pairs, in ``[start, stop)``: one request, every page.

    :param symbols: all stocks or all crypto pairs, as Alpaca spells them.
    :param timeframe: Alpaca's spelling.
    :param span: half-open UTC range.
    :param settings: keys, server and network settings; its limiter is asked before every HTTP request.
    :return: ``{symbol: validated bars}`` for the symbols that had bars (others are left out).
    :raises AlpacaDataError: Alpaca refused or could not be reached (after the retries).
    """
    return bars_frames(fetch_raw(symbols, timeframe, span, settings), symbols)


def bars_frames(raw: dict[str, list[dict]], symbols: list[str]) -> dict[str, pd.DataFrame]:
    """``{symbol: validated bars}`` from Alpaca's raw answer, for the symbols that had bars.

    :param raw: ``{symbol: [wire bar, ...]}`` as alpaca-py returns it with ``raw_data=True``.
    :param symbols: the symbols asked (Alpaca's spelling; matched case-insensitively).
    """
    upper = {k.upper(): v for k, v in parse_pages(raw, _label(symbols)).items()}
    return {s: _bars_frame(upper[s.upper()], s) for s in symbols if upper.get(s.upper())}


def _label(symbols: list[str]) -> str:
    return symbols[0] if len(symbols) == 1 else f"{symbols[0]}..{symbols[-1]} ({len(symbols)} symbols)"


def parse_pages(raw: dict[str, list], label: str = "bars") -> dict[str, list[dict]]:
    """``{symbol: [wire bar, ...]}`` from :func:`fetch_raw`'s answer, whose pages may still be unparsed bodies
    (under :data:`RAW_PAGES`: the JSON of each page, in order; their bars are appended page by page, as
    alpaca-py merges pages).

    :param raw: :func:`fetch_raw`'s answer.
    :param label: the symbols asked, for messages.
    """
    if RAW_PAGES not in raw:
        return raw
    merged: dict[str, list[dict]] = {k: list(v) for k, v in raw.items() if k != RAW_PAGES}
    for number, item in enumerate(raw[RAW_PAGES], 1):
        try:
            page = item.value() if isinstance(item, Page) else json.loads(item)
        except ValueError as exc:
            raise ValueError(f"{label}: page {number} of the bars answer is not JSON ({exc})") from None
        bars = page.get("bars") if isinstance(page, dict) else None
        if not isinstance(bars, dict):
            raise ValueError(f"{label}: page {number} of the bars answer holds no 'bars' mapping of symbol -> "
                             f"bars; got {type(bars).__name__}")
        for symbol, rows in bars.items():
            merged.setdefault(symbol, []).extend(rows)
    return merged


def fetch_raw(symbols: list[str], timeframe: str, span: Range, settings: FetchSettings) -> dict[str, list[dict]]:
    """Alpaca's raw answer (``{symbol: [wire bar, ...]}``, every page) for :func:`fetch_batch`'s request.

    :param symbols: all stocks or all crypto pairs.
    :param timeframe: Alpaca's spelling.
    :param span: half-open UTC range.
    :param settings: keys, server and network settings, limiter.
    """
    from alpaca.data.enums import Adjustment, DataFeed
    from alpaca.data.historical import CryptoHistoricalDataClient, StockHistoricalDataClient
    from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest

    crypto = is_crypto_symbol(symbols[0])
    times = {"start": span[0].to_pydatetime(), "end": (span[1] - _END_PAD).to_pydatetime(),
             "timeframe": _alpaca_timeframe(timeframe), "symbol_or_symbols": list(symbols)}
    if crypto:
        keys = _optional_keys(settings.api_key, settings.secret_key)
        client: Any = CryptoHistoricalDataClient(*keys, raw_data=True, url_override=settings.url_override)
        request: Any = CryptoBarsRequest(**times)
        get, hints, name = client.get_crypto_bars, _CRYPTO_STATUS_HINTS, f"{timeframe} crypto bars"
    else:
        keys = _resolve_keys(settings.api_key, settings.secret_key)
        client = StockHistoricalDataClient(*keys, raw_data=True, url_override=settings.url_override)
        request = StockBarsRequest(
            **times, adjustment=_enum(Adjustment, settings.adjustment, "adjustment"),
            feed=_enum(DataFeed, settings.feed, "feed") if settings.feed is not None else None)
        get, hints, name = client.get_stock_bars, _STATUS_HINTS, f"{timeframe} bars"
    label = _label(symbols)
    session, redact = install_retrying_session(
        client, symbol=label, keys=keys, connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout, max_retries=settings.max_retries, backoff_base=settings.backoff_base,
        backoff_max=settings.backoff_max, sleep=_timed_sleep(settings), what=name,
        throttle=settings.limiter.acquire if settings.limiter is not None else None)
    _time_requests(session, settings)
    raw = call_alpaca(lambda: get(request), session=session, redact=redact, symbol=label,
                      where=settings.url_override or "Alpaca's data API",
                      span=f"{span[0]} to {span[1] - _END_PAD}", request_name=name, hints=hints,
                      connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout)
    return raw or {}


def _timed_sleep(settings: FetchSettings) -> Callable[[float], Any]:
    sleep = settings.sleep if settings.sleep is not None else time.sleep

    def timed(seconds: float) -> None:
        settings.backoff_s += seconds
        sleep(seconds)

    return timed


def _time_requests(session: Any, settings: FetchSettings) -> None:
    """Add the time of every HTTP exchange (``session.send``) to ``settings.request_s``, and leave each
    successful page's JSON unparsed: alpaca-py gets ``{"bars": {RAW_PAGES: [body]}, "next_page_token": ...}``
    (the token read from the body alone, see :func:`_page_token`), so the bars are parsed by the store thread
    (:func:`parse_pages`) while this one waits for the next request."""
    send = session.send

    def timed_send(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            response = send(*args, **kwargs)
            response.content  # noqa: B018 (read the body here: it is the server's time)
        finally:
            settings.request_s += time.perf_counter() - began
        if response.status_code == 200:
            page = Page(response.content)
            if settings.on_page is not None:
                settings.on_page(page)
            response.json = lambda **_: {"bars": {RAW_PAGES: [page]}, "next_page_token": _page_token(page.body)}
        return response

    session.send = timed_send


class Page:
    """One page of Alpaca's bars answer as received: its JSON body, parsed once, when first asked (the store
    thread parses it ahead of its unit: see :class:`_StoreThread`).

    :param body: the page's JSON.
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._parsed: Any = None
        self._error: ValueError | None = None
        self._done = False

    def parse(self) -> None:
        """Parse the body now, once (an error is kept for :meth:`value`)."""
        if not self._done:
            try:
                self._parsed = json.loads(self.body)
            except ValueError as exc:
                self._error = exc
            self._done = True

    def value(self) -> Any:
        """The parsed page.

        :raises ValueError: the body is not JSON.
        """
        self.parse()
        if self._error is not None:
            raise self._error
        return self._parsed


_TOKEN = re.compile(rb'"next_page_token"\s*:\s*(null|"(?:[^"\\]|\\.)*")')


def _page_token(body: bytes) -> str | None:
    """A bars page's ``next_page_token`` (None: the last page) without parsing its bars: the key's one
    occurrence in the body (bars hold numbers and times, symbols no quotes); anything else parses it whole.

    :param body: the page's JSON.
    """
    found = _TOKEN.findall(body)
    if len(found) == 1:
        token = json.loads(found[0])
    else:
        page = json.loads(body)
        token = page.get("next_page_token") if isinstance(page, dict) else None
    if token is not None and not isinstance(token, str):
        raise ValueError(f"a bars page from Alpaca has next_page_token={token!r}; expected text or null")
    return token


# ----------------------------------------------------------------------------------------------------
# The download


@dataclass
class Unit:
    """One request's worth of work: symbols (one asset class) and the half-open range they all miss."""

    symbols: list[str]
    span: Range


@dataclass
class DownloadResult:
    """What :func:`bulk_download` did: requests sent, units fetched, and where the time went."""

    units_total: int = 0
    units_fetched: int = 0
    requests: int = 0
    wall_s: float = 0.0
    limiter_s: float = 0.0
    request_s: float = 0.0
    backoff_s: float = 0.0

    @property
    def overhead_share(self) -> float:
        """The share of wall time spent neither waiting on the limiter, the backoff nor the server."""
        if self.wall_s <= 0:
            return 0.0
        return max(0.0, self.wall_s - self.limiter_s - self.request_s - self.backoff_s) / self.wall_s


def default_stop(timeframe: str, now: pd.Timestamp | None = None) -> pd.Timestamp:
    """The exclusive stop when no end is given: the last bar boundary 15 minutes ago (UTC).

    :param timeframe: Alpaca's spelling.
    :param now: the current time (None: now).
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now).tz_convert("UTC")
    step = min(Timeframe.parse(timeframe).seconds, 86_400)
    return (now - FREE_PLAN_DELAY).floor(pd.Timedelta(seconds=step))


def time_span(start: Any, end: Any, timeframe: str) -> Range:
    """``[start, stop)`` in UTC from an inclusive ``start``/``end`` (naive = UTC; end None: :func:`default_stop`).

    :param start: first bar time.
    :param end: last bar time, or None.
    :param timeframe: Alpaca's spelling.
    """
    first = _utc_arg(start, "start")
    stop = default_stop(timeframe) if end is None else _utc_arg(end, "end") + _END_PAD
    if first >= stop:
        raise ValueError(f"start={first} is not before end={stop - _END_PAD}; pass an earlier --start")
    return first, stop


def _utc_arg(value: Any, name: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ValueError(f"{name}={value!r} is not a date or timestamp (e.g. 2019-01-01)") from None
    if pd.isna(stamp):
        raise ValueError(f"{name}={value!r} is not a date or timestamp (e.g. 2019-01-01)")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def chunk_length(timeframe: str, symbols_per_request: int, chunk_days: float | None = None,
                 crypto: bool = True) -> pd.Timedelta:
    """The time chunk of a unit: given, or at most about :data:`PAGES_PER_UNIT` full pages of bars.

    Crypto trades 24/7; stocks trade on weekdays only, intraday bars at most from 04:00 to 20:00 New York
    (extended hours included): :data:`STOCK_WEEK_SHARE` of the week, so their chunk is longer by its inverse.

    :param timeframe: Alpaca's spelling.
    :param symbols_per_request: symbols asked together.
    :param chunk_days: days per chunk (None: computed).
    :param crypto: the chunk of crypto pairs (True) or of stocks (False).
    """
    if chunk_days is not None:
        if not isinstance(chunk_days, (int, float)) or not 0 < chunk_days < math.inf:
            raise ValueError(f"chunk_days={chunk_days!r} must be a positive number of days")
        return pd.Timedelta(days=chunk_days)
    tf = Timeframe.parse(timeframe)
    share = 1.0 if crypto else STOCK_WEEK_SHARE * (STOCK_DAY_SHARE if tf.is_intraday else 1.0)
    bars = PAGES_PER_UNIT * PAGE_BARS / max(1, symbols_per_request)
    days = max(1, math.floor(bars * tf.seconds / 86_400 / share))
    return pd.Timedelta(days=days)


def plan_units(metas: dict[str, CacheMeta], span: Range, chunk: pd.Timedelta, symbols_per_request: int,
               crypto_chunk: pd.Timedelta | None = None) -> list[Unit]:
    """The requests still needed: per asset class (stocks first) and batch of symbols, per chunk, the ranges
    not covered.

    Symbols of a batch that miss exactly the same range of a chunk share one request.

    :param metas: each symbol's metadata (its ``covered`` ranges).
    :param span: the download's half-open range.
    :param chunk: the chunk length of stocks.
    :param symbols_per_request: the most symbols in one request.
    :param crypto_chunk: the chunk length of crypto pairs (None: ``chunk``).
    """
    symbols = list(metas)
    groups = [([s for s in symbols if not is_crypto_symbol(s)], chunk),
              ([s for s in symbols if is_crypto_symbol(s)], crypto_chunk or chunk)]
    units = []
    for group, length in groups:
        chunks, cursor = [], span[0]
        while cursor < span[1]:
            chunks.append((cursor, min(cursor + length, span[1])))
            cursor = chunks[-1][1]
        for i in range(0, len(group), symbols_per_request):
            batch = group[i : i + symbols_per_request]
            for piece in chunks:
                by_range: dict[Range, list[str]] = {}
                for symbol in batch:
                    for gap in missing_ranges(piece, metas[symbol].covered):
                        by_range.setdefault(gap, []).append(symbol)
                units.extend(Unit(members, gap) for gap, members in sorted(by_range.items()))
    return units


def bulk_download(
    symbols: Iterable[str],
    timeframe: str,
    start: Any,
    end: Any = None,
    *,
    root: str | Path = DEFAULT_CACHE_ROOT,
    settings: FetchSettings | None = None,
    symbols_per_request: int = DEFAULT_SYMBOLS_PER_REQUEST,
    chunk_days: float | None = None,
    progress: Callable[[int, str], Any] | None = None,
    on_plan: Callable[[int], Any] | None = None,
) -> DownloadResult:
    """Download every symbol's bars in ``[start, end]`` into the cache, resuming what is already covered.

    :param symbols: tickers and crypto pairs as Alpaca spells them (duplicates once).
    :param timeframe: Alpaca's spelling (``"1Hour"``).
    :param start: first bar time, inclusive (naive = UTC).
    :param end: last bar time, inclusive (None: :func:`default_stop`).
    :param root: the cache root.
    :param settings: keys, server, adjustment, feed, network settings and limiter (None: defaults, a
        200-a-minute :class:`TokenBucket`).
    :param symbols_per_request: the most symbols asked in one request.
    :param chunk_days: days of bars per request (None: about 40 pages' worth).
    :param progress: called after each unit with the symbols it covered and a label.
    :param on_plan: called once with the number of (symbol, range) pieces to fetch, before any request.
    :return: counts and timings.
    :raises CacheMetadataError: a cache file with unknown or another adjustment (before any request).
    :raises AlpacaDataError: a request failed after its retries; everything written before stays covered.
    """
    began = time.perf_counter()
    symbols = list(dict.fromkeys(symbols))
    if not symbols:
        raise ValueError("no symbols to download; pass at least one")
    if isinstance(symbols_per_request, bool) or not isinstance(symbols_per_request, int) or symbols_per_request < 1:
        raise ValueError(f"symbols_per_request={symbols_per_request!r} must be a whole number >= 1")
    settings = settings if settings is not None else FetchSettings(limiter=TokenBucket())
    _check_network_options(settings.connect_timeout, settings.read_timeout, settings.max_retries,
                           settings.backoff_base, settings.backoff_max, settings.sleep)
    _alpaca_timeframe(timeframe)
    span = time_span(start, end, timeframe)
    metas = {s: read_metadata(s, timeframe, root, None if is_crypto_symbol(s) else settings.adjustment,
                              None if is_crypto_symbol(s) else settings.feed) for s in symbols}
    units = plan_units(metas, span, chunk_length(timeframe, symbols_per_request, chunk_days, crypto=False),
                       symbols_per_request, chunk_length(timeframe, symbols_per_request, chunk_days, crypto=True))
    result = DownloadResult(units_total=len(units))
    if on_plan is not None:
        on_plan(sum(len(u.symbols) for u in units))
    limiter_before = settings.limiter.waited_s if settings.limiter else 0.0
    acquired_before = settings.limiter.acquired if settings.limiter else 0
    request_before, backoff_before = settings.request_s, settings.backoff_s
    writer = _StoreThread(metas, root)
    on_page, settings.on_page = settings.on_page, writer.prefetch
    try:
        for unit in units:
            raw = fetch_raw(unit.symbols, timeframe, unit.span, settings)
            writer.submit(unit, raw)
            result.units_fetched += 1
            if progress is not None:
                progress(len(unit.symbols), f"{unit.symbols[0]} {unit.span[0]:%Y-%m-%d}")
        writer.close()
    finally:
        settings.on_page = on_page
        writer.close()  # after a failure or a kill: the units fetched before it are still stored
        result.wall_s = time.perf_counter() - began
        if settings.limiter is not None:
            result.limiter_s = settings.limiter.waited_s - limiter_before
            result.requests = settings.limiter.acquired - acquired_before
        result.request_s = settings.request_s - request_before
        result.backoff_s = settings.backoff_s - backoff_before
    return result


class _StoreThread:
    """Stores fetched units in order in one background thread, so parsing and writing overlap the waits
    for the rate limit and the server. :meth:`close` stores what was submitted, then stops; an error in
    the thread is raised by the next :meth:`submit` or by :meth:`close` (unless one is already raising).

    :param metas: each symbol's metadata (updated as units are stored).
    :param root: the cache root.
    """

    def __init__(self, metas: dict[str, CacheMeta], root: str | Path) -> None:
        self.metas, self.root = metas, root
        self.queue: queue.Queue[tuple[Unit, dict] | Page | None] = queue.Queue()
        self.slots = threading.Semaphore(STORE_QUEUE_UNITS)
        self.error: BaseException | None = None
        self.written = _WrittenFrames()
        self.thread = threading.Thread(target=self._run, name="bars-store", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if isinstance(item, Page):
                if self.error is None:
                    item.parse()  # ahead of its unit, while the next pages are fetched
                continue
            try:
                if self.error is not None:
                    continue  # drain: nothing after a failed unit is stored (its ranges stay missing)
                unit, raw = item
                frames = bars_frames(raw, unit.symbols)
                for symbol in unit.symbols:
                    _store(self.metas[symbol], frames.get(symbol), unit.span, self.root, self.written)
            except BaseException as exc:  # handed to the main thread
                self.error = exc
            finally:
                self.slots.release()

    def prefetch(self, page: Page) -> None:
        """Queue a page just received, to be parsed as soon as the thread gets to it.

        :param page: the page.
        """
        self.queue.put(page)

    def submit(self, unit: Unit, raw: dict) -> None:
        """Queue a fetched unit (waits while :data:`STORE_QUEUE_UNITS` units are already waiting).

        :param unit: the unit.
        :param raw: its raw answer.
        """
        self._raise()
        self.slots.acquire()
        self.queue.put((unit, raw))

    def close(self) -> None:
        """Store everything submitted and stop the thread; raise its error unless one is in flight."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if sys.exc_info()[0] is None:
            self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error


class _WrittenFrames:
    """The bars the store thread last wrote to each file (up to ``limit`` bars in all, the oldest dropped
    first), with the file's identity then (inode, size, mtime): a later unit whose bars all follow them is
    appended in memory instead of reading the file back, unless the file changed since.

    :param limit: the most bars kept.
    """

    def __init__(self, limit: int = MEMORY_ROWS) -> None:
        self.limit = limit
        self.frames: dict[Path, tuple[pd.DataFrame, tuple[int, int, int]]] = {}
        self.rows = 0

    def get(self, path: Path) -> pd.DataFrame | None:
        """What was written to ``path``, if kept and the file is still that one.

        :param path: a cache file.
        """
        entry = self.frames.get(path)
        if entry is None or _identity(path) != entry[1]:
            return None
        return entry[0]

    def put(self, path: Path, frame: pd.DataFrame | None) -> None:
        """Record what was just written to ``path`` (None: not known; forget it).

        :param path: a cache file.
        :param frame: its bars.
        """
        old = self.frames.pop(path, None)
        self.rows -= len(old[0]) if old is not None else 0
        if frame is None or len(frame) > self.limit:
            return
        self.frames[path] = (frame, _identity(path))
        self.rows += len(frame)
        while self.rows > self.limit:
            oldest = next(iter(self.frames))
            self.rows -= len(self.frames.pop(oldest)[0])


def _identity(path: Path) -> tuple[int, int, int]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return (-1, -1, -1)
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _store(meta: CacheMeta, bars: pd.DataFrame | None, span: Range, root: str | Path,
           written: _WrittenFrames | None = None) -> None:
    """Merge a unit's bars into the Parquet (atomically), then record the range as covered (atomically).

    The merge reads the file back unless ``written`` holds what was last written there and the new bars all
    follow it (a download's chunks come in time order), or there is no file yet.

    :param meta: the symbol's metadata (updated).
    :param bars: the unit's validated bars of the symbol (None or empty: none).
    :param span: the unit's range.
    :param root: the cache root.
    :param written: the store thread's frames (None: always read the file back).
    """
    if bars is not None and len(bars):
        path = cache_path(meta.symbol, meta.timeframe, root)
        before = written.get(path) if written is not None else None
        if before is not None and before.index[-1] < bars.index[0]:
            frame = pd.concat([before, bars])
        elif not path.is_file():
            frame = bars
        else:
            frame = None
        if frame is None:
            write_cached_bars(bars, meta.symbol, meta.timeframe, root=root, merge=True)
            import pyarrow.parquet as pq

            meta.bars = pq.ParquetFile(path).metadata.num_rows
        else:
            write_cached_bars(frame, meta.symbol, meta.timeframe, root=root, merge=False)
            meta.bars = len(frame)
        if written is not None:
            written.put(path, frame)
    meta.covered = merge_ranges([*meta.covered, span])
    write_metadata(meta, root)


# ----------------------------------------------------------------------------------------------------
# The closing table


def summary_table(symbols: Iterable[str], timeframe: str, span: Range, root: str | Path = DEFAULT_CACHE_ROOT,
                  stale_after: pd.Timedelta = pd.Timedelta(days=7)) -> pd.DataFrame:
    """Per symbol: bars in ``[start, stop)``, first and last timestamp, gaps (:func:`features.bars.find_gaps`),
    and a note for a symbol with no bars or whose bars stop more than ``stale_after`` before the others of
    its asset class (delisted?); a last row ``TOTAL``.

    :param symbols: as Alpaca spells them.
    :param timeframe: Alpaca's spelling.
    :param span: the download's half-open range.
    :param root: the cache root.
    :param stale_after: how much earlier than its asset class's latest bar a last bar must be to be noted.
    """
    rows = []
    for symbol in dict.fromkeys(symbols):
        try:
            bars = read_cached_bars(symbol, timeframe, root)
        except FileNotFoundError:
            bars = None
        if bars is not None:
            bars = bars[(bars.index >= span[0]) & (bars.index < span[1])]
        has = bars is not None and len(bars) > 0
        rows.append({"symbol": symbol, "bars": len(bars) if has else 0,
                     "first": bars.index[0] if has else pd.NaT, "last": bars.index[-1] if has else pd.NaT,
                     "gaps": len(find_gaps(bars, timeframe)) if has else 0,
                     "crypto": is_crypto_symbol(symbol), "note": "" if has else "no bars in the range"})
    table = pd.DataFrame(rows, columns=["symbol", "bars", "first", "last", "gaps", "crypto", "note"])
    for crypto, part in table.groupby("crypto"):
        latest = part["last"].max()
        stale = part.index[part["last"].notna() & (part["last"] < latest - stale_after)]
        table.loc[stale, "note"] = [f"bars stop at {t} (delisted?)" for t in table.loc[stale, "last"]]
    table = table.drop(columns="crypto")
    total = {"symbol": "TOTAL", "bars": int(table["bars"].sum()), "first": table["first"].min(),
             "last": table["last"].max(), "gaps": int(table["gaps"].sum()),
             "note": f"{len(table)} symbols"}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True).set_index("symbol")
