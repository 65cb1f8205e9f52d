"""A NaN or inf never becomes a number: rejected at the bars, in the features, in the scaler and in the
simulator, each time naming where it is (trust issue, item 1)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import envs  # noqa: F401  (registers TradingEnv-v0)
from envs import TradingEnv
from features import BarsValidationError, DatasetConfig, build_features, build_market_data, synthetic_bars, validate_bars
from features.scaling import FeatureScaler


def bars(n: int = 300, seed: int = 0) -> pd.DataFrame:
    return synthetic_bars(n, seed=seed)


@pytest.mark.parametrize("column", ["open", "high", "low", "close", "volume"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_ohlcv_is_rejected_naming_symbol_row_and_column(column: str, value: float) -> None:
    frame = bars()
    frame.iloc[123, frame.columns.get_loc(column)] = value
    with pytest.raises(BarsValidationError, match=rf"AAPL: .*{column}.* at column '{column}', row 123 "):
        validate_bars(frame, "AAPL")


def test_infinite_vwap_is_rejected_but_unknown_vwap_is_kept() -> None:
    frame = bars()
    frame["vwap"] = (frame["high"] + frame["low"]) / 2
    frame.iloc[10, frame.columns.get_loc("vwap")] = np.nan  # unknown: allowed
    validate_bars(frame, "X")
    frame.iloc[50, frame.columns.get_loc("vwap")] = np.inf
    with pytest.raises(BarsValidationError, match=r"X: infinite vwap .*column 'vwap', row 50"):
        validate_bars(frame, "X")


def test_inf_from_alpaca_json_is_rejected() -> None:
    # 1e309 in JSON decodes to inf; the frame built from it must not pass validation
    payload = json.loads('{"c": 1e309}')
    assert payload["c"] == np.inf
    frame = bars()
    frame.iloc[40, frame.columns.get_loc("close")] = payload["c"]
    frame.iloc[40, frame.columns.get_loc("high")] = payload["c"]
    with pytest.raises(BarsValidationError, match="non-finite"):
        build_market_data({"AAPL": frame}, DatasetConfig(window=8))


def test_a_non_finite_feature_after_warm_up_names_column_and_first_bar() -> None:
    frame = bars()
    # 1e300 is finite, but its square (Bollinger, volatility) overflows: the features say so
    frame.iloc[150, :4] = [1e300, 1e300, 1e300, 1e300]
    with pytest.raises(ValueError, match=r"SYM: feature '.*' is (nan|inf) at row 150 \(.*\), after the \d+ warm-up rows"):
        build_features(frame, symbol="SYM")
    with pytest.raises(ValueError, match=r"SYM: feature"):
        build_market_data({"SYM": frame}, DatasetConfig(window=8))


def test_warm_up_rows_are_the_only_zero_filled_rows() -> None:
    data = build_market_data({"A": bars(300)}, DatasetConfig(window=8))
    warmup = data.warmup
    assert np.isnan(data.raw_features[:warmup]).any()
    assert np.isfinite(data.raw_features[warmup:]).all()
    assert (data.features[:warmup][np.isnan(data.raw_features[:warmup])] == 0).all()


def test_scaler_with_non_finite_statistics_names_the_feature() -> None:
    rows = np.array([[1.0, 1e308], [2.0, -1e308], [3.0, 1e308]])
    with pytest.raises(ValueError, match=r"feature 'big' has center .* and scale inf"):
        FeatureScaler.fit(rows, "standard", None, ["small", "big"])


def test_non_finite_equity_in_the_simulator_is_an_error_not_a_reward() -> None:
    data = build_market_data({"A": bars(300)}, DatasetConfig(window=8))
    env = TradingEnv(data, random_start=False)
    obs, info = env.reset(seed=0)
    row = info["row"]
    data.prices[row + 3, 3] = np.inf  # a corrupted close after the dataset was built
    data.prices[row + 3, 1] = np.inf
    env.step(1)
    env.step(1)
    with pytest.raises(FloatingPointError, match=rf"non-finite reward .* on A at row {row + 3} "):
        env.step(1)
