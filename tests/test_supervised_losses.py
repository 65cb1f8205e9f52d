"""Focal loss and weighted BCE against their formulas on known values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from supervised.losses import binary_focal_loss, pos_weight_from_labels, weighted_bce_loss

LOGITS = torch.tensor([2.0, -1.0, 0.5, -3.0], dtype=torch.float64)
TARGETS = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)


def focal_by_hand(alpha: float, gamma: float) -> list[float]:
    out = []
    for x, y in zip(LOGITS.tolist(), TARGETS.tolist()):
        p = 1 / (1 + math.exp(-x))
        p_t = p if y == 1 else 1 - p
        a_t = alpha if y == 1 else 1 - alpha
        out.append(-a_t * (1 - p_t) ** gamma * math.log(p_t))
    return out


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 1.0), (0.9, 3.0)])
def test_focal_loss_equals_its_formula(alpha: float, gamma: float) -> None:
    expected = sum(focal_by_hand(alpha, gamma)) / 4
    assert float(binary_focal_loss(LOGITS, TARGETS, alpha, gamma)) == pytest.approx(expected, rel=1e-12)


def test_gamma_zero_is_alpha_weighted_bce() -> None:
    bce = F.binary_cross_entropy_with_logits(LOGITS, TARGETS, reduction="none")
    weights = torch.where(TARGETS == 1, 0.25, 0.75)
    expected = float((weights * bce).mean())
    assert float(binary_focal_loss(LOGITS, TARGETS, alpha=0.25, gamma=0.0)) == pytest.approx(expected, rel=1e-12)
    half = float(binary_focal_loss(LOGITS, TARGETS, alpha=0.5, gamma=0.0))
    assert half == pytest.approx(0.5 * float(bce.mean()), rel=1e-12)


def test_focal_loss_down_weights_easy_examples() -> None:
    easy = binary_focal_loss(torch.tensor([4.0]), torch.tensor([1.0]), 0.5, 2.0)
    easy_bce = binary_focal_loss(torch.tensor([4.0]), torch.tensor([1.0]), 0.5, 0.0)
    assert float(easy) < 0.01 * float(easy_bce)


def test_sample_weights_give_a_weighted_mean() -> None:
    weights = torch.tensor([1.0, 0.0, 2.0, 1.0], dtype=torch.float64)
    per_sample = focal_by_hand(0.25, 2.0)
    expected = (per_sample[0] + 2 * per_sample[2] + per_sample[3]) / 4.0
    got = binary_focal_loss(LOGITS, TARGETS, 0.25, 2.0, sample_weights=weights)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_weighted_bce_equals_its_formula() -> None:
    pos_weight = 3.0
    expected = 0.0
    for x, y in zip(LOGITS.tolist(), TARGETS.tolist()):
        p = 1 / (1 + math.exp(-x))
        expected += -(pos_weight * y * math.log(p) + (1 - y) * math.log(1 - p))
    assert float(weighted_bce_loss(LOGITS, TARGETS, pos_weight)) == pytest.approx(expected / 4, rel=1e-12)
    weights = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    unweighted = F.binary_cross_entropy_with_logits(LOGITS, TARGETS, reduction="none")
    got = weighted_bce_loss(LOGITS, TARGETS, 1.0, sample_weights=weights)
    assert float(got) == pytest.approx(float(unweighted[1:3].mean()), rel=1e-12)


def test_pos_weight_from_class_balance() -> None:
    assert pos_weight_from_labels([1, 0, 0, 0]) == 3.0
    assert pos_weight_from_labels([0, 0]) == 1.0


def test_extreme_logits_give_finite_gradients() -> None:
    logits = torch.tensor([80.0, -80.0, 80.0, -80.0], requires_grad=True)
    targets = torch.tensor([0.0, 1.0, 1.0, 0.0])
    loss = binary_focal_loss(logits, targets) + weighted_bce_loss(logits, targets, 4.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="focal alpha=1.5"):
        binary_focal_loss(LOGITS, TARGETS, alpha=1.5)
    with pytest.raises(ValueError, match="focal gamma=-1"):
        binary_focal_loss(LOGITS, TARGETS, gamma=-1)
    with pytest.raises(ValueError, match=r"logits \(4,\) and targets \(3,\)"):
        weighted_bce_loss(LOGITS, TARGETS[:3])
    with pytest.raises(ValueError, match="sample_weights"):
        binary_focal_loss(LOGITS, TARGETS, sample_weights=torch.ones(3, dtype=torch.float64))
