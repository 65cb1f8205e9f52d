"""Crypto bars through Alpaca (alpaca-py's CryptoHistoricalDataClient) and crypto pairs in the bars cache.

The real alpaca-py client talks to the local fake of ``fake_alpaca_data.py`` (``url_override``); nothing
inside alpaca-py is mocked. Backoff waits are recorded with ``sleep=waits.append`` instead of slept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fake_alpaca_data import (
    API_KEY,
    CRYPTO_BARS_PATH,
    SECRET_KEY,
    FakeAlpacaData,
    Fault,
    crypto_wire_bars,
    serve,
)

from features.alpaca_source import (
    AlpacaDataError,
    download_to_cache,
    fetch_alpaca_bars,
    fetch_alpaca_crypto_bars,
)
from features.loading import load_bars
from features.parquet_cache import (
    cache_path,
    cached_symbols,
    read_cached_bars,
    symbol_dir_name,
    symbol_from_dir_name,
    write_cached_bars,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
    pytest.mark.timeout(60),
]

START = "2024-01-05"


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    with serve(FakeAlpacaData()) as served:
        yield served


@pytest.fixture
def waits() -> list[float]:
    return []


def crypto_requests(fake: FakeAlpacaData) -> list[dict]:
    return [r for r in fake.requests if r["path"] == CRYPTO_BARS_PATH]


def expected_index(wire: list[dict]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([pd.Timestamp(b["t"]) for b in wire], name="timestamp").as_unit("ns")


def test_crypto_bars_are_fetched_with_no_keys_and_send_none(fake):
    bars = fetch_alpaca_bars("BTC/USD", "1Hour", START, url_override=fake.url)

    first = fake.requests[0]
    assert first["path"] == CRYPTO_BARS_PATH
    assert "APCA-API-KEY-ID" not in first["headers"] and "APCA-API-SECRET-KEY" not in first["headers"]
    assert first["query"]["symbols"] == "BTC/USD"
    assert first["query"]["timeframe"] == "1Hour"
    assert "feed" not in first["query"] and "adjustment" not in first["query"]  # stock-only options
    assert len(bars) == 10


def test_crypto_keys_are_sent_when_both_are_set(fake, monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", API_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    fetch_alpaca_bars("ETH/USD", "1Hour", START, url_override=fake.url)
    assert fake.requests[0]["headers"]["APCA-API-KEY-ID"] == API_KEY
    assert fake.requests[0]["headers"]["APCA-API-SECRET-KEY"] == SECRET_KEY


def test_only_one_key_set_is_refused_before_any_request(fake, monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", API_KEY)
    with pytest.raises(ValueError, match="APCA_API_SECRET_KEY is missing"):
        fetch_alpaca_bars("BTC/USD", "1Hour", START, url_override=fake.url)
    assert fake.requests == []


def test_crypto_pagination_joins_every_page_in_order(fake):
    bars = fetch_alpaca_bars("BTC/USD", "1Hour", START, "2024-01-08", url_override=fake.url)

    assert [r["query"].get("page_token") for r in fake.requests] == [None, "4", "8"]
    wire = crypto_wire_bars(10)
    assert (bars.index == expected_index(wire)).all()
    assert list(bars.columns) == ["open", "high", "low", "close", "volume", "vwap"]
    assert all(dtype == np.float64 for dtype in bars.dtypes)
    assert str(bars.index.tz) == "UTC"
    np.testing.assert_array_equal(bars["close"].to_numpy(), [b["c"] for b in wire])
    np.testing.assert_array_equal(bars["volume"].to_numpy(), [b["v"] for b in wire])  # fractional
    np.testing.assert_array_equal(bars["vwap"].to_numpy(), [b["vw"] for b in wire])


def test_weekend_bars_are_kept_through_fetch_and_cache(fake, tmp_path):
    fake.crypto_bars["BTC/USD"] = crypto_wire_bars(72)  # Friday 20:00 to Monday 19:00, every hour
    bars = fetch_alpaca_bars("BTC/USD", "1Hour", START, url_override=fake.url)
    weekend = bars.index.day_of_week >= 5
    assert weekend.sum() == 48  # all of Saturday and Sunday
    assert len(bars) == 72

    write_cached_bars(bars, "BTC/USD", "1Hour", root=tmp_path)
    cached = read_cached_bars("BTC/USD", "1Hour", root=tmp_path)
    pd.testing.assert_frame_equal(cached, bars)
    assert (cached.index.day_of_week >= 5).sum() == 48


def test_two_pairs_are_fetched_in_one_request_across_pages(fake):
    frames = fetch_alpaca_crypto_bars(["BTC/USD", "ETH/USD"], "1Hour", START, url_override=fake.url)

    # 10 + 3 bars over one paged request: pages of 4; BTC/USD's last bars share a page with ETH/USD's.
    assert [r["query"]["symbols"] for r in fake.requests] == ["BTC/USD,ETH/USD"] * 4
    assert [r["query"].get("page_token") for r in fake.requests] == [None, "4", "8", "12"]
    assert list(frames) == ["BTC/USD", "ETH/USD"]
    for pair, n, base in (("BTC/USD", 10, 40_000.0), ("ETH/USD", 3, 2_000.0)):
        wire = crypto_wire_bars(n, base=base)
        assert (frames[pair].index == expected_index(wire)).all()
        np.testing.assert_array_equal(frames[pair]["close"].to_numpy(), [b["c"] for b in wire])


def test_download_asks_for_crypto_pairs_in_batches(fake, tmp_path):
    download_to_cache(["BTC/USD", "ETH/USD"], "1Hour", START, root=tmp_path, url_override=fake.url)
    assert {r["query"]["symbols"] for r in fake.requests} == {"BTC/USD,ETH/USD"}

    fake.requests.clear()
    download_to_cache(
        ["BTC/USD", "ETH/USD"], "1Hour", START, root=tmp_path, crypto_batch_size=1, url_override=fake.url
    )
    assert [r["query"]["symbols"] for r in fake.requests if "page_token" not in r["query"]] == [
        "BTC/USD", "ETH/USD",
    ]
    assert cached_symbols("1Hour", tmp_path) == ["BTC/USD", "ETH/USD"]


def test_429_then_success_backs_off_and_completes(fake, waits, caplog):
    fake.faults = [Fault(429, {"message": "too many requests"}, {"Retry-After": "1"}), Fault(503)]
    bars = fetch_alpaca_bars("BTC/USD", "1Hour", START, backoff_base=0.5, sleep=waits.append,
                             url_override=fake.url)
    assert len(bars) == 10
    assert waits == [1.0, 1.0]  # Retry-After, then the backoff of the second retry (0.5 * 2)
    assert len(fake.requests) == 2 + 3
    assert "BTC/USD: crypto bars request failed (HTTP 429, Retry-After 1)" in caplog.text


def test_crypto_pair_is_cached_under_a_name_with_no_slash_and_read_back_as_alpaca_spells_it(tmp_path):
    path = cache_path("BTC/USD", "1Hour", tmp_path)
    assert path == tmp_path / "BTC~USD" / "1Hour" / "data.parquet"
    assert "/" not in str(path.relative_to(tmp_path).parts[0])
    assert symbol_dir_name("BTC/USD") == "BTC~USD" and symbol_from_dir_name("BTC~USD") == "BTC/USD"

    bars = pd.DataFrame(
        {"open": [1.0, 2.0], "high": [2.5, 3.0], "low": [0.5, 1.5], "close": [2.0, 2.5], "volume": [0.5, 1.5]},
        index=pd.DatetimeIndex(["2024-01-06 00:00", "2024-01-06 01:00"], tz="UTC", name="timestamp"),
    )
    assert write_cached_bars(bars, "BTC/USD", "1Hour", root=tmp_path) == path
    write_cached_bars(bars, "AAPL", "1Hour", root=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()].count("BTC~USD") == 1
    assert cached_symbols("1Hour", tmp_path) == ["AAPL", "BTC/USD"]
    assert cached_symbols("1Day", tmp_path) == []
    assert len(read_cached_bars("BTC/USD", "1Hour", root=tmp_path)) == 2
    with pytest.raises(FileNotFoundError, match=r"^BTC/USD: no cached 1Day bars at .*BTC~USD"):
        read_cached_bars("BTC/USD", "1Day", root=tmp_path)


@pytest.mark.parametrize("symbol", ["BRK~B", "A~B/USD", "BTC/USD/EUR", "BTC/", "/USD", "../USD", "BTC/ USD"])
def test_names_the_cache_cannot_map_back_are_refused(tmp_path, symbol):
    with pytest.raises(ValueError, match="symbol="):
        cache_path(symbol, "1Hour", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_listing_names_a_cache_directory_no_symbol_maps_to(tmp_path):
    (tmp_path / "A~B~C" / "1Hour").mkdir(parents=True)
    (tmp_path / "A~B~C" / "1Hour" / "data.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match=r"'A~B~C' is not a symbol's.*A~B~C\)$"):
        cached_symbols("1Hour", tmp_path)


def test_load_bars_downloads_a_crypto_pair_to_the_cache_then_reads_it_offline(fake, tmp_path):
    loaded = load_bars(["BTC/USD"], "1Hour", START, source="alpaca", cache_dir=tmp_path, url_override=fake.url)

    assert list(loaded) == ["BTC/USD"]
    assert len(loaded["BTC/USD"]) == 10
    assert (tmp_path / "BTC~USD" / "1Hour" / "data.parquet").is_file()
    fake.crypto_bars.clear()
    offline = load_bars(["BTC/USD"], "1Hour", START, source="parquet", cache_dir=tmp_path)
    pd.testing.assert_frame_equal(offline["BTC/USD"], loaded["BTC/USD"])


def test_load_bars_mixes_stocks_and_pairs_with_the_pairs_in_one_request(fake, tmp_path):
    loaded = load_bars(
        ["AAPL", "BTC/USD", "ETH/USD"], "1Day", START, source="alpaca", cache_dir=tmp_path,
        api_key=API_KEY, secret_key=SECRET_KEY, url_override=fake.url,
    )
    assert [len(loaded[s]) for s in ("AAPL", "BTC/USD", "ETH/USD")] == [7, 10, 3]  # AAPL from 01-05 on
    assert {r["query"]["symbols"] for r in crypto_requests(fake)} == {"BTC/USD,ETH/USD"}
    assert "adjustment" in fake.requests[0]["query"]  # the stock request is unchanged
    assert cached_symbols("1Day", tmp_path) == ["AAPL", "BTC/USD", "ETH/USD"]


def test_a_stock_among_pairs_still_needs_keys_before_any_request(fake, tmp_path):
    with pytest.raises(ValueError, match="APCA_API_KEY_ID"):
        load_bars(["BTC/USD", "AAPL"], "1Day", START, source="alpaca", cache_dir=tmp_path, url_override=fake.url)
    assert fake.requests == []
    assert list(tmp_path.iterdir()) == []


def test_unknown_pair_is_a_one_line_error_and_caches_nothing(fake, tmp_path, waits):
    with pytest.raises(AlpacaDataError) as info:
        load_bars(["FOO/USD"], "1Hour", START, source="alpaca", cache_dir=tmp_path, url_override=fake.url,
                  sleep=waits.append)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("FOO/USD: Alpaca refused the 1Hour crypto bars request")
    assert "HTTP 400: 'invalid symbol: FOO/USD'" in text
    assert "BASE/QUOTE" in text
    assert (info.value.status_code, info.value.attempts) == (400, 1)
    assert len(fake.requests) == 1 and waits == []
    assert list(tmp_path.rglob("*")) == []


def test_pair_with_no_bars_in_the_answer_is_named(fake, tmp_path):
    with pytest.raises(ValueError, match=r"^NODATA/USD: Alpaca returned no 1Hour crypto bars from 2024-01-05"):
        download_to_cache(
            ["BTC/USD", "NODATA/USD", "ETH/USD"], "1Hour", START, root=tmp_path, url_override=fake.url
        )
    assert cached_symbols("1Hour", tmp_path) == ["BTC/USD"]  # written before the failing pair
    assert [r["query"].get("page_token") for r in fake.requests] == [None, "4", "8", "12"]  # asked once


def test_wrong_keys_on_crypto_say_that_none_are_needed(fake):
    with pytest.raises(AlpacaDataError, match=r"HTTP 401: 'unauthorized\.'; crypto data needs no keys"):
        fetch_alpaca_bars("BTC/USD", "1Hour", START, api_key="nope", secret_key="nope", url_override=fake.url)


def test_timeframe_alpaca_does_not_offer_is_refused_for_crypto_before_any_request(fake):
    # alpaca-py's TimeFrame rules are the same for stocks and crypto (no stock-only timeframe exists).
    with pytest.raises(ValueError, match=r"timeframe='2Day' is not offered by Alpaca"):
        fetch_alpaca_bars("BTC/USD", "2Day", START, url_override=fake.url)
    assert fake.requests == []
