"""Alpaca paper trading as a :class:`live.broker.Broker`, through alpaca-py's ``TradingClient(paper=True)``.

Bars come from :func:`features.alpaca_source.fetch_alpaca_bars` (its timeouts, retries and key masking);
the trading calls share the same behaviour through a session installed in alpaca-py's client:

* every request has a connect and a read timeout;
* GET and DELETE are retried on 429, 5xx, connection errors and timeouts, with exponential backoff or the
  server's ``Retry-After`` (seconds form, capped);
* POST (an order) is retried by the session only when it certainly did not arrive: a 429, a refused
  connection, a connect timeout. Any other failure - a 5xx, a read timeout, a connection dropped after
  the request went out - may hide an accepted order, so :meth:`AlpacaBroker.submit_order` first asks
  for the order by its ``client_order_id`` and sends it again only when Alpaca does not have it (Alpaca
  also refuses a second order with the same id). An order is therefore never doubled.

Keys come from ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` (or the arguments) and never appear in a
message, an exception or a log line. Only paper trading: there is no switch to the live endpoint.

Crypto pairs (a symbol with ``/``, ``"BTC/USD"``) trade round the clock: their orders are sent at any hour
with fractional quantities (:data:`CRYPTO_QTY_DECIMALS`, whatever ``fractional`` says) and
``time_in_force="gtc"`` (Alpaca refuses ``"day"`` for crypto); a crypto bar is complete once its start plus
its length has passed, and every bar of the UTC grid is expected (no sessions, no weekends). Their bars and
latest trades come from Alpaca's crypto data API. Stocks follow Alpaca's equity calendar as before.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import pandas as pd

from features.alpaca_source import (
    _STATUS_PAGE,
    AlpacaDataError,
    _check_network_options,
    _describe_network_error,
    _install_session,
    _redact,
    _resolve_keys,
    _retry_after_seconds,
    _server_message,
    fetch_alpaca_bars,
)
from features.bars import Timeframe
from features.parquet_cache import is_crypto_symbol

from .broker import Account, BrokerError, Clock, Order, OrderRejected, OrderRequest, Position, Session

logger = logging.getLogger(__name__)

MARKET_TZ = "America/New_York"
REGULAR_SESSION_HOURS = 6.5
#: Decimals of a crypto order's quantity (Alpaca accepts up to 9); crypto is always fractional.
CRYPTO_QTY_DECIMALS = 9


class AlpacaBroker:
    """Alpaca's paper trading API and market data.

    :param api_key: key id; None reads ``APCA_API_KEY_ID``.
    :param secret_key: secret; None reads ``APCA_API_SECRET_KEY``.
    :param trading_url: trading API base URL; None: Alpaca's paper endpoint.
    :param data_url: market data base URL; None: Alpaca's.
    :param feed: bars and trades feed (``"iex"`` on free plans).
    :param fractional: fractional shares (quantities rounded toward zero to ``qty_decimals``), else whole shares.
    :param qty_decimals: decimals of fractional quantities.
    :param connect_timeout: seconds to open a connection, per attempt.
    :param read_timeout: seconds of silence allowed while waiting for an answer, per attempt.
    :param max_retries: retries of one request (and resends of an order found missing).
    :param backoff_base: first retry wait, doubling after.
    :param backoff_max: longest backoff wait.
    :param sleep: waits (retries and the loop's pauses); None: :func:`time.sleep`. Tests pass a function that
        moves a fake clock instead.
    :param sleep_chunk: the loop's pauses are cut into pieces this long, checking the kill switch between them.
    """

    name = "alpaca"

    def __init__(self, *, api_key: str | None = None, secret_key: str | None = None, trading_url: str | None = None,
                 data_url: str | None = None, feed: str | None = "iex", fractional: bool = True, qty_decimals: int = 6,
                 connect_timeout: float = 10.0, read_timeout: float = 30.0, max_retries: int = 4,
                 backoff_base: float = 1.0, backoff_max: float = 30.0, sleep: Callable[[float], Any] | None = None,
                 sleep_chunk: float = 1.0) -> None:
        from alpaca.trading.client import TradingClient

        self._keys = _resolve_keys(api_key, secret_key)
        _check_network_options(connect_timeout, read_timeout, max_retries, backoff_base, backoff_max, sleep)
        self.sleep_fn = sleep if sleep is not None else time.sleep
        self.sleep_chunk = float(sleep_chunk)
        self.trading_url, self.data_url, self.feed = trading_url, data_url, feed
        self.qty_decimals = int(qty_decimals) if fractional else 0
        self.timeouts = (float(connect_timeout), float(read_timeout))
        self.max_retries, self.backoff_base, self.backoff_max = int(max_retries), float(backoff_base), float(backoff_max)
        self._trading = TradingClient(*self._keys, paper=True, url_override=trading_url)
        _install_session(self._trading, self._session("trading API"))
        self._data_client: Any = None
        self._crypto_client: Any = None
        self._calendar: dict[dt.date, Session] = {}
        self._calendar_span: tuple[dt.date, dt.date] | None = None

    # ----- plumbing -----------------------------------------------------------------------------
    def _session(self, what: str) -> Any:
        return _trading_session_class()(timeout=self.timeouts, max_retries=self.max_retries,
                                        backoff_base=self.backoff_base, backoff_max=self.backoff_max,
                                        sleep=lambda s: self.sleep_fn(s), redact=self._redact, what=what)

    def _redact(self, text: str) -> str:
        return _redact(text, self._keys)

    def _data(self) -> Any:
        if self._data_client is None:
            from alpaca.data.historical import StockHistoricalDataClient

            self._data_client = StockHistoricalDataClient(*self._keys, raw_data=True, url_override=self.data_url)
            _install_session(self._data_client, self._session("market data API"))
        return self._data_client

    def _crypto_data(self) -> Any:
        """alpaca-py's crypto data client (latest trades), with the same retrying session."""
        if self._crypto_client is None:
            from alpaca.data.historical import CryptoHistoricalDataClient

            self._crypto_client = CryptoHistoricalDataClient(*self._keys, raw_data=True, url_override=self.data_url)
            _install_session(self._crypto_client, self._session("crypto data API"))
        return self._crypto_client

    def quantity_decimals(self, symbol: str) -> int:
        """Decimals an order's quantity of ``symbol`` is rounded to: :data:`CRYPTO_QTY_DECIMALS` for a crypto pair,
        else ``qty_decimals`` (0: whole shares).

        :param symbol: a ticker or a crypto pair.
        """
        return CRYPTO_QTY_DECIMALS if is_crypto_symbol(symbol) else self.qty_decimals

    def _call(self, what: str, fn: Callable[[], Any], setting: str = "trading_url") -> Any:
        """Run an alpaca-py call; its errors become one-line :class:`BrokerError` s naming the endpoint, the
        HTTP status (or what the network did) and what to check, with the keys masked.

        :param what: what was asked (``"clock"``, ``"AAPL latest trade"``), first in the message.
        :param fn: the call.
        :param setting: the config key of the API's URL (``trading_url`` or ``data_url``), for the advice.
        """
        from alpaca.common.exceptions import APIError
        from requests.exceptions import JSONDecodeError, RequestException, SSLError

        try:
            return fn()
        except APIError as exc:
            status = exc.status_code
            message = self._redact(_server_message(self._redact(str(exc))))
            endpoint = _endpoint(exc.request, self._url(setting))
            retried = status is not None and (status == 429 or 500 <= status <= 599)
            after = f" after {self.max_retries + 1} attempts" if retried else ""
            text = f"{what}: {endpoint} answered HTTP {status} ({message!r}){after} — {self._http_advice(status, setting)}"
            error = BrokerError(self._redact(text), status)
        except RequestException as exc:
            endpoint = _endpoint(getattr(exc, "request", None), self._url(setting))
            once = isinstance(exc, (SSLError, JSONDecodeError))  # the session does not retry these
            attempts = "" if once else f" after {self.max_retries + 1} attempts"
            text = (f"{what}: {endpoint} {_network_failure(exc, *self.timeouts)}{attempts} — "
                    f"{self._network_advice(exc, setting)}")
            error = BrokerError(self._redact(text))
        raise error from None  # the raw error may carry the keys; it is not chained

    def _url(self, setting: str) -> str:
        """The API's base URL as configured (``broker.<setting>``), or which of Alpaca's it is."""
        url = self.trading_url if setting == "trading_url" else self.data_url
        return url or ("Alpaca's paper trading API" if setting == "trading_url" else "Alpaca's market data API")

    def _http_advice(self, status: int | None, setting: str) -> str:
        """What to check after an HTTP error status from the API of ``broker.<setting>``."""
        url = f"broker.{setting} (now {self._url(setting)})"
        if status in (401, 403):
            return (f"check APCA_API_KEY_ID and APCA_API_SECRET_KEY: paper-trading keys (https://app.alpaca.markets, "
                    f"Paper account, API keys), and {url}")
        if status == 404:
            return f"check {url}: the API's base URL, e.g. https://paper-api.alpaca.markets, without /v2"
        if status == 429 or (status is not None and status >= 500):
            return (f"the error is on the server's side: check {_STATUS_PAGE} and {url}, and try again later "
                    f"(or raise broker.max_retries / broker.backoff_max)")
        return f"check {url} and the keys APCA_API_KEY_ID / APCA_API_SECRET_KEY"

    def _network_advice(self, exc: Exception, setting: str) -> str:
        """What to check when the API of ``broker.<setting>`` gave no usable answer."""
        from requests.exceptions import ConnectTimeout, JSONDecodeError, ReadTimeout, SSLError

        url = f"broker.{setting} (now {self._url(setting)})"
        if isinstance(exc, JSONDecodeError):
            return f"check {url}: it must point at Alpaca's API (or a proxy of it), not a web page"
        if isinstance(exc, ConnectTimeout):
            return f"check {url}, the network and any proxy settings, or raise broker.connect_timeout"
        if isinstance(exc, ReadTimeout) or "read timed out" in str(exc).lower():
            return (f"Alpaca may be down or overloaded (see {_STATUS_PAGE}): try again later, or raise "
                    f"broker.read_timeout / broker.max_retries")
        if isinstance(exc, SSLError):
            return f"check {url}, the system clock and any proxy that intercepts HTTPS"
        return f"check the host and port of {url}, the network and any proxy settings"

    # ----- time -----------------------------------------------------------------------------------
    def clock(self) -> Clock:
        model = self._call("clock", self._trading.get_clock)
        return Clock(_utc(model.timestamp), bool(model.is_open), _utc(model.next_open), _utc(model.next_close))

    def calendar(self, start: dt.date, end: dt.date) -> list[Session]:
        span = self._calendar_span
        if span is None or start < span[0] or end > span[1]:
            from alpaca.trading.requests import GetCalendarRequest

            lo = min(start, span[0]) if span else start - dt.timedelta(days=10)
            hi = max(end, span[1]) if span else end + dt.timedelta(days=10)
            models = self._call("calendar", lambda: self._trading.get_calendar(GetCalendarRequest(start=lo, end=hi)))
            for model in models:
                self._calendar[model.date] = Session(model.date, _market_time(model.open), _market_time(model.close))
            self._calendar_span = (lo, hi)
        return [self._calendar[d] for d in sorted(self._calendar) if start <= d <= end]

    def session_date(self, moment: pd.Timestamp) -> dt.date:
        return pd.Timestamp(moment).tz_convert(MARKET_TZ).date()

    def bar_time_of(self, moment: pd.Timestamp, timeframe: str) -> pd.Timestamp:
        tf = Timeframe.parse(timeframe)
        moment = pd.Timestamp(moment).tz_convert("UTC")
        if tf.is_intraday:
            return moment.floor(pd.Timedelta(seconds=tf.seconds))
        return _daily_bar_time(self.session_date(moment))

    def sleep(self, seconds: float, stop: Callable[[], bool] | None = None) -> None:
        remaining = float(seconds)
        while remaining > 0:
            if stop is not None and stop():
                return
            piece = min(remaining, self.sleep_chunk)
            self.sleep_fn(piece)
            remaining -= piece

    # ----- account ----------------------------------------------------------------------------------
    def account(self) -> Account:
        model = self._call("account", self._trading.get_account)
        return Account(cash=_number(model.cash), equity=_number(model.equity), buying_power=_number(model.buying_power),
                       status=str(getattr(model.status, "value", model.status)),
                       trading_blocked=bool(model.trading_blocked))

    def positions(self) -> dict[str, Position]:
        out = {}
        for model in self._call("positions", self._trading.get_all_positions):
            qty = _number(model.qty)
            side = str(getattr(model.side, "value", model.side))
            if side == "short" and qty > 0:
                qty = -qty
            basis = math.copysign(abs(_number(model.cost_basis)), qty)
            price = _number(model.current_price) if model.current_price is not None else None
            symbol = _pair_spelling(model.symbol, str(getattr(model.asset_class, "value", model.asset_class)))
            out[symbol] = Position(symbol, qty, _number(model.avg_entry_price), basis, price)
        return out

    # ----- orders -------------------------------------------------------------------------------------
    def open_orders(self) -> list[Order]:
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        request = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500)
        return [_order(m) for m in self._call("open orders", lambda: self._trading.get_orders(request))]

    def order_by_client_id(self, client_order_id: str) -> Order | None:
        try:
            model = self._call(f"order {client_order_id}", lambda: self._trading.get_order_by_client_id(client_order_id))
        except BrokerError as error:
            if error.status_code == 404:
                return None
            raise
        return _order(model)

    def cancel_order(self, order: Order) -> None:
        try:
            self._call(f"cancel {order.client_order_id}", lambda: self._trading.cancel_order_by_id(order.id))
        except BrokerError as error:
            if error.status_code not in (404, 422):  # 422: already filled or canceled; nothing to cancel
                raise

    def submit_order(self, request: OrderRequest) -> Order:
        """Send a market order (``day`` for a stock, ``gtc`` for a crypto pair: Alpaca refuses ``day`` for crypto); on
        an unclear failure, look it up by ``client_order_id`` before resending."""
        from alpaca.common.exceptions import APIError
        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import MarketOrderRequest
        from requests.exceptions import RequestException

        body = MarketOrderRequest(symbol=request.symbol, qty=request.qty, side=OrderSide(request.side),
                                  time_in_force=TimeInForce.GTC if is_crypto_symbol(request.symbol) else TimeInForce.DAY,
                                  client_order_id=request.client_order_id)
        what = f"{request.symbol}: {request.side} {request.qty:g} ({request.client_order_id})"
        last = ""
        for attempt in range(1, self.max_retries + 2):
            try:
                return _order(self._trading.submit_order(body))
            except APIError as exc:
                status = exc.status_code
                message = self._redact(_server_message(self._redact(str(exc))))
                if status is not None and status < 500 and status != 429:
                    if status == 422 and "client_order_id" in message.lower():
                        found = self.order_by_client_id(request.client_order_id)
                        if found is not None:
                            return found  # it was there already: this is a resend of an accepted order
                    raise OrderRejected(f"{what}: Alpaca refused the order with HTTP {status}: {message!r}",
                                        status) from None
                last = f"HTTP {status}: {message!r}"
            except RequestException as exc:
                happened, _ = _describe_network_error(exc, self.trading_url or "Alpaca's trading API", *self.timeouts)
                last = self._redact(happened)
            # unclear whether Alpaca accepted it: ask by its id before sending again
            wait = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
            logger.warning("%s", self._redact(f"{what}: unclear whether the order arrived ({last}); looking it up in "
                                              f"{wait:g} s (attempt {attempt} of {self.max_retries + 1})"))
            self.sleep_fn(wait)
            found = self.order_by_client_id(request.client_order_id)
            if found is not None:
                return found
        raise BrokerError(f"{what}: not sent after {self.max_retries + 1} attempts ({last}); Alpaca does not have it")

    # ----- market data ------------------------------------------------------------------------------
    def bars(self, symbol: str, timeframe: str, count: int) -> pd.DataFrame:
        now = self.clock().timestamp
        tf = Timeframe.parse(timeframe)
        crypto = is_crypto_symbol(symbol)
        if crypto:  # every bar of the grid exists: no sessions, no weekends
            days = count * tf.seconds / 86400 + 2
        elif tf.is_intraday:
            per_day = max(1.0, REGULAR_SESSION_HOURS * 3600 / tf.seconds)
            days = count / per_day * 7 / 5 + 10
        else:
            days = count * tf.seconds / 86400 * 7 / 5 + 20
        start = now - pd.Timedelta(days=math.ceil(days))
        key, secret = self._keys
        try:
            frame = fetch_alpaca_bars(symbol, str(tf), start, None, api_key=key, secret_key=secret,
                                      url_override=self.data_url, feed=self.feed, connect_timeout=self.timeouts[0],
                                      read_timeout=self.timeouts[1], max_retries=self.max_retries,
                                      backoff_base=self.backoff_base, backoff_max=self.backoff_max, sleep=self.sleep_fn)
        except AlpacaDataError as error:  # its advice names fetch_alpaca_bars' argument; here it is the config key
            raise BrokerError(str(error).replace("url_override", "broker.data_url"), error.status_code) from None
        except ValueError as error:
            if "returned no" in str(error):
                return pd.DataFrame(columns=["open", "high", "low", "close", "volume"])
            raise
        complete = _complete_24_7(frame.index, tf, now) if crypto else self._complete(frame.index, tf, now)
        return frame[complete].iloc[-int(count):]

    def _complete(self, index: pd.DatetimeIndex, tf: Timeframe, now: pd.Timestamp) -> Any:
        """Which bars have closed by ``now`` (the API also sends the bar still forming)."""
        if tf.is_intraday:
            return (index + pd.Timedelta(seconds=tf.seconds)) <= now
        sessions = {s.date: s for s in self.calendar(self.session_date(index[0]) if len(index) else now.date(),
                                                     self.session_date(now))}
        closes = [sessions[d].close if d in sessions else pd.Timestamp(d, tz=MARKET_TZ) + pd.Timedelta(days=1)
                  for d in (self.session_date(t) for t in index)]
        return pd.DatetimeIndex(closes).tz_convert("UTC") <= now if len(closes) else []

    def expected_bar_times(self, symbol: str, timeframe: str, after: pd.Timestamp, until: pd.Timestamp) -> list[pd.Timestamp]:
        tf = Timeframe.parse(timeframe)
        if is_crypto_symbol(symbol):
            return _grid_bar_times(tf, after, until)
        sessions = self.calendar(self.session_date(after), self.session_date(until))
        out = []
        for session in sessions:
            if not tf.is_intraday:
                start = _daily_bar_time(session.date)
                if start > after and session.close <= until:
                    out.append(start)
                continue
            step = pd.Timedelta(seconds=tf.seconds)
            start = session.open.floor(step)
            while start < session.close:
                if start > after and start + step <= until:
                    out.append(start)
                start += step
        return out

    def reference_price(self, symbol: str) -> float:
        from alpaca.data.requests import CryptoLatestTradeRequest, StockLatestTradeRequest

        if is_crypto_symbol(symbol):
            crypto = CryptoLatestTradeRequest(symbol_or_symbols=symbol)
            raw = self._call(f"{symbol} latest trade", lambda: self._crypto_data().get_crypto_latest_trade(crypto),
                             "data_url")
        else:
            request = StockLatestTradeRequest(symbol_or_symbols=symbol, feed=self.feed)
            raw = self._call(f"{symbol} latest trade", lambda: self._data().get_stock_latest_trade(request), "data_url")
        trade = (raw or {}).get(symbol)
        price = _number(trade.get("p")) if isinstance(trade, dict) and trade.get("p") is not None else float("nan")
        if not (math.isfinite(price) and price > 0):
            raise BrokerError(f"{symbol}: no latest trade price from Alpaca's data API")
        return price


#: Quote currencies of Alpaca's crypto pairs, longest first (``BTCUSDT`` is ``BTC/USDT``, not ``BTCU/SDT``).
_CRYPTO_QUOTES = ("USDT", "USDC", "USD", "BTC")


def _pair_spelling(symbol: str, asset_class: str) -> str:
    """A position's symbol as the run spells it: Alpaca lists crypto positions without the slash (``BTCUSD``),
    its orders with it (``BTC/USD``); stocks are unchanged.

    :param symbol: the position's symbol as Alpaca sent it.
    :param asset_class: the position's asset class (``"crypto"``, ``"us_equity"``).
    """
    if asset_class != "crypto" or "/" in symbol:
        return symbol
    for quote in _CRYPTO_QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return f"{symbol[: -len(quote)]}/{quote}"
    raise BrokerError(f"crypto position {symbol!r}: expected a pair ending in one of {', '.join(_CRYPTO_QUOTES)}")


def _complete_24_7(index: pd.DatetimeIndex, tf: Timeframe, now: pd.Timestamp) -> Any:
    """Which bars of a 24/7 market have closed by ``now``: those whose start plus their length is not after it.

    :param index: the bars' start times (UTC).
    :param tf: the bars' length.
    :param now: the current time.
    """
    return (index + pd.Timedelta(seconds=tf.seconds)) <= now


def _grid_bar_times(tf: Timeframe, after: pd.Timestamp, until: pd.Timestamp) -> list[pd.Timestamp]:
    """Every bar of a 24/7 market's UTC grid that starts after ``after`` and has closed by ``until``.

    :param tf: the bars' length (a daily bar starts at 00:00 UTC).
    :param after: the newest bar already had (exclusive).
    :param until: the current time.
    """
    step = pd.Timedelta(seconds=tf.seconds)
    start = pd.Timestamp(after).tz_convert("UTC").floor(step) + step
    out = []
    while start + step <= until:
        out.append(start)
        start += step
    return out


def _order(model: Any) -> Order:
    def value(x: Any) -> str:
        return str(getattr(x, "value", x))

    return Order(
        id=str(model.id), client_order_id=model.client_order_id, symbol=model.symbol, side=value(model.side),
        qty=_number(model.qty) if model.qty is not None else 0.0, status=value(model.status),
        filled_qty=_number(model.filled_qty) if model.filled_qty is not None else 0.0,
        filled_avg_price=_number(model.filled_avg_price) if model.filled_avg_price not in (None, "", "0") else None,
        submitted_at=_utc(model.submitted_at) if model.submitted_at else None,
        filled_at=_utc(model.filled_at) if model.filled_at else None,
    )


def _endpoint(request: Any, fallback: str) -> str:
    """``GET https://host/v2/clock`` of a request (its query left out), or ``fallback`` when it is unknown."""
    url = getattr(request, "url", None)
    if not url:
        return fallback
    parts = urlsplit(url)
    return f"{getattr(request, 'method', None) or 'request to'} {parts.scheme}://{parts.netloc}{parts.path}"


def _network_failure(exc: Exception, connect_timeout: float, read_timeout: float) -> str:
    """What the network did, in a few words (``refused the connection``, ``did not answer in 30 s``)."""
    from requests.exceptions import ConnectTimeout, JSONDecodeError, ReadTimeout, SSLError

    text = str(exc)
    if isinstance(exc, JSONDecodeError):
        return "answered with something that is not JSON"
    if isinstance(exc, ConnectTimeout):
        return f"could not be connected to in {connect_timeout:g} s (connect_timeout)"
    if isinstance(exc, ReadTimeout) or "read timed out" in text.lower():
        return f"accepted the connection but did not answer in {read_timeout:g} s (read_timeout)"
    if isinstance(exc, SSLError):
        return "failed the TLS handshake"
    reason = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if reason:
        return f"could not be reached ({reason.group(1).strip()})"
    return f"could not be reached ({type(exc).__name__})"


def _number(value: Any) -> float:
    return float(value) if value is not None else float("nan")


def _utc(value: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _market_time(value: Any) -> pd.Timestamp:
    """A calendar time (alpaca-py gives naive New York wall-clock datetimes) in UTC."""
    stamp = pd.Timestamp(value)
    return (stamp.tz_localize(MARKET_TZ) if stamp.tzinfo is None else stamp).tz_convert("UTC")


def _daily_bar_time(day: dt.date) -> pd.Timestamp:
    """Alpaca stamps a daily bar at midnight New York time of its date."""
    return pd.Timestamp(day).tz_localize(MARKET_TZ).tz_convert("UTC")


_SESSION_CLASS: Any = None


def _trading_session_class() -> type:
    """A requests session with timeouts and retries that never resends an order that may have arrived."""
    global _SESSION_CLASS
    if _SESSION_CLASS is not None:
        return _SESSION_CLASS
    import requests
    from requests.exceptions import ChunkedEncodingError, ConnectionError, ConnectTimeout, SSLError, Timeout

    class TradingSession(requests.Session):
        def __init__(self, *, timeout: tuple[float, float], max_retries: int, backoff_base: float,
                     backoff_max: float, sleep: Callable[[float], Any], redact: Callable[[str], str], what: str) -> None:
            super().__init__()
            self.timeout, self.max_retries = timeout, max_retries
            self.backoff_base, self.backoff_max = backoff_base, backoff_max
            self.sleep, self.redact, self.what = sleep, redact, what

        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = self.timeout
            post = method.upper() == "POST"
            path = urlsplit(url).path
            attempts = 0
            while True:
                attempts += 1
                try:
                    response = super().request(method, url, *args, **kwargs)
                except (ConnectionError, Timeout, ChunkedEncodingError) as exc:
                    # a POST is resent only when it cannot have arrived: refused or not connected in time
                    never_sent = isinstance(exc, ConnectTimeout) or "NewConnectionError" in repr(exc)
                    if isinstance(exc, SSLError) or (post and not never_sent) or attempts > self.max_retries:
                        raise
                    wait, what = self._backoff(attempts), type(exc).__name__
                else:
                    status = response.status_code
                    retryable = status == 429 or (500 <= status <= 599 and not post)
                    if not retryable or attempts > self.max_retries:
                        return response
                    header = response.headers.get("Retry-After")
                    after = _retry_after_seconds(header)
                    wait = self._backoff(attempts) if after is None else after
                    what = f"HTTP {status}" + (f", Retry-After {header.strip()}" if after is not None else "")
                    response.close()
                logger.warning("%s", self.redact(f"{self.what} {method} {path} failed ({what}); retrying in {wait:g} s "
                                                 f"(attempt {attempts + 1} of {self.max_retries + 1})"))
                self.sleep(wait)

        def _backoff(self, attempts: int) -> float:
            return min(self.backoff_max, self.backoff_base * 2 ** (attempts - 1))

    _SESSION_CLASS = TradingSession
    return TradingSession
