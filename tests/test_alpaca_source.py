"""Alpaca downloads against a local HTTP server that speaks the market data v2 bars wire format.

The real alpaca-py client is pointed at the server with ``url_override``; nothing is mocked inside
alpaca-py. alpaca-py 0.44 calls ``GET {base}/v2/stocks/bars?symbols=...`` and follows
``next_page_token``. Error statuses used here (403, 422) are not retried by alpaca-py (it retries 429
and 504 only, 3 s apart), so the error tests are fast.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest

from features.alpaca_source import AlpacaDataError, download_to_cache, fetch_alpaca_bars
from features.loading import load_bars
from features.parquet_cache import cache_path, read_cached_bars, write_cached_bars

# alpaca-py imports its websocket client, which imports a deprecated websockets module.
pytestmark = pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning")

API_KEY = "PKTEST123"
SECRET_KEY = "secret-xyz"
PAGE_SIZE = 4
N_BARS = 10  # three pages: 4 + 4 + 2


def wire_bars(n: int, base: float = 100.0) -> list[dict]:
    """Daily bars as Alpaca sends them (midnight New York in UTC, trading days only)."""
    days = pd.bdate_range("2024-01-02", periods=n)
    bars = []
    for i, day in enumerate(days):
        close = base + i
        bars.append(
            {
                "t": (day + pd.Timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "o": close - 0.5,
                "h": close + 1.25,
                "l": close - 1.25,
                "c": close,
                "v": 1_000_000 + i,  # integers on the wire
                "n": 5_000 + i,
                "vw": close - 0.1,
            }
        )
    return bars


class FakeAlpaca:
    """What the server serves, per symbol, and every request it saw."""

    def __init__(self) -> None:
        self.bars: dict[str, list[dict]] = {"AAPL": wire_bars(N_BARS), "MSFT": wire_bars(3, base=300.0)}
        self.errors: dict[str, tuple[int, dict]] = {
            "DENIED": (403, {"message": "forbidden"}),
            "BADSYM": (422, {"code": 42210000, "message": "invalid symbol: BADSYM"}),
        }
        self.requests: list[dict] = []
        self.url = ""


def make_handler(fake: FakeAlpaca) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's spelling)
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            fake.requests.append({"path": parts.path, "query": query, "headers": dict(self.headers)})
            key, secret = self.headers.get("APCA-API-KEY-ID"), self.headers.get("APCA-API-SECRET-KEY")
            if (key, secret) != (API_KEY, SECRET_KEY):
                return self.reply(401, {"message": "unauthorized."})
            if parts.path != "/v2/stocks/bars":
                return self.reply(404, {"message": "Not Found"})
            symbol = query.get("symbols", "")
            if symbol in fake.errors:
                return self.reply(*fake.errors[symbol])
            bars = fake.bars.get(symbol, [])
            offset = int(query.get("page_token", "0"))
            page = bars[offset : offset + PAGE_SIZE]
            next_offset = offset + PAGE_SIZE
            token = str(next_offset) if next_offset < len(bars) else None
            # Alpaca sends an empty object (not a missing key) when nothing matched.
            self.reply(200, {"bars": {symbol: page} if page else {}, "next_page_token": token})

        def reply(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    return Handler


@pytest.fixture
def fake_alpaca(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    fake = FakeAlpaca()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    # A short poll interval: shutdown() waits up to one interval, 0.5 s by default, per test.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def keys(fake_alpaca) -> dict:
    return {"api_key": API_KEY, "secret_key": SECRET_KEY, "url_override": fake_alpaca.url}


def test_pagination_joins_every_page_in_order(fake_alpaca, keys):
    bars = fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", "2024-02-01", **keys)

    assert len(fake_alpaca.requests) == 3
    assert [r["query"].get("page_token") for r in fake_alpaca.requests] == [None, "4", "8"]
    wire = wire_bars(N_BARS)
    assert len(bars) == N_BARS
    expected_index = pd.DatetimeIndex([pd.Timestamp(b["t"]) for b in wire], name="timestamp")
    assert (bars.index == expected_index).all()
    assert bars.index.is_monotonic_increasing
    np.testing.assert_array_equal(bars["close"].to_numpy(), [b["c"] for b in wire])
    np.testing.assert_array_equal(bars["vwap"].to_numpy(), [b["vw"] for b in wire])


def test_request_carries_keys_and_parameters(fake_alpaca, keys):
    fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", "2024-02-01", feed="iex", **keys)

    first = fake_alpaca.requests[0]
    assert first["path"] == "/v2/stocks/bars"
    assert first["headers"]["APCA-API-KEY-ID"] == API_KEY
    assert first["headers"]["APCA-API-SECRET-KEY"] == SECRET_KEY
    query = first["query"]
    assert query["symbols"] == "AAPL"
    assert query["timeframe"] == "1Day"
    assert query["adjustment"] == "all"
    assert query["feed"] == "iex"
    assert query["limit"] == "10000"
    assert pd.Timestamp(query["start"]) == pd.Timestamp("2024-01-01", tz="UTC")
    assert pd.Timestamp(query["end"]) == pd.Timestamp("2024-02-01", tz="UTC")


@pytest.mark.parametrize("timeframe", ["1Hour", "15Min", "1Week"])
def test_timeframes_reach_the_server_in_alpaca_spelling(fake_alpaca, keys, timeframe):
    fetch_alpaca_bars("AAPL", timeframe, "2024-01-01", **keys)
    assert fake_alpaca.requests[0]["query"]["timeframe"] == timeframe
    assert "end" not in fake_alpaca.requests[0]["query"]


def test_timeframe_alpaca_does_not_offer_is_a_clear_error(fake_alpaca, keys):
    with pytest.raises(ValueError, match="timeframe='2Day' is not offered by Alpaca"):
        fetch_alpaca_bars("AAPL", "2Day", "2024-01-01", **keys)
    with pytest.raises(ValueError, match="feed='nasdaq'"):
        fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", feed="nasdaq", **keys)
    assert fake_alpaca.requests == []


def test_frame_is_validated_and_typed(fake_alpaca, keys):
    bars = fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", **keys)
    assert list(bars.columns) == ["open", "high", "low", "close", "volume", "vwap"]
    assert all(dtype == np.float64 for dtype in bars.dtypes)
    assert str(bars.index.tz) == "UTC"
    assert bars.index.name == "timestamp"
    assert bars.index[0] == pd.Timestamp("2024-01-02 05:00", tz="UTC")


def test_keys_from_environment(fake_alpaca, monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", API_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    bars = fetch_alpaca_bars("MSFT", "1Day", "2024-01-01", url_override=fake_alpaca.url)
    assert len(bars) == 3
    assert fake_alpaca.requests[0]["headers"]["APCA-API-KEY-ID"] == API_KEY


def test_missing_keys_name_the_environment_variables(fake_alpaca, tmp_path):
    with pytest.raises(ValueError, match="APCA_API_KEY_ID") as info:
        fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", url_override=fake_alpaca.url)
    assert "APCA_API_SECRET_KEY" in str(info.value)
    with pytest.raises(ValueError, match="APCA_API_SECRET_KEY"):
        fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", api_key=API_KEY, url_override=fake_alpaca.url)
    with pytest.raises(ValueError, match="APCA_API_KEY_ID"):
        load_bars(
            ["AAPL"], source="alpaca", start="2024-01-01", cache_dir=tmp_path, url_override=fake_alpaca.url
        )
    assert fake_alpaca.requests == []
    assert list(tmp_path.iterdir()) == []


def test_load_bars_downloads_to_cache_then_reads_it_back_offline(fake_alpaca, keys, tmp_path):
    loaded = load_bars(["AAPL", "MSFT"], source="alpaca", start="2024-01-01", cache_dir=tmp_path, **keys)

    for symbol, n in (("AAPL", N_BARS), ("MSFT", 3)):
        path = tmp_path / symbol / "1Day" / "data.parquet"
        assert path.is_file()
        assert len(loaded[symbol]) == n
        pd.testing.assert_frame_equal(loaded[symbol], read_cached_bars(symbol, "1Day", root=tmp_path))
        assert [p.name for p in path.parent.iterdir()] == ["data.parquet"]

    fake_alpaca.bars.clear()  # the server has nothing any more: the next read must come from disk
    n_requests = len(fake_alpaca.requests)
    offline = load_bars(["AAPL", "MSFT"], source="parquet", cache_dir=tmp_path)
    assert len(fake_alpaca.requests) == n_requests
    for symbol in ("AAPL", "MSFT"):
        pd.testing.assert_frame_equal(offline[symbol], loaded[symbol])


def test_download_merges_with_existing_cache(fake_alpaca, keys, tmp_path):
    early = pd.DataFrame(
        {"open": [90.0], "high": [91.0], "low": [89.0], "close": [90.5], "volume": [10.0], "vwap": [90.2]},
        index=pd.DatetimeIndex([pd.Timestamp("2023-12-29 05:00", tz="UTC")], name="timestamp"),
    )
    write_cached_bars(early, "AAPL", "1Day", root=tmp_path)
    paths = download_to_cache(["AAPL"], "1Day", "2024-01-01", root=tmp_path, **keys)
    assert paths == {"AAPL": cache_path("AAPL", "1Day", tmp_path)}
    merged = read_cached_bars("AAPL", "1Day", root=tmp_path)
    assert len(merged) == N_BARS + 1
    assert merged.index[0] == pd.Timestamp("2023-12-29 05:00", tz="UTC")


@pytest.mark.parametrize(
    ("symbol", "status", "message"),
    [("DENIED", 403, "forbidden"), ("BADSYM", 422, "invalid symbol: BADSYM")],
)
def test_error_response_is_clear_and_writes_nothing(
    fake_alpaca, keys, tmp_path, symbol, status, message
):
    with pytest.raises(AlpacaDataError) as info:
        load_bars([symbol], source="alpaca", start="2024-01-01", cache_dir=tmp_path, **keys)
    error = info.value
    assert isinstance(error, RuntimeError)
    assert symbol in str(error)
    assert f"HTTP {status}" in str(error)
    assert message in str(error)
    assert (error.symbol, error.status_code, error.server_message) == (symbol, status, message)
    assert len(fake_alpaca.requests) == 1  # not retried
    assert not cache_path(symbol, "1Day", tmp_path).exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_wrong_keys_report_status_and_message(fake_alpaca, tmp_path):
    with pytest.raises(AlpacaDataError, match=r"HTTP 401: 'unauthorized\.'"):
        fetch_alpaca_bars(
            "AAPL", "1Day", "2024-01-01", api_key="nope", secret_key="nope", url_override=fake_alpaca.url
        )


def test_failure_midway_keeps_earlier_symbols_and_old_files(fake_alpaca, keys, tmp_path):
    # BADSYM already has a cache file from an earlier download; the failing download must not touch it.
    old_path = write_cached_bars(
        pd.DataFrame(
            {"open": [10.0], "high": [11.0], "low": [9.0], "close": [10.5], "volume": [1.0]},
            index=pd.DatetimeIndex([pd.Timestamp("2020-01-02", tz="UTC")], name="timestamp"),
        ),
        "BADSYM",
        "1Day",
        root=tmp_path,
    )
    old_bytes = old_path.read_bytes()

    with pytest.raises(AlpacaDataError, match="BADSYM"):
        download_to_cache(["MSFT", "BADSYM", "AAPL"], "1Day", "2024-01-01", root=tmp_path, **keys)

    assert old_path.read_bytes() == old_bytes
    assert len(read_cached_bars("MSFT", "1Day", root=tmp_path)) == 3  # fetched before the failure
    assert not cache_path("AAPL", "1Day", tmp_path).exists()  # never reached
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file() and p.name != "data.parquet"]
    assert leftovers == []


def test_empty_response_names_symbol_and_range(fake_alpaca, keys, tmp_path):
    with pytest.raises(ValueError, match="NODATA") as info:
        load_bars(
            ["NODATA"], source="alpaca", start="2024-01-01", end="2024-01-31", cache_dir=tmp_path, **keys
        )
    assert "2024-01-01" in str(info.value) and "2024-01-31" in str(info.value)
    assert list(tmp_path.rglob("*.parquet")) == []


def test_unreachable_server_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    # A port that was just free: nothing listens there, so the connection is refused at once.
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{probe.server_address[1]}"
    probe.server_close()
    with pytest.raises(AlpacaDataError, match="could not reach"):
        fetch_alpaca_bars(
            "AAPL", "1Day", "2024-01-01", api_key=API_KEY, secret_key=SECRET_KEY, url_override=url
        )
