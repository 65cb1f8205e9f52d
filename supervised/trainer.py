"""Train a classifier on a :class:`MarketData`: AdamW, ReduceLROnPlateau and early stopping on the
validation F1 of the positive class, gradient clipping, TensorBoard scalars, tqdm bars, full seeding.

The validation F1 of an epoch is the best F1 over the threshold grid on validation (the threshold is
chosen on validation, as the final evaluation does), so a loss that shifts the probabilities (focal
alpha, class weights) does not make a fixed 0.5 cut meaningless.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from configs.loader import config_to_dict, dataclass_from_dict
from features.labels import check_positive_rate
from features.market_data import MarketData

from .evaluation import DEFAULT_THRESHOLDS, choose_threshold, pr_auc, threshold_sweep
from .losses import LOSSES, binary_focal_loss, pos_weight_from_labels, weighted_bce_loss
from .models import Classifier, ModelConfig, build_model
from .samples import SplitRows, iter_batches, split_rows

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    :param epochs: maximum epochs.
    :param batch_size: samples per optimiser step.
    :param lr: AdamW learning rate.
    :param weight_decay: AdamW weight decay.
    :param loss: ``"focal"`` or ``"weighted_bce"`` (positive weight = n_negative / n_positive in train).
    :param focal_alpha: focal-loss weight of the positive class.
    :param focal_gamma: focal-loss focusing exponent.
    :param grad_clip: max gradient norm (0 disables clipping).
    :param lr_factor: ReduceLROnPlateau factor applied when validation F1 stalls.
    :param lr_patience: epochs without a better validation F1 before the LR is reduced.
    :param min_lr: lower bound of the learning rate.
    :param early_stopping_patience: epochs without a better validation F1 before stopping.
    :param seed: seeds weights, dropout and batch order.
    :param num_threads: torch CPU threads while training (1 is fastest for these small models: on 2
        busy cores, 2 threads measured 10-20x slower per epoch).
    :param use_sample_weights: weight samples by balanced class weights (from the train labels).
    :param deterministic: ``torch.use_deterministic_algorithms`` while training.
    :param eval_batch_size: samples per forward pass when validating (and, in :func:`supervised.run_supervised`,
        when predicting validation/test and scoring permutation importance); 1024 measured faster per
        sample than 4096 for the LSTM on one thread; predictions at 256, 1024 and 4096 were bit-identical
        (batches of a few dozen rows can differ by float32 rounding).
    :param min_positive_rate: share of positive labels the train and validation splits need; fewer is an
        error naming the label settings and the fix (see :func:`features.labels.check_positive_rate`).
    """

    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    loss: str = "focal"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    grad_clip: float = 1.0
    lr_factor: float = 0.5
    lr_patience: int = 3
    min_lr: float = 1e-5
    early_stopping_patience: int = 8
    seed: int = 0
    num_threads: int = 1
    use_sample_weights: bool = False
    deterministic: bool = True
    eval_batch_size: int = 1024
    min_positive_rate: float = 0.005

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} is not known; expected one of {list(LOSSES)}")
        for name in ("epochs", "batch_size", "num_threads", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor={self.lr_factor} must be in (0, 1)")
        for name in ("weight_decay", "grad_clip", "lr_patience", "early_stopping_patience", "min_lr", "focal_gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if not 0 <= self.focal_alpha <= 1:
            raise ValueError(f"focal_alpha={self.focal_alpha} must be in [0, 1]")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "train config") -> "TrainConfig":
        """Build from a mapping; unknown keys raise ``ValueError`` naming them."""
        return dataclass_from_dict(cls, dict(data or {}), where)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


@dataclass
class TrainResult:
    """The best classifier (by validation F1) and how training went.

    :param classifier: the model with the best epoch's weights, in eval mode.
    :param model_config: the architecture, with the data's shape filled in.
    :param train_config: the settings used.
    :param best_epoch: 1-based epoch of the best validation F1.
    :param best_val_f1: that F1 (positive class, at ``threshold``).
    :param threshold: the validation threshold of the best epoch.
    :param history: per-epoch dicts of the logged scalars.
    :param train_seconds: wall time of the training loop.
    :param stopped_early: True when early stopping ended training before ``epochs``.
    """

    classifier: Classifier
    model_config: ModelConfig
    train_config: TrainConfig
    best_epoch: int
    best_val_f1: float
    threshold: float
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    stopped_early: bool = False


def train_classifier(
    data: MarketData,
    model_config: ModelConfig,
    train_config: TrainConfig | None = None,
    run_dir: str | Path | None = None,
    *,
    trial: Any = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model_config`` on ``data``'s train split, selecting epochs on its validation split.

    :param data: the dataset (windows are gathered per batch from its feature matrix, never for a
        whole split at once).
    :param model_config: the architecture; window/n_features/n_assets are filled from ``data``.
    :param train_config: optimisation settings (defaults if None).
    :param run_dir: TensorBoard event files go here; None: no logging.
    :param trial: an ``optuna.Trial``: validation F1 is reported each epoch and ``optuna.TrialPruned``
        is raised when the pruner says so.
    :param progress: show tqdm bars for epochs and batches.
    """
    config = train_config or TrainConfig()
    model_config = model_config.fit_to(data.window, data.n_features, data.n_assets)
    train = split_rows(data, "train", min_samples=2)
    validation = split_rows(data, "validation")
    for samples in (train, validation):
        check_positive_rate(samples.labels, samples.split, data.label, config.min_positive_rate, data.timeframe)
    writer = _summary_writer(run_dir, model_config, config)
    try:
        with torch_settings(config.num_threads, config.deterministic):
            return _fit(train, validation, model_config, config, writer, trial, progress)
    finally:
        if writer is not None:
            writer.close()


def _fit(
    train: SplitRows,
    validation: SplitRows,
    model_config: ModelConfig,
    config: TrainConfig,
    writer: Any,
    trial: Any,
    progress: bool,
) -> TrainResult:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = build_model(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr
    )
    loss_fn = make_loss(config, train.labels)

    best_f1, best_epoch, best_threshold, best_state = -1.0, 0, 0.5, None
    history: list[dict[str, float]] = []
    stopped_early = False
    start = time.perf_counter()
    epochs = tqdm(range(1, config.epochs + 1), desc=f"{model_config.kind} epochs", disable=not progress, unit="epoch")
    for epoch in epochs:
        epoch_start = time.perf_counter()
        train_loss = _train_epoch(model, optimizer, loss_fn, train, rng, config, progress)
        scores = _validate(model, loss_fn, validation, config.use_sample_weights, config.eval_batch_size)
        scheduler.step(scores["f1"])
        row = {"epoch": epoch, "train/loss": train_loss, **{f"val/{k}": v for k, v in scores.items()}}
        row["charts/learning_rate"] = optimizer.param_groups[0]["lr"]
        row["charts/epoch_seconds"] = time.perf_counter() - epoch_start
        history.append(row)
        if writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    writer.add_scalar(key, value, epoch)
        if scores["f1"] > best_f1:
            best_f1, best_epoch, best_threshold = scores["f1"], epoch, scores["threshold"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        epochs.set_postfix(loss=f"{train_loss:.4f}", val_f1=f"{scores['f1']:.4f}", best=f"{best_f1:.4f}")
        if trial is not None:
            _report_to_trial(trial, scores["f1"], epoch)
        patience = config.early_stopping_patience
        if patience > 0 and epoch - best_epoch >= patience and epoch < config.epochs:
            stopped_early = True
            break
    epochs.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        classifier=model,
        model_config=model_config,
        train_config=config,
        best_epoch=best_epoch,
        best_val_f1=best_f1,
        threshold=best_threshold,
        history=history,
        train_seconds=time.perf_counter() - start,
        stopped_early=stopped_early,
    )


def _train_epoch(
    model: Classifier,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    train: SplitRows,
    rng: np.random.Generator,
    config: TrainConfig,
    progress: bool,
) -> float:
    model.train()
    ids, y = torch.from_numpy(train.asset_ids), torch.from_numpy(train.labels)
    w = torch.from_numpy(train.weights) if config.use_sample_weights else None
    order = rng.permutation(len(train))
    batches = iter_batches(train, config.batch_size, order)
    n_batches = -(-len(train) // config.batch_size)
    total = 0.0
    for positions, windows in tqdm(batches, desc="batches", total=n_batches, leave=False, disable=not progress,
                                   unit="batch"):
        idx = torch.from_numpy(positions)
        loss = loss_fn(model(torch.from_numpy(windows), ids[idx]), y[idx], None if w is None else w[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        total += float(loss.detach()) * len(idx)
    return total / len(train)


@torch.no_grad()
def _validate(
    model: Classifier,
    loss_fn: LossFn,
    validation: SplitRows,
    use_sample_weights: bool,
    batch_size: int,
) -> dict[str, float]:
    model.eval()
    ids, y = torch.from_numpy(validation.asset_ids), torch.from_numpy(validation.labels)
    w = torch.from_numpy(validation.weights) if use_sample_weights else None
    # One preallocated output, filled batch by batch. Keeping every batch's small logits tensor alive for a
    # final torch.cat pinned pieces of the heap between the batches' freed windows and activations, so
    # glibc's heap grew by ~4 MB a batch whenever those came from the heap rather than mmap (which depends
    # on its dynamic mmap threshold, hence only some runs): +450-800 MB over validation at 100 symbols.
    logits = torch.empty(len(validation), dtype=torch.float32)
    for positions, windows in iter_batches(validation, batch_size):
        idx = torch.from_numpy(positions)
        logits[idx] = model(torch.from_numpy(windows), ids[idx])
    labels, probabilities = y.numpy(), torch.sigmoid(logits).double().numpy()
    best = choose_threshold(threshold_sweep(labels, probabilities, DEFAULT_THRESHOLDS))
    area = pr_auc(labels, probabilities)
    return {
        "loss": float(loss_fn(logits, y, w)),
        "f1": best["f1"],
        "precision": best["precision"],
        "recall": best["recall"],
        "threshold": best["threshold"],
        "pr_auc": area if np.isfinite(area) else 0.0,
    }


def make_loss(config: TrainConfig, train_labels: np.ndarray) -> LossFn:
    """The loss of ``config.loss`` as ``fn(logits, targets, sample_weights_or_None)``.

    :param config: loss settings.
    :param train_labels: the train labels (for the weighted-BCE positive weight).
    """
    if config.loss == "focal":
        return lambda logits, y, w: binary_focal_loss(logits, y, config.focal_alpha, config.focal_gamma, w)
    pos_weight = pos_weight_from_labels(torch.from_numpy(np.asarray(train_labels)))
    return lambda logits, y, w: weighted_bce_loss(logits, y, pos_weight, w)


@contextlib.contextmanager
def torch_settings(num_threads: int, deterministic: bool) -> Iterator[None]:
    """Set torch's CPU threads and deterministic-algorithms flag, restoring both afterwards.

    :param num_threads: intra-op threads.
    :param deterministic: value for ``torch.use_deterministic_algorithms``.
    """
    threads, was_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(deterministic)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_deterministic)


def _report_to_trial(trial: Any, f1: float, epoch: int) -> None:
    import optuna

    trial.report(f1, epoch)
    if trial.should_prune():
        raise optuna.TrialPruned(f"pruned at epoch {epoch} (validation F1 {f1:.4f})")


def _summary_writer(run_dir: str | Path | None, model_config: ModelConfig, config: TrainConfig) -> Any:
    if run_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter  # imported here: slow, and only needed with a run_dir

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(log_dir=str(run_dir))
    try:
        writer.add_text("config/model", f"```\n{json.dumps(model_config.to_dict(), indent=2)}\n```")
        writer.add_text("config/train", f"```\n{json.dumps(config.to_dict(), indent=2)}\n```")
    except BaseException:  # a SIGTERM here: the writer's thread must not outlive the run folder's clean-up
        writer.close()
        raise
    return writer
