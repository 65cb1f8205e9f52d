"""The supervised samples of one split: row indices into the flat feature matrix, windows gathered on demand.

:class:`SplitRows` (from :func:`split_rows`) is what the trainer and the evaluation use: it holds the
sample rows, asset ids, labels and weights of a split (a few bytes per sample) and a reference to the
dataset's (N, F) float32 feature matrix, and :meth:`SplitRows.gather` builds the (b, window, F) windows
of just the samples asked for. Windows are therefore never materialised for a whole split at once: a
1M-row dataset with a 24-bar window of 31 features would need 3 GB for them.

:class:`SplitSamples` (from :func:`split_samples`) is the same split with every window materialised as
one array: convenient for small data and tests (``samples.windows``), and what :meth:`SplitRows.materialise`
returns. Both answer :meth:`gather`, :meth:`feature_series` and :func:`iter_batches`, so the evaluation
code accepts either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Union

import numpy as np

from features.market_data import MarketData


@dataclass(frozen=True)
class SplitSamples:
    """Windows, asset ids, labels and class-balance weights of one split, all in memory.

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

    @property
    def n_features(self) -> int:
        return int(self.windows.shape[-1])

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """The windows of the samples at ``positions`` (indices into this split), float32 (b, W, F)."""
        return self.windows[positions]

    def feature_series(self, positions: np.ndarray, feature: int) -> np.ndarray:
        """Feature ``feature`` over the window of each sample at ``positions``, float32 (b, W)."""
        return self.windows[positions, :, feature]


@dataclass(frozen=True)
class SplitRows:
    """One split's samples as rows of the feature matrix; windows are gathered per batch.

    :param split: the split name.
    :param rows: int64 (n,) global row of each sample (the last bar of its window).
    :param asset_ids: int64 (n,).
    :param labels: float32 (n,) of 0/1.
    :param weights: float32 (n,) class-imbalance weights (from the train labels).
    :param features: the dataset's float32 (N, F) scaled feature matrix (a reference, not a copy).
    :param window: bars per window.
    """

    split: str
    rows: np.ndarray
    asset_ids: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    features: np.ndarray
    window: int

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def n_features(self) -> int:
        return int(self.features.shape[-1])

    def _window_rows(self, positions: np.ndarray) -> np.ndarray:
        steps = np.arange(-self.window + 1, 1, dtype=np.int64)
        return self.rows[positions][:, None] + steps[None, :]

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """The windows of the samples at ``positions`` (indices into this split), float32 (b, W, F), a
        fresh array equal to ``MarketData.windows(rows[positions])``."""
        return np.ascontiguousarray(self.features[self._window_rows(positions)], dtype=np.float32)

    def feature_series(self, positions: np.ndarray, feature: int) -> np.ndarray:
        """Feature ``feature`` over the window of each sample at ``positions``, float32 (b, W)."""
        return self.features[self._window_rows(positions), feature]

    def subset(self, positions: np.ndarray) -> "SplitRows":
        """The samples at ``positions`` (in that order) as a smaller :class:`SplitRows`."""
        positions = np.asarray(positions, dtype=np.int64)
        return SplitRows(self.split, self.rows[positions], self.asset_ids[positions], self.labels[positions],
                         self.weights[positions], self.features, self.window)

    def materialise(self) -> SplitSamples:
        """Every window of this split in one array (n x window x F float32: mind the size)."""
        return SplitSamples(self.split, self.rows, self.gather(np.arange(len(self))), self.asset_ids,
                            self.labels, self.weights)


Samples = Union[SplitSamples, SplitRows]


def split_rows(data: MarketData, split: str, *, min_samples: int = 1) -> SplitRows:
    """``split``'s labelled samples as rows of ``data.features`` (no windows are built).

    :param data: the dataset.
    :param split: ``"train"``, ``"validation"`` or ``"test"``.
    :param min_samples: raise ``ValueError`` when the split has fewer samples.
    """
    rows = data.sample_indices(split)
    if len(rows) < min_samples:
        raise ValueError(f"split {split!r} has {len(rows)} labelled sample(s); need at least {min_samples}")
    if data.features.dtype != np.float32:
        raise ValueError(f"the feature matrix is {data.features.dtype}; expected float32")
    return SplitRows(
        split=split,
        rows=rows,
        asset_ids=data.row_asset_ids[rows].astype(np.int64),
        labels=data.labels[rows].astype(np.float32),
        weights=data.sample_weights(rows),
        features=data.features,
        window=data.window,
    )


def split_samples(data: MarketData, split: str, *, min_samples: int = 1) -> SplitSamples:
    """Materialise ``split``'s labelled windows (a fresh (n, window, F) copy: fine for the default data,
    gigabytes for a large dataset; the trainer and the evaluation use :func:`split_rows` instead).

    :param data: the dataset.
    :param split: ``"train"``, ``"validation"`` or ``"test"``.
    :param min_samples: raise ``ValueError`` when the split has fewer samples.
    """
    return split_rows(data, split, min_samples=min_samples).materialise()


def iter_batches(
    samples: Samples, batch_size: int, order: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(positions, windows)`` of consecutive batches of at most ``batch_size`` samples.

    :param samples: the split.
    :param batch_size: samples per batch (>= 1).
    :param order: the sample positions to visit, in order (default: all, in split order).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    order = np.arange(len(samples), dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)
    for start in range(0, len(order), batch_size):
        positions = order[start : start + batch_size]
        yield positions, samples.gather(positions)


def predict_samples(
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray], samples: Samples, batch_size: int = 1024
) -> np.ndarray:
    """``predict(windows, asset_ids)`` over a split in batches of ``batch_size``: float64 (n,).

    :param predict: probability function of (b, W, F) float32 windows and (b,) int64 asset ids.
    :param samples: the split.
    :param batch_size: samples per call of ``predict``.
    """
    out = np.empty(len(samples), dtype=np.float64)
    for positions, windows in iter_batches(samples, batch_size):
        out[positions] = np.asarray(predict(windows, samples.asset_ids[positions]), dtype=np.float64).ravel()
    return out
