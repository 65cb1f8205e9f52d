"""Issue 12: the supervised pipeline works in batches gathered from the feature matrix (no split's windows
are materialised), predicts validation and test once each, and subsamples permutation importance."""

from __future__ import annotations

import json
import math
import weakref

import numpy as np
import pytest
import torch

from features import DatasetConfig, LabelConfig, build_market_data, synthetic_bars
from features.market_data import MarketData
from supervised.evaluation import (
    DEFAULT_THRESHOLDS,
    evaluation_report,
    importance_subsample,
    permutation_importance,
    pr_auc,
    threshold_sweep,
)
from supervised.experiment import EvaluationConfig, run_supervised
from supervised.models import ModelConfig, build_model
from supervised.samples import SplitRows, iter_batches, predict_samples, split_rows, split_samples
from supervised.trainer import TrainConfig, _validate, make_loss, train_classifier


@pytest.fixture(scope="module")
def data() -> MarketData:
    bars = {"SYN": synthetic_bars(600, seed=0), "SYN2": synthetic_bars(600, seed=1)}
    return build_market_data(bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4)))


@pytest.fixture(scope="module")
def model(data):
    torch.manual_seed(0)
    config = ModelConfig(kind="lstm", hidden_size=8).fit_to(data.window, data.n_features, data.n_assets)
    return build_model(config).eval()


class RecordingPredictor:
    """Only the last bar's first feature matters; records the size of every call."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, windows: np.ndarray, asset_ids: np.ndarray) -> np.ndarray:
        assert windows.ndim == 3 and windows.dtype == np.float32 and len(asset_ids) == len(windows)
        self.sizes.append(len(windows))
        return 1 / (1 + np.exp(-windows[:, -1, 0].astype(np.float64)))


def test_split_rows_gathers_the_same_windows_as_materialising(data) -> None:
    rows = split_rows(data, "validation")
    whole = split_samples(data, "validation")
    positions = np.array([0, 5, len(rows) - 1, 3])
    np.testing.assert_array_equal(rows.gather(positions), data.windows(rows.rows[positions]))
    np.testing.assert_array_equal(rows.gather(positions), whole.windows[positions])
    np.testing.assert_array_equal(rows.feature_series(positions, 4), whole.windows[positions, :, 4])
    assert rows.features is data.features  # a reference to the feature matrix, not a copy
    sizes = [len(p) for p, w in iter_batches(rows, 50)]
    assert max(sizes) == 50 and sum(sizes) == len(rows)


def linear_predictor(windows: np.ndarray, asset_ids: np.ndarray) -> np.ndarray:
    """A per-sample function of every feature and time step (no BLAS, so exact whatever the batch)."""
    weights = np.sin(np.arange(windows.shape[1] * windows.shape[2])).reshape(windows.shape[1:]) / 4
    return 1 / (1 + np.exp(-(windows.astype(np.float64) * weights).sum(axis=(1, 2)) - 0.1 * asset_ids))


def test_batched_prediction_equals_the_whole_split_prediction(data, model) -> None:
    for split in ("validation", "test"):
        whole = split_samples(data, split)
        expected = model.predict_proba(whole.windows, whole.asset_ids)
        for batch_size in (1024, 4096):  # the model's own batch (and larger): bit for bit
            got = predict_samples(model.predict_proba, split_rows(data, split), batch_size)
            np.testing.assert_array_equal(got, expected)
        # tiny batches take other kernels: equal to float32 rounding
        np.testing.assert_allclose(predict_samples(model.predict_proba, split_rows(data, split), 37), expected,
                                   rtol=0, atol=1e-6)
        exact = linear_predictor(whole.windows, whole.asset_ids)
        for batch_size in (1, 37):
            np.testing.assert_array_equal(predict_samples(linear_predictor, split_rows(data, split), batch_size), exact)


class BatchOutputsMustDie:
    """Wraps ``owner.name`` (a model's forward, torch.sigmoid): each call first checks that no earlier
    call's output is still alive.

    Evaluation keeps nothing of a batch but its values in one preallocated output: small per-batch outputs
    held until the end (a list joined by torch.cat) sat in the holes the freed batch activations left in
    glibc's heap, which then grew by about a batch per batch (+450-800 MB in validation at 100 symbols).
    """

    def __init__(self, owner, name, monkeypatch) -> None:
        self.fn, self.outputs = getattr(owner, name), []
        monkeypatch.setattr(owner, name, self)

    def __call__(self, *args, **kwargs):
        alive = [i for i, ref in enumerate(self.outputs) if ref() is not None]
        assert not alive, f"outputs of calls {alive} outlived their batch (call {len(self.outputs)})"
        out = self.fn(*args, **kwargs)
        self.outputs.append(weakref.ref(out))
        return out


@torch.no_grad()
def old_validation_logits(model, validation, batch_size):
    """The pre-fix validation pass: every batch's logits kept in a list, joined at the end."""
    ids = torch.from_numpy(validation.asset_ids)
    return torch.cat([model(torch.from_numpy(windows), ids[torch.from_numpy(positions)])
                      for positions, windows in iter_batches(validation, batch_size)])


@pytest.mark.parametrize("loss", ["focal", "weighted_bce"])
def test_validation_scores_batch_by_batch_into_one_output_with_the_same_scores(data, model, loss,
                                                                              monkeypatch) -> None:
    validation = split_rows(data, "validation")
    config = TrainConfig(loss=loss, use_sample_weights=True)
    loss_fn = make_loss(config, split_rows(data, "train").labels)
    for batch_size in (16, 37, 1024):
        logits = old_validation_logits(model, validation, batch_size)
        probabilities = torch.sigmoid(logits).double().numpy()
        sweep = threshold_sweep(validation.labels, probabilities, DEFAULT_THRESHOLDS)
        best = max(reversed(sweep), key=lambda row: row["f1"])
        w = torch.from_numpy(validation.weights)
        expected = {"loss": float(loss_fn(logits, torch.from_numpy(validation.labels), w)), "f1": best["f1"],
                    "precision": best["precision"], "recall": best["recall"], "threshold": best["threshold"],
                    "pr_auc": pr_auc(validation.labels, probabilities)}
        with monkeypatch.context() as patch:
            spy = BatchOutputsMustDie(model, "forward", patch)
            assert _validate(model, loss_fn, validation, True, batch_size) == expected  # bit for bit
        assert len(spy.outputs) == -(-len(validation) // batch_size) > (batch_size < 1024)


def test_predict_proba_fills_one_output_batch_by_batch(data, model, monkeypatch) -> None:
    whole = split_samples(data, "validation")
    with torch.no_grad():
        expected = torch.cat([torch.sigmoid(model(torch.from_numpy(whole.windows[i : i + 16]),
                                                  torch.from_numpy(whole.asset_ids[i : i + 16])))
                              for i in range(0, len(whole), 16)]).double().numpy()  # the pre-fix algorithm
    forward = BatchOutputsMustDie(model, "forward", monkeypatch)
    sigmoid = BatchOutputsMustDie(torch, "sigmoid", monkeypatch)
    got = model.predict_proba(whole.windows, whole.asset_ids, batch_size=16)
    assert got.dtype == np.float64 and len(forward.outputs) == len(sigmoid.outputs) == -(-len(whole) // 16) > 1
    np.testing.assert_array_equal(got, expected)
    assert model.predict_proba(whole.windows[:0], whole.asset_ids[:0]).shape == (0,)


def test_the_report_never_hands_the_predictor_more_than_a_batch(data) -> None:
    predict = RecordingPredictor()
    report = evaluation_report(predict, data, importance_repeats=1, batch_size=40, seed=0)
    n_validation, n_test = len(data.sample_indices("validation")), len(data.sample_indices("test"))
    assert n_validation > 40 and max(predict.sizes) <= 40
    # validation once, test once, importance baseline once, then one pass per feature and repeat
    assert sum(predict.sizes) == n_validation * (2 + data.n_features) + n_test
    assert report["test"]["n_samples"] == n_test


def test_training_and_evaluation_never_materialise_a_split(data, monkeypatch, tmp_path) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a whole split's windows were materialised")

    monkeypatch.setattr(MarketData, "windows", refuse)
    monkeypatch.setattr(SplitRows, "materialise", refuse)
    seen: list[int] = []
    original = SplitRows.gather

    def gather(self, positions):
        seen.append(len(positions))
        return original(self, positions)

    monkeypatch.setattr(SplitRows, "gather", gather)
    config = TrainConfig(epochs=1, batch_size=64, eval_batch_size=100)
    metrics = run_supervised(data, ModelConfig(kind="mlp", hidden_sizes=(8,)), config, tmp_path / "run",
                             evaluation=EvaluationConfig(importance_repeats=1), progress=False)
    assert max(seen) <= 100 and metrics["training"]["epochs_run"] == 1


def old_permutation_importance(predict, samples, names, metric, threshold, n_repeats, seed):
    """The pre-issue-12 algorithm: shuffle a whole copy of the split's windows."""
    def score(windows):
        p = predict(windows, samples.asset_ids)
        return pr_auc(samples.labels, p) if metric == "pr_auc" else threshold_sweep(samples.labels, p, [threshold])[0]["f1"]

    rng = np.random.default_rng(seed)
    baseline = score(samples.windows)
    shuffled = samples.windows.copy()
    out = {}
    for f, name in enumerate(names):
        drops = []
        for _ in range(n_repeats):
            shuffled[:, :, f] = samples.windows[rng.permutation(len(samples)), :, f]
            drops.append(baseline - score(shuffled))
        shuffled[:, :, f] = samples.windows[:, :, f]
        out[name] = (float(np.mean(drops)), float(np.std(drops)))
    return out


@pytest.mark.parametrize("metric", ["pr_auc", "f1"])
def test_batched_importance_equals_the_whole_split_algorithm(data, model, metric) -> None:
    whole = split_samples(data, "validation")
    for predict, batch_size in ((linear_predictor, 33), (model.predict_proba, 1024)):
        expected = old_permutation_importance(predict, whole, data.feature_names, metric, 0.5, 2, 7)
        assert any(value[0] != 0 for value in expected.values())
        for samples in (whole, split_rows(data, "validation")):
            rows = permutation_importance(predict, samples, data.feature_names, metric=metric,
                                          threshold=0.5, n_repeats=2, seed=7, batch_size=batch_size)
            assert {row["feature"]: (row["importance"], row["std"]) for row in rows} == expected


def test_importance_subsample_is_seeded_and_recorded(data) -> None:
    n = len(data.sample_indices("validation"))
    first = importance_subsample(n, 30, seed=5)
    assert len(first) == 30 and np.all(np.diff(first) > 0) and first.max() < n
    np.testing.assert_array_equal(first, importance_subsample(n, 30, seed=5))
    assert not np.array_equal(first, importance_subsample(n, 30, seed=6))
    np.testing.assert_array_equal(importance_subsample(n, None, seed=5), np.arange(n))
    np.testing.assert_array_equal(importance_subsample(n, n + 1, seed=5), np.arange(n))
    with pytest.raises(ValueError, match="max_samples=0"):
        importance_subsample(n, 0, seed=5)

    reports = [evaluation_report(RecordingPredictor(), data, importance_repeats=2, importance_max_samples=30, seed=5)
               for _ in range(2)]
    assert reports[0] == reports[1]
    info = reports[0]["permutation_importance"]
    assert info["n_samples"] == 30 and info["split_samples"] == n and info["subsampled"] is True
    assert info["seed"] == 5 and info["max_samples"] == 30 and info["split"] == "validation"
    full = evaluation_report(RecordingPredictor(), data, importance_repeats=1, seed=5)["permutation_importance"]
    assert full["n_samples"] == n and full["subsampled"] is False and full["max_samples"] is None


def test_zero_repeats_skips_importance_and_predicts_each_split_once(data) -> None:
    predict = RecordingPredictor()
    report = evaluation_report(predict, data, importance_repeats=0, batch_size=10_000)
    assert "permutation_importance" not in report
    assert predict.sizes == [len(data.sample_indices("validation")), len(data.sample_indices("test"))]


def test_run_supervised_records_the_subsample_and_the_timings(data, tmp_path) -> None:
    config = TrainConfig(epochs=1, batch_size=128)
    evaluation = EvaluationConfig(importance_repeats=1, importance_max_samples=25)
    metrics = run_supervised(data, ModelConfig(kind="mlp", hidden_sizes=(8,)), config, tmp_path / "run",
                             evaluation=evaluation, progress=False)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved == metrics
    info = saved["permutation_importance"]
    assert info["n_samples"] == 25 and info["seed"] == config.seed and info["subsampled"] is True
    assert saved["evaluation_config"]["importance_max_samples"] == 25
    assert set(saved["timings"]) == {"train_seconds", "evaluation_seconds", "save_seconds"}
    skipped = run_supervised(data, ModelConfig(kind="mlp", hidden_sizes=(8,)), config, tmp_path / "run2",
                             evaluation=EvaluationConfig(importance_repeats=0), progress=False)
    assert "permutation_importance" not in skipped and skipped["test"] == metrics["test"]
    with pytest.raises(ValueError, match="importance_max_samples=0"):
        EvaluationConfig(importance_max_samples=0)


def loop_sweep(labels, probabilities, thresholds):
    y, p = np.asarray(labels, bool), np.asarray(probabilities, float)
    rows = []
    for t in thresholds:
        predicted = p >= t
        tp, fp, fn = int(np.sum(predicted & y)), int(np.sum(predicted & ~y)), int(np.sum(~predicted & y))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"threshold": float(t), "precision": precision, "recall": recall, "f1": f1,
                     "predicted_positive_rate": float(predicted.mean()) if len(y) else 0.0})
    return rows


def test_the_sorted_threshold_sweep_equals_the_loop() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(5000) < 0.3
    probabilities = np.round(rng.random(5000), 2)  # many ties, and values equal to the thresholds
    probabilities[:5] = [0.1, 0.9, 0.0, 1.0, math.nan]
    thresholds = list(DEFAULT_THRESHOLDS) + [0.0, 1.0, 1.5, -1.0]
    assert threshold_sweep(labels, probabilities, thresholds) == loop_sweep(labels, probabilities, thresholds)
    assert threshold_sweep([], [], [0.5]) == loop_sweep([], [], [0.5])


def test_a_memory_mapped_dataset_loads_the_same_arrays(data, tmp_path) -> None:
    data.save(tmp_path / "ds")
    mapped = MarketData.load(tmp_path / "ds", mmap=True)
    assert isinstance(mapped.raw_features, np.memmap) and not mapped.features.flags.writeable
    for name in ("features", "raw_features", "labels", "prices", "timestamps", "row_asset_ids"):
        np.testing.assert_array_equal(getattr(mapped, name), getattr(data, name))
    np.testing.assert_array_equal(split_rows(mapped, "train").gather(np.arange(5)),
                                  split_rows(data, "train").gather(np.arange(5)))
