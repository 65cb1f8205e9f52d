"""Metrics on hand-checked values, the threshold chosen on validation only, permutation importance,
and the trainer's logging and early stopping."""

from __future__ import annotations

import json

import numpy as np
import pytest

from features import DatasetConfig, LabelConfig, build_market_data, synthetic_bars
from supervised.evaluation import (
    DEFAULT_THRESHOLDS,
    choose_threshold,
    classification_metrics,
    evaluation_report,
    format_metrics_table,
    permutation_importance,
    threshold_sweep,
)
from supervised.models import ModelConfig
from supervised.samples import split_samples
from supervised.trainer import TrainConfig, train_classifier


def tiny_data():
    bars = {"SYN": synthetic_bars(600, seed=0), "SYN2": synthetic_bars(600, seed=1)}
    return build_market_data(bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4)))


def test_classification_metrics_by_hand() -> None:
    labels = np.array([1, 1, 0, 0, 0, 1])
    p = np.array([0.9, 0.4, 0.6, 0.2, 0.1, 0.7])
    m = classification_metrics(labels, p, threshold=0.5)
    assert m["confusion_matrix"] == {"tn": 2, "fp": 1, "fn": 1, "tp": 2}
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["f1_macro"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(8 / 9)
    assert 0 < m["pr_auc"] <= 1 and m["log_loss"] > 0
    one_class = classification_metrics(np.zeros(3), np.array([0.1, 0.2, 0.3]))
    assert one_class["roc_auc"] is None and one_class["pr_auc"] is None
    json.dumps(one_class, allow_nan=False)


def test_threshold_sweep_and_choice() -> None:
    assert DEFAULT_THRESHOLDS[0] == 0.1 and DEFAULT_THRESHOLDS[-1] == 0.9 and len(DEFAULT_THRESHOLDS) == 17
    labels = np.array([1, 1, 0, 0])
    p = np.array([0.8, 0.6, 0.3, 0.55])
    sweep = threshold_sweep(labels, p, [0.5, 0.58, 0.7])
    assert [row["f1"] for row in sweep] == pytest.approx([0.8, 1.0, 2 / 3])
    assert choose_threshold(sweep)["threshold"] == 0.58
    tie = threshold_sweep(labels, np.array([0.8, 0.8, 0.1, 0.1]), [0.3, 0.5])
    assert choose_threshold(tie)["threshold"] == 0.5  # ties go to the more selective threshold


def test_report_chooses_the_threshold_on_validation_and_applies_it_to_test() -> None:
    data = tiny_data()
    calls = []

    def predict(windows, asset_ids):
        calls.append(len(windows))
        return 1 / (1 + np.exp(-windows[:, -1, 0]))  # only the last bar's first feature

    report = evaluation_report(predict, data, importance_repeats=1, seed=3)
    validation = split_samples(data, "validation")
    expected = choose_threshold(threshold_sweep(validation.labels, predict(validation.windows, validation.asset_ids)))
    assert report["threshold"]["chosen"] == expected["threshold"]
    assert report["threshold"]["chosen_on"] == "validation"
    assert report["test"]["threshold"] == report["validation"]["threshold"] == expected["threshold"]
    assert report["test"]["n_samples"] == len(data.sample_indices("test"))
    features = report["permutation_importance"]["features"]
    assert {row["feature"] for row in features} == set(data.feature_names)
    unused = [row["importance"] for row in features if row["feature"] != data.feature_names[0]]
    assert unused == [0.0] * (data.n_features - 1)  # features the predictor ignores do not matter
    json.dumps(report, allow_nan=False)
    table = format_metrics_table(report)
    assert "pr_auc" in table and "chosen on validation" in table


def test_permutation_importance_finds_the_used_feature() -> None:
    samples = split_samples(tiny_data(), "validation")
    names = [f"f{i}" for i in range(samples.windows.shape[-1])]
    signal = samples.labels * 2.0 - 1.0
    windows = samples.windows.copy()
    windows[:, :, 5] = signal[:, None]
    planted = type(samples)(samples.split, samples.rows, windows, samples.asset_ids, samples.labels, samples.weights)
    rows = permutation_importance(lambda w, a: 1 / (1 + np.exp(-w[:, -1, 5])), planted, names, metric="f1", n_repeats=2)
    assert rows[0]["feature"] == "f5" and rows[0]["importance"] > 0.3
    with pytest.raises(ValueError, match="importance metric='auc'"):
        permutation_importance(lambda w, a: w[:, 0, 0], planted, names, metric="auc")


def test_trainer_logs_scalars_and_keeps_the_best_epoch(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = tiny_data()
    config = TrainConfig(epochs=6, batch_size=128, num_threads=1, early_stopping_patience=2)
    result = train_classifier(data, ModelConfig(kind="mlp", hidden_sizes=(16,)), config, tmp_path / "run", progress=False)
    f1s = [h["val/f1"] for h in result.history]
    assert result.best_epoch == int(np.argmax(f1s)) + 1 and result.best_val_f1 == max(f1s)
    assert len(result.history) <= result.best_epoch + 2
    assert result.stopped_early == (len(result.history) < 6)
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/loss", "val/loss", "val/f1", "val/precision", "val/recall", "val/pr_auc", "charts/learning_rate"):
        assert tag in tags
    assert len(events.Scalars("val/f1")) == len(result.history)
    with pytest.raises(ValueError, match="loss='mse' is not known"):
        TrainConfig(loss="mse")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})
