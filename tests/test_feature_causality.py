"""build_features: every column causal, same index, no NaN after warm-up, scale-free, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.bars import BarsValidationError
from features.feature_builder import FeatureConfig, build_features, feature_names, warmup_bars


def _random_walk_bars(index: pd.DatetimeIndex, seed: int, start: float = 50.0, vwap: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(index)
    close = start * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n)))
    open_ = np.empty(n)
    open_[0] = start
    open_[1:] = close[:-1] * np.exp(rng.normal(0.0, 0.004, n - 1))
    high = np.maximum(open_, close) * (1.0 + rng.exponential(0.004, n))
    low = np.minimum(open_, close) * (1.0 - rng.exponential(0.004, n))
    volume = np.round(rng.lognormal(13.0, 0.5, n))
    bars = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index)
    if vwap:
        bars["vwap"] = low + (high - low) * rng.uniform(0.2, 0.8, n)
    return bars


def daily_bars(vwap: bool = False) -> pd.DataFrame:
    index = pd.bdate_range("2021-01-04", periods=400, tz="UTC", name="timestamp")
    return _random_walk_bars(index, seed=11, vwap=vwap)


def hourly_bars() -> pd.DataFrame:
    # Trading hours only (14:00-20:00 UTC, weekdays): nights and weekends are gaps, as in real data.
    stamps = pd.date_range("2022-03-01", periods=24 * 90, freq="1h", tz="UTC", name="timestamp")
    stamps = stamps[(stamps.day_of_week < 5) & (stamps.hour >= 14) & (stamps.hour <= 20)][:400]
    return _random_walk_bars(stamps, seed=12, start=1.1)


FRAMES = {
    "daily": (daily_bars, "1Day"),
    "daily_vwap": (lambda: daily_bars(vwap=True), "1Day"),
    "hourly": (hourly_bars, "1Hour"),
}


@pytest.mark.parametrize("kind", sorted(FRAMES))
def test_every_column_is_causal(kind: str) -> None:
    make, timeframe = FRAMES[kind]
    bars = make()
    full = build_features(bars)
    warmup = warmup_bars()
    for t in (0, 5, warmup - 1, warmup, warmup + 1, 120, 250, len(bars) - 2):
        part = build_features(bars.iloc[: t + 1], timeframe=timeframe)
        assert list(part.columns) == list(full.columns)
        for column in full.columns:
            np.testing.assert_array_equal(
                part[column].to_numpy(), full[column].to_numpy()[: t + 1], err_msg=f"{kind} {column} t={t}"
            )


def test_changing_a_future_bar_changes_no_past_value() -> None:
    bars = daily_bars(vwap=True)
    full = build_features(bars)
    shocked = bars.copy()
    shocked.iloc[300:, :] *= 1.5  # every price (and volume) from bar 300 on
    after = build_features(shocked)
    np.testing.assert_array_equal(after.iloc[:300].to_numpy(), full.iloc[:300].to_numpy())
    assert not np.allclose(after.iloc[300:305].to_numpy(), full.iloc[300:305].to_numpy(), equal_nan=True)


@pytest.mark.parametrize("kind", sorted(FRAMES))
def test_same_index_float64_and_no_nan_after_warmup(kind: str) -> None:
    make, _ = FRAMES[kind]
    bars = make()
    features = build_features(bars)
    assert features.index.equals(bars.index)
    assert (features.dtypes == np.float64).all()
    warmup = warmup_bars()
    assert warmup == 49
    assert not features.iloc[warmup:].isna().any().any(), features.iloc[warmup:].isna().sum()
    assert features.iloc[warmup - 1].isna().any()  # warmup_bars is tight, not padded
    assert np.isfinite(features.iloc[warmup:].to_numpy()).all()


def test_warmup_tight_for_a_custom_config() -> None:
    config = FeatureConfig(
        return_windows=(1,), log_return_windows=(), sma_windows=(3,), ema_windows=(4,), rsi_window=5,
        macd_fast=3, macd_slow=6, macd_signal=4, bollinger_window=5, atr_window=5, adx_window=9,
        stochastic_k=5, stochastic_d=2, obv_window=5, vwap_window=5, volatility_windows=(3,),
        volume_zscore_window=5,
    )  # fmt: skip
    features = build_features(daily_bars(), config)
    warmup = warmup_bars(config)
    assert warmup == 17  # ADX: 2 * 9 - 1
    assert not features.iloc[warmup:].isna().any().any()
    assert features.iloc[warmup - 1].isna().any()


def test_feature_names_match_columns_and_calendar_rules() -> None:
    daily = build_features(daily_bars())
    hourly = build_features(hourly_bars())
    assert list(daily.columns) == feature_names(FeatureConfig(), intraday=False)
    assert list(hourly.columns) == feature_names(FeatureConfig(), intraday=True)
    assert "hour_sin" not in daily.columns and "dow_sin" in daily.columns
    assert {"hour_sin", "hour_cos", "dow_sin", "dow_cos"} <= set(hourly.columns)
    assert len(set(daily.columns)) == len(daily.columns)
    # An explicit timeframe overrides the inference from the index spacing.
    assert "hour_sin" in build_features(daily_bars(), timeframe="1Hour").columns
    no_calendar = build_features(hourly_bars(), FeatureConfig(calendar=False))
    assert list(no_calendar.columns) == feature_names(FeatureConfig(calendar=False), intraday=True)
    assert not any(c.startswith(("dow_", "hour_")) for c in no_calendar.columns)
    # 14:00 UTC -> angle 2*pi*14/24; Monday -> dow 0.
    first = hourly.iloc[0]
    assert first["hour_sin"] == pytest.approx(np.sin(2 * np.pi * 14 / 24))
    assert first["dow_sin"] == pytest.approx(np.sin(2 * np.pi * hourly.index[0].day_of_week / 7))


def test_features_are_scale_free() -> None:
    bars = daily_bars(vwap=True)
    scaled = bars.copy()
    scaled[["open", "high", "low", "close", "vwap"]] *= 1000.0
    scaled["volume"] *= 7.0
    a, b = build_features(bars), build_features(scaled)
    warmup = warmup_bars()
    # volume_z uses log1p(volume), which is only approximately shift-invariant under scaling
    cols = [c for c in a.columns if not c.startswith("volume_z")]
    np.testing.assert_allclose(b[cols].iloc[warmup:], a[cols].iloc[warmup:], rtol=1e-8, atol=1e-10)


def test_flat_prices_and_zero_volume_give_no_nan() -> None:
    bars = daily_bars()
    bars.iloc[100:160, :4] = 20.0  # a halted stock: flat OHLC
    bars.iloc[100:160, 4] = 0.0
    features = build_features(bars)
    assert not features.iloc[warmup_bars() :].isna().any().any()
    assert features["bb_percent_b_20"].iloc[140] == 0.5
    assert features["stoch_k_14"].iloc[140] == 0.5
    # Wilder's gain and loss averages decay at the same rate, so RSI holds its value through a halt.
    assert features["rsi_14"].iloc[140] == pytest.approx(features["rsi_14"].iloc[101], rel=1e-9)
    assert features["obv_flow_20"].iloc[140] == 0.0 and features["volume_z_20"].iloc[140] == 0.0


def test_vwap_column_is_used_when_present() -> None:
    with_vwap, without = build_features(daily_bars(vwap=True)), build_features(daily_bars())
    assert not np.allclose(with_vwap["vwap_dist_20"].iloc[50:], without["vwap_dist_20"].iloc[50:])
    others = [c for c in with_vwap.columns if c != "vwap_dist_20"]
    np.testing.assert_array_equal(with_vwap[others].to_numpy(), without[others].to_numpy())


def test_unknown_config_key_errors() -> None:
    with pytest.raises(ValueError, match="rsi_windw") as info:
        FeatureConfig.from_dict({"rsi_windw": 10})
    assert "rsi_window" in str(info.value)  # the valid keys are listed
    config = FeatureConfig.from_dict({"sma_windows": [10, 30], "rsi_window": 7})
    assert config.sma_windows == (10, 30) and config.rsi_window == 7
    assert FeatureConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="rsi_window"):
        FeatureConfig(rsi_window=0)
    with pytest.raises(ValueError, match="macd_fast"):
        FeatureConfig(macd_fast=30)
    with pytest.raises(ValueError, match="sma_windows"):
        FeatureConfig(sma_windows=(5, 0))


def test_missing_column_error_names_the_column() -> None:
    bars = daily_bars().drop(columns=["volume"])
    with pytest.raises(BarsValidationError, match="volume"):
        build_features(bars, symbol="TEST")
    bad = daily_bars()
    bad.iloc[10, bad.columns.get_loc("high")] = bad["low"].iloc[10] * 0.5
    with pytest.raises(BarsValidationError, match="high < max"):
        build_features(bad)
