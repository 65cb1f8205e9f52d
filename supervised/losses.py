"""Binary losses on logits for imbalanced labels: focal loss (Lin et al., 2017) and weighted BCE.

Both take optional per-sample weights and return the weighted mean ``sum(w * loss) / sum(w)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES: tuple[str, ...] = ("focal", "weighted_bce")


def binary_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``alpha_t * (1 - p_t) ** gamma * -log(p_t)``, averaged.

    ``p_t`` is the predicted probability of the true class; ``alpha_t = alpha`` for positives and
    ``1 - alpha`` for negatives. ``gamma = 0`` gives alpha-weighted binary cross-entropy.

    :param logits: (B,) raw scores.
    :param targets: (B,) labels in {0, 1} (float).
    :param alpha: weight of the positive class, in [0, 1].
    :param gamma: focusing exponent (>= 0); larger down-weights easy examples more.
    :param sample_weights: optional (B,) non-negative weights.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"focal alpha={alpha} must be in [0, 1]")
    if gamma < 0:
        raise ValueError(f"focal gamma={gamma} must be >= 0")
    _check_pair(logits, targets)
    targets = targets.to(logits.dtype)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * targets + (1.0 - p) * (1.0 - targets)
    alpha_t = alpha * targets + (1.0 - alpha) * (1.0 - targets)
    return _weighted_mean(alpha_t * (1.0 - p_t) ** gamma * cross_entropy, sample_weights)


def weighted_bce_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    pos_weight: float = 1.0,
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy with positives weighted by ``pos_weight``, averaged.

    :param logits: (B,) raw scores.
    :param targets: (B,) labels in {0, 1} (float).
    :param pos_weight: weight of positive samples, usually ``n_negative / n_positive``
        (see :func:`pos_weight_from_labels`).
    :param sample_weights: optional (B,) non-negative weights.
    """
    if not pos_weight > 0:
        raise ValueError(f"pos_weight={pos_weight} must be > 0")
    _check_pair(logits, targets)
    targets = targets.to(logits.dtype)
    weight = torch.as_tensor(pos_weight, dtype=logits.dtype)
    losses = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight, reduction="none")
    return _weighted_mean(losses, sample_weights)


def pos_weight_from_labels(labels: torch.Tensor | list[float]) -> float:
    """``n_negative / n_positive`` of ``labels`` (1.0 when either class is absent).

    :param labels: 0/1 labels, usually the training split's.
    """
    labels = torch.as_tensor(labels, dtype=torch.float64)
    positives = float(labels.sum())
    negatives = float(labels.numel()) - positives
    return negatives / positives if positives > 0 and negatives > 0 else 1.0


def _check_pair(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")


def _weighted_mean(losses: torch.Tensor, sample_weights: torch.Tensor | None) -> torch.Tensor:
    if sample_weights is None:
        return losses.mean()
    if sample_weights.shape != losses.shape:
        raise ValueError(f"sample_weights {tuple(sample_weights.shape)} must match the batch {tuple(losses.shape)}")
    weights = sample_weights.to(losses.dtype)
    return (weights * losses).sum() / weights.sum().clamp_min(1e-12)
