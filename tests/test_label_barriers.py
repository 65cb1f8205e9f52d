"""Labels that cannot train are refused; volatility-scaled (triple-barrier) labels give a calm hourly
market positives (trust issue, item 10)."""

from __future__ import annotations

import numpy as np
import pytest

from features import DatasetConfig, LabelConfig, build_market_data, make_labels, synthetic_bars
from features.labels import check_positive_rate, horizon_volatility, label_array
from supervised.models import ModelConfig
from supervised.trainer import TrainConfig, train_classifier


def calm_hourly(n: int = 1500, seed: int = 0):
    """Hourly bars moving about 0.1% a bar, like EUR/USD: +5% within 8 hours never happens."""
    return synthetic_bars(n, freq="h", sigma=0.001, seed=seed, start_price=1.1)


def test_fixed_barriers_on_a_calm_hourly_market_are_refused_with_the_fix() -> None:
    data = build_market_data({"EURUSD": calm_hourly()}, DatasetConfig(window=8))
    assert np.nanmean(data.labels) == 0.0
    assert "below 0.5%: too few to train" in data.summary()
    with pytest.raises(ValueError) as error:
        train_classifier(data, ModelConfig(kind="mlp"), TrainConfig(epochs=1), progress=False)
    message = str(error.value)
    assert "labels '+5.0% before -2.0% within 8 bars' on 1Hour bars give 0.00% positives in the train split" in message
    assert "below the floor of 0.50%" in message and "barrier: volatility" in message


def test_volatility_barriers_give_positives_and_train() -> None:
    labels = LabelConfig(profit=1.0, stop=1.0, horizon=8, barrier="volatility", volatility_window=20)
    data = build_market_data({"EURUSD": calm_hourly()}, DatasetConfig(window=8, labels=labels))
    assert 0.1 < np.nanmean(data.labels) < 0.6
    assert "+1 sigma before -1 sigma within 8 bars" in data.summary()
    result = train_classifier(data, ModelConfig(kind="mlp", hidden_sizes=(8,)), TrainConfig(epochs=1, num_threads=1),
                              progress=False)
    assert len(result.history) == 1


def test_volatility_barrier_matches_a_hand_computation() -> None:
    bars = calm_hourly(200, seed=3)
    close, high, low = (bars[k].to_numpy() for k in ("close", "high", "low"))
    values = make_labels(bars, profit=2.0, stop=1.0, horizon=5, barrier="volatility", volatility_window=10).to_numpy()
    logret = np.diff(np.log(close))
    for t in (10, 57, 120, 190):
        sigma = np.std(logret[t - 10:t], ddof=1) * np.sqrt(5)  # returns ending at bar t
        target, stop = close[t] * (1 + 2 * sigma), close[t] * (1 - sigma)
        expected = 0.0
        for k in range(t + 1, t + 6):
            if k >= len(close):
                expected = np.nan
                break
            if low[k] <= stop:
                break
            if high[k] >= target:
                expected = 1.0
                break
        if t + 5 >= len(close):
            expected = np.nan
        np.testing.assert_equal(values[t], expected)
    assert np.isnan(values[:10]).all()  # no label before a full volatility window


def test_the_volatility_estimate_is_causal() -> None:
    close = calm_hourly(300, seed=1)["close"].to_numpy()
    full = horizon_volatility(close, 20, 8)
    for cut in (50, 123, 250):
        np.testing.assert_array_equal(horizon_volatility(close[:cut], 20, 8), full[:cut])


def test_per_bar_barriers_equal_scalar_barriers_when_constant() -> None:
    bars = synthetic_bars(300, seed=2)
    close, high, low = (bars[k].to_numpy() for k in ("close", "high", "low"))
    np.testing.assert_array_equal(label_array(close, high, low, np.full(300, 0.03), np.full(300, 0.02), 6),
                                  label_array(close, high, low, 0.03, 0.02, 6))


@pytest.mark.parametrize(
    ("settings", "match"),
    [({"barrier": "atr"}, "barrier='atr' is not known"), ({"barrier": "volatility", "stop": 0.0}, "stop=0.0 must be > 0"),
     ({"volatility_window": 1}, "volatility_window=1 must be >= 2"), ({"stop": 1.5}, r"stop=1.5 must be in \(0, 1\)")],
)
def test_bad_label_settings_are_named(settings, match) -> None:
    with pytest.raises(ValueError, match=match):
        LabelConfig(**settings)


def test_positive_rate_floor_passes_a_trainable_split() -> None:
    check_positive_rate(np.array([0.0] * 99 + [1.0]), "train", LabelConfig(), floor=0.005)
    with pytest.raises(ValueError, match=r"give 0.40% positives in the validation split \(2 of 500\)"):
        check_positive_rate(np.array([0.0] * 498 + [1.0, 1.0]), "validation", LabelConfig(), floor=0.005)
