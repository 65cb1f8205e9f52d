"""One supervised run end to end: train, choose the threshold on validation, score test once, save
the bundle and ``metrics.json`` under the run directory. Also the YAML config of such runs.

``configs/supervised.yaml`` has sections ``dataset:`` (:class:`DatasetConfig`), ``train:``
(:class:`TrainConfig`), ``models:`` (one :class:`ModelConfig` mapping per kind), ``evaluation:`` and
``hpo:``; unknown keys raise ``ValueError`` naming them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from configs.loader import load_yaml_config
from features.dataset import DatasetConfig, build_dataset, load_dataset
from features.market_data import MarketData
from features.preprocessing import Preprocessing

from .bundle import save_bundle
from .evaluation import IMPORTANCE_METRICS, evaluation_report, json_safe
from .hpo import HPOConfig
from .models import MODEL_KINDS, ModelConfig
from .trainer import TrainConfig, torch_settings, train_classifier

BUNDLE_DIR = "model"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class EvaluationConfig:
    """What the final evaluation computes besides the metrics.

    :param importance_metric: ``"pr_auc"`` or ``"f1"``: the score whose drop measures importance.
    :param importance_repeats: shuffles per feature (0 skips permutation importance).
    :param importance_max_samples: validation samples permutation importance scores, drawn with the
        train seed when the split is larger (None: all of them). Its cost is about
        ``n_features * importance_repeats * importance_max_samples`` forward passes, so the cap keeps it
        below one training epoch on large data; ``metrics.json`` records the count and the seed.
    """

    importance_metric: str = "pr_auc"
    importance_repeats: int = 2
    importance_max_samples: int | None = 20_000

    def __post_init__(self) -> None:
        if self.importance_metric not in IMPORTANCE_METRICS:
            raise ValueError(
                f"importance_metric={self.importance_metric!r} is not known; expected one of {list(IMPORTANCE_METRICS)}"
            )
        if self.importance_repeats < 0:
            raise ValueError(f"importance_repeats={self.importance_repeats} must be >= 0")
        if self.importance_max_samples is not None and self.importance_max_samples < 1:
            raise ValueError(
                f"importance_max_samples={self.importance_max_samples} must be >= 1 (or null for all samples)"
            )


@dataclass(frozen=True)
class SupervisedConfig:
    """The whole ``configs/supervised.yaml``.

    :param dataset: the dataset to build when no saved dataset is given.
    :param train: optimisation settings shared by all models.
    :param models: per-kind architecture settings (``{kind: {field: value}}``).
    :param evaluation: permutation-importance settings.
    :param hpo: study settings for ``experiments.hpo``.
    """

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    hpo: HPOConfig = field(default_factory=HPOConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", dict(self.models or {}))
        unknown = sorted(set(self.models) - set(MODEL_KINDS))
        if unknown:
            raise ValueError(f"models: unknown model kind(s) {unknown}; expected some of {list(MODEL_KINDS)}")
        for kind in self.models:
            self.model(kind)  # reject unknown keys now, not at the end of a long run

    def model(self, kind: str) -> ModelConfig:
        """The :class:`ModelConfig` of ``kind`` (its ``models:`` section over the defaults).

        :param kind: ``"mlp"``, ``"lstm"``, ``"gru"`` or ``"cnn_lstm"``.
        """
        if kind not in MODEL_KINDS:
            raise ValueError(f"model kind={kind!r} is not known; expected one of {list(MODEL_KINDS)}")
        section = dict(self.models.get(kind) or {})
        if "kind" in section and section["kind"] != kind:
            raise ValueError(f"models.{kind}.kind={section['kind']!r} contradicts its section name")
        section["kind"] = kind
        return ModelConfig.from_dict(section, f"models.{kind}")


def load_supervised_config(path: str | Path | None) -> SupervisedConfig:
    """Read a supervised YAML config (None: all defaults).

    :param path: the YAML file.
    """
    return load_yaml_config(SupervisedConfig, path)


def prepare_data(config: SupervisedConfig, dataset_path: str | Path | None = None) -> MarketData:
    """The saved dataset at ``dataset_path``, or the one ``config.dataset`` builds.

    A saved dataset is memory-mapped read-only: training touches the scaled features and labels only,
    so the raw features and prices (about half the files) never become resident.

    :param config: the supervised config.
    :param dataset_path: a dataset directory written by ``MarketData.save``; None builds one.
    """
    if dataset_path is not None:
        return load_dataset(dataset_path, mmap=True)
    return build_dataset(config.dataset)


def run_supervised(
    data: MarketData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    run_dir: str | Path,
    *,
    evaluation: EvaluationConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, evaluate and save one model; returns the metrics also written to ``run_dir/metrics.json``.

    Writes TensorBoard events in ``run_dir``, the bundle in ``run_dir/model/`` and ``metrics.json``
    (training summary, validation sweep, chosen threshold, validation and test metrics at it,
    permutation importance on (a seeded subsample of) validation, configs, dataset hashes, and the
    seconds spent training, evaluating and saving). Validation and test are predicted once each, in
    batches of ``train_config.eval_batch_size``. ``run_dir`` should be new and
    empty: ``experiments.train_supervised`` hands it a temporary folder that becomes ``runs/<name>``
    only when this returns (``experiments.common.staged_run_directory``), so TensorBoard never shows
    two runs in one folder.

    :param data: the dataset.
    :param model_config: the architecture.
    :param train_config: optimisation settings.
    :param run_dir: the run's output directory.
    :param evaluation: importance settings (defaults if None).
    :param progress: show tqdm bars.
    """
    evaluation = evaluation or EvaluationConfig()
    run_dir = Path(run_dir)
    start = time.perf_counter()
    result = train_classifier(data, model_config, train_config, run_dir, progress=progress)
    trained = time.perf_counter()
    with torch_settings(train_config.num_threads, train_config.deterministic):
        report = evaluation_report(
            result.classifier.predict_proba,
            data,
            importance_metric=evaluation.importance_metric,
            importance_repeats=evaluation.importance_repeats,
            importance_max_samples=evaluation.importance_max_samples,
            seed=train_config.seed,
            batch_size=train_config.eval_batch_size,
        )
    evaluated = time.perf_counter()
    threshold = report["threshold"]["chosen"]
    metrics = {
        "model": result.model_config.kind,
        "run_dir": str(run_dir),
        "training": {
            "best_epoch": result.best_epoch,
            "best_val_f1": result.best_val_f1,
            "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
            "train_seconds": result.train_seconds,
            "n_parameters": sum(p.numel() for p in result.classifier.parameters()),
        },
        **report,
        "history": result.history,
        "model_config": result.model_config.to_dict(),
        "train_config": train_config.to_dict(),
        "evaluation_config": {
            "importance_metric": evaluation.importance_metric,
            "importance_repeats": evaluation.importance_repeats,
            "importance_max_samples": evaluation.importance_max_samples,
        },
        "dataset": {"hashes": data.hashes, "symbols": data.symbols, "window": data.window, "label": data.label},
    }
    save_bundle(
        run_dir / BUNDLE_DIR,
        result.classifier,
        result.model_config,
        preprocessing=Preprocessing.of(data),
        label=data.label,
        threshold=threshold,
        dataset_hashes=data.hashes,
        metrics={"validation": report["validation"], "test": report["test"], "threshold": report["threshold"]},
    )
    metrics["timings"] = {
        "train_seconds": trained - start,
        "evaluation_seconds": evaluated - trained,
        "save_seconds": time.perf_counter() - evaluated,
    }
    metrics = json_safe(metrics)
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
