"""validate_bars: each broken contract is rejected naming the symbol and the row/column; gaps reported, never filled."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import pytest

from features.bars import BarsValidationError, Timeframe, find_gaps, large_overnight_moves, validate_bars

SYMBOL = "TEST"


def clean_bars(n: int = 12) -> pd.DataFrame:
    """Weekday bars (weekend gaps included) that pass validation."""
    index = pd.bdate_range("2021-03-01", periods=n, tz="UTC", name="timestamp")
    close = 100.0 + np.arange(n, dtype=np.float64)
    open_ = close - 0.5
    return pd.DataFrame(
        {
            "open": open_,
            "high": close + 1.0,
            "low": open_ - 1.0,
            "close": close,
            "volume": np.full(n, 1000.0),
        },
        index=index,
    )


def _set(column: str, row: int, value: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(bars: pd.DataFrame) -> pd.DataFrame:
        bars.iloc[row, bars.columns.get_loc(column)] = value
        return bars

    return edit


def _swap_rows(bars: pd.DataFrame) -> pd.DataFrame:
    order = list(range(len(bars)))
    order[4], order[5] = order[5], order[4]
    return bars.iloc[order]


def _duplicate_stamp(bars: pd.DataFrame) -> pd.DataFrame:
    index = bars.index.to_list()
    index[6] = index[5]
    bars.index = pd.DatetimeIndex(index, name="timestamp")
    return bars


# name -> (edit, the first bad row, words the message must hold)
ROW_CASES: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], int, tuple[str, ...]]] = {
    "unsorted": (_swap_rows, 5, ("not sorted",)),
    "duplicate": (_duplicate_stamp, 6, ("duplicate timestamp",)),
    "zero_price": (_set("low", 3, 0.0), 3, ("non-positive price",)),
    "negative_price": (_set("open", 7, -1.0), 7, ("non-positive price",)),
    "high_below_open": (_set("high", 2, 99.0), 2, ("high < max(open, close)",)),
    "high_below_close": (_set("high", 8, 107.9), 8, ("high < max(open, close)",)),
    "low_above_open": (_set("low", 4, 103.6), 4, ("low > min(open, close)",)),
    "low_above_close": (
        lambda b: _set("low", 9, 109.2)(_set("open", 9, 109.5)(b)),  # close 109 < open
        9,
        ("low > min(open, close)",),
    ),
    "nan_open": (_set("open", 1, np.nan), 1, ("NaN",)),
    "nan_high": (_set("high", 6, np.nan), 6, ("NaN",)),
    "nan_low": (_set("low", 10, np.nan), 10, ("NaN",)),
    "nan_close": (_set("close", 11, np.nan), 11, ("NaN",)),
    "negative_volume": (_set("volume", 5, -10.0), 5, ("volume",)),
    "nan_volume": (_set("volume", 2, np.nan), 2, ("volume",)),
}


@pytest.mark.parametrize("case", sorted(ROW_CASES))
def test_bad_row_is_rejected_naming_symbol_and_row(case: str) -> None:
    edit, row, words = ROW_CASES[case]
    bars = edit(clean_bars())
    with pytest.raises(BarsValidationError) as info:
        validate_bars(bars, SYMBOL)
    message = str(info.value)
    assert message.startswith(f"{SYMBOL}:"), message
    assert f"row {row}" in message, message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("column", ["open", "high", "low", "close", "volume"])
def test_missing_column_is_named(column: str) -> None:
    bars = clean_bars().drop(columns=[column])
    with pytest.raises(BarsValidationError, match=rf"^{SYMBOL}: missing column\(s\) \['{column}'\]"):
        validate_bars(bars, SYMBOL)


@pytest.mark.parametrize("column", ["close", "volume"])
def test_non_numeric_column_is_named_with_its_dtype(column: str) -> None:
    bars = clean_bars()
    bars[column] = bars[column].astype(str)
    expected = rf"^{SYMBOL}: column '{column}' must be numeric \(float\), got dtype"
    with pytest.raises(BarsValidationError, match=expected):
        validate_bars(bars, SYMBOL)


@pytest.mark.parametrize("extra", ["Close", "CLOSE", "Vwap2"])
def test_columns_equal_ignoring_case_are_named_not_a_traceback(extra: str) -> None:
    bars = clean_bars()
    if extra == "Vwap2":
        bars["vwap2"], bars["VWAP2"] = 1.0, 2.0
        clash = r"\['vwap2', 'VWAP2'\]"
    else:
        bars[extra] = bars["close"] + 1.0
        clash = rf"\['close', '{extra}'\]"
    with pytest.raises(BarsValidationError, match=rf"^{SYMBOL}: columns {clash} are the same column ignoring case") as info:
        validate_bars(bars, SYMBOL)
    assert "\n" not in str(info.value)


def test_boolean_column_is_not_numeric() -> None:
    bars = clean_bars()
    bars["volume"] = True
    with pytest.raises(BarsValidationError, match="column 'volume' must be numeric"):
        validate_bars(bars, SYMBOL)


@pytest.mark.parametrize(
    "index",
    [pd.RangeIndex(12), pd.Index([f"2021-03-{d:02d}" for d in range(1, 13)])],
    ids=["range", "strings"],
)
def test_non_datetime_index_is_rejected(index: pd.Index) -> None:
    bars = clean_bars()
    bars.index = index
    with pytest.raises(BarsValidationError, match=rf"^{SYMBOL}: index must be a DatetimeIndex"):
        validate_bars(bars, SYMBOL)


def test_empty_frame_is_rejected() -> None:
    with pytest.raises(BarsValidationError, match=rf"^{SYMBOL}: no bars \(empty frame\)"):
        validate_bars(clean_bars().iloc[:0], SYMBOL)


def test_not_a_frame_is_rejected() -> None:
    with pytest.raises(BarsValidationError, match=rf"^{SYMBOL}: bars must be a pandas DataFrame, got dict"):
        validate_bars({"close": [1.0]}, SYMBOL)  # type: ignore[arg-type]


def test_validation_error_is_a_value_error() -> None:
    assert issubclass(BarsValidationError, ValueError)


def test_clean_bars_pass_as_a_float64_copy_in_canonical_order() -> None:
    bars = clean_bars()
    bars["volume"] = bars["volume"].astype(np.int64)
    shuffled = bars[["volume", "close", "low", "high", "open"]]
    out = validate_bars(shuffled, SYMBOL)
    assert list(out.columns) == ["open", "high", "low", "close", "volume"]
    assert all(dtype == np.float64 for dtype in out.dtypes)
    assert out.index.name == "timestamp"
    np.testing.assert_array_equal(out.to_numpy(), clean_bars().to_numpy())
    out.iloc[0, 0] = 1.0
    assert shuffled["open"].iloc[0] == 99.5  # a copy, not a view


def test_capitalised_columns_and_vwap_are_kept() -> None:
    bars = clean_bars()
    bars["vwap"] = (bars["high"] + bars["low"]) / 2
    bars["note"] = "x"  # unknown extra columns are dropped, not validated
    bars.columns = [c.capitalize() for c in bars.columns]
    out = validate_bars(bars, SYMBOL)
    assert list(out.columns) == ["open", "high", "low", "close", "volume", "vwap"]


def test_naive_index_becomes_utc() -> None:
    bars = clean_bars()
    bars.index = bars.index.tz_localize(None)
    out = validate_bars(bars, SYMBOL)
    assert str(out.index.tz) == "UTC"
    assert out.index[0] == pd.Timestamp("2021-03-01", tz="UTC")


def test_other_timezone_is_converted_to_the_same_instants() -> None:
    bars = clean_bars()
    bars.index = pd.date_range("2021-03-01 09:30", periods=len(bars), freq="h", tz="America/New_York")
    out = validate_bars(bars, SYMBOL)
    assert str(out.index.tz) == "UTC"
    assert out.index[0] == pd.Timestamp("2021-03-01 14:30", tz="UTC")
    assert (out.index == bars.index).all()  # the same instants


def test_equal_ohlc_and_zero_volume_are_valid() -> None:
    bars = clean_bars()
    bars.loc[:, ["open", "high", "low", "close"]] = 50.0
    bars["volume"] = 0.0
    validate_bars(bars, SYMBOL)


def test_gaps_are_reported_and_never_filled() -> None:
    bars = clean_bars(12)  # Mon 2021-03-01 .. Tue 2021-03-16: two weekends
    bars = bars.drop(bars.index[7])  # and a missing Wednesday 2021-03-10
    out = validate_bars(bars, SYMBOL)
    assert len(out) == 11
    assert out.index.equals(bars.index)
    gaps = find_gaps(out, "1Day")
    assert list(gaps.columns) == ["before", "after", "missing_bars"]
    expected = [
        ("2021-03-05", "2021-03-08", 2),
        ("2021-03-09", "2021-03-11", 1),
        ("2021-03-12", "2021-03-15", 2),
    ]
    got = [(str(b.date()), str(a.date()), int(m)) for b, a, m in gaps.itertuples(index=False)]
    assert got == expected


def test_hourly_gaps_and_no_gaps() -> None:
    index = pd.date_range("2021-03-01 14:00", periods=6, freq="h", tz="UTC")
    bars = clean_bars(6).set_axis(index)
    assert len(find_gaps(bars, "1Hour")) == 0
    bars = bars.drop(bars.index[[2, 3]])
    gaps = find_gaps(bars, Timeframe.parse("1Hour"))
    assert len(gaps) == 1 and int(gaps["missing_bars"].iloc[0]) == 2
    assert len(find_gaps(bars.iloc[:1], "1Hour")) == 0


def test_large_overnight_moves_flags_an_unadjusted_split() -> None:
    bars = clean_bars()
    half = bars.index >= bars.index[6]
    bars.loc[half, ["open", "high", "low", "close"]] /= 2.0  # a 2:1 split left unadjusted
    moves = large_overnight_moves(validate_bars(bars, SYMBOL))
    assert list(moves.index) == [bars.index[6]]
    assert moves["overnight_return"].iloc[0] == pytest.approx(105.5 / 2 / 105.0 - 1.0)
    assert len(large_overnight_moves(clean_bars())) == 0


@pytest.mark.parametrize("text, seconds", [("1Day", 86400), ("1Hour", 3600), ("15Min", 900), ("1Week", 604800)])
def test_timeframe_parse(text: str, seconds: int) -> None:
    tf = Timeframe.parse(text)
    assert tf.seconds == seconds and str(tf) == text
    assert tf.is_intraday == (seconds < 86400)


@pytest.mark.parametrize("text", ["1D", "day", "0Day", "-1Hour", "1 Day", ""])
def test_bad_timeframe_is_named(text: str) -> None:
    with pytest.raises(ValueError, match=f"timeframe={text!r} is not understood"):
        Timeframe.parse(text)
