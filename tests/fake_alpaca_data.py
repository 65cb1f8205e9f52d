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
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from typing import Iterator
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
    """The stock fake plus crypto pairs: ``crypto_bars`` (a pair with ``[]`` is known but has no bars)."""

    def __init__(self) -> None:
        super().__init__()
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
            if not parts.path.startswith("/v1beta3/crypto/"):
                return super().do_GET()
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            fake.requests.append({"path": parts.path, "query": query, "headers": dict(self.headers)})
            fault = fake.next_fault()
            if fault is not None:
                return self.misbehave(fault)
            key, secret = self.headers.get("APCA-API-KEY-ID"), self.headers.get("APCA-API-SECRET-KEY")
            if (key, secret) not in ((None, None), (API_KEY, SECRET_KEY)):
                return self.reply(401, {"message": "unauthorized."})
            if parts.path != CRYPTO_BARS_PATH:
                return self.reply(404, {"message": "Not Found"})
            pairs = [p for p in query.get("symbols", "").split(",") if p]
            unknown = [p for p in pairs if p not in fake.crypto_bars]
            if unknown:
                return self.reply(400, {"message": f"invalid symbol: {unknown[0]}"})
            self.reply(200, self.page(pairs, int(query.get("page_token", "0")), int(query["limit"])))

        def page(self, pairs: list[str], offset: int, limit: int) -> dict:
            """One page: at most min(limit, PAGE_SIZE) bars over all ``pairs``, from ``offset`` on."""
            flat = [(pair, bar) for pair in pairs for bar in fake.crypto_bars[pair]]
            size = min(limit, PAGE_SIZE)
            chunk = flat[offset : offset + size]
            bars: dict[str, list[dict]] = {}
            for pair, bar in chunk:
                bars.setdefault(pair, []).append(bar)
            token = str(offset + size) if offset + size < len(flat) else None
            return {"bars": bars, "next_page_token": token}

    return Handler


@contextmanager
def serve(fake: FakeAlpacaData) -> Iterator[FakeAlpacaData]:
    """Serve ``fake`` on 127.0.0.1 (a free port; its URL goes into ``fake.url``) until the block ends.

    :param fake: what to serve.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_data_handler(fake))
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
