"""Encoders: a feature window (B, W, F) plus asset ids (B,) -> an embedding (B, D).

Every encoder takes plain tensors, works for any batch size and exposes ``output_dim``, so the RL side
can wrap one inside a stable-baselines3 ``BaseFeaturesExtractor`` unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


def check_inputs(windows: torch.Tensor, asset_ids: torch.Tensor, window: int, n_features: int, n_assets: int) -> None:
    """Raise ``ValueError`` naming expected vs got when the inputs do not fit the encoder.

    :param windows: float32 (batch, window, n_features).
    :param asset_ids: int64 (batch,), each in ``[0, n_assets)``.
    :param window: expected bars per window.
    :param n_features: expected features per bar.
    :param n_assets: size of the asset embedding table.
    """
    expected = f"(batch, {window}, {n_features}) float32"
    if not isinstance(windows, torch.Tensor):
        raise TypeError(f"windows must be a torch.Tensor {expected}, got {type(windows).__name__}")
    shape_ok = windows.dim() == 3 and tuple(windows.shape[1:]) == (window, n_features)
    if not shape_ok or windows.dtype != torch.float32:
        got = f"{tuple(windows.shape)} {str(windows.dtype).replace('torch.', '')}"
        raise ValueError(f"windows must be {expected}, got {got}")
    if not isinstance(asset_ids, torch.Tensor):
        raise TypeError(f"asset_ids must be a torch.Tensor (batch,) int64, got {type(asset_ids).__name__}")
    if asset_ids.dim() != 1 or asset_ids.shape[0] != windows.shape[0] or asset_ids.dtype != torch.int64:
        got = f"{tuple(asset_ids.shape)} {str(asset_ids.dtype).replace('torch.', '')}"
        raise ValueError(f"asset_ids must be ({windows.shape[0]},) int64 to match windows, got {got}")
    if asset_ids.numel():
        low, high = int(asset_ids.min()), int(asset_ids.max())
        if low < 0 or high >= n_assets:
            bad = low if low < 0 else high
            raise ValueError(f"asset id {bad} is out of range: this model knows ids 0..{n_assets - 1}")


class AssetEmbedding(nn.Module):
    """A learned vector per asset id; ``dim=0`` turns it off (an empty (B, 0) tensor).

    :param n_assets: number of asset ids (largest id + 1).
    :param dim: embedding size.
    """

    def __init__(self, n_assets: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.table = nn.Embedding(n_assets, dim) if dim > 0 else None

    def forward(self, asset_ids: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            return asset_ids.new_zeros((asset_ids.shape[0], 0), dtype=torch.float32)
        return self.table(asset_ids)


class AttentionPooling(nn.Module):
    """Additive attention over time: ``softmax_t(v . tanh(W h_t))``-weighted sum of the states.

    :param dim: state size.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(dim, dim)
        self.score = nn.Linear(dim, 1, bias=False)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(torch.tanh(self.project(states))), dim=1)  # (B, T, 1)
        return (weights * states).sum(dim=1)


class _Encoder(nn.Module):
    """Shared input checking and the asset embedding; subclasses implement ``encode``."""

    output_dim: int

    def __init__(self, window: int, n_features: int, n_assets: int, asset_embedding_dim: int) -> None:
        super().__init__()
        self.window = window
        self.n_features = n_features
        self.n_assets = n_assets
        self.asset_embedding = AssetEmbedding(n_assets, asset_embedding_dim)

    def forward(self, windows: torch.Tensor, asset_ids: torch.Tensor) -> torch.Tensor:
        """Embed a batch: windows (B, W, F) float32, asset_ids (B,) int64 -> (B, output_dim)."""
        check_inputs(windows, asset_ids, self.window, self.n_features, self.n_assets)
        return self.encode(windows, self.asset_embedding(asset_ids))

    def encode(self, windows: torch.Tensor, assets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _with_assets(self, windows: torch.Tensor, assets: torch.Tensor) -> torch.Tensor:
        """The asset embedding concatenated to every time step: (B, W, F + E)."""
        return torch.cat([windows, assets[:, None, :].expand(-1, windows.shape[1], -1)], dim=-1)


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.LayerNorm(n_out), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class MLPEncoder(_Encoder):
    """The flattened window joined with the asset embedding, through Linear-LayerNorm-ReLU-Dropout blocks.

    :param hidden_sizes: widths of the hidden layers; the last is ``output_dim``.
    :param dropout: dropout after each block.
    """

    def __init__(
        self,
        window: int,
        n_features: int,
        n_assets: int,
        asset_embedding_dim: int = 4,
        hidden_sizes: tuple[int, ...] = (128, 64),
        dropout: float = 0.2,
    ) -> None:
        super().__init__(window, n_features, n_assets, asset_embedding_dim)
        self.layers = _mlp([window * n_features + asset_embedding_dim, *hidden_sizes], dropout)
        self.output_dim = int(hidden_sizes[-1])

    def encode(self, windows: torch.Tensor, assets: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([windows.flatten(1), assets], dim=1))


class RecurrentEncoder(_Encoder):
    """An LSTM or GRU over time (asset embedding on every step), pooled by attention or the last state.

    :param cell: ``"lstm"`` or ``"gru"``.
    :param hidden_size: recurrent state size (= ``output_dim``).
    :param num_layers: stacked recurrent layers.
    :param dropout: dropout between recurrent layers and on the pooled output.
    :param pooling: ``"attention"`` or ``"last"``.
    """

    def __init__(
        self,
        window: int,
        n_features: int,
        n_assets: int,
        asset_embedding_dim: int = 4,
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.2,
        pooling: str = "attention",
    ) -> None:
        super().__init__(window, n_features, n_assets, asset_embedding_dim)
        self.rnn = _recurrent(cell, n_features + asset_embedding_dim, hidden_size, num_layers, dropout)
        self.pool = AttentionPooling(hidden_size) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.output_dim = int(hidden_size)

    def encode(self, windows: torch.Tensor, assets: torch.Tensor) -> torch.Tensor:
        states, _ = self.rnn(self._with_assets(windows, assets))
        return self.dropout(_pool(states, self.pool))


class CNNLSTMEncoder(_Encoder):
    """1-D convolutions over time (Conv-ReLU-Dropout), then an LSTM, then attention or last-state pooling.

    :param conv_channels: output channels of each convolution.
    :param kernel_size: odd kernel length in bars ("same" padding keeps the window length).
    :param hidden_size: LSTM state size (= ``output_dim``).
    :param num_layers: stacked LSTM layers.
    :param dropout: dropout after each convolution, between LSTM layers and on the pooled output.
    :param pooling: ``"attention"`` or ``"last"``.
    """

    def __init__(
        self,
        window: int,
        n_features: int,
        n_assets: int,
        asset_embedding_dim: int = 4,
        conv_channels: tuple[int, ...] = (32, 32),
        kernel_size: int = 3,
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.2,
        pooling: str = "attention",
    ) -> None:
        super().__init__(window, n_features, n_assets, asset_embedding_dim)
        convs: list[nn.Module] = []
        channels = n_features + asset_embedding_dim
        for out in conv_channels:
            convs += [nn.Conv1d(channels, out, kernel_size, padding=kernel_size // 2), nn.ReLU(), nn.Dropout(dropout)]
            channels = out
        self.convs = nn.Sequential(*convs)
        self.rnn = _recurrent("lstm", channels, hidden_size, num_layers, dropout)
        self.pool = AttentionPooling(hidden_size) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.output_dim = int(hidden_size)

    def encode(self, windows: torch.Tensor, assets: torch.Tensor) -> torch.Tensor:
        steps = self.convs(self._with_assets(windows, assets).transpose(1, 2)).transpose(1, 2)
        states, _ = self.rnn(steps)
        return self.dropout(_pool(states, self.pool))


def _recurrent(cell: str, n_in: int, hidden_size: int, num_layers: int, dropout: float) -> nn.Module:
    kind = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
    return kind(n_in, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)


def _pool(states: torch.Tensor, attention: AttentionPooling | None) -> torch.Tensor:
    return attention(states) if attention is not None else states[:, -1]
