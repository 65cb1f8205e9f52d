"""``MarketData``: the numpy product of the feature pipeline, read by the simulator, env and models.

All symbols are stacked row-wise; ``offsets[i]:offsets[i+1]`` are symbol i's rows in time order.
Saved as a directory of ``.npy`` files plus ``manifest.json`` (versioned, with the config, feature
names, scaler, asset map, split ranges and hashes of the config and the source bars).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic_io import write_directory_atomic
from .scaling import FeatureScaler
from .splits import SPLITS

FORMAT_VERSION = 1
_ARRAYS = ("timestamps", "prices", "features", "labels", "row_asset_ids", "offsets")


@dataclass
class MarketData:
    """Feature windows, prices, labels and splits of one or more symbols.

    :param symbols: symbol names, in row-block order.
    :param asset_ids: asset id of each symbol (from the persisted asset map).
    :param feature_names: names of the columns of ``features``.
    :param window: observation lookback in bars.
    :param timeframe: bar length (``"1Day"``, ``"1Hour"``).
    :param offsets: int64 (S+1,) row offsets of each symbol.
    :param timestamps: int64 (N,) UTC nanoseconds.
    :param prices: float64 (N, 5): open, high, low, close, volume.
    :param features: float32 (N, F) scaled features; warm-up rows hold 0.
    :param labels: float32 (N,) 1/0, NaN where there is no label.
    :param row_asset_ids: int64 (N,) asset id of each row.
    :param split_ranges: split name -> int64 (S, 2) local ``[start, end)`` rows per symbol.
    :param scaler: the scaler fit on train rows.
    :param label: the label definition (profit, stop, horizon).
    :param config: the dataset config as a plain dict.
    :param hashes: ``config`` and ``source`` sha256 digests.
    """

    symbols: list[str]
    asset_ids: list[int]
    feature_names: list[str]
    window: int
    timeframe: str
    offsets: np.ndarray
    timestamps: np.ndarray
    prices: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    row_asset_ids: np.ndarray
    split_ranges: dict[str, np.ndarray]
    scaler: FeatureScaler
    label: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)

    # ----- lookups -------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def n_assets(self) -> int:
        """Embedding table size: largest asset id + 1."""
        return int(max(self.asset_ids)) + 1

    @property
    def asset_map(self) -> dict[str, int]:
        return dict(zip(self.symbols, self.asset_ids))

    @property
    def open(self) -> np.ndarray:
        return self.prices[:, 0]

    @property
    def high(self) -> np.ndarray:
        return self.prices[:, 1]

    @property
    def low(self) -> np.ndarray:
        return self.prices[:, 2]

    @property
    def close(self) -> np.ndarray:
        return self.prices[:, 3]

    @property
    def volume(self) -> np.ndarray:
        return self.prices[:, 4]

    def symbol_index(self, symbol: str) -> int:
        try:
            return self.symbols.index(symbol)
        except ValueError:
            raise ValueError(f"symbol {symbol!r} is not in this dataset; it has {self.symbols}") from None

    def symbol_rows(self, symbol: str) -> slice:
        i = self.symbol_index(symbol)
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def split_range(self, split: str, symbol: str) -> tuple[int, int]:
        """Global ``[start, end)`` rows of ``symbol`` in ``split``."""
        _check_split(split)
        i = self.symbol_index(symbol)
        start, end = self.split_ranges[split][i]
        return int(self.offsets[i] + start), int(self.offsets[i] + end)

    def sample_indices(self, split: str, symbols: list[str] | None = None) -> np.ndarray:
        """Global rows of ``split`` that have a label and a full window (the supervised samples).

        :param split: ``"train"``, ``"validation"`` or ``"test"``.
        :param symbols: restrict to these symbols; None takes all.
        """
        _check_split(split)
        chosen = []
        for symbol in symbols or self.symbols:
            start, end = self.split_range(split, symbol)
            rows = np.arange(start, end, dtype=np.int64)
            chosen.append(rows[~np.isnan(self.labels[rows])])
        return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)

    def windows(self, rows: np.ndarray) -> np.ndarray:
        """Feature windows ending at each of ``rows``: float32 (n, window, F), a fresh array.

        :param rows: global row indices (each at least ``window - 1`` rows into its symbol's block).
        """
        rows = np.asarray(rows, dtype=np.int64)
        steps = np.arange(-self.window + 1, 1, dtype=np.int64)
        return self.features[rows[:, None] + steps[None, :]]

    def class_weights(self) -> np.ndarray:
        """Balanced class weights ``n / (2 * n_class)`` from the train labels (float64, shape (2,))."""
        labels = self.labels[self.sample_indices("train")]
        counts = np.array([(labels == 0).sum(), (labels == 1).sum()], dtype=np.float64)
        return np.where(counts > 0, counts.sum() / (2.0 * np.maximum(counts, 1)), 0.0)

    def sample_weights(self, rows: np.ndarray) -> np.ndarray:
        """Per-sample class-imbalance weights for labelled ``rows`` (float32)."""
        weights = self.class_weights()
        return weights[self.labels[rows].astype(np.int64)].astype(np.float32)

    def summary(self) -> str:
        """A short human-readable description (symbols, bars, features, splits, label balance)."""
        lines = [
            f"MarketData: {len(self.symbols)} symbol(s), {len(self.timestamps)} bars ({self.timeframe}), "
            f"{self.n_features} features, window {self.window}",
            f"label: +{self.label['profit']:.1%} before -{self.label['stop']:.1%} within {self.label['horizon']} bars",
        ]
        for split in SPLITS:
            rows = self.sample_indices(split)
            positives = float(np.mean(self.labels[rows])) if len(rows) else float("nan")
            stamps = self.timestamps[rows]
            span = (
                f"{np.datetime64(int(stamps.min()), 'ns').astype('datetime64[D]')} .. "
                f"{np.datetime64(int(stamps.max()), 'ns').astype('datetime64[D]')}"
                if len(rows)
                else "empty"
            )
            lines.append(f"  {split:<10} {len(rows):>7} samples  positives {positives:6.1%}  {span}")
        return "\n".join(lines)

    # ----- persistence ---------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "symbols": self.symbols,
            "asset_ids": [int(v) for v in self.asset_ids],
            "feature_names": self.feature_names,
            "window": self.window,
            "timeframe": self.timeframe,
            "label": self.label,
            "scaler": self.scaler.to_dict(),
            "split_ranges": {k: v.tolist() for k, v in self.split_ranges.items()},
            "config": self.config,
            "hashes": self.hashes,
            "arrays": {name: f"{name}.npy" for name in _ARRAYS},
        }

    def save(self, path: str | Path) -> Path:
        """Write the dataset directory atomically (built in a temp dir, then renamed into place)."""
        def fill(directory: Path) -> None:
            for name in _ARRAYS:
                np.save(directory / f"{name}.npy", getattr(self, name), allow_pickle=False)
            (directory / "manifest.json").write_text(json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n")

        return write_directory_atomic(path, fill)

    @classmethod
    def load(cls, path: str | Path) -> "MarketData":
        """Read a directory written by :meth:`save` without recomputing anything."""
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"{path} is not a dataset directory: {manifest_path} is missing")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{manifest_path} is not valid JSON ({exc}); rebuild the dataset") from exc
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"{manifest_path}: format_version {version} is not supported (expected {FORMAT_VERSION})")
        arrays = {}
        for name in _ARRAYS:
            file = path / f"{name}.npy"
            if not file.exists():
                raise FileNotFoundError(f"dataset {path} is incomplete: {file} is missing")
            try:
                arrays[name] = np.load(file, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise ValueError(f"dataset {path}: {file} cannot be read ({exc}); rebuild the dataset") from exc
        return cls(
            symbols=list(manifest["symbols"]),
            asset_ids=list(manifest["asset_ids"]),
            feature_names=list(manifest["feature_names"]),
            window=int(manifest["window"]),
            timeframe=manifest["timeframe"],
            split_ranges={k: np.asarray(v, dtype=np.int64) for k, v in manifest["split_ranges"].items()},
            scaler=FeatureScaler.from_dict(manifest["scaler"]),
            label=manifest["label"],
            config=manifest["config"],
            hashes=manifest["hashes"],
            **arrays,
        )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not known; expected one of {list(SPLITS)}")
