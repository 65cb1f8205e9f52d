"""Bars in memory carry their own timeframe: inferred from the index, checked against a declared one
(trust issue, item 2)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from envs import TradingEnv
from features import BarsValidationError, DatasetConfig, build_market_data, synthetic_bars
from features.bars import Timeframe, find_gaps, infer_timeframe, resolve_timeframe


def hourly(n: int = 2000) -> pd.DataFrame:
    """Hourly bars of a 24/5 market: weekends missing (gaps), median spacing one hour."""
    frame = synthetic_bars(n * 2, freq="h", seed=0)
    frame = frame[frame.index.day_of_week < 5].iloc[:n]
    return frame


@pytest.mark.parametrize(
    ("freq", "expected"),
    [("B", "1Day"), ("D", "1Day"), ("h", "1Hour"), ("15min", "15Min"), ("4h", "4Hour"), ("W", "1Week"),
     ("MS", "1Month")],
)
def test_timeframe_is_inferred_from_the_median_spacing(freq: str, expected: str) -> None:
    index = pd.date_range("2020-01-06", periods=60, freq=freq, tz="UTC")
    assert str(infer_timeframe(index)) == expected


def test_inference_is_robust_to_gaps() -> None:
    frame = hourly()
    assert str(infer_timeframe(frame.index)) == "1Hour"
    assert len(find_gaps(frame, None)) > 0  # the weekends are reported, not guessed away


def test_hourly_frame_gets_hour_features_and_an_hourly_summary() -> None:
    data = build_market_data({"EURUSD": hourly()}, DatasetConfig(window=8))
    assert data.timeframe == "1Hour"
    assert {"hour_sin", "hour_cos"} <= set(data.feature_names)
    assert "(1Hour)" in data.summary()


def test_env_infers_the_timeframe_of_a_frame() -> None:
    env = TradingEnv(hourly(), window=8)
    assert env.data.timeframe == "1Hour" and "hour_sin" in env.data.feature_names


def test_declared_timeframe_that_contradicts_the_bars_is_an_error() -> None:
    with pytest.raises(BarsValidationError, match=r"X: timeframe='1Day' contradicts the bars, whose median spacing is 1Hour"):
        build_market_data({"X": hourly()}, DatasetConfig(window=8, timeframe="1Day"))
    with pytest.raises(BarsValidationError, match="contradicts"):
        TradingEnv(hourly(), window=8, timeframe="1Day")
    data = build_market_data({"X": hourly()}, DatasetConfig(window=8, timeframe="1Hour"))
    assert data.timeframe == "1Hour"
    with pytest.raises(ValueError, match=r"timeframe='1Day' contradicts the dataset's timeframe '1Hour'"):
        TradingEnv(data, timeframe="1Day")


def test_mixed_timeframes_in_one_dataset_are_an_error() -> None:
    with pytest.raises(ValueError, match=r"symbols have different timeframes \(D: 1Day, H: 1Hour\)"):
        build_market_data({"D": synthetic_bars(400), "H": hourly(400)}, DatasetConfig(window=8))


def test_too_few_bars_to_infer_need_an_explicit_timeframe() -> None:
    index = pd.date_range("2020-01-01", periods=2, freq="h", tz="UTC")
    with pytest.raises(BarsValidationError, match="too few to infer the timeframe; pass timeframe= explicitly"):
        resolve_timeframe(index, None, "X")
    assert resolve_timeframe(index, "1Hour", "X") == Timeframe(1, "Hour")


def test_annualisation_uses_the_data_s_own_bars_per_year() -> None:
    from sim.metrics import bars_per_year

    data = build_market_data({"X": hourly()}, DatasetConfig(window=8))
    per_year = bars_per_year(data.timestamps)
    assert 24 * 5 * 50 < per_year < 24 * 7 * 53  # hourly 24/5, not 252
    assert np.isfinite(per_year)


def test_daily_bars_that_switch_to_hourly_are_refused_naming_the_first_hourly_bar() -> None:
    daily = synthetic_bars(300, seed=0, start="2020-01-01")
    switch = daily.index[-1] + pd.Timedelta(days=1)
    hourly_part = synthetic_bars(200, freq="h", seed=1, start=str(switch.date()))
    mixed = pd.concat([daily, hourly_part])
    with pytest.raises(BarsValidationError, match=r"X: bars at two spacings: the timeframe is 1Day \(1 day apart\) "
                                                  rf"but from {re.escape(str(hourly_part.index[0]))} on bars are 1 h apart"):
        resolve_timeframe(mixed.index, None, "X")
    with pytest.raises(BarsValidationError, match="bars at two spacings"):
        build_market_data({"X": mixed}, DatasetConfig(window=8))
    with pytest.raises(BarsValidationError, match="bars at two spacings"):
        resolve_timeframe(mixed.index, "1Day", "X")


def test_five_minute_bars_inside_an_hourly_series_are_refused() -> None:
    frame = hourly(300)
    stamp = frame.index[100]
    extra = pd.DatetimeIndex([stamp + pd.Timedelta(minutes=5 * k) for k in range(1, 4)])
    index = frame.index.append(extra).sort_values()
    with pytest.raises(BarsValidationError, match=rf"X: bars at two spacings: the timeframe is 1Hour \(1 h apart\) "
                                                  rf"but from {re.escape(str(stamp))} on bars are 5 min apart"):
        resolve_timeframe(index, None, "X")


@pytest.mark.parametrize("kind", ["weekdays_and_holidays", "local_midnight_with_dst", "hourly_24_5",
                                  "hourly_24_7", "stock_sessions_with_half_hour_open", "missing_bars"])
def test_one_timeframe_with_gaps_and_sessions_is_accepted(kind: str) -> None:
    if kind == "weekdays_and_holidays":
        index = pd.bdate_range("2020-01-01", "2021-12-31", tz="UTC").drop(pd.Timestamp("2020-12-25", tz="UTC"))
    elif kind == "local_midnight_with_dst":  # 23 h and 25 h steps when New York changes clocks
        index = pd.date_range("2020-01-01", "2021-12-31", freq="D", tz="America/New_York").tz_convert("UTC")
    elif kind == "hourly_24_5":
        index = hourly().index
    elif kind == "hourly_24_7":  # crypto: no gap at all
        index = pd.date_range("2021-01-01", periods=3000, freq="h", tz="UTC")
    elif kind == "stock_sessions_with_half_hour_open":  # 09:30, 10:00, ..., 15:00 New York, weekdays
        days = pd.bdate_range("2021-03-01", periods=60)
        stamps = [pd.Timestamp(day.date()).tz_localize("America/New_York") + pd.Timedelta(hours=h, minutes=m)
                  for day in days for h, m in [(9, 30)] + [(h, 0) for h in range(10, 16)]]
        index = pd.DatetimeIndex(stamps).tz_convert("UTC")
    else:
        index = pd.date_range("2021-01-01", periods=2000, freq="h", tz="UTC").delete([5, 6, 7, 100, 1500])
    expected = "1Day" if kind in ("weekdays_and_holidays", "local_midnight_with_dst") else "1Hour"
    assert str(resolve_timeframe(index, None, "X")) == expected


def test_the_embedded_daily_and_hourly_data_keep_one_timeframe() -> None:
    from features import load_bars

    for symbol in ("AAPL", "IBM", "MSFT", "GOOG", "SP500"):
        assert str(resolve_timeframe(load_bars(symbol)[symbol].index, None, symbol)) == "1Day"
    import importlib.util

    if importlib.util.find_spec("gym_anytrading") is not None:
        bars = load_bars("EURUSD", "1Hour")["EURUSD"]
        assert str(resolve_timeframe(bars.index, None, "EURUSD")) == "1Hour"
