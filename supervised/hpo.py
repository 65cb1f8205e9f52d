"""Hyperparameter search with Optuna: seeded TPE, median pruning on per-epoch validation F1.

Any Optuna storage URL works through the same code (``sqlite:///runs/hpo.db`` on one machine,
``postgresql://...`` shared by workers on several). Running again with the same storage and study name
resumes the study and adds trials.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from configs.loader import config_to_dict, dataclass_from_dict
from features.atomic_io import write_directory_atomic
from features.market_data import MarketData

from .models import ModelConfig
from .trainer import TrainConfig, train_classifier

MODEL_KIND_ATTR = "model_kind"


@dataclass(frozen=True)
class HPOConfig:
    """Study settings.

    :param n_trials: trials to add per run.
    :param seed: TPE seed (offset by the number of trials already in the study, so a resumed study
        does not replay its first proposals).
    :param n_startup_trials: random trials before TPE models the space; also the pruner's warm-up
        count of completed trials.
    :param pruner_warmup_epochs: epochs a trial runs before it can be pruned.
    :param epochs: epochs per trial (None: the train config's).
    """

    n_trials: int = 20
    seed: int = 0
    n_startup_trials: int = 5
    pruner_warmup_epochs: int = 3
    epochs: int | None = None

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise ValueError(f"n_trials={self.n_trials} must be >= 1")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"hpo epochs={self.epochs} must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "hpo config") -> "HPOConfig":
        """Build from a mapping; unknown keys raise ``ValueError`` naming them."""
        return dataclass_from_dict(cls, dict(data or {}), where)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def suggest_configs(trial: Any, base_model: ModelConfig, base_train: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    """Sample a model and train config for ``base_model.kind`` from its search space.

    Shared: lr, weight decay, batch size, dropout, asset embedding size, focal gamma (focal loss only).
    MLP: depth and width. LSTM/GRU: state size, layers, pooling. CNN-LSTM: convolutions, kernel, LSTM.

    :param trial: an ``optuna.Trial``.
    :param base_model: the model defaults (its kind picks the space).
    :param base_train: the train defaults.
    """
    train_changes: dict[str, Any] = {
        "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-4, 1e-1, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [128, 256, 512]),
    }
    if base_train.loss == "focal":
        train_changes["focal_gamma"] = trial.suggest_float("focal_gamma", 0.0, 3.0)
    model_changes: dict[str, Any] = {
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "asset_embedding_dim": trial.suggest_categorical("asset_embedding_dim", [0, 4, 8]),
    }
    kind = base_model.kind
    if kind == "mlp":
        width, depth = trial.suggest_categorical("width", [64, 128, 256]), trial.suggest_int("layers", 1, 3)
        model_changes["hidden_sizes"] = tuple(max(width // 2**i, 16) for i in range(depth))
    else:
        model_changes["hidden_size"] = trial.suggest_categorical("hidden_size", [32, 64, 128])
        model_changes["num_layers"] = trial.suggest_int("num_layers", 1, 2)
        model_changes["pooling"] = trial.suggest_categorical("pooling", ["attention", "last"])
    if kind == "cnn_lstm":
        channels, n_convs = trial.suggest_categorical("conv_channels", [16, 32, 64]), trial.suggest_int("n_convs", 1, 2)
        model_changes["conv_channels"] = (channels,) * n_convs
        model_changes["kernel_size"] = trial.suggest_categorical("kernel_size", [3, 5])
    return dataclasses.replace(base_model, **model_changes), dataclasses.replace(base_train, **train_changes)


def run_study(
    data: MarketData,
    base_model: ModelConfig,
    *,
    storage: str,
    study_name: str | None = None,
    base_train: TrainConfig | None = None,
    hpo: HPOConfig | None = None,
    runs_dir: str | Path = "runs",
    progress: bool = False,
    overwrite: bool = False,
) -> Any:
    """Create or resume a study and add ``hpo.n_trials`` trials; returns the ``optuna.Study``.

    Each trial maximises the best validation F1 of :func:`train_classifier` and logs TensorBoard
    scalars under ``runs_dir/hpo/<study>/trial_<n>/``, written in a temporary folder beside it and moved
    into place when the trial ends (completed or pruned; a failed trial leaves nothing). Trial folders
    that the study does not know (left by a deleted study of the same name) are an error before any
    training, unless ``overwrite``: then each is replaced when the new trial of that number ends.

    :param data: the dataset.
    :param base_model: model defaults; its ``kind`` picks the search space.
    :param storage: an Optuna storage URL (``sqlite:///runs/hpo.db``, ``postgresql://...``).
    :param study_name: the study; None gives ``sup_<kind>``.
    :param base_train: train defaults (None: :class:`TrainConfig` defaults).
    :param hpo: study settings.
    :param runs_dir: root of the TensorBoard logs.
    :param progress: show tqdm bars inside each trial.
    :param overwrite: replace trial folders the study does not know instead of refusing to start.
    """
    import optuna

    hpo = hpo or HPOConfig()
    base_train = base_train or TrainConfig()
    if hpo.epochs is not None:
        base_train = dataclasses.replace(base_train, epochs=hpo.epochs)
    kind = base_model.kind
    study_name = study_name or f"sup_{kind}"
    if str(storage).startswith("sqlite:///"):
        Path(str(storage)[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=hpo.n_startup_trials, n_warmup_steps=hpo.pruner_warmup_epochs
        ),
    )
    recorded = study.user_attrs.get(MODEL_KIND_ATTR)
    if recorded is not None and recorded != kind:
        raise ValueError(
            f"study {study_name!r} searches model {recorded!r}; got --model {kind!r} (use another study name)"
        )
    study.set_user_attr(MODEL_KIND_ATTR, kind)
    study.sampler = optuna.samplers.TPESampler(seed=hpo.seed + len(study.trials), n_startup_trials=hpo.n_startup_trials)
    trial_root = Path(runs_dir) / "hpo" / study_name
    foreign = _unknown_trial_dirs(study, trial_root)
    if foreign and not overwrite:
        raise FileExistsError(
            f"{trial_root} holds trial folder(s) {foreign} that study {study_name!r} in {storage} does not know "
            f"(from a deleted study of that name?) — pass --overwrite to replace each as its new trial ends, "
            f"or choose another --study-name"
        )

    def objective(trial: optuna.Trial) -> float:
        model_config, train_config = suggest_configs(trial, base_model, base_train)
        run_dir = trial_root / f"trial_{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir))
        outcome: dict[str, Any] = {}

        def fill(directory: Path) -> None:
            try:
                outcome["result"] = train_classifier(data, model_config, train_config, directory, trial=trial,
                                                     progress=progress)
            except optuna.TrialPruned as pruned:  # a pruned trial's curves are kept too
                outcome["pruned"] = pruned

        write_directory_atomic(run_dir, fill)
        if "pruned" in outcome:
            raise outcome["pruned"]
        result = outcome["result"]
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("threshold", result.threshold)
        trial.set_user_attr("train_seconds", round(result.train_seconds, 3))
        trial.set_user_attr("model_config", result.model_config.to_dict())
        trial.set_user_attr("train_config", train_config.to_dict())
        return result.best_val_f1

    study.optimize(objective, n_trials=hpo.n_trials)
    return study


def _unknown_trial_dirs(study: Any, trial_root: Path) -> list[str]:
    """Names of ``trial_<n>`` folders under ``trial_root`` with no trial ``n`` in ``study``."""
    found = [p for p in trial_root.glob("trial_*") if p.is_dir() and p.name[len("trial_"):].isdigit()]
    known = len(study.get_trials(deepcopy=False))  # read after listing: a folder's trial is already stored
    return sorted((p.name for p in found if int(p.name[len("trial_"):]) >= known), key=lambda n: int(n[6:]))


def describe_best(study: Any) -> str:
    """A few lines on the study's best trial (value, params, where its logs are)."""
    import optuna

    states = [t.state for t in study.trials]
    counts = {s.name.lower(): states.count(s) for s in optuna.trial.TrialState if states.count(s)}
    header = f"study {study.study_name!r}: {len(study.trials)} trial(s) {counts}"
    if not any(s == optuna.trial.TrialState.COMPLETE for s in states):
        return header + "\nno completed trial yet"
    best = study.best_trial
    lines = [header, f"best trial #{best.number}: validation F1 {best.value:.4f}"]
    lines += [f"  {k} = {v}" for k, v in sorted(best.params.items())]
    for key in ("best_epoch", "threshold", "run_dir"):
        if key in best.user_attrs:
            lines.append(f"  ({key}: {best.user_attrs[key]})")
    return "\n".join(lines)
