"""The classifiers: an encoder (window + asset id -> embedding) and a head (embedding -> one logit).

``build_model(ModelConfig(kind="lstm", window=24, n_features=31, n_assets=4))`` gives a
:class:`Classifier` whose ``forward`` returns logits of P(label = 1) and whose ``encoder`` can be reused
by the RL agents.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from configs.loader import config_to_dict, dataclass_from_dict

from .encoders import CNNLSTMEncoder, MLPEncoder, RecurrentEncoder

MODEL_KINDS: tuple[str, ...] = ("mlp", "lstm", "gru", "cnn_lstm")
POOLINGS: tuple[str, ...] = ("attention", "last")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one classifier. ``window``, ``n_features`` and ``n_assets`` of 0 mean "take them
    from the data" (see :meth:`fit_to`); :func:`build_model` needs them set.

    :param kind: ``"mlp"``, ``"lstm"``, ``"gru"`` or ``"cnn_lstm"``.
    :param window: bars per input window.
    :param n_features: features per bar.
    :param n_assets: size of the asset-id embedding table (largest id + 1).
    :param asset_embedding_dim: asset embedding size (0 turns it off).
    :param hidden_sizes: MLP hidden layer widths.
    :param hidden_size: LSTM/GRU state size.
    :param num_layers: stacked recurrent layers.
    :param conv_channels: CNN-LSTM convolution channels.
    :param kernel_size: CNN-LSTM kernel length (odd).
    :param pooling: recurrent pooling over time, ``"attention"`` or ``"last"``.
    :param dropout: dropout probability in the encoder and before the head.
    :param head_hidden: width of a hidden layer in the head; 0 gives a single linear layer.
    """

    kind: str = "mlp"
    window: int = 0
    n_features: int = 0
    n_assets: int = 0
    asset_embedding_dim: int = 4
    hidden_sizes: tuple[int, ...] = (128, 64)
    hidden_size: int = 64
    num_layers: int = 1
    conv_channels: tuple[int, ...] = (32, 32)
    kernel_size: int = 3
    pooling: str = "attention"
    dropout: float = 0.2
    head_hidden: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(v) for v in self.hidden_sizes))
        object.__setattr__(self, "conv_channels", tuple(int(v) for v in self.conv_channels))
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind={self.kind!r} is not known; expected one of {list(MODEL_KINDS)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r} is not known; expected one of {list(POOLINGS)}")
        for name in ("window", "n_features", "n_assets", "asset_embedding_dim", "head_hidden"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes={list(self.hidden_sizes)} needs at least one positive width")
        if self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError(f"hidden_size={self.hidden_size} and num_layers={self.num_layers} must be >= 1")
        if not self.conv_channels or min(self.conv_channels) < 1:
            raise ValueError(f"conv_channels={list(self.conv_channels)} needs at least one positive width")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={self.kernel_size} must be odd (same-length convolution)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "model config") -> "ModelConfig":
        """Build from a mapping; unknown keys raise ``ValueError`` naming them."""
        return dataclass_from_dict(cls, dict(data or {}), where)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def fit_to(self, window: int, n_features: int, n_assets: int) -> "ModelConfig":
        """This config with the data's shape filled in; a set value that disagrees raises ``ValueError``.

        :param window: the data's window.
        :param n_features: the data's features per bar.
        :param n_assets: the data's asset table size.
        """
        given = {"window": window, "n_features": n_features, "n_assets": n_assets}
        for name, value in given.items():
            mine = getattr(self, name)
            if mine and mine != value and not (name == "n_assets" and mine > value):
                raise ValueError(f"model config {name}={mine} does not match the data's {name}={value}")
        return dataclasses.replace(
            self, window=window, n_features=n_features, n_assets=max(self.n_assets, n_assets)
        )


class Classifier(nn.Module):
    """``head(encoder(windows, asset_ids))`` -> one logit of P(label = 1) per sample.

    :param encoder: a module mapping (B, W, F) float32 and (B,) int64 to (B, ``encoder.output_dim``).
    :param head: a module mapping (B, ``encoder.output_dim``) to (B, 1).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, windows: torch.Tensor, asset_ids: torch.Tensor) -> torch.Tensor:
        """Logits, shape (B,)."""
        return self.head(self.encoder(windows, asset_ids)).squeeze(-1)

    @torch.no_grad()
    def predict_proba(
        self, windows: torch.Tensor | np.ndarray, asset_ids: torch.Tensor | np.ndarray, batch_size: int = 1024
    ) -> np.ndarray:
        """P(label = 1) as float64 numpy (n,), in eval mode and batches of ``batch_size``.

        :param windows: (n, W, F) float32 tensor or array.
        :param asset_ids: (n,) integer tensor or array.
        :param batch_size: samples per forward pass.
        """
        windows = torch.as_tensor(windows)
        asset_ids = torch.as_tensor(asset_ids)
        if asset_ids.dtype != torch.int64 and not asset_ids.is_floating_point():
            asset_ids = asset_ids.long()
        was_training = self.training
        # a live loop calls this once per bar: setting every submodule's mode costs more than the forward pass, so
        # it is skipped when all of them are in eval mode already (what eval() then train(False) leaves anyway)
        switch = any(module.training for module in self.modules())
        if switch:
            self.eval()
        # filled batch by batch (not a list of per-batch outputs joined at the end): small outputs kept
        # alive between batches fragment glibc's heap around each batch's freed activations
        out = np.empty(len(windows), dtype=np.float64)
        try:
            for i in range(0, len(windows), batch_size):
                batch = self(windows[i : i + batch_size], asset_ids[i : i + batch_size])
                out[i : i + batch_size] = torch.sigmoid(batch).double().numpy()
                del batch  # freed before the next batch's forward pass
        finally:
            if switch:
                self.train(was_training)
        return out


def build_encoder(config: ModelConfig) -> nn.Module:
    """The encoder of ``config.kind`` (its ``output_dim`` attribute is the embedding size)."""
    _check_shape_set(config)
    common = dict(
        window=config.window,
        n_features=config.n_features,
        n_assets=config.n_assets,
        asset_embedding_dim=config.asset_embedding_dim,
        dropout=config.dropout,
    )
    if config.kind == "mlp":
        return MLPEncoder(hidden_sizes=config.hidden_sizes, **common)
    if config.kind in ("lstm", "gru"):
        return RecurrentEncoder(
            cell=config.kind,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            pooling=config.pooling,
            **common,
        )
    return CNNLSTMEncoder(
        conv_channels=config.conv_channels,
        kernel_size=config.kernel_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        pooling=config.pooling,
        **common,
    )


def build_head(input_dim: int, config: ModelConfig) -> nn.Module:
    """Dropout then Linear to one logit, with an optional hidden ReLU layer (``config.head_hidden``)."""
    if config.head_hidden:
        return nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(input_dim, config.head_hidden),
            nn.ReLU(),
            nn.Linear(config.head_hidden, 1),
        )
    return nn.Sequential(nn.Dropout(config.dropout), nn.Linear(input_dim, 1))


def build_model(config: ModelConfig) -> Classifier:
    """A freshly initialised :class:`Classifier` (seed torch first for reproducible weights).

    :param config: the architecture, with ``window``, ``n_features`` and ``n_assets`` set.
    """
    encoder = build_encoder(config)
    return Classifier(encoder, build_head(encoder.output_dim, config))


def _check_shape_set(config: ModelConfig) -> None:
    unset = [name for name in ("window", "n_features", "n_assets") if getattr(config, name) < 1]
    if unset:
        raise ValueError(
            f"model config {', '.join(f'{n}={getattr(config, n)}' for n in unset)}: set them, or call "
            "config.fit_to(data.window, data.n_features, data.n_assets) first"
        )
