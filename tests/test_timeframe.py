"""Bars in memory carry their own timeframe: inferred from the index, checked against a declared one
(trust issue, item 2)."""

from __future__ import annotations

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
