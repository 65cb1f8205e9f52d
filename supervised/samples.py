"""The supervised samples of one split, materialised once as in-memory arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.market_data import MarketData


@dataclass(frozen=True)
class SplitSamples:
    """Windows, asset ids, labels and class-balance weights of one split.

    :param split: the split name.
    :param rows: global row of each sample.
    :param windows: float32 (n, window, F).
    :param asset_ids: int64 (n,).
    :param labels: float32 (n,) of 0/1.
    :param weights: float32 (n,) class-imbalance weights (from the train labels).
    """

    split: str
    rows: np.ndarray
    windows: np.ndarray
    asset_ids: np.ndarray
    labels: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def split_samples(data: MarketData, split: str, *, min_samples: int = 1) -> SplitSamples:
    """Materialise ``split``'s labelled windows (a fresh copy; a few tens of MB for the default data).

    :param data: the dataset.
    :param split: ``"train"``, ``"validation"`` or ``"test"``.
    :param min_samples: raise ``ValueError`` when the split has fewer samples.
    """
    rows = data.sample_indices(split)
    if len(rows) < min_samples:
        raise ValueError(f"split {split!r} has {len(rows)} labelled sample(s); need at least {min_samples}")
    return SplitSamples(
        split=split,
        rows=rows,
        windows=np.ascontiguousarray(data.windows(rows), dtype=np.float32),
        asset_ids=data.row_asset_ids[rows].astype(np.int64),
        labels=data.labels[rows].astype(np.float32),
        weights=data.sample_weights(rows),
    )
