"""make_labels / label_array: "+profit before -stop within horizon bars", checked on hand-built paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.bars import BarsValidationError
from features.labels import LabelConfig, label_array, make_labels


def path_bars(highs: list[float], lows: list[float], entry: float = 100.0) -> pd.DataFrame:
    """Bar 0 closes at ``entry``; bars 1.. have the given highs and lows (close mid-range, open = previous close)."""
    high = np.array([entry, *highs], dtype=np.float64)
    low = np.array([entry, *lows], dtype=np.float64)
    close = (high + low) / 2.0
    close[0] = entry
    open_ = np.concatenate([[entry], close[:-1]])
    high = np.maximum(high, np.maximum(open_, close))
    low = np.minimum(low, np.minimum(open_, close))
    index = pd.date_range("2022-01-03", periods=len(high), freq="D", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": np.ones(len(high))}, index=index
    )


def first_label(highs: list[float], lows: list[float], **kwargs: float) -> float:
    return float(make_labels(path_bars(highs, lows), **kwargs).iloc[0])


# Entry 100: the default target is 105, the default stop 98.
def test_target_hit_first_is_one() -> None:
    assert first_label([101, 103, 105.0, 101, 101, 101, 101, 101], [99, 99, 100, 97, 97, 97, 97, 97]) == 1.0


def test_stop_hit_first_is_zero() -> None:
    assert first_label([101, 101, 106, 106, 106, 106, 106, 106], [99, 98.0, 100, 100, 100, 100, 100, 100]) == 0.0


def test_neither_within_horizon_is_zero() -> None:
    assert first_label([104.9] * 8, [98.1] * 8) == 0.0


def test_target_after_the_horizon_does_not_count() -> None:
    highs, lows = [101] * 8 + [110], [99] * 8 + [99]
    assert first_label(highs, lows, horizon=8) == 0.0
    assert first_label(highs, lows, horizon=9) == 1.0


def test_target_and_stop_in_the_same_bar_counts_the_stop() -> None:
    assert first_label([101, 101, 106, 101, 101, 101, 101, 101], [99, 99, 97, 99, 99, 99, 99, 99]) == 0.0


def test_touching_exactly_counts() -> None:
    # high == close * 1.05 and low == close * 0.98, computed the way the label computes them
    target, stop = 100.0 * (1.0 + 0.05), 100.0 * (1.0 - 0.02)
    assert first_label([101, target] + [101] * 6, [99] * 8) == 1.0
    assert first_label([101] * 8, [99, stop] + [99] * 6) == 0.0


def test_last_horizon_bars_are_nan_and_the_rest_are_not() -> None:
    rng = np.random.default_rng(3)
    n = 40
    highs = list(100 + rng.uniform(0, 6, n - 1))
    lows = list(100 - rng.uniform(0, 3, n - 1))
    bars = path_bars(highs, lows)
    for horizon in (1, 5, 8, 39):
        labels = make_labels(bars, horizon=horizon)
        assert labels.index.equals(bars.index) and labels.name == "label" and labels.dtype == np.float64
        assert np.isnan(labels.to_numpy()[-horizon:]).all()
        assert set(np.unique(labels.to_numpy()[:-horizon])) <= {0.0, 1.0}
        assert not np.isnan(labels.to_numpy()[:-horizon]).any()
    assert np.isnan(make_labels(bars, horizon=40).to_numpy()).all()
    assert np.isnan(make_labels(bars, horizon=100).to_numpy()).all()


def test_every_bar_is_labelled_against_its_own_close() -> None:
    # close 100, 104, 110, 107.6, ... : bar 1 (close 104) reaches +5% (109.2) at bar 2; bar 2 (110) stops at 107.6
    close = np.array([100.0, 104.0, 110.0, 107.6, 107.0, 107.0])
    high = close + np.array([0.0, 0.5, 0.5, 0.1, 0.1, 0.1])
    low = close - np.array([0.0, 0.5, 0.5, 0.1, 0.1, 0.1])
    labels = label_array(close, high, low, profit=0.05, stop=0.02, horizon=2)
    # bar 0: target 105, stop 98; bar 1 high 104.5, bar 2 high 110.5 -> 1
    # bar 1: target 109.2, stop 101.92; bar 2 high 110.5 -> 1
    # bar 2: target 115.5, stop 107.8; bar 3 low 107.5 -> 0
    # bar 3: target 112.98, stop 105.448; neither within 2 bars -> 0
    np.testing.assert_array_equal(labels, [1.0, 1.0, 0.0, 0.0, np.nan, np.nan])


def test_profit_stop_and_horizon_are_configurable() -> None:
    highs = [102, 102, 103.5, 102, 102, 102, 102, 102, 102, 102]
    lows = [99.5, 99.5, 99.5, 98.9, 99.5, 99.5, 99.5, 99.5, 99.5, 99.5]
    assert first_label(highs, lows) == 0.0  # +5% never reached
    assert first_label(highs, lows, profit=0.03) == 1.0  # 103 reached at bar 3 before any stop
    assert first_label(highs, lows, profit=0.03, stop=0.005) == 0.0  # 99.5 touched at bar 1
    assert first_label(highs, lows, profit=0.03, horizon=2) == 0.0  # bar 3 is beyond 2 bars
    assert first_label(highs, lows, profit=0.03, horizon=3) == 1.0


def test_label_array_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(7)
    n = 300
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    high = close * np.exp(np.abs(rng.normal(0, 0.015, n)))
    low = close * np.exp(-np.abs(rng.normal(0, 0.015, n)))
    for profit, stop, horizon in [(0.05, 0.02, 8), (0.02, 0.02, 3), (0.1, 0.05, 20)]:
        expected = np.full(n, np.nan)
        for t in range(n - horizon):
            expected[t] = 0.0
            for k in range(t + 1, t + horizon + 1):
                if low[k] <= close[t] * (1 - stop):
                    break
                if high[k] >= close[t] * (1 + profit):
                    expected[t] = 1.0
                    break
        np.testing.assert_array_equal(label_array(close, high, low, profit, stop, horizon), expected)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"profit": 0.0}, "profit=0.0"),
        ({"profit": -0.05}, "profit=-0.05"),
        ({"profit": float("nan")}, "profit=nan"),
        ({"stop": 0.0}, "stop=0.0"),
        ({"stop": 1.0}, "stop=1.0"),
        ({"stop": -0.02}, "stop=-0.02"),
        ({"horizon": 0}, "horizon=0"),
        ({"horizon": -3}, "horizon=-3"),
        ({"horizon": 2.5}, "horizon=2.5"),
        ({"horizon": 8.0}, "horizon=8.0"),
        ({"horizon": True}, "horizon=True"),
    ],
)
def test_bad_parameters_are_rejected_by_name(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=f"label {words}"):
        LabelConfig(**kwargs)
    with pytest.raises(ValueError, match=f"label {words}"):
        make_labels(path_bars([101] * 10, [99] * 10), **kwargs)


def test_label_config_defaults() -> None:
    assert LabelConfig() == LabelConfig(profit=0.05, stop=0.02, horizon=8)


def test_invalid_bars_are_rejected() -> None:
    bars = path_bars([101] * 10, [99] * 10)
    bars.iloc[3, bars.columns.get_loc("high")] = 1.0
    with pytest.raises(BarsValidationError, match="row 3"):
        make_labels(bars)
