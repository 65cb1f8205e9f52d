"""Historical bars from Alpaca's market data API (via alpaca-py), and downloading them into the cache.

alpaca-py's ``StockHistoricalDataClient.get_stock_bars`` calls ``GET {base}/v2/stocks/bars`` (the
multi-symbol endpoint, ``symbols=AAPL``) and follows ``next_page_token`` until the server stops sending
one, 10,000 bars a page. Keys come from the arguments or from ``APCA_API_KEY_ID`` /
``APCA_API_SECRET_KEY``.

Crypto: a symbol with a slash (``BTC/USD``, Alpaca's spelling of a pair) is fetched with alpaca-py's
``CryptoHistoricalDataClient.get_crypto_bars`` (``GET {base}/v1beta3/crypto/us/bars?symbols=BTC/USD,ETH/USD``),
several pairs per request (:func:`fetch_alpaca_crypto_bars`), through the same retrying session, pages and
error messages. Crypto data needs no keys: they are sent when both are set, and nothing is sent when
neither is. ``feed`` and ``adjustment`` are stock options (crypto has one feed, ``us``, and no corporate
actions) and are not sent for crypto. Crypto trades 24/7: weekend and night bars are kept as they come.

Network behaviour (every HTTP request, each page included):

* **Timeouts.** Each request has a connect timeout (``connect_timeout``, default 10 s: time to open the
  connection) and a read timeout (``read_timeout``, default 30 s: the longest silence allowed while
  waiting for the answer or for more of its bytes). A server that accepts the connection and never
  answers therefore fails after about ``read_timeout`` per attempt instead of hanging. The read timeout
  bounds each wait, not the whole download: a server trickling bytes slower than that can still take
  longer.
* **Retries.** HTTP 429 (rate limited), any 5xx, connection errors (refused, reset, dropped mid-answer)
  and timeouts are retried, at most ``max_retries`` times (default 4, so 5 attempts in all). Other
  statuses (400, 401, 403, 404, 422, ...) and TLS certificate errors fail at once. alpaca-py's own
  retry (429 and 504, 3 times, 3 s apart) is switched off, so this module is the only place that retries.
* **Backoff.** Before retry *k* (1, 2, ...) it waits ``backoff_base * 2 ** (k - 1)`` seconds (default
  1, 2, 4, 8), at most ``backoff_max`` (default 30 s). ``sleep`` (default :func:`time.sleep`) does the
  waiting, so tests can record the waits instead of sleeping.
* **Retry-After.** When a 429 or 5xx answer carries ``Retry-After`` in its seconds form, that wait is used
  instead of the backoff, capped at :data:`RETRY_AFTER_MAX_S` (60 s). The HTTP-date form, or an
  unreadable value, falls back to the backoff.
* **Failure.** When the retries run out, or on a status that is not retried, :class:`AlpacaDataError`
  says which symbol, what happened (HTTP status and the server's message, or "timed out after N s"),
  on how many attempts, and what to do. Each retry is logged as a warning on this module's logger.
  The keys are never written into a message, an exception or a log line; where the server echoes them
  back in its error body, they are masked as ``***`` (and that raw error is not chained).

With the defaults one page gives up after at most 5 x 30 s of read timeouts plus 15 s of backoff.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from datetime import datetime
from pathlib import Path
from functools import lru_cache
from typing import Any, Callable, Iterable

import pandas as pd

from .bars import Timeframe, validate_bars
from .parquet_cache import DEFAULT_CACHE_ROOT, cache_path, is_crypto_symbol, write_cached_bars

logger = logging.getLogger(__name__)

API_KEY_ENV = "APCA_API_KEY_ID"
SECRET_KEY_ENV = "APCA_API_SECRET_KEY"

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 30.0
DEFAULT_MAX_RETRIES = 4
DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_MAX_S = 30.0
RETRY_AFTER_MAX_S = 60.0  # the longest Retry-After honoured; a longer one is cut to this
CRYPTO_SYMBOLS_PER_REQUEST = 50  # crypto pairs asked in one request (Alpaca pages over all of them)
_STOCK_ONLY_OPTIONS = ("feed", "adjustment")
_STATUS_PAGE = "https://status.alpaca.markets"

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
    429: "rate limited: wait a minute and try again, or download fewer symbols at a time",
}
_CRYPTO_STATUS_HINTS: dict[int, str] = {
    **_STATUS_HINTS,
    400: "check that each pair is one Alpaca trades, spelt BASE/QUOTE (e.g. 'BTC/USD'), and the dates",
    401: "crypto data needs no keys: unset APCA_API_KEY_ID / APCA_API_SECRET_KEY, or check them",
    403: "crypto data needs no keys: unset APCA_API_KEY_ID / APCA_API_SECRET_KEY, or check them",
    404: "check url_override: give the host only (e.g. 'https://data.alpaca.markets'); alpaca-py adds "
    "'/v1beta3/crypto/us/bars'",
    422: "the request was rejected as invalid: check each pair (e.g. 'BTC/USD'), the timeframe and the dates",
}
_SERVER_ERROR_HINT = f"the error is on Alpaca's side: check {_STATUS_PAGE} and try again later"


class AlpacaDataError(RuntimeError):
    """Alpaca refused a bars request or could not be reached.

    :ivar symbol: the symbol requested.
    :ivar status_code: the HTTP status, or None when no response came back.
    :ivar server_message: the server's ``message`` (or its raw body when that is not JSON), or the
        network error's text when no response came back; keys in it are masked as ``***``.
    :ivar attempts: how many times the failing request was sent (retries included).
    """

    def __init__(
        self,
        message: str,
        symbol: str,
        status_code: int | None,
        server_message: str,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.symbol = symbol
        self.status_code = status_code
        self.server_message = server_message
        self.attempts = attempts


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
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    read_timeout: float = DEFAULT_READ_TIMEOUT_S,
    max_retries: int = DEFAULT_MAX_RETRIES,
    backoff_base: float = DEFAULT_BACKOFF_BASE_S,
    backoff_max: float = DEFAULT_BACKOFF_MAX_S,
    sleep: Callable[[float], Any] | None = None,
) -> pd.DataFrame:
    """Download one symbol's historical bars from Alpaca, every page of them.

    A crypto pair (``"BTC/USD"``) goes to :func:`fetch_alpaca_crypto_bars`: keys optional, ``feed`` and
    ``adjustment`` not sent (stock options).

    :param symbol: the ticker (``"AAPL"``) or crypto pair (``"BTC/USD"``).
    :param timeframe: bar length in Alpaca's spelling (``"1Day"``, ``"1Hour"``, ``"15Min"``).
    :param start: first bar time (inclusive); naive times are UTC.
    :param end: last bar time (inclusive); naive times are UTC; None lets Alpaca use "now".
    :param api_key: Alpaca key id; None reads ``APCA_API_KEY_ID``.
    :param secret_key: Alpaca secret key; None reads ``APCA_API_SECRET_KEY``.
    :param url_override: base URL of the data API (a proxy or a test server); None uses Alpaca's.
    :param feed: ``"iex"``, ``"sip"``, ``"delayed_sip"``, ...; None lets Alpaca choose by plan.
    :param adjustment: corporate-action adjustment: ``"raw"``, ``"split"``, ``"dividend"`` or ``"all"``.
    :param connect_timeout: seconds allowed to open a connection, per attempt.
    :param read_timeout: seconds of silence allowed while waiting for an answer, per attempt.
    :param max_retries: retries of one request after a 429, a 5xx, a connection error or a timeout
        (0: no retries).
    :param backoff_base: wait before the first retry, in seconds; it doubles on each further retry.
    :param backoff_max: longest backoff wait, in seconds (a ``Retry-After`` is capped at
        :data:`RETRY_AFTER_MAX_S` instead).
    :param sleep: called with the seconds to wait before each retry; None uses :func:`time.sleep`.
    :return: a validated bars frame (UTC ``timestamp`` index; float64 open, high, low, close, volume, vwap).
    :raises ValueError: missing keys (stocks), a bad argument, or no bars in the range.
    :raises AlpacaDataError: an error response from Alpaca (with symbol, HTTP status and message), or no
        answer, after the retries described in the module docstring.
    """
    from alpaca.data.historical import StockHistoricalDataClient

    if is_crypto_symbol(symbol):
        return fetch_alpaca_crypto_bars(
            [symbol], timeframe, start, end, api_key=api_key, secret_key=secret_key,
            url_override=url_override, connect_timeout=connect_timeout, read_timeout=read_timeout,
            max_retries=max_retries, backoff_base=backoff_base, backoff_max=backoff_max, sleep=sleep,
        )[symbol]
    api_key, secret_key = _resolve_keys(api_key, secret_key)
    _check_network_options(connect_timeout, read_timeout, max_retries, backoff_base, backoff_max, sleep)
    request = _bars_request(symbol, timeframe, start, end, feed, adjustment)
    span = f"{_utc(start, 'start')} to {_utc(end, 'end') if end is not None else 'now'}"
    where = url_override or "Alpaca's data API"

    client = StockHistoricalDataClient(api_key, secret_key, raw_data=True, url_override=url_override)
    session, redact = install_retrying_session(
        client, symbol=symbol, keys=(api_key, secret_key), connect_timeout=connect_timeout,
        read_timeout=read_timeout, max_retries=max_retries, backoff_base=backoff_base, backoff_max=backoff_max,
        sleep=sleep, what="bars",
    )

    raw = call_alpaca(lambda: client.get_stock_bars(request), session=session, redact=redact, symbol=symbol,
                      where=where, span=span, request_name=f"{timeframe} bars", hints=_STATUS_HINTS,
                      connect_timeout=connect_timeout, read_timeout=read_timeout)
    raw = raw or {}
    # Alpaca keys the response by its own spelling of the symbol (upper case).
    rows = raw.get(symbol) or next((v for k, v in raw.items() if k.upper() == symbol.upper()), [])
    if not rows:
        raise ValueError(
            f"{symbol}: Alpaca returned no {timeframe} bars from {span} "
            f"(feed={feed or 'default'}); check the symbol, the dates and that the market was open"
        )
    return _bars_frame(rows, symbol)


def fetch_alpaca_crypto_bars(
    symbols: str | Iterable[str],
    timeframe: str,
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
) -> dict[str, pd.DataFrame]:
    """Download the historical bars of one or several crypto pairs from Alpaca in one request, every page.

    :param symbols: one pair or several, as Alpaca spells them (``"BTC/USD"``, ``["BTC/USD", "ETH/USD"]``).
    :param timeframe: bar length in Alpaca's spelling (``"1Day"``, ``"1Hour"``, ``"15Min"``).
    :param start: first bar time (inclusive); naive times are UTC.
    :param end: last bar time (inclusive); naive times are UTC; None lets Alpaca use "now".
    :param api_key: Alpaca key id; None reads ``APCA_API_KEY_ID``; crypto needs none.
    :param secret_key: Alpaca secret key; None reads ``APCA_API_SECRET_KEY``; crypto needs none.
    :param url_override: base URL of the data API (a proxy or a test server); None uses Alpaca's.
    :param connect_timeout: seconds allowed to open a connection, per attempt.
    :param read_timeout: seconds of silence allowed while waiting for an answer, per attempt.
    :param max_retries: retries of one request after a 429, a 5xx, a connection error or a timeout.
    :param backoff_base: wait before the first retry, in seconds; it doubles on each further retry.
    :param backoff_max: longest backoff wait, in seconds.
    :param sleep: called with the seconds to wait before each retry; None uses :func:`time.sleep`.
    :return: ``{pair: validated bars frame}`` in the order asked (duplicates once); weekend bars kept.
    :raises ValueError: a symbol that is not a pair, only one of the two keys, a bad argument, or a pair
        with no bars in the range (named).
    :raises AlpacaDataError: an error response from Alpaca (naming the pairs asked, the HTTP status and
        the message), or no answer, after the retries described in the module docstring.
    """
    pairs = _crypto_pairs(symbols)
    frames = _fetch_crypto_frames(
        pairs, timeframe, start, end, api_key=api_key, secret_key=secret_key, url_override=url_override,
        connect_timeout=connect_timeout, read_timeout=read_timeout, max_retries=max_retries,
        backoff_base=backoff_base, backoff_max=backoff_max, sleep=sleep,
    )
    for pair in pairs:
        if pair not in frames:
            raise _no_crypto_bars_error(pair, timeframe, start, end)
    return frames


def _fetch_crypto_frames(
    pairs: list[str],
    timeframe: str,
    start: str | datetime | pd.Timestamp,
    end: str | datetime | pd.Timestamp | None,
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
) -> dict[str, pd.DataFrame]:
    """The one request of :func:`fetch_alpaca_crypto_bars`: ``{pair: bars}`` for the pairs (checked by
    :func:`_crypto_pairs`) that came back with bars, in the order asked; a pair with none is left out."""
    from alpaca.data.historical import CryptoHistoricalDataClient

    api_key, secret_key = _optional_keys(api_key, secret_key)
    _check_network_options(connect_timeout, read_timeout, max_retries, backoff_base, backoff_max, sleep)
    request = _crypto_bars_request(pairs, timeframe, start, end)
    span = f"{_utc(start, 'start')} to {_utc(end, 'end') if end is not None else 'now'}"
    where = url_override or "Alpaca's data API"
    label = ",".join(pairs)

    client = CryptoHistoricalDataClient(api_key, secret_key, raw_data=True, url_override=url_override)
    session, redact = install_retrying_session(
        client, symbol=label, keys=(api_key, secret_key), connect_timeout=connect_timeout,
        read_timeout=read_timeout, max_retries=max_retries, backoff_base=backoff_base, backoff_max=backoff_max,
        sleep=sleep, what="crypto bars",
    )
    raw = call_alpaca(lambda: client.get_crypto_bars(request), session=session, redact=redact, symbol=label,
                      where=where, span=span, request_name=f"{timeframe} crypto bars",
                      hints=_CRYPTO_STATUS_HINTS, connect_timeout=connect_timeout, read_timeout=read_timeout)
    raw = raw or {}
    frames: dict[str, pd.DataFrame] = {}
    for pair in pairs:
        rows = raw.get(pair) or next((v for k, v in raw.items() if k.upper() == pair.upper()), [])
        if rows:
            frames[pair] = _bars_frame(rows, pair)
    return frames


def _no_crypto_bars_error(
    pair: str,
    timeframe: str,
    start: str | datetime | pd.Timestamp,
    end: str | datetime | pd.Timestamp | None,
) -> ValueError:
    span = f"{_utc(start, 'start')} to {_utc(end, 'end') if end is not None else 'now'}"
    return ValueError(
        f"{pair}: Alpaca returned no {timeframe} crypto bars from {span}; check the pair "
        f"(Alpaca spells it BASE/QUOTE, e.g. 'BTC/USD') and the dates"
    )


def download_to_cache(
    symbols: str | Iterable[str],
    timeframe: str,
    start: str | datetime | pd.Timestamp,
    end: str | datetime | pd.Timestamp | None = None,
    root: str | Path = DEFAULT_CACHE_ROOT,
    crypto_batch_size: int = CRYPTO_SYMBOLS_PER_REQUEST,
    **fetch_options: Any,
) -> dict[str, Path]:
    """Download bars for each symbol and merge them into the Parquet cache.

    Stocks are fetched and written one at a time; crypto pairs (``"BTC/USD"``) are fetched
    ``crypto_batch_size`` at a time in one request (their batch is fetched when the first of them comes
    up) and written one by one. Each file is replaced atomically, so a failure leaves the symbols written
    before it cached and the failing symbols' previous files (if any) untouched. Keys are needed only
    when there is a stock among ``symbols``.

    :param symbols: one ticker or crypto pair, or several.
    :param timeframe: bar length in Alpaca's spelling (``"1Day"``, ``"1Hour"``, ``"15Min"``).
    :param start: first bar time (inclusive); naive times are UTC.
    :param end: last bar time (inclusive); None means now.
    :param root: root directory of the cache.
    :param fetch_options: passed to :func:`fetch_alpaca_bars` (``api_key``, ``secret_key``,
        ``url_override``, ``feed``, ``adjustment``, and the network settings ``connect_timeout``,
        ``read_timeout``, ``max_retries``, ``backoff_base``, ``backoff_max``, ``sleep``); ``feed`` and
        ``adjustment`` apply to stocks only.
    :param crypto_batch_size: the most crypto pairs asked in one request.
    :return: ``{symbol: path of its cache file}``.
    """
    if isinstance(symbols, str):
        symbols = [symbols]
    symbols = list(symbols)
    if not symbols:
        raise ValueError("symbols is empty; pass at least one symbol")
    if isinstance(crypto_batch_size, bool) or not isinstance(crypto_batch_size, int) or crypto_batch_size < 1:
        raise ValueError(f"crypto_batch_size={crypto_batch_size!r} must be a whole number >= 1")
    for symbol in symbols:  # reject a bad name before any download starts
        cache_path(symbol, timeframe, root)
    pairs = list(dict.fromkeys(s for s in symbols if is_crypto_symbol(s)))
    if len(pairs) < len(symbols):  # at least one stock
        _resolve_keys(fetch_options.get("api_key"), fetch_options.get("secret_key"))
    else:
        _optional_keys(fetch_options.get("api_key"), fetch_options.get("secret_key"))
    batches = [pairs[i : i + crypto_batch_size] for i in range(0, len(pairs), crypto_batch_size)]
    batch_of = {pair: batch for batch in batches for pair in batch}
    crypto_options = {k: v for k, v in fetch_options.items() if k not in _STOCK_ONLY_OPTIONS}

    written: dict[str, Path] = {}
    fetched: dict[str, pd.DataFrame] = {}
    fetched_batch: list[str] | None = None
    for symbol in symbols:
        if not is_crypto_symbol(symbol):
            bars = fetch_alpaca_bars(symbol, timeframe, start, end, **fetch_options)
        elif symbol in written:
            continue
        else:
            if batch_of[symbol] is not fetched_batch:  # the first pair of its batch: fetch the batch
                fetched_batch = batch_of[symbol]
                fetched = _fetch_crypto_frames(fetched_batch, timeframe, start, end, **crypto_options)
            if symbol not in fetched:
                raise _no_crypto_bars_error(symbol, timeframe, start, end)
            bars = fetched.pop(symbol)
        written[symbol] = write_cached_bars(bars, symbol, timeframe, root=root, merge=True)
    return written


@lru_cache(maxsize=None)
def _retrying_session_class() -> type:
    """The requests session class used for every download (built on first use: requests, like
    alpaca-py, is only imported when something is downloaded)."""
    import requests
    from requests.exceptions import ChunkedEncodingError, ConnectionError, SSLError, Timeout

    # ConnectionError covers refused, reset and connect timeouts (and SSLError, never retried);
    # Timeout covers read timeouts; ChunkedEncodingError a connection dropped in the middle of a body.
    retryable_errors = (ConnectionError, Timeout, ChunkedEncodingError)

    class RetryingSession(requests.Session):
        """A requests session that gives every request a (connect, read) timeout and retries it.

        alpaca-py sends every request through ``client._session.request(...)`` without a timeout; this
        session adds one, and retries 429, 5xx, connection errors and timeouts with exponential backoff
        (or the server's ``Retry-After``). It hands the last answer (a response, possibly with an error
        status) back to alpaca-py, or raises the last network error; :attr:`attempts` tells how many
        attempts the latest request took.
        """

        def __init__(
            self,
            *,
            symbol: str,
            timeout: tuple[float, float],
            max_retries: int,
            backoff_base: float,
            backoff_max: float,
            sleep: Callable[[float], Any],
            redact: Callable[[str], str],
            what: str = "bars",
            throttle: Callable[[], Any] | None = None,
        ) -> None:
            super().__init__()
            self.throttle = throttle
            self.symbol = symbol
            self.what = what
            self.timeout = timeout
            self.max_retries = max_retries
            self.backoff_base = backoff_base
            self.backoff_max = backoff_max
            self.sleep = sleep
            self.redact = redact
            self.attempts = 0

        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = self.timeout
            self.attempts = 0
            while True:
                self.attempts += 1
                if self.throttle is not None:  # a client-side rate limiter: every attempt is a request
                    self.throttle()
                try:
                    response = super().request(method, url, *args, **kwargs)
                except retryable_errors as exc:
                    if isinstance(exc, SSLError) or self.attempts > self.max_retries:
                        raise
                    wait = self._backoff()
                    what = f"{type(exc).__name__}: {exc}"
                else:
                    if not _is_retryable_status(response.status_code) or self.attempts > self.max_retries:
                        return response
                    header = response.headers.get("Retry-After")
                    retry_after = _retry_after_seconds(header)
                    wait = self._backoff() if retry_after is None else retry_after
                    what = f"HTTP {response.status_code}"
                    if retry_after is not None:
                        what += f", Retry-After {header.strip()}"
                    response.close()
                logger.warning(
                    "%s",
                    self.redact(
                        f"{self.symbol}: {self.what} request failed ({what}); retrying in {wait:g} s "
                        f"(attempt {self.attempts + 1} of {self.max_retries + 1})"
                    ),
                )
                self.sleep(wait)

        def _backoff(self) -> float:
            # attempts is 1 before the first retry: waits base, 2 * base, 4 * base, ..., capped.
            return min(self.backoff_max, self.backoff_base * 2 ** (self.attempts - 1))

    return RetryingSession


def call_alpaca(
    call: Callable[[], Any],
    *,
    session: Any,
    redact: Callable[[str], str],
    symbol: str,
    where: str,
    span: str,
    request_name: str,
    hints: dict[int, str],
    connect_timeout: float,
    read_timeout: float,
) -> Any:
    """Run one alpaca-py request through ``session`` and turn its failures into :class:`AlpacaDataError`.

    :param call: the alpaca-py call (its client holds ``session``, see :func:`install_retrying_session`).
    :param session: the retrying session (closed here); its ``attempts`` go into the message.
    :param redact: masks the keys in every text.
    :param symbol: the symbol, first in every message.
    :param where: the server, for messages (``url_override`` or a name).
    :param span: the requested time range, for messages.
    :param request_name: what was requested (``"1Day bars"``, ``"news"``).
    :param hints: what to do, per HTTP status.
    :param connect_timeout: for the message of a connect timeout.
    :param read_timeout: for the message of a read timeout.
    """
    from alpaca.common.exceptions import APIError
    from requests.exceptions import RequestException

    error: AlpacaDataError | None = None
    cause: BaseException | None = None
    try:
        return call()
    except APIError as exc:
        # Masked before and after decoding: a key echoed back must not survive truncation or escaping.
        status, message = exc.status_code, redact(_server_message(redact(str(exc))))
        attempts = session.attempts
        if _is_retryable_status(status):
            hint = hints.get(status, _SERVER_ERROR_HINT)
            text = (
                f"{symbol}: {where} answered the {request_name} request ({span}) with HTTP {status} "
                f"on {_attempts_text(attempts)}: {message!r}; {hint}"
            )
        else:
            hint = hints.get(status, "")
            text = (
                f"{symbol}: Alpaca refused the {request_name} request ({span}) with HTTP {status}: "
                f"{message!r}" + (f"; {hint}" if hint else "")
            )
        error = AlpacaDataError(redact(text), symbol, status, message, attempts)
        cause = exc if redact(str(exc)) == str(exc) else None
    except RequestException as exc:
        attempts = session.attempts
        what, advice = _describe_network_error(exc, where, connect_timeout, read_timeout)
        text = f"{symbol}: {what} for {request_name} ({span}), on {_attempts_text(attempts)}; {advice}"
        error = AlpacaDataError(redact(text), symbol, None, redact(str(exc)), attempts)
        cause = exc if redact(str(exc)) == str(exc) else None
    finally:
        session.close()
    # Raised outside the except blocks, so that a cause whose text held a key is not even kept as the
    # implicit context.
    raise error from cause


def install_retrying_session(
    client: Any,
    *,
    symbol: str,
    keys: tuple[str | None, str | None],
    connect_timeout: float,
    read_timeout: float,
    max_retries: int,
    backoff_base: float,
    backoff_max: float,
    sleep: Callable[[float], Any] | None,
    what: str = "bars",
    throttle: Callable[[], Any] | None = None,
) -> tuple[Any, Callable[[str], str]]:
    """Give an alpaca-py client our session (timeouts, retries with backoff, keys masked in its log lines).

    :param client: an alpaca-py REST client (bars, news, trading).
    :param symbol: the symbol, for log lines.
    :param keys: the API key and secret, masked in every message.
    :param what: what is requested (``"bars"``, ``"news"``), for log lines.
    :param throttle: called before every attempt (retries included), e.g. a rate limiter's ``acquire``;
        None: no limit.
    :return: ``(session, redact)``: the session (its ``attempts`` tell how many the last request took) and
        the function that masks the keys in a text.
    """

    def redact(text: str) -> str:
        return _redact(text, keys)

    session = _retrying_session_class()(
        symbol=symbol,
        timeout=(float(connect_timeout), float(read_timeout)),
        max_retries=max_retries,
        backoff_base=float(backoff_base),
        backoff_max=float(backoff_max),
        sleep=sleep if sleep is not None else time.sleep,
        redact=redact,
        what=what,
        throttle=throttle,
    )
    _install_session(client, session)
    return session, redact


def _install_session(client: Any, session: Any) -> None:
    """Put ``session`` into an alpaca-py client and switch alpaca-py's own retry off."""
    missing = [name for name in ("_session", "_retry", "_retry_codes") if not hasattr(client, name)]
    if missing:
        import alpaca

        raise RuntimeError(
            f"alpaca-py {getattr(alpaca, '__version__', '?')} has no {', '.join(missing)} on "
            f"{type(client).__name__}; features/alpaca_source.py needs updating for this version"
        )
    client._session.close()
    client._session = session
    # alpaca-py retries 429/504 itself (3 times, 3 s apart, in RESTClient._request); with no retries
    # left it raises APIError at once, so retries happen in one place only: the session.
    client._retry = 0
    client._retry_codes = []


def _check_network_options(
    connect_timeout: Any,
    read_timeout: Any,
    max_retries: Any,
    backoff_base: Any,
    backoff_max: Any,
    sleep: Any,
) -> None:
    for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
        if not _is_number(value) or not 0 < value < math.inf:
            raise ValueError(f"{name}={value!r} must be a positive number of seconds")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries={max_retries!r} must be a whole number >= 0 (0: no retries)")
    for name, value in (("backoff_base", backoff_base), ("backoff_max", backoff_max)):
        if not _is_number(value) or not 0 <= value < math.inf:
            raise ValueError(f"{name}={value!r} must be a number of seconds >= 0")
    if sleep is not None and not callable(sleep):
        raise ValueError(f"sleep={sleep!r} must be callable with a number of seconds, or None")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _is_retryable_status(status: int | None) -> bool:
    return status is not None and (status == 429 or 500 <= status <= 599)


def _retry_after_seconds(header: str | None) -> float | None:
    """The wait a ``Retry-After`` header asks for, capped; None when absent or not in seconds form."""
    if header is None:
        return None
    try:
        seconds = float(header.strip())
    except ValueError:
        return None  # the HTTP-date form, or garbage: the caller falls back to the backoff
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def _attempts_text(attempts: int) -> str:
    return "the only attempt (max_retries=0)" if attempts <= 1 else f"all {attempts} attempts"


def _describe_network_error(
    exc: Exception, where: str, connect_timeout: float, read_timeout: float
) -> tuple[str, str]:
    """(what happened, what to do) for a request that got no usable answer."""
    from requests.exceptions import ConnectTimeout, ReadTimeout, SSLError

    retry_advice = (
        f"Alpaca may be down or overloaded (see {_STATUS_PAGE}): try again later, or raise "
        f"read_timeout / max_retries"
    )
    if isinstance(exc, ConnectTimeout):
        return (
            f"could not connect to {where}: timed out after {connect_timeout:g} s (connect_timeout)",
            "check the network, any proxy settings and url_override, or raise connect_timeout",
        )
    if isinstance(exc, ReadTimeout) or "read timed out" in str(exc).lower():
        return (
            f"{where} accepted the connection but did not answer: timed out after {read_timeout:g} s "
            f"(read_timeout)",
            retry_advice,
        )
    if isinstance(exc, SSLError):
        return (
            f"could not reach {where}: TLS error ({exc})",
            "check url_override, the system clock and any proxy that intercepts HTTPS; not retried",
        )
    return (
        f"could not reach {where} ({type(exc).__name__}: {exc})",
        "check the network, any proxy settings and url_override, then try again",
    )


def _redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret in it masked as ``***``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):  # longest first
        text = text.replace(secret, "***")
    return text


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


def _optional_keys(api_key: str | None, secret_key: str | None) -> tuple[str | None, str | None]:
    """Keys for a request that needs none (crypto data): both, or neither; one alone is an error."""
    api_key = api_key or os.environ.get(API_KEY_ENV)
    secret_key = secret_key or os.environ.get(SECRET_KEY_ENV)
    if bool(api_key) != bool(secret_key):
        missing = API_KEY_ENV if not api_key else SECRET_KEY_ENV
        raise ValueError(
            f"Alpaca keys half set: {missing} is missing (or pass api_key=... and secret_key=...); crypto "
            f"data needs no keys, so set both or neither"
        )
    return (api_key, secret_key) if api_key else (None, None)


def _crypto_pairs(symbols: str | Iterable[str]) -> list[str]:
    """The crypto pairs asked, in order, each once; anything that is not ``BASE/QUOTE`` is refused."""
    from .parquet_cache import symbol_dir_name

    pairs = list(dict.fromkeys([symbols] if isinstance(symbols, str) else symbols))
    if not pairs:
        raise ValueError("symbols is empty; pass at least one crypto pair such as 'BTC/USD'")
    for pair in pairs:
        if not is_crypto_symbol(pair):
            raise ValueError(f"symbol={pair!r} is not a crypto pair; expected 'BASE/QUOTE' (e.g. 'BTC/USD')")
        symbol_dir_name(pair)  # one '/', usable parts
    return pairs


def _crypto_bars_request(
    pairs: list[str],
    timeframe: str,
    start: str | datetime | pd.Timestamp,
    end: str | datetime | pd.Timestamp | None,
) -> Any:
    from alpaca.data.requests import CryptoBarsRequest

    start_ts, end_ts = _time_range(start, end)
    return CryptoBarsRequest(
        symbol_or_symbols=pairs,
        timeframe=_alpaca_timeframe(timeframe),
        start=start_ts.to_pydatetime(),
        end=end_ts.to_pydatetime() if end_ts is not None else None,
    )


def _alpaca_timeframe(timeframe: str) -> Any:
    """alpaca-py's TimeFrame for ``timeframe``; one Alpaca does not offer is a ValueError."""
    from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

    tf = Timeframe.parse(timeframe)
    try:
        return TimeFrame(tf.amount, TimeFrameUnit(tf.unit))
    except ValueError as exc:
        raise ValueError(f"timeframe={timeframe!r} is not offered by Alpaca: {exc}") from exc


def _time_range(
    start: str | datetime | pd.Timestamp, end: str | datetime | pd.Timestamp | None
) -> tuple[pd.Timestamp, pd.Timestamp | None]:
    """``start`` and ``end`` in UTC (``end`` may be None); start after end is a ValueError."""
    start_ts = _utc(start, "start")
    end_ts = _utc(end, "end") if end is not None else None
    if end_ts is not None and start_ts > end_ts:
        raise ValueError(f"start={start_ts} is after end={end_ts}")
    return start_ts, end_ts


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

    if not isinstance(symbol, str) or not symbol.strip():
        raise ValueError(f"symbol={symbol!r} is not a ticker; expected a non-empty string such as 'AAPL'")
    alpaca_timeframe = _alpaca_timeframe(timeframe)
    start_ts, end_ts = _time_range(start, end)
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


def _server_message(body: str) -> str:
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
