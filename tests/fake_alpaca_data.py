"""The local fake of Alpaca's market data API, extended with crypto bars (``/v1beta3/crypto/us/bars``).

It composes with the stock-bars fake of ``test_alpaca_source.py``: :class:`FakeAlpacaData` is its
:class:`FakeAlpaca` plus crypto pairs, and :func:`make_data_handler` answers the crypto path itself and
hands every other request to that module's handler (stock bars, its keys check, its faults). Faults
(:class:`Fault`) are shared: they are used up one per request, stock or crypto.

Crypto wire format (alpaca-py 0.44's ``CryptoHistoricalDataClient.get_crypto_bars``):
``GET /v1beta3/crypto/us/bars?symbols=BTC/USD,ETH/USD&timeframe=1Hour&start=...&limit=10000[&page_token=...]``
answered with ``{"bars": {"BTC/USD": [{"t", "o", "h", "l", "c", "v", "n", "vw"}, ...], ...},
"next_page_token": ...}``. Like Alpaca, a page holds at most ``limit`` bars over all the pairs asked
(pair by pair, in the order asked), so one pair's bars can span pages. No keys are needed; keys that are
sent must be right. An unknown pair is answered with HTTP 400 ``invalid symbol``.

The whole API (``full_api = True``, used by the bulk download's tests): stock bars too are answered here,
several symbols per request like Alpaca (``symbols=AAPL,MSFT``; keys required), both endpoints keep only
the bars within ``start``/``end`` (inclusive), and a page holds at most ``page_size`` bars over all the
symbols asked. With ``clock`` set each request records its time ``"t"``; with ``rate_limit = (n,
window_s)`` as well, a request beyond ``n`` in the last ``window_s`` seconds is answered HTTP 429 like
Alpaca's limit.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pandas as pd
from test_alpaca_source import API_KEY, PAGE_SIZE, SECRET_KEY, FakeAlpaca, Fault, make_handler

__all__ = [
    "API_KEY", "CRYPTO_BARS_PATH", "PAGE_SIZE", "SECRET_KEY", "FakeAlpacaData", "Fault",
    "crypto_wire_bars", "make_data_handler", "serve",
]

CRYPTO_BARS_PATH = "/v1beta3/crypto/us/bars"
CRYPTO_START = "2024-01-05 20:00"  # a Friday evening (UTC): hourly bars run on through the weekend


def crypto_wire_bars(n: int, base: float = 40_000.0, start: str = CRYPTO_START, freq: str = "1h") -> list[dict]:
    """Crypto bars as Alpaca sends them: every hour, weekends included, fractional volumes.

    :param n: how many bars.
    :param base: the first close.
    :param start: the first bar's time (UTC).
    :param freq: the spacing of the bars (a pandas frequency).
    """
    stamps = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    bars = []
    for i, stamp in enumerate(stamps):
        close = base + 10.0 * i
        bars.append(
            {
                "t": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "o": close - 5.0,
                "h": close + 12.5,
                "l": close - 12.5,
                "c": close,
                "v": 0.125 + i,
                "n": 40 + i,
                "vw": close - 1.0,
            }
        )
    return bars


class FakeAlpacaData(FakeAlpaca):
    """The stock fake plus crypto pairs: ``crypto_bars`` (a pair with ``[]`` is known but has no bars).

    ``full_api``, ``page_size``, ``clock`` and ``rate_limit``: see the module docstring.
    """

    def __init__(self) -> None:
        super().__init__()
        self.full_api = False
        self.page_size = PAGE_SIZE
        self.clock: Callable[[], float] | None = None
        self.rate_limit: tuple[int, float] | None = None
        self.crypto_bars: dict[str, list[dict]] = {
            "BTC/USD": crypto_wire_bars(10),
            "ETH/USD": crypto_wire_bars(3, base=2_000.0),
            "NODATA/USD": [],
        }


def make_data_handler(fake: FakeAlpacaData) -> type:
    """A request handler for ``fake``: crypto bars here, everything else by the stock fake's handler.

    :param fake: what to serve, and where the requests are recorded.
    """
    stock_handler = make_handler(fake)

    class Handler(stock_handler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's spelling)
            parts = urlsplit(self.path)
            stocks = fake.full_api and parts.path.startswith("/v2/stocks/")
            if not parts.path.startswith("/v1beta3/crypto/") and not stocks:
                return super().do_GET()
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            record = {"path": parts.path, "query": query, "headers": dict(self.headers)}
            if fake.clock is not None:
                record["t"] = fake.clock()
            fake.requests.append(record)
            fault = fake.next_fault()
            if fault is not None:
                return self.misbehave(fault)
            if self.over_rate_limit(record):
                return self.reply(429, {"message": "too many requests."})
            if stocks:
                return self.stock_bars(parts.path, query)
            key, secret = self.headers.get("APCA-API-KEY-ID"), self.headers.get("APCA-API-SECRET-KEY")
            if (key, secret) not in ((None, None), (API_KEY, SECRET_KEY)):
                return self.reply(401, {"message": "unauthorized."})
            if parts.path != CRYPTO_BARS_PATH:
                return self.reply(404, {"message": "Not Found"})
            pairs = [p for p in query.get("symbols", "").split(",") if p]
            unknown = [p for p in pairs if p not in fake.crypto_bars]
            if unknown:
                return self.reply(400, {"message": f"invalid symbol: {unknown[0]}"})
            self.reply(200, self.page(pairs, int(query.get("page_token", "0")), int(query["limit"]),
                                      fake.crypto_bars, query))

        def stock_bars(self, path: str, query: dict) -> None:
            """The multi-symbol stock endpoint (``full_api``): keys required, unknown symbols refused."""
            key, secret = self.headers.get("APCA-API-KEY-ID"), self.headers.get("APCA-API-SECRET-KEY")
            if (key, secret) != (API_KEY, SECRET_KEY):
                return self.reply(401, {"message": "unauthorized."})
            if path != "/v2/stocks/bars":
                return self.reply(404, {"message": "Not Found"})
            symbols = [s for s in query.get("symbols", "").split(",") if s]
            unknown = [s for s in symbols if s not in fake.bars]
            if unknown:
                return self.reply(422, {"code": 42210000, "message": f"invalid symbol: {unknown[0]}"})
            self.reply(200, self.page(symbols, int(query.get("page_token", "0")), int(query["limit"]),
                                      fake.bars, query))

        def over_rate_limit(self, record: dict) -> bool:
            """Whether this request is beyond ``fake.rate_limit`` (counted on ``fake.clock``)."""
            if fake.rate_limit is None or fake.clock is None:
                return False
            limit, window = fake.rate_limit
            recent = [r for r in fake.requests if "t" in r and record["t"] - window < r["t"] <= record["t"]]
            return len(recent) > limit

        def page(self, pairs: list[str], offset: int, limit: int, series: dict | None = None,
                 query: dict | None = None) -> dict:
            """One page: at most min(limit, page size) bars over all ``pairs``, from ``offset`` on (with
            ``full_api``: only the bars within the query's ``start``/``end``)."""
            series = fake.crypto_bars if series is None else series
            flat = [(pair, bar) for pair in pairs for bar in series[pair]]
            if fake.full_api and query is not None:
                first, last = _wire_time(query.get("start"), "0"), _wire_time(query.get("end"), "9")
                flat = [(p, b) for p, b in flat if first <= b["t"] <= last]
            size = min(limit, fake.page_size)
            chunk = flat[offset : offset + size]
            bars: dict[str, list[dict]] = {}
            for pair, bar in chunk:
                bars.setdefault(pair, []).append(bar)
            token = str(offset + size) if offset + size < len(flat) else None
            return {"bars": bars, "next_page_token": token}

    return Handler


def _wire_time(value: str | None, absent: str) -> str:
    """A query's time in the bars' own spelling (``2024-01-05T20:00:00Z``, which sorts as text);
    ``absent`` when the query has none ("0" sorts before every time, "9" after)."""
    if value is None:
        return absent
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def serve(fake: FakeAlpacaData) -> Iterator[FakeAlpacaData]:
    """Serve ``fake`` on 127.0.0.1 (a free port; its URL goes into ``fake.url``) until the block ends.

    :param fake: what to serve.
    """
    with serve_handler(fake, make_data_handler(fake)) as served:
        yield served


@contextmanager
def serve_handler(fake: Any, handler: type) -> Iterator[Any]:
    """Serve ``handler`` on 127.0.0.1 (a free port) until the block ends; ``fake.url`` is set to its address and
    ``fake.release`` (an Event that held requests wait on) is set before shutting down.

    :param fake: the fake's state (``url`` and ``release`` attributes).
    :param handler: the request handler class.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
