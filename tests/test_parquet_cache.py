"""The Parquet bars cache: layout, round trip, merging, atomic writes and its error messages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.bars import BarsValidationError, validate_bars
from features.parquet_cache import cache_path, read_cached_bars, write_cached_bars


def make_bars(start: str, periods: int, base: float = 100.0, vwap: bool = True) -> pd.DataFrame:
    index = pd.date_range(start, periods=periods, freq="D", tz="UTC", name="timestamp")
    close = base + np.arange(periods, dtype=float)
    frame = pd.DataFrame(
        {
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.full(periods, 1_000.0),
        },
        index=index,
    )
    if vwap:
        frame["vwap"] = close - 0.1
    return validate_bars(frame, "TEST")  # the canonical form (ns UTC index) a read returns


def leftover_temp_files(path) -> list:
    return [p.name for p in path.parent.iterdir() if p.name != path.name]


def test_cache_path_layout(tmp_path):
    assert cache_path("AAPL", "1Day", tmp_path) == tmp_path / "AAPL" / "1Day" / "data.parquet"
    assert cache_path("BRK.B", "15Min", str(tmp_path)) == tmp_path / "BRK.B" / "15Min" / "data.parquet"


@pytest.mark.parametrize("symbol", ["../etc", "A/B/C", "A\\B", "..", ".", "", " AAPL"])
def test_bad_symbol_is_rejected(tmp_path, symbol):
    with pytest.raises(ValueError, match="symbol="):
        cache_path(symbol, "1Day", tmp_path)
    with pytest.raises(ValueError, match="symbol="):
        write_cached_bars(make_bars("2024-01-01", 3), symbol, "1Day", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_timeframe_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="timeframe"):
        cache_path("AAPL", "daily", tmp_path)


def test_round_trip_keeps_values_dtypes_and_timezone(tmp_path):
    bars = make_bars("2024-01-01", 10)
    path = write_cached_bars(bars, "AAPL", "1Day", root=tmp_path)
    assert path == tmp_path / "AAPL" / "1Day" / "data.parquet"
    assert path.is_file()

    loaded = read_cached_bars("AAPL", "1Day", root=tmp_path)
    pd.testing.assert_frame_equal(loaded, bars, check_freq=False)
    assert list(loaded.columns) == ["open", "high", "low", "close", "volume", "vwap"]
    assert all(dtype == np.float64 for dtype in loaded.dtypes)
    assert isinstance(loaded.index, pd.DatetimeIndex)
    assert str(loaded.index.tz) == "UTC"
    assert loaded.index.name == "timestamp"
    assert leftover_temp_files(path) == []


def test_write_validates_first(tmp_path):
    bars = make_bars("2024-01-01", 5)
    bars.iloc[2, bars.columns.get_loc("high")] = 1.0  # high below open/close
    with pytest.raises(BarsValidationError, match="AAPL"):
        write_cached_bars(bars, "AAPL", "1Day", root=tmp_path)
    assert not cache_path("AAPL", "1Day", tmp_path).exists()


def test_merge_new_rows_win_and_result_is_sorted(tmp_path):
    old = make_bars("2024-01-01", 6, base=100.0)  # Jan 1..6
    new = make_bars("2024-01-04", 6, base=200.0)  # Jan 4..9, overlapping Jan 4..6
    write_cached_bars(new, "MSFT", "1Day", root=tmp_path)
    write_cached_bars(old, "MSFT", "1Day", root=tmp_path)  # older rows merged in after
    write_cached_bars(new, "MSFT", "1Day", root=tmp_path)  # new bars win on Jan 4..6

    merged = read_cached_bars("MSFT", "1Day", root=tmp_path)
    assert merged.index.is_monotonic_increasing
    assert len(merged) == 9
    assert merged.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert merged.index[-1] == pd.Timestamp("2024-01-09", tz="UTC")
    pd.testing.assert_frame_equal(merged.loc["2024-01-04":], new, check_freq=False)
    pd.testing.assert_frame_equal(merged.loc[:"2024-01-03"], old.loc[:"2024-01-03"], check_freq=False)


def test_merge_false_replaces(tmp_path):
    write_cached_bars(make_bars("2024-01-01", 6), "IBM", "1Day", root=tmp_path)
    new = make_bars("2024-02-01", 3, base=50.0)
    write_cached_bars(new, "IBM", "1Day", root=tmp_path, merge=False)
    pd.testing.assert_frame_equal(read_cached_bars("IBM", "1Day", root=tmp_path), new, check_freq=False)


def test_merge_with_and_without_vwap(tmp_path):
    write_cached_bars(make_bars("2024-01-01", 3, vwap=True), "IBM", "1Day", root=tmp_path)
    write_cached_bars(make_bars("2024-01-04", 2, vwap=False), "IBM", "1Day", root=tmp_path)
    merged = read_cached_bars("IBM", "1Day", root=tmp_path)
    assert len(merged) == 5
    assert merged["vwap"].iloc[:3].notna().all() and merged["vwap"].iloc[3:].isna().all()


def test_failed_write_leaves_old_file_and_no_temp_files(tmp_path, monkeypatch):
    old = make_bars("2024-01-01", 5)
    path = write_cached_bars(old, "AAPL", "1Day", root=tmp_path)
    before = path.read_bytes()
    temp_files_seen = []

    def broken_to_parquet(self, target, *args, **kwargs):
        # Half a file lands in the temp path, then the "disk" fails.
        with open(target, "wb") as handle:
            handle.write(b"PAR1 half written")
        temp_files_seen.append(target)
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken_to_parquet)
    with pytest.raises(OSError, match="disk full"):
        write_cached_bars(make_bars("2024-01-06", 5), "AAPL", "1Day", root=tmp_path)

    assert len(temp_files_seen) == 1
    assert temp_files_seen[0].parent == path.parent  # same directory, so os.replace is atomic
    assert temp_files_seen[0] != path
    assert path.read_bytes() == before
    assert leftover_temp_files(path) == []
    monkeypatch.undo()
    pd.testing.assert_frame_equal(read_cached_bars("AAPL", "1Day", root=tmp_path), old, check_freq=False)


def test_failed_replace_leaves_old_file_and_no_temp_files(tmp_path, monkeypatch):
    path = write_cached_bars(make_bars("2024-01-01", 5), "AAPL", "1Day", root=tmp_path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise PermissionError("file is locked")

    monkeypatch.setattr("features.parquet_cache.os.replace", broken_replace)
    with pytest.raises(PermissionError):
        write_cached_bars(make_bars("2024-01-06", 5), "AAPL", "1Day", root=tmp_path)
    assert path.read_bytes() == before
    assert leftover_temp_files(path) == []


def test_failed_first_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_to_parquet(self, target, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken_to_parquet)
    with pytest.raises(OSError):
        write_cached_bars(make_bars("2024-01-01", 5), "AAPL", "1Day", root=tmp_path)
    folder = tmp_path / "AAPL" / "1Day"
    assert list(folder.iterdir()) == []


def test_missing_file_error_names_path_and_alpaca(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        read_cached_bars("TSLA", "1Hour", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "TSLA" / "1Hour" / "data.parquet") in message
    assert "source='alpaca'" in message


def test_corrupt_file_error_names_file(tmp_path):
    path = cache_path("AAPL", "1Day", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not parquet")
    with pytest.raises(ValueError, match="unreadable") as info:
        read_cached_bars("AAPL", "1Day", root=tmp_path)
    assert str(path) in str(info.value)
    # merging into a corrupt cache refuses rather than silently dropping it
    with pytest.raises(ValueError, match="merge=False"):
        write_cached_bars(make_bars("2024-01-01", 3), "AAPL", "1Day", root=tmp_path)
    assert path.read_bytes() == b"this is not parquet"
    write_cached_bars(make_bars("2024-01-01", 3), "AAPL", "1Day", root=tmp_path, merge=False)
    assert len(read_cached_bars("AAPL", "1Day", root=tmp_path)) == 3


def test_invalid_cached_bars_error_names_file(tmp_path):
    bad = make_bars("2024-01-01", 3)
    bad.iloc[1, bad.columns.get_loc("close")] = -5.0
    path = cache_path("AAPL", "1Day", tmp_path)
    path.parent.mkdir(parents=True)
    bad.to_parquet(path)
    with pytest.raises(BarsValidationError, match="non-positive") as info:
        read_cached_bars("AAPL", "1Day", root=tmp_path)
    assert str(path) in str(info.value)
