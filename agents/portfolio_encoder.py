"""A frozen encoder run once over a universe: every asset's window at every time -> its embedding.

The portfolio agents share one encoder across assets. Running it inside the policy would cost N encoder
passes per observation, every rollout step and every epoch; a frozen encoder's output for a window never
changes, so :func:`embed_panel` computes it once per (asset, bar) and returns a new :class:`features.Panel`
with ``window=1`` whose features are the embeddings. The unchanged env then observes ``N x E`` embedding
values (plus the weights) instead of ``N x window x F`` features. Timeline, prices, calendars and splits
are the original panel's; an asset's embedding before its first bar is zeros (the env's rule for windows).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from features.market_data import MarketData
from features.panel import Panel


def _asset_ids(panel: Panel) -> list[int]:
    mapping = panel.data.asset_map
    return [int(mapping[s]) for s in panel.symbols]


def _embed_rows(panel: Panel, encoder: nn.Module, batch: int) -> np.ndarray:
    """float32 (rows of panel.data, E): the embedding of the window ending at each dataset row of the panel's
    symbols (zeros for rows of symbols outside the panel)."""
    data, window = panel.data, panel.window
    out = np.zeros((len(data.timestamps), int(encoder.output_dim)), dtype=np.float32)
    padded = panel.padded_features
    base = 0
    for symbol, asset_id in zip(panel.symbols, _asset_ids(panel)):
        block = data.symbol_rows(symbol)
        n_rows = block.stop - block.start
        # the window ending at local row r is padded[base + r + 1 : base + r + 1 + window] (see Panel)
        starts = base + 1 + np.arange(n_rows)
        for lo in range(0, n_rows, batch):
            chunk = starts[lo : lo + batch]
            windows = torch.from_numpy(np.ascontiguousarray(padded[chunk[:, None] + np.arange(window)]))
            ids = torch.full((len(chunk),), asset_id, dtype=torch.int64)
            with torch.no_grad():
                out[block.start + lo : block.start + lo + len(chunk)] = encoder(windows, ids).numpy()
        base += window + n_rows
    return out


def embed_panel(panel: Panel, encoder: nn.Module, batch: int = 4096) -> Panel:
    """The panel with each asset's features replaced by ``encoder``'s embedding of its window (window 1).

    :param panel: the universe, its features prepared as the encoder expects (a supervised bundle's
        ``prepare(data)``: its features, scaler, asset ids and window).
    :param encoder: a module ``(B, window, F) float32, (B,) int64 asset ids -> (B, output_dim)`` with
        ``output_dim`` (a supervised bundle's ``encoder``); run in eval mode without gradients.
    :param batch: windows per forward pass.
    :return: a Panel on the same timeline (prices, calendars, splits) whose ``padded_features`` hold the
        embeddings (``n_features = output_dim``, ``window = 1``), zeros before an asset's first bar.
    """
    if not hasattr(encoder, "output_dim"):
        raise ValueError(f"encoder {type(encoder).__name__} has no output_dim; pass a supervised bundle's encoder")
    if isinstance(batch, bool) or int(batch) != batch or batch < 1:
        raise ValueError(f"batch={batch!r} must be a positive integer")
    was_training = encoder.training
    encoder.eval()
    try:
        rows = _embed_rows(panel, encoder, int(batch))
    finally:
        encoder.train(was_training)
    names = [f"emb_{i}" for i in range(rows.shape[1])]
    data: MarketData = dataclasses.replace(panel.data, window=1, feature_names=names, features=rows,
                                           raw_features=rows.astype(np.float64))
    out = Panel.from_market_data(data, panel.symbols)
    return out


def embedding_dim(encoder: Any) -> int:
    """The encoder's output size (its ``output_dim``).

    :param encoder: a supervised encoder.
    """
    return int(encoder.output_dim)


__all__ = ["embed_panel", "embedding_dim"]
