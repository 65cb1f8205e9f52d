"""Model shapes, input checks and that a few optimiser steps learn a tiny batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from features import DatasetConfig, LabelConfig, build_market_data, synthetic_bars
from supervised.losses import binary_focal_loss
from supervised.models import MODEL_KINDS, ModelConfig, build_model
from supervised.samples import split_samples

WINDOW, FEATURES, ASSETS = 8, 31, 2


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run fastest (and steadiest on a busy machine) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_data():
    bars = {"SYN": synthetic_bars(600, seed=0), "SYN2": synthetic_bars(600, seed=1)}
    return build_market_data(bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4)))


def small_config(kind: str, **changes) -> ModelConfig:
    settings = dict(kind=kind, window=WINDOW, n_features=FEATURES, n_assets=ASSETS, hidden_sizes=(32, 16),
                    hidden_size=16, conv_channels=(8,))
    settings.update(changes)
    return ModelConfig(**settings)


def batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, WINDOW, FEATURES, generator=gen), torch.randint(0, ASSETS, (n,), generator=gen)


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("n", [1, 5])
def test_forward_shapes_any_batch_size(kind: str, n: int) -> None:
    torch.manual_seed(0)
    model = build_model(small_config(kind))
    windows, ids = batch(n)
    embedding = model.encoder(windows, ids)
    assert embedding.shape == (n, model.encoder.output_dim)
    logits = model(windows, ids)
    assert logits.shape == (n,) and logits.dtype == torch.float32
    p = model.predict_proba(windows, ids)
    assert p.shape == (n,) and np.all((p > 0) & (p < 1))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_variants_build(kind: str) -> None:
    for changes in ({"asset_embedding_dim": 0}, {"pooling": "last", "num_layers": 2}, {"head_hidden": 8}):
        model = build_model(small_config(kind, **changes))
        assert model(*batch(3)).shape == (3,)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_a_few_steps_reduce_the_loss_on_real_windows(kind: str) -> None:
    samples = split_samples(tiny_data(), "train")
    x, ids = torch.from_numpy(samples.windows[:64]), torch.from_numpy(samples.asset_ids[:64])
    y = torch.from_numpy(samples.labels[:64])
    torch.manual_seed(0)
    model = build_model(small_config(kind, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = binary_focal_loss(model(x, ids), y, alpha=0.5, gamma=0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_wrong_window_shape_names_expected_and_got() -> None:
    model = build_model(small_config("lstm"))
    with pytest.raises(ValueError, match=r"windows must be \(batch, 8, 31\) float32, got \(4, 6, 31\) float32"):
        model(torch.zeros(4, 6, 31), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"got \(4, 8, 31\) float64"):
        model(torch.zeros(4, 8, 31, dtype=torch.float64), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"windows must be .* got \(8, 31\)"):
        model(torch.zeros(8, 31), torch.zeros(1, dtype=torch.int64))


def test_bad_asset_ids_are_named() -> None:
    model = build_model(small_config("gru"))
    windows = torch.zeros(3, WINDOW, FEATURES)
    with pytest.raises(ValueError, match="asset id 2 is out of range: this model knows ids 0..1"):
        model(windows, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="asset id -1 is out of range"):
        model(windows, torch.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match=r"asset_ids must be \(3,\) int64 .* got \(3,\) float32"):
        model(windows, torch.zeros(3))
    with pytest.raises(ValueError, match=r"asset_ids must be \(3,\) int64 .* got \(2,\) int64"):
        model(windows, torch.zeros(2, dtype=torch.int64))


def test_model_config_errors() -> None:
    with pytest.raises(ValueError, match="model kind='transformer' is not known"):
        ModelConfig(kind="transformer")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['hiden_size'\]"):
        ModelConfig.from_dict({"kind": "lstm", "hiden_size": 3})
    with pytest.raises(ValueError, match="kernel_size=4 must be odd"):
        ModelConfig(kind="cnn_lstm", kernel_size=4)
    with pytest.raises(ValueError, match="window=0.*call config.fit_to"):
        build_model(ModelConfig(kind="mlp"))


def test_fit_to_fills_the_data_shape_and_rejects_mismatches() -> None:
    config = ModelConfig(kind="mlp").fit_to(24, 31, 4)
    assert (config.window, config.n_features, config.n_assets) == (24, 31, 4)
    assert ModelConfig(kind="mlp", n_assets=10).fit_to(24, 31, 4).n_assets == 10  # room for more assets
    with pytest.raises(ValueError, match="window=16 does not match the data's window=24"):
        ModelConfig(kind="mlp", window=16).fit_to(24, 31, 4)
