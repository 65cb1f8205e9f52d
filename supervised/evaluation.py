"""Classification metrics, the threshold sweep (chosen on validation only), permutation importance.

Everything returned is JSON-safe: plain floats/ints/lists, NaN as None. Splits are scored in batches of
windows gathered from the feature matrix (:mod:`supervised.samples`), so memory does not grow with a
split's windows; permutation importance runs on a seeded subsample of validation rows (recorded in the
report) and is skipped with ``importance_repeats=0``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from features.market_data import MarketData

from .samples import Samples, iter_batches, predict_samples, split_rows

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``predict(windows (n, W, F) float32, asset_ids (n,) int64) -> P(label = 1) (n,)``."""

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.10 + 0.05 * i, 2) for i in range(17))  # 0.10 .. 0.90
IMPORTANCE_METRICS: tuple[str, ...] = ("pr_auc", "f1")


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, precision/recall/F1 (positive class and macro), ROC-AUC, PR-AUC, log loss, confusion matrix.

    :param labels: (n,) 0/1.
    :param probabilities: (n,) P(label = 1).
    :param threshold: predict 1 when the probability is >= this.
    """
    y, p = _check_pair(labels, probabilities)
    predicted = p >= threshold
    tp, fp = int(np.sum(predicted & y)), int(np.sum(predicted & ~y))
    fn, tn = int(np.sum(~predicted & y)), int(np.sum(~predicted & ~y))
    pos = _prf(tp, fp, fn)
    neg = _prf(tn, fn, fp)
    both_classes = 0 < y.sum() < len(y)
    return json_safe(
        {
            "n_samples": len(y),
            "positive_rate": float(y.mean()) if len(y) else math.nan,
            "threshold": float(threshold),
            "predicted_positive_rate": float(predicted.mean()) if len(y) else math.nan,
            "accuracy": (tp + tn) / len(y) if len(y) else math.nan,
            "precision": pos[0],
            "recall": pos[1],
            "f1": pos[2],
            "precision_macro": (pos[0] + neg[0]) / 2,
            "recall_macro": (pos[1] + neg[1]) / 2,
            "f1_macro": (pos[2] + neg[2]) / 2,
            "roc_auc": float(roc_auc_score(y, p)) if both_classes else math.nan,
            "pr_auc": float(average_precision_score(y, p)) if both_classes else math.nan,
            "log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])) if len(y) else math.nan,
            "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        }
    )


def pr_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve); NaN when one class is absent."""
    y, p = _check_pair(labels, probabilities)
    return float(average_precision_score(y, p)) if 0 < y.sum() < len(y) else math.nan


def threshold_sweep(
    labels: np.ndarray, probabilities: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> list[dict[str, float]]:
    """Positive-class precision, recall, F1 and predicted-positive rate at each threshold.

    :param labels: (n,) 0/1.
    :param probabilities: (n,) P(label = 1).
    :param thresholds: thresholds to try.
    """
    y, p = _check_pair(labels, probabilities)
    # sort once: the samples with p >= t are a suffix of the sorted order, found by binary search
    scored = ~np.isnan(p)  # p >= t is False for NaN, as in a direct comparison
    order = np.argsort(p[scored], kind="stable")
    sorted_p, sorted_y = p[scored][order], y[scored][order]
    positives_from = np.concatenate([np.cumsum(sorted_y[::-1], dtype=np.int64)[::-1], [0]])
    cuts = np.searchsorted(sorted_p, np.asarray(thresholds, dtype=np.float64), side="left")
    n_positive = int(y.sum())
    rows = []
    for threshold, cut in zip(thresholds, cuts):
        n_predicted = len(sorted_p) - int(cut)
        tp = int(positives_from[cut])
        fp, fn = n_predicted - tp, n_positive - tp
        precision, recall, f1 = _prf(tp, fp, fn)
        rate = n_predicted / len(y) if len(y) else 0.0
        rows.append(
            {
                "threshold": float(threshold),
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "predicted_positive_rate": rate,
            }
        )
    return rows


def choose_threshold(sweep: list[dict[str, float]]) -> dict[str, float]:
    """The sweep row with the best positive-class F1; ties go to the higher (more selective) threshold.

    Pass a sweep of VALIDATION predictions: a threshold chosen on test leaks the test set.

    :param sweep: the output of :func:`threshold_sweep`.
    """
    if not sweep:
        raise ValueError("the threshold sweep is empty")
    return max(reversed(sweep), key=lambda row: row["f1"])


def permutation_importance(
    predict: Predictor,
    samples: Samples,
    feature_names: Sequence[str],
    *,
    metric: str = "pr_auc",
    threshold: float = 0.5,
    n_repeats: int = 1,
    seed: int = 0,
    batch_size: int = 1024,
) -> list[dict[str, Any]]:
    """Drop in ``metric`` when one feature's column (all its time steps) is shuffled across samples.

    Sorted by importance, largest first. Use the validation split (or a subsample of it, see
    :func:`importance_subsample`), never test. Each shuffled pass is predicted batch by batch: a batch's
    windows are gathered, then feature ``f`` of every window is replaced by feature ``f`` of the window
    of its permuted partner, so no shuffled copy of the split is ever held.

    :param predict: probability function of windows and asset ids.
    :param samples: the split to score (:class:`SplitRows` or :class:`SplitSamples`).
    :param feature_names: names of the windows' last axis.
    :param metric: ``"pr_auc"`` or ``"f1"`` (positive class at ``threshold``).
    :param threshold: decision threshold for ``"f1"``.
    :param n_repeats: shuffles per feature (the drop is averaged).
    :param seed: seed of the shuffles.
    :param batch_size: samples per call of ``predict``.
    """
    if metric not in IMPORTANCE_METRICS:
        raise ValueError(f"importance metric={metric!r} is not known; expected one of {list(IMPORTANCE_METRICS)}")
    if len(feature_names) != samples.n_features:
        raise ValueError(f"{len(feature_names)} feature names for {samples.n_features} feature columns")
    if n_repeats < 1:
        raise ValueError(f"n_repeats={n_repeats} must be >= 1")

    def score(p: np.ndarray) -> float:
        if metric == "pr_auc":
            return pr_auc(samples.labels, p)
        return threshold_sweep(samples.labels, p, [threshold])[0]["f1"]

    def shuffled_predictions(feature: int, partner: np.ndarray) -> np.ndarray:
        p = np.empty(len(samples), dtype=np.float64)
        for positions, windows in iter_batches(samples, batch_size):
            windows[:, :, feature] = samples.feature_series(partner[positions], feature)
            p[positions] = np.asarray(predict(windows, samples.asset_ids[positions]), dtype=np.float64).ravel()
        return p

    rng = np.random.default_rng(seed)
    baseline = score(predict_samples(predict, samples, batch_size))
    rows = []
    for f, name in enumerate(feature_names):
        drops = [baseline - score(shuffled_predictions(f, rng.permutation(len(samples)))) for _ in range(n_repeats)]
        rows.append({"feature": name, "importance": float(np.mean(drops)), "std": float(np.std(drops))})
    rows.sort(key=lambda row: -row["importance"] if math.isfinite(row["importance"]) else math.inf)
    return json_safe(rows)


def importance_subsample(n: int, max_samples: int | None, seed: int) -> np.ndarray:
    """Sorted positions of the samples permutation importance scores: all ``n`` when ``max_samples`` is
    None or at least ``n``, else ``max_samples`` drawn without replacement by ``default_rng(seed)``.

    :param n: samples in the split.
    :param max_samples: the cap (None: no cap).
    :param seed: seed of the draw.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples={max_samples} must be >= 1 (or None for all samples)")
    if max_samples is None or max_samples >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False)).astype(np.int64)


def evaluation_report(
    predict: Predictor,
    data: MarketData,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    importance_metric: str = "pr_auc",
    importance_repeats: int = 1,
    importance_max_samples: int | None = None,
    seed: int = 0,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Validation sweep -> chosen threshold -> validation and test metrics at it, plus importance.

    Validation and test are each predicted once, in batches of ``batch_size`` windows; the test split
    is scored once, at the threshold chosen on validation. Permutation importance scores
    ``importance_max_samples`` validation samples drawn with ``seed`` (all of them when None), and the
    report records how many (``n_samples`` of ``split_samples``) and the seed.

    :param predict: probability function of windows and asset ids.
    :param data: the dataset.
    :param thresholds: candidate thresholds.
    :param importance_metric: ``"pr_auc"`` or ``"f1"``; see :func:`permutation_importance`.
    :param importance_repeats: shuffles per feature; 0 skips permutation importance.
    :param importance_max_samples: cap on the validation samples importance scores (None: all).
    :param seed: seed of the subsample and of the shuffles.
    :param batch_size: samples per call of ``predict``.
    """
    validation = split_rows(data, "validation")
    p_validation = predict_samples(predict, validation, batch_size)
    sweep = threshold_sweep(validation.labels, p_validation, thresholds)
    chosen = choose_threshold(sweep)
    threshold = chosen["threshold"]
    test = split_rows(data, "test")
    report: dict[str, Any] = {
        "threshold": {"chosen": threshold, "chosen_on": "validation", "criterion": "f1", "validation_f1": chosen["f1"]},
        "validation_sweep": sweep,
        "validation": classification_metrics(validation.labels, p_validation, threshold),
        "test": classification_metrics(test.labels, predict_samples(predict, test, batch_size), threshold),
    }
    if importance_repeats > 0:
        positions = importance_subsample(len(validation), importance_max_samples, seed)
        subsampled = len(positions) < len(validation)
        report["permutation_importance"] = {
            "split": "validation",
            "metric": importance_metric,
            "n_repeats": importance_repeats,
            "n_samples": len(positions),
            "split_samples": len(validation),
            "max_samples": importance_max_samples,
            "subsampled": subsampled,
            "seed": seed,
            "features": permutation_importance(
                predict,
                validation.subset(positions) if subsampled else validation,
                data.feature_names,
                metric=importance_metric,
                threshold=threshold,
                n_repeats=importance_repeats,
                seed=seed,
                batch_size=batch_size,
            ),
        }
    return json_safe(report)


_TABLE_ROWS = (
    "n_samples", "positive_rate", "threshold", "predicted_positive_rate", "accuracy", "precision", "recall",
    "f1", "f1_macro", "roc_auc", "pr_auc", "log_loss",
)


def format_metrics_table(
    report: dict[str, Any], splits: Sequence[str] = ("validation", "test"), top_features: int = 8
) -> str:
    """A plain-text table of :func:`evaluation_report` (metrics by split, the sweep, top features).

    :param report: the output of :func:`evaluation_report` (or any dict with per-split metric dicts).
    :param splits: the columns to show.
    :param top_features: permutation-importance rows to list (0: none).
    """
    splits = [s for s in splits if s in report]
    lines = [f"{'metric':<24}" + "".join(f"{s:>12}" for s in splits)]
    for key in _TABLE_ROWS:
        lines.append(f"{key:<24}" + "".join(f"{_fmt(report[s].get(key)):>12}" for s in splits))
    for key in ("tn", "fp", "fn", "tp"):
        lines.append(f"{'confusion ' + key:<24}" + "".join(f"{report[s]['confusion_matrix'][key]:>12}" for s in splits))
    if "threshold" in report:
        t = report["threshold"]
        best = f"best {t['criterion']} {_fmt(t['validation_f1'])}"
        lines.append(f"threshold {t['chosen']:.2f} chosen on {t['chosen_on']} ({best})")
    importance = report.get("permutation_importance")
    if importance and top_features:
        on = importance["split"]
        if importance.get("subsampled"):
            on += f", {importance['n_samples']} of {importance['split_samples']} samples (seed {importance['seed']})"
        lines.append(f"permutation importance ({importance['metric']} drop on {on}):")
        for row in importance["features"][:top_features]:
            lines.append(f"  {row['feature']:<22}{_fmt(row['importance']):>10}")
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars/arrays as Python numbers/lists and NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _check_pair(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1 (drop unlabelled rows first)")
    return y.astype(bool), p


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
