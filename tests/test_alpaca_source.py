"""Alpaca downloads against a local HTTP server that speaks the market data v2 bars wire format.

The real alpaca-py client is pointed at the server with ``url_override``; nothing is mocked inside
alpaca-py. alpaca-py 0.44 calls ``GET {base}/v2/stocks/bars?symbols=...`` and follows
``next_page_token``. The server can also misbehave on cue (:class:`Fault`: an error status, a
``Retry-After``, an answer that never comes, the request's headers echoed back); the retry tests pass
``sleep=waits.append`` so backoff waits are recorded instead of slept, and hanging requests use read
timeouts of a fraction of a second.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest

from features.alpaca_source import (
    RETRY_AFTER_MAX_S,
    AlpacaDataError,
    download_to_cache,
    fetch_alpaca_bars,
)
from features.loading import load_bars
from features.parquet_cache import cache_path, read_cached_bars, write_cached_bars

pytestmark = [
    # alpaca-py imports its websocket client, which imports a deprecated websockets module.
    pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
    # A guard: a request that hangs must fail the test, not the whole run.
    pytest.mark.timeout(60),
]

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


@dataclass
class Fault:
    """One misbehaving answer: an error status (with headers), or no answer at all."""

    status: int = 500
    payload: dict = field(default_factory=lambda: {"message": "internal server error"})
    headers: dict = field(default_factory=dict)
    hang: bool = False  # read the request, then never answer (until the test ends)
    echo_headers: bool = False  # append the request's headers, keys included, to the message


HANG = Fault(hang=True)


class FakeAlpaca:
    """What the server serves, per symbol, and every request it saw.

    ``faults`` are used up one per request, in order (None: answer normally); once they are gone,
    ``fault_always`` (if set) answers every request.
    """

    def __init__(self) -> None:
        self.bars: dict[str, list[dict]] = {"AAPL": wire_bars(N_BARS), "MSFT": wire_bars(3, base=300.0)}
        self.errors: dict[str, tuple[int, dict]] = {
            "DENIED": (403, {"message": "forbidden"}),
            "BADSYM": (422, {"code": 42210000, "message": "invalid symbol: BADSYM"}),
        }
        self.requests: list[dict] = []
        self.url = ""
        self.faults: list[Fault | None] = []
        self.fault_always: Fault | None = None
        self.release = threading.Event()  # set at teardown: hanging handlers return
        self._lock = threading.Lock()

    def next_fault(self) -> Fault | None:
        with self._lock:
            return self.faults.pop(0) if self.faults else self.fault_always


def make_handler(fake: FakeAlpaca) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's spelling)
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            fake.requests.append({"path": parts.path, "query": query, "headers": dict(self.headers)})
            fault = fake.next_fault()
            if fault is not None:
                return self.misbehave(fault)
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

        def misbehave(self, fault: Fault) -> None:
            if fault.hang:
                fake.release.wait(timeout=60)
                self.close_connection = True
                return
            payload = dict(fault.payload)
            if fault.echo_headers:
                payload["message"] = f"{payload.get('message', '')}; you sent {dict(self.headers)}"
            self.reply(fault.status, payload, fault.headers)

        def reply(self, status: int, payload: dict, headers: dict | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
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
    fake.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def keys(fake_alpaca) -> dict:
    return {"api_key": API_KEY, "secret_key": SECRET_KEY, "url_override": fake_alpaca.url}


@pytest.fixture
def waits() -> list[float]:
    """Pass ``sleep=waits.append``: the backoff waits are recorded instead of slept."""
    return []


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


def free_port_url() -> str:
    """A port that was just free: nothing listens there, so a connection is refused at once."""
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{probe.server_address[1]}"
    probe.server_close()
    return url


def test_unreachable_server_is_a_clear_error(monkeypatch, waits):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with pytest.raises(AlpacaDataError, match="could not reach") as info:
        fetch_alpaca_bars(
            "AAPL",
            "1Day",
            "2024-01-01",
            api_key=API_KEY,
            secret_key=SECRET_KEY,
            url_override=free_port_url(),
            sleep=waits.append,
        )
    # Refused connections are retried with the default backoff: 1, 2, 4, 8 s.
    assert waits == [1.0, 2.0, 4.0, 8.0]
    assert info.value.attempts == 5 and "all 5 attempts" in str(info.value)
    assert info.value.status_code is None


# ---- timeouts -------------------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_server_that_never_answers_times_out_instead_of_hanging(fake_alpaca, keys):
    fake_alpaca.fault_always = HANG
    began = time.monotonic()
    with pytest.raises(AlpacaDataError) as info:
        fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", read_timeout=0.5, max_retries=0, **keys)
    elapsed = time.monotonic() - began

    assert 0.4 < elapsed < 3.0
    error = info.value
    assert "AAPL" in str(error)
    assert "did not answer: timed out after 0.5 s (read_timeout)" in str(error)
    assert "the only attempt" in str(error)
    assert "try again later" in str(error)
    assert (error.symbol, error.status_code, error.attempts) == ("AAPL", None, 1)
    assert len(fake_alpaca.requests) == 1


@pytest.mark.timeout(10)
def test_read_timeouts_are_retried_with_backoff_then_reported(fake_alpaca, keys, waits, caplog):
    fake_alpaca.fault_always = HANG
    with pytest.raises(AlpacaDataError, match=r"timed out after 0\.2 s .*on all 3 attempts") as info:
        fetch_alpaca_bars(
            "AAPL", "1Day", "2024-01-01", read_timeout=0.2, max_retries=2, sleep=waits.append, **keys
        )
    assert info.value.attempts == 3
    assert len(fake_alpaca.requests) == 3
    assert waits == [1.0, 2.0]
    retries = [r.getMessage() for r in caplog.records if r.name == "features.alpaca_source"]
    assert len(retries) == 2 and all("ReadTimeout" in m and "AAPL" in m for m in retries)


@pytest.mark.timeout(10)
def test_a_page_that_hangs_once_is_retried_and_the_download_completes(fake_alpaca, keys, waits):
    fake_alpaca.faults = [None, HANG]  # the first page is served; the second hangs once
    bars = fetch_alpaca_bars(
        "AAPL", "1Day", "2024-01-01", read_timeout=0.3, sleep=waits.append, **keys
    )
    assert len(bars) == N_BARS
    assert [r["query"].get("page_token") for r in fake_alpaca.requests] == [None, "4", "4", "8"]
    assert waits == [1.0]


# ---- retries on 429 / 5xx ------------------------------------------------------------------------


def test_429_with_retry_after_is_honoured_then_succeeds(fake_alpaca, keys, waits, caplog):
    fake_alpaca.faults = [Fault(429, {"message": "too many requests"}, {"Retry-After": "1"})]
    bars = fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", backoff_base=5.0, sleep=waits.append, **keys)

    assert len(bars) == N_BARS
    assert waits == [1.0]  # the server's Retry-After, not the 5 s backoff
    assert len(fake_alpaca.requests) == 1 + 3
    expected_log = "AAPL: bars request failed (HTTP 429, Retry-After 1); retrying in 1 s (attempt 2 of 5)"
    assert expected_log in caplog.text


def test_retry_after_is_capped_and_other_forms_fall_back_to_backoff(fake_alpaca, keys, waits):
    fake_alpaca.faults = [
        Fault(429, headers={"Retry-After": "3600"}),
        Fault(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        Fault(429),
        Fault(503, headers={"Retry-After": "0"}),
    ]
    bars = fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", backoff_base=0.5, sleep=waits.append, **keys)
    assert len(bars) == N_BARS
    assert waits == [RETRY_AFTER_MAX_S, 1.0, 2.0, 0.0]


def test_500_then_success_is_retried(fake_alpaca, keys, waits):
    fake_alpaca.faults = [Fault(500)]
    bars = fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", sleep=waits.append, **keys)
    assert len(bars) == N_BARS
    assert waits == [1.0]
    assert [r["query"].get("page_token") for r in fake_alpaca.requests] == [None, None, "4", "8"]


@pytest.mark.parametrize(
    ("status", "message", "hint"),
    [
        (500, "internal server error", "status.alpaca.markets"),
        (503, "service unavailable", "status.alpaca.markets"),
        (429, "too many requests", "rate limited"),
    ],
)
def test_retryable_status_forever_fails_after_the_bounded_count(
    fake_alpaca, keys, waits, status, message, hint
):
    fake_alpaca.fault_always = Fault(status, {"message": message})
    with pytest.raises(AlpacaDataError) as info:
        fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", max_retries=3, sleep=waits.append, **keys)
    error = info.value
    text = str(error)
    assert text.startswith("AAPL: ")
    assert f"with HTTP {status} on all 4 attempts: {message!r}" in text
    assert hint in text
    assert (error.symbol, error.status_code, error.server_message, error.attempts) == (
        "AAPL", status, message, 4,
    )
    assert len(fake_alpaca.requests) == 4
    assert waits == [1.0, 2.0, 4.0]


def test_backoff_doubles_up_to_its_cap(fake_alpaca, keys, waits):
    fake_alpaca.fault_always = Fault(502)
    with pytest.raises(AlpacaDataError, match="HTTP 502 on all 6 attempts"):
        fetch_alpaca_bars(
            "AAPL", "1Day", "2024-01-01", max_retries=5, backoff_max=5.0, sleep=waits.append, **keys
        )
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize("status", [400, 404, 422])
def test_other_client_errors_are_not_retried(fake_alpaca, keys, waits, status):
    # Only the first answer is an error: a retry would have succeeded.
    fake_alpaca.faults = [Fault(status, {"message": "no good"})]
    with pytest.raises(AlpacaDataError, match=f"refused .* with HTTP {status}: 'no good'") as info:
        fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", sleep=waits.append, **keys)
    assert info.value.attempts == 1
    assert len(fake_alpaca.requests) == 1
    assert waits == []


def test_alpaca_py_does_not_retry_on_its_own(fake_alpaca, keys, waits, monkeypatch):
    # alpaca-py would retry 429 and 504 itself, sleeping 3 s with time.sleep; ours is the only retry.
    import alpaca.common.rest

    def no_sleep(seconds):
        raise AssertionError(f"alpaca-py slept {seconds} s")

    monkeypatch.setattr(alpaca.common.rest.time, "sleep", no_sleep)
    fake_alpaca.fault_always = Fault(504, {"message": "gateway timeout"})
    with pytest.raises(AlpacaDataError, match="HTTP 504 on the only attempt"):
        fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", max_retries=0, sleep=waits.append, **keys)
    assert len(fake_alpaca.requests) == 1
    assert waits == []


# ---- settings, and the public path ---------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [
        {"read_timeout": 0},
        {"read_timeout": None},
        {"connect_timeout": -1.0},
        {"connect_timeout": float("nan")},
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"max_retries": True},
        {"backoff_base": -0.1},
        {"backoff_max": float("inf")},
        {"sleep": 3},
    ],
)
def test_bad_network_settings_are_rejected_before_any_request(fake_alpaca, keys, option):
    (name,) = option
    with pytest.raises(ValueError, match=f"{name}="):
        fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", **option, **keys)
    assert fake_alpaca.requests == []


@pytest.mark.timeout(10)
def test_load_bars_passes_the_network_settings_through(fake_alpaca, keys, waits, tmp_path):
    fake_alpaca.fault_always = HANG
    with pytest.raises(AlpacaDataError, match=r"timed out after 0\.2 s .*all 2 attempts"):
        load_bars(
            ["AAPL"], source="alpaca", start="2024-01-01", cache_dir=tmp_path,
            read_timeout=0.2, max_retries=1, sleep=waits.append, **keys,
        )
    assert waits == [1.0]
    assert list(tmp_path.rglob("*.parquet")) == []

    fake_alpaca.fault_always = None
    fake_alpaca.faults = [Fault(500)]
    loaded = load_bars(
        ["AAPL"], source="alpaca", start="2024-01-01", cache_dir=tmp_path, sleep=waits.append, **keys
    )
    assert len(loaded["AAPL"]) == N_BARS
    assert waits == [1.0, 1.0]


def test_default_timeouts_are_sent_with_every_request(fake_alpaca, keys, monkeypatch):
    import requests

    seen = []
    send = requests.Session.send

    def spy(self, request, **kwargs):
        seen.append(kwargs.get("timeout"))
        return send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", spy)
    fetch_alpaca_bars("AAPL", "1Day", "2024-01-01", **keys)
    assert seen == [(10.0, 30.0)] * 3  # one per page


# ---- keys stay secret ----------------------------------------------------------------------------

LEAK_KEY = "PKLEAKCHECK7Q2Z9X4W1V"
LEAK_SECRET = "sEcReT-LeAk-5f8e2d1c9b7a6e4d3c2b1a0f9e8d7c6b"


def _assert_no_keys(error: BaseException, caplog) -> None:
    texts = {
        "str": str(error),
        "repr": repr(error),
        "traceback": "".join(traceback.format_exception(error)),
        "server_message": getattr(error, "server_message", ""),
        "logs": caplog.text,
    }
    for where, text in texts.items():
        assert LEAK_KEY not in text, where
        assert LEAK_SECRET not in text, where


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("faults", "fault_always", "status"),
    [
        ([], Fault(500, {"message": "boom"}, echo_headers=True), 500),  # retried, then reported
        ([Fault(422, {"message": "bad"}, echo_headers=True)], None, 422),  # reported at once
        ([Fault(429, echo_headers=True), Fault(503, echo_headers=True)], HANG, None),  # then timeouts
    ],
)
def test_keys_never_appear_in_errors_or_logs(fake_alpaca, waits, caplog, faults, fault_always, status):
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's included
    fake_alpaca.faults = list(faults)
    fake_alpaca.fault_always = fault_always
    with pytest.raises(AlpacaDataError) as info:
        fetch_alpaca_bars(
            "AAPL", "1Day", "2024-01-01", api_key=LEAK_KEY, secret_key=LEAK_SECRET,
            url_override=fake_alpaca.url, read_timeout=0.2, max_retries=2, sleep=waits.append,
        )
    assert info.value.status_code == status
    assert fake_alpaca.requests[0]["headers"]["APCA-API-SECRET-KEY"] == LEAK_SECRET  # they were sent
    if status is not None:
        assert "***" in info.value.server_message  # the echo came back, masked
        assert info.value.__cause__ is None and info.value.__context__ is None
    _assert_no_keys(info.value, caplog)


def test_keys_never_appear_when_the_server_is_unreachable(monkeypatch, waits, caplog):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AlpacaDataError) as info:
        fetch_alpaca_bars(
            "AAPL", "1Day", "2024-01-01", api_key=LEAK_KEY, secret_key=LEAK_SECRET,
            url_override=free_port_url(), max_retries=1, sleep=waits.append,
        )
    assert info.value.__cause__ is not None  # a cause without keys is kept for debugging
    _assert_no_keys(info.value, caplog)
