"""The embedded default bars (bokeh-sampledata, arch): real, validated, split-adjusted, with clear errors."""

from __future__ import annotations

import importlib.resources
import importlib.util

import numpy as np
import pandas as pd
import pytest

from features import DEFAULT_SYMBOLS, embedded_symbols, find_gaps, large_overnight_moves, load_bars, validate_bars
from features.bars import BAR_COLUMNS

DOCUMENTED = {  # symbol -> (bars, first date, last date), from shared/DATA.md
    "AAPL": (3270, "2000-03-01", "2013-03-01"),
    "IBM": (3270, "2000-03-01", "2013-03-01"),
    "MSFT": (3270, "2000-03-01", "2013-03-01"),
    "GOOG": (2148, "2004-08-19", "2013-03-01"),
}


@pytest.fixture(scope="module")
def default_bars() -> dict[str, pd.DataFrame]:
    return load_bars(["AAPL", "IBM", "MSFT", "GOOG"])


def test_default_universe_is_documented() -> None:
    assert DEFAULT_SYMBOLS == ("AAPL", "IBM", "MSFT", "GOOG")
    table = embedded_symbols()
    assert {s: table[s] for s in DEFAULT_SYMBOLS} == dict.fromkeys(DEFAULT_SYMBOLS, "1Day")
    assert table["SP500"] == "1Day" and table["EURUSD"] == "1Hour"


def test_default_symbols_have_documented_lengths_and_dates(default_bars: dict[str, pd.DataFrame]) -> None:
    assert list(default_bars) == ["AAPL", "IBM", "MSFT", "GOOG"]
    for symbol, (n, first, last) in DOCUMENTED.items():
        bars = default_bars[symbol]
        assert len(bars) == n, symbol
        assert bars.index[0] == pd.Timestamp(first, tz="UTC"), symbol
        assert bars.index[-1] == pd.Timestamp(last, tz="UTC"), symbol


def test_default_frames_are_validated(default_bars: dict[str, pd.DataFrame]) -> None:
    for symbol, bars in default_bars.items():
        assert list(bars.columns) == list(BAR_COLUMNS), symbol
        assert all(dtype == np.float64 for dtype in bars.dtypes), symbol
        assert str(bars.index.tz) == "UTC" and bars.index.name == "timestamp", symbol
        assert bars.index.is_monotonic_increasing and bars.index.is_unique, symbol
        assert not bars.isna().any().any(), symbol
        pd.testing.assert_frame_equal(validate_bars(bars, symbol), bars)


def test_daily_gaps_are_reported_not_filled(default_bars: dict[str, pd.DataFrame]) -> None:
    bars = default_bars["IBM"]
    assert (bars.index.day_of_week < 5).all()  # no weekend bar was invented
    gaps = find_gaps(bars, "1Day")
    assert len(gaps) > 52 * 12  # every weekend, plus holidays
    assert (gaps["missing_bars"] >= 1).all()
    # 2001-09-11 .. 2001-09-14: markets closed after the attacks; the gap is kept, not filled.
    closed = gaps[gaps["before"] == pd.Timestamp("2001-09-10", tz="UTC")]
    assert list(closed["after"]) == [pd.Timestamp("2001-09-17", tz="UTC")]
    assert int(closed["missing_bars"].iloc[0]) == 6


def test_sp500_index_loads() -> None:
    bars = load_bars("SP500")["SP500"]
    assert len(bars) == 5031
    assert bars.index[0] == pd.Timestamp("1999-01-04", tz="UTC")
    assert bars.index[-1] == pd.Timestamp("2018-12-31", tz="UTC")
    pd.testing.assert_frame_equal(validate_bars(bars, "SP500"), bars)
    assert 1000 < bars.loc[pd.Timestamp("2005-01-03", tz="UTC"), "close"] < 1300  # S&P 500 levels, not a stock
    assert len(large_overnight_moves(bars)) == 0


@pytest.mark.skipif(importlib.util.find_spec("gym_anytrading") is None, reason="gym-anytrading not installed")
def test_eurusd_hourly_loads_with_weekend_gaps() -> None:
    bars = load_bars("EURUSD", "1Hour")["EURUSD"]
    assert (bars["volume"] > 0).all()  # stale zero-volume weekend quotes are dropped, not kept
    assert (np.diff(bars.index.asi8) >= 3_600_000_000_000).all()
    gaps = find_gaps(bars, "1Hour")
    assert (gaps["missing_bars"] >= 24).sum() >= 40  # a weekend gap about every week of 2017


def test_aapl_is_split_adjusted(default_bars: dict[str, pd.DataFrame]) -> None:
    bars = default_bars["AAPL"]
    overnight = bars["open"] / bars["close"].shift(1) - 1.0
    for split_day in ("2000-06-21", "2005-02-28"):
        day = pd.Timestamp(split_day, tz="UTC")
        near = (overnight.index >= day - pd.Timedelta(days=10)) & (overnight.index <= day + pd.Timedelta(days=10))
        around = overnight[near]
        assert len(around) >= 10
        assert (around.abs() < 0.40).all(), around[around.abs() >= 0.40]
        close_to_close = bars["close"].pct_change()[around.index]
        assert (close_to_close.abs() < 0.40).all()


def test_only_the_real_aapl_crash_is_flagged(default_bars: dict[str, pd.DataFrame]) -> None:
    moves = large_overnight_moves(default_bars["AAPL"])
    assert list(moves.index) == [pd.Timestamp("2000-09-29", tz="UTC")]
    assert -0.55 < moves["overnight_return"].iloc[0] < -0.40  # the profit warning of 28 Sep 2000
    for symbol in ("IBM", "MSFT", "GOOG"):
        assert len(large_overnight_moves(default_bars[symbol])) == 0, symbol


@pytest.fixture(scope="module")
def raw_aapl() -> pd.DataFrame:
    """The unadjusted rows of the wheel's file, read independently of features.embedded."""
    resource = importlib.resources.files("bokeh_sampledata") / "_data" / "stocks.csv.gz"
    with importlib.resources.as_file(resource) as path:
        frame = pd.read_csv(path)
    frame = frame[frame["Ticker"] == "AAPL"]
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame["Date"], utc=True), name="timestamp")
    return frame


def test_raw_file_shows_the_splits_the_adjustment_removes(raw_aapl: pd.DataFrame) -> None:
    raw_overnight = raw_aapl["Open"] / raw_aapl["Close"].shift(1) - 1.0
    flagged = raw_overnight[raw_overnight.abs() > 0.40].index.strftime("%Y-%m-%d").tolist()
    assert flagged == ["2000-06-21", "2000-09-29", "2005-02-28"]


def test_adjustment_by_adj_close_over_close(default_bars: dict[str, pd.DataFrame], raw_aapl: pd.DataFrame) -> None:
    bars = default_bars["AAPL"]
    assert bars.index.equals(raw_aapl.index.as_unit("ns"))
    np.testing.assert_allclose(bars["close"], raw_aapl["Adj Close"], rtol=1e-12)
    ratio = (raw_aapl["Adj Close"] / raw_aapl["Close"]).to_numpy()
    # Shapes inside each bar are kept: open/close is unchanged by a per-bar factor ...
    np.testing.assert_allclose(bars["open"] / bars["close"], raw_aapl["Open"] / raw_aapl["Close"], rtol=1e-12)
    # ... and dollar volume too: volume is divided by the price factor.
    np.testing.assert_allclose(bars["volume"], raw_aapl["Volume"] / ratio, rtol=1e-12)
    np.testing.assert_allclose(bars["close"] * bars["volume"], raw_aapl["Close"] * raw_aapl["Volume"], rtol=1e-9)
    assert (bars["high"] >= np.maximum(bars["open"], bars["close"])).all()
    assert (bars["low"] <= np.minimum(bars["open"], bars["close"])).all()


def test_date_range_is_inclusive() -> None:
    bars = load_bars(["MSFT", "GOOG"], start="2010-01-04", end="2010-01-08")
    for symbol in ("MSFT", "GOOG"):
        assert len(bars[symbol]) == 5
        assert bars[symbol].index[0] == pd.Timestamp("2010-01-04", tz="UTC")
        assert bars[symbol].index[-1] == pd.Timestamp("2010-01-08", tz="UTC")


def test_unknown_symbol_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown embedded symbol 'TSLA'.*'AAPL'"):
        load_bars(["AAPL", "TSLA"])


def test_wrong_timeframe_is_named() -> None:
    with pytest.raises(ValueError, match=r"'AAPL' has timeframe '1Day', not timeframe='1Hour'"):
        load_bars("AAPL", timeframe="1Hour")
    with pytest.raises(ValueError, match=r"timeframe='daily' is not understood"):
        load_bars("AAPL", timeframe="daily")


def test_empty_date_range_is_named() -> None:
    with pytest.raises(ValueError, match=r"GOOG: no bars between start=2001-01-01.*end=2002-01-01.*'embedded'"):
        load_bars("GOOG", start="2001-01-01", end="2002-01-01")
    with pytest.raises(ValueError, match=r"AAPL: no bars between start=2020-01-01"):
        load_bars("AAPL", start="2020-01-01")


def test_start_after_end_is_named() -> None:
    with pytest.raises(ValueError, match=r"start=2010-06-01 00:00:00\+00:00 is after end=2010-01-01"):
        load_bars("AAPL", start="2010-06-01", end="2010-01-01")


def test_bad_date_is_named() -> None:
    with pytest.raises(ValueError, match=r"start='not a date' is not a date"):
        load_bars("AAPL", start="not a date")


def test_unknown_source_is_named() -> None:
    expected = r"source='yahoo' is not known; expected one of \['embedded', 'skfolio', 'parquet', 'alpaca'\]"
    with pytest.raises(ValueError, match=expected):
        load_bars("AAPL", source="yahoo")


def test_no_symbols_is_an_error() -> None:
    with pytest.raises(ValueError, match="symbols is empty"):
        load_bars([])
