"""Historical bars from Alpaca's market data API (via alpaca-py), and downloading them into the cache.

alpaca-py's ``StockHistoricalDataClient.get_stock_bars`` calls ``GET {base}/v2/stocks/bars`` (the
multi-symbol endpoint, ``symbols=AAPL``) and follows ``next_page_token`` until the server stops sending
one, 10,000 bars a page. Keys come from the arguments or from ``APCA_API_KEY_ID`` /
``APCA_API_SECRET_KEY``. alpaca-py retries only HTTP 429 and 504 (3 times, 3 s apart); every other
error status fails at once and is re-raised here as :class:`AlpacaDataError`.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .bars import Timeframe, validate_bars
from .parquet_cache import DEFAULT_CACHE_ROOT, cache_path, write_cached_bars

API_KEY_ENV = "APCA_API_KEY_ID"
SECRET_KEY_ENV = "APCA_API_SECRET_KEY"

# Alpaca's wire names for a bar's fields; "n" (trade count) is not part of our bars frame.
_WIRE_COLUMNS: dict[str, str] = {
    "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vw": "vwap",
}

_STATUS_HINTS: dict[int, str] = {
    401: "check APCA_API_KEY_ID / APCA_API_SECRET_KEY",
    403: "check the keys, and that your plan covers this feed (free plans: feed='iex', or an end "
    "at least 15 minutes in the past for SIP)",
    404: "check url_override: give the host only (e.g. 'https://data.alpaca.markets'); alpaca-py adds "
    "'/v2/stocks/bars'",
    422: "the request was rejected as invalid: check the symbol, timeframe, dates, feed and adjustment",
    429: "rate limited; alpaca-py already retried, wait and try again",
}


class AlpacaDataError(RuntimeError):
    """Alpaca refused a bars request or could not be reached.

    :ivar symbol: the symbol requested.
    :ivar status_code: the HTTP status, or None when no response came back.
    :ivar server_message: the server's ``message`` (or its raw body when that is not JSON).
    """

    def __init__(self, message: str, symbol: str, status_code: int | None, server_message: str) -> None:
        super().__init__(message)
        self.symbol = symbol
        self.status_code = status_code
        self.server_message = server_message


def fetch_alpaca_bars(
    symbol: str,
    timeframe: str,
    start: str | datetime | pd.Timestamp,
    end: str | datetime | pd.Timestamp | None = None,
    *,
    api_key: str | None = None,
    secret_key: str | None = None,
    url_override: str | None = None,
    feed: str | None = None,
    adjustment: str = "all",
) -> pd.DataFrame:
    """Download one symbol's historical bars from Alpaca, every page of them.

    :param symbol: the ticker (``"AAPL"``).
    :param timeframe: bar length in Alpaca's spelling (``"1Day"``, ``"1Hour"``, ``"15Min"``).
    :param start: first bar time (inclusive); naive times are UTC.
    :param end: last bar time (inclusive); naive times are UTC; None lets Alpaca use "now".
    :param api_key: Alpaca key id; None reads ``APCA_API_KEY_ID``.
    :param secret_key: Alpaca secret key; None reads ``APCA_API_SECRET_KEY``.
    :param url_override: base URL of the data API (a proxy or a test server); None uses Alpaca's.
    :param feed: ``"iex"``, ``"sip"``, ``"delayed_sip"``, ...; None lets Alpaca choose by plan.
    :param adjustment: corporate-action adjustment: ``"raw"``, ``"split"``, ``"dividend"`` or ``"all"``.
    :return: a validated bars frame (UTC ``timestamp`` index; float64 open, high, low, close, volume, vwap).
    :raises ValueError: missing keys, a bad argument, or no bars in the range.
    :raises AlpacaDataError: an error response from Alpaca (with symbol, HTTP status and message), or no
        connection.
    """
    from alpaca.common.exceptions import APIError
    from alpaca.data.historical import StockHistoricalDataClient
    from requests.exceptions import RequestException

    api_key, secret_key = _resolve_keys(api_key, secret_key)
    request = _bars_request(symbol, timeframe, start, end, feed, adjustment)
    span = f"{_utc(start, 'start')} to {_utc(end, 'end') if end is not None else 'now'}"
    client = StockHistoricalDataClient(api_key, secret_key, raw_data=True, url_override=url_override)
    where = url_override or "Alpaca's data API"
    try:
        raw = client.get_stock_bars(request)
    except APIError as exc:
        status, message = exc.status_code, _server_message(exc)
        hint = _STATUS_HINTS.get(status, "")
        raise AlpacaDataError(
            f"{symbol}: Alpaca refused the {timeframe} bars request ({span}) with HTTP {status}: "
            f"{message!r}" + (f"; {hint}" if hint else ""),
            symbol,
            status,
            message,
        ) from exc
    except RequestException as exc:
        raise AlpacaDataError(
            f"{symbol}: could not reach {where} for {timeframe} bars ({type(exc).__name__}: {exc})",
            symbol,
            None,
            str(exc),
        ) from exc

    raw = raw or {}
    # Alpaca keys the response by its own spelling of the symbol (upper case).
    rows = raw.get(symbol) or next((v for k, v in raw.items() if k.upper() == symbol.upper()), [])
    if not rows:
        raise ValueError(
            f"{symbol}: Alpaca returned no {timeframe} bars from {span} "
            f"(feed={feed or 'default'}); check the symbol, the dates and that the market was open"
        )
    return _bars_frame(rows, symbol)


def download_to_cache(
    symbols: str | Iterable[str],
    timeframe: str,
    start: str | datetime | pd.Timestamp,
    end: str | datetime | pd.Timestamp | None = None,
    root: str | Path = DEFAULT_CACHE_ROOT,
    **fetch_options: Any,
) -> dict[str, Path]:
    """Download bars for each symbol and merge them into the Parquet cache.

    Symbols are fetched and written one at a time; each file is replaced atomically, so a failure on
    one symbol leaves the symbols written before it cached and its own previous file (if any) untouched.

    :param symbols: one ticker or several.
    :param timeframe: bar length in Alpaca's spelling (``"1Day"``, ``"1Hour"``, ``"15Min"``).
    :param start: first bar time (inclusive); naive times are UTC.
    :param end: last bar time (inclusive); None means now.
    :param root: root directory of the cache.
    :param fetch_options: passed to :func:`fetch_alpaca_bars` (``api_key``, ``secret_key``,
        ``url_override``, ``feed``, ``adjustment``).
    :return: ``{symbol: path of its cache file}``.
    """
    if isinstance(symbols, str):
        symbols = [symbols]
    symbols = list(symbols)
    if not symbols:
        raise ValueError("symbols is empty; pass at least one symbol")
    for symbol in symbols:  # reject a bad name before any download starts
        cache_path(symbol, timeframe, root)
    _resolve_keys(fetch_options.get("api_key"), fetch_options.get("secret_key"))

    written: dict[str, Path] = {}
    for symbol in symbols:
        bars = fetch_alpaca_bars(symbol, timeframe, start, end, **fetch_options)
        written[symbol] = write_cached_bars(bars, symbol, timeframe, root=root, merge=True)
    return written


def _resolve_keys(api_key: str | None, secret_key: str | None) -> tuple[str, str]:
    api_key = api_key or os.environ.get(API_KEY_ENV)
    secret_key = secret_key or os.environ.get(SECRET_KEY_ENV)
    missing = [name for name, value in ((API_KEY_ENV, api_key), (SECRET_KEY_ENV, secret_key)) if not value]
    if missing:
        raise ValueError(
            f"Alpaca keys missing: set the environment variable(s) {' and '.join(missing)} "
            f"(or pass api_key=... and secret_key=...); free keys: https://alpaca.markets. "
            f"Without keys, use source='embedded' or a filled cache with source='parquet'"
        )
    return api_key, secret_key


def _bars_request(
    symbol: str,
    timeframe: str,
    start: str | datetime | pd.Timestamp,
    end: str | datetime | pd.Timestamp | None,
    feed: str | None,
    adjustment: str,
) -> Any:
    from alpaca.data.enums import Adjustment, DataFeed
    from alpaca.data.requests import StockBarsRequest
    from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

    if not isinstance(symbol, str) or not symbol.strip():
        raise ValueError(f"symbol={symbol!r} is not a ticker; expected a non-empty string such as 'AAPL'")
    tf = Timeframe.parse(timeframe)
    try:
        alpaca_timeframe = TimeFrame(tf.amount, TimeFrameUnit(tf.unit))
    except ValueError as exc:
        raise ValueError(f"timeframe={timeframe!r} is not offered by Alpaca: {exc}") from exc
    start_ts = _utc(start, "start")
    end_ts = _utc(end, "end") if end is not None else None
    if end_ts is not None and start_ts > end_ts:
        raise ValueError(f"start={start_ts} is after end={end_ts}")
    return StockBarsRequest(
        symbol_or_symbols=symbol,
        timeframe=alpaca_timeframe,
        start=start_ts.to_pydatetime(),
        end=end_ts.to_pydatetime() if end_ts is not None else None,
        adjustment=_enum(Adjustment, adjustment, "adjustment"),
        feed=_enum(DataFeed, feed, "feed") if feed is not None else None,
    )


def _enum(kind: Any, value: Any, name: str) -> Any:
    try:
        return kind(value.lower() if isinstance(value, str) else value)
    except ValueError:
        allowed = [member.value for member in kind]
        raise ValueError(f"{name}={value!r} is not known to Alpaca; expected one of {allowed}") from None


def _utc(value: str | datetime | pd.Timestamp, name: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}={value!r} is not a date or timestamp") from exc
    if pd.isna(stamp):
        raise ValueError(f"{name}={value!r} is not a date or timestamp")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _server_message(exc: Exception) -> str:
    body = str(exc)
    try:
        payload = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    if isinstance(payload, dict) and "message" in payload:
        return str(payload["message"])
    return body.strip()[:500]


def _bars_frame(rows: list[dict[str, Any]], symbol: str) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows)
    if "t" not in frame.columns:
        raise ValueError(
            f"{symbol}: Alpaca bars carry no timestamp field 't'; got fields {list(frame.columns)}"
        )
    index = pd.DatetimeIndex(pd.to_datetime(frame["t"], utc=True, format="ISO8601"), name="timestamp")
    frame = frame.rename(columns=_WIRE_COLUMNS)
    frame = frame[[c for c in _WIRE_COLUMNS.values() if c in frame.columns]]
    if "vwap" in frame.columns:
        # vwap is optional: null on some bars is allowed, null on all of them means "not provided".
        frame["vwap"] = pd.to_numeric(frame["vwap"], errors="coerce")
        if frame["vwap"].isna().all():
            frame = frame.drop(columns="vwap")
    frame.index = index
    return validate_bars(frame, symbol)
