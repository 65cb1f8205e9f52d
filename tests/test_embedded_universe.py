"""source='skfolio': skfolio's 20 S&P 500 stocks and the index as close-only daily bars, with clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import features.embedded as embedded
from features.bars import BAR_COLUMNS, BarsValidationError, validate_bars
from features.dataset import DatasetConfig, build_dataset
from features.embedded import (
    SKFOLIO_INDEX,
    SKFOLIO_SYMBOLS,
    embedded_symbols,
    is_close_only,
    load_skfolio_bars,
    skfolio_symbols,
)
from features.loading import SOURCES, load_bars

UNIVERSE = (
    "AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO",
    "LLY", "MRK", "MSFT", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM",
)


@pytest.fixture(scope="module")
def universe_bars() -> dict[str, pd.DataFrame]:
    return load_bars(list(SKFOLIO_SYMBOLS) + [SKFOLIO_INDEX], source="skfolio")


def test_skfolio_symbols_are_the_20_stocks_in_skfolio_order_plus_the_index() -> None:
    assert SKFOLIO_SYMBOLS == UNIVERSE
    assert SKFOLIO_INDEX == "SP500"
    assert skfolio_symbols() == {**dict.fromkeys(UNIVERSE, "1Day"), "SP500": "1Day"}
    assert "skfolio" in SOURCES
    assert "AMD" not in embedded_symbols()  # source='embedded' is unchanged


def test_every_universe_symbol_loads_as_validated_close_only_daily_bars(
    universe_bars: dict[str, pd.DataFrame],
) -> None:
    assert list(universe_bars) == list(UNIVERSE) + ["SP500"]
    for symbol, bars in universe_bars.items():
        assert 0 < len(bars) <= 8313, symbol
        assert list(bars.columns) == list(BAR_COLUMNS), symbol
        assert str(bars.index.tz) == "UTC" and bars.index.name == "timestamp", symbol
        assert (bars.index == bars.index.normalize()).all(), symbol  # UTC midnight, like the other daily data
        close = bars["close"].to_numpy()
        for column in ("open", "high", "low"):
            np.testing.assert_array_equal(bars[column].to_numpy(), close, err_msg=f"{symbol} {column}")
        assert (bars["volume"] == 0.0).all(), symbol
        assert is_close_only(bars), symbol
        pd.testing.assert_frame_equal(validate_bars(bars, symbol), bars)


def test_skfolio_aapl_is_not_the_embedded_aapl(universe_bars: dict[str, pd.DataFrame]) -> None:
    assert universe_bars["AAPL"].index[0] == pd.Timestamp("1990-01-02", tz="UTC")
    assert universe_bars["AAPL"].index[-1] == pd.Timestamp("2022-12-28", tz="UTC")
    assert load_bars("AAPL")["AAPL"].index[0] == pd.Timestamp("2000-03-01", tz="UTC")


def test_skfolio_sp500_is_the_index_level(universe_bars: dict[str, pd.DataFrame]) -> None:
    bars = universe_bars["SP500"]
    assert len(bars) == 8313
    assert 1000 < bars.loc[pd.Timestamp("2005-01-03", tz="UTC"), "close"] < 1300


def test_is_close_only_is_false_on_bars_with_a_range() -> None:
    assert not is_close_only(load_bars("AAPL", source="embedded")["AAPL"])
    stamps = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    flat = pd.DataFrame({"open": [1.0, 2.0, 3.0], "high": [1.0, 2.0, 3.0], "low": [1.0, 2.0, 3.0],
                         "close": [1.0, 2.0, 3.0], "volume": [5.0, 5.0, 5.0]}, index=stamps)
    assert is_close_only(flat)  # any user's close-only data, whatever its volume
    flat.loc[stamps[2], "high"] = 3.5
    assert not is_close_only(flat)
    assert not is_close_only(flat.iloc[:0])


def test_is_close_only_names_a_missing_column() -> None:
    with pytest.raises(ValueError, match=r"\['high'\]"):
        is_close_only(pd.DataFrame({"open": [1.0], "low": [1.0], "close": [1.0]}))


def test_skfolio_dataset_builds_with_finite_scaled_features() -> None:
    config = DatasetConfig(source="skfolio", symbols=("AAPL", "MSFT", "KO"), window=8,
                           start="2015-01-01", end="2018-12-31")
    data = build_dataset(config)
    assert data.symbols == ["AAPL", "MSFT", "KO"]
    assert data.timeframe == "1Day"
    assert len(data.features) > 3 * 900
    assert not np.isnan(data.features).any()
    assert np.isfinite(data.features).all()
    np.testing.assert_array_equal(data.open, data.close)


def test_start_and_end_are_respected() -> None:
    bars = load_bars(["KO", "SP500"], start="2010-03-01", end="2010-03-31", source="skfolio")
    for symbol, frame in bars.items():
        assert frame.index[0] == pd.Timestamp("2010-03-01", tz="UTC"), symbol
        assert frame.index[-1] == pd.Timestamp("2010-03-31", tz="UTC"), symbol
        assert len(frame) == 23, symbol


def test_unknown_symbol_is_one_line_naming_it_and_the_available_ones() -> None:
    with pytest.raises(ValueError) as info:
        load_bars("NOPE", source="skfolio")
    message = str(info.value)
    assert "\n" not in message and "'NOPE'" in message and "'XOM'" in message and "'SP500'" in message


def test_embedded_only_symbol_says_where_it_is() -> None:
    with pytest.raises(ValueError, match=r"'IBM' \(it is in source='embedded'\)") as info:
        load_skfolio_bars("IBM")
    assert "\n" not in str(info.value)


def test_wrong_timeframe_is_one_line_naming_symbol_and_timeframe() -> None:
    for call in (lambda: load_skfolio_bars("KO", "1Hour"), lambda: load_bars("KO", "1Hour", source="skfolio")):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "'KO'" in message and "'1Hour'" in message


def test_rows_without_a_price_are_dropped_for_that_symbol_only(monkeypatch: pytest.MonkeyPatch) -> None:
    stamps = pd.date_range("2000-01-03", periods=4, freq="D", tz="UTC")
    closes = pd.DataFrame({"AMD": [np.nan, np.nan, 10.0, 11.0], "KO": [1.0, 2.0, 3.0, 4.0]}, index=stamps)
    monkeypatch.setattr(embedded, "_skfolio_closes", lambda: closes)
    amd = load_skfolio_bars("AMD")
    assert list(amd.index) == list(stamps[2:])
    assert list(amd["close"]) == [10.0, 11.0]
    assert len(load_skfolio_bars("KO")) == 4


def test_non_positive_price_is_an_error_naming_symbol_and_date(monkeypatch: pytest.MonkeyPatch) -> None:
    stamps = pd.date_range("2000-01-03", periods=3, freq="D", tz="UTC")
    monkeypatch.setattr(embedded, "_skfolio_closes", lambda: pd.DataFrame({"GE": [1.0, 0.0, 2.0]}, index=stamps))
    with pytest.raises(BarsValidationError, match=r"GE: non-positive price.*2000-01-04") as info:
        load_skfolio_bars("GE")
    assert "\n" not in str(info.value)
