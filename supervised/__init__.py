"""Supervised models of "profit target before stop loss": PyTorch classifiers (MLP, LSTM and GRU with
attention pooling, CNN-LSTM), each an encoder plus a head, with losses, a trainer, evaluation, Optuna
search and a checkpoint bundle that loads alone.

Public API::

    build_model(ModelConfig(kind="lstm", window=24, n_features=31, n_assets=4)) -> Classifier
    train_classifier(data, model_config, train_config, run_dir) -> TrainResult
    evaluation_report(predict, data) -> dict          # threshold chosen on validation, test scored once
    split_rows(data, split) -> SplitRows              # a split's samples; windows gathered per batch
    save_bundle(path, classifier, model_config, ...); load_model(path) -> LoadedModel
    run_supervised(data, model_config, train_config, run_dir) -> metrics dict
    run_study(data, model_config, storage="sqlite:///runs/hpo.db") -> optuna.Study
"""

from .bundle import LoadedModel, check_compatible, load_model, save_bundle
from .evaluation import (
    DEFAULT_THRESHOLDS,
    choose_threshold,
    classification_metrics,
    evaluation_report,
    format_metrics_table,
    importance_subsample,
    permutation_importance,
    threshold_sweep,
)
from .experiment import EvaluationConfig, SupervisedConfig, load_supervised_config, run_supervised
from .hpo import HPOConfig, describe_best, run_study, suggest_configs
from .losses import binary_focal_loss, pos_weight_from_labels, weighted_bce_loss
from .models import MODEL_KINDS, Classifier, ModelConfig, build_encoder, build_model
from .samples import SplitRows, SplitSamples, iter_batches, predict_samples, split_rows, split_samples
from .trainer import TrainConfig, TrainResult, train_classifier

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MODEL_KINDS",
    "Classifier",
    "EvaluationConfig",
    "HPOConfig",
    "LoadedModel",
    "ModelConfig",
    "SplitRows",
    "SplitSamples",
    "SupervisedConfig",
    "TrainConfig",
    "TrainResult",
    "binary_focal_loss",
    "build_encoder",
    "build_model",
    "check_compatible",
    "choose_threshold",
    "classification_metrics",
    "describe_best",
    "evaluation_report",
    "format_metrics_table",
    "importance_subsample",
    "iter_batches",
    "load_model",
    "load_supervised_config",
    "permutation_importance",
    "pos_weight_from_labels",
    "predict_samples",
    "run_study",
    "run_supervised",
    "save_bundle",
    "split_rows",
    "split_samples",
    "suggest_configs",
    "threshold_sweep",
    "train_classifier",
    "weighted_bce_loss",
]
