"""``MarketData``: the numpy product of the feature pipeline, read by the simulator, env and models.

All symbols are stacked row-wise; ``offsets[i]:offsets[i+1]`` are symbol i's rows in time order.
Saved as a directory of ``.npy`` files plus ``manifest.json`` (versioned, with the config, feature
names, scaler, asset map, split ranges and hashes of the config and the source bars).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic_io import write_directory_atomic
from .scaling import FeatureScaler
from .splits import SPLITS

if TYPE_CHECKING:  # labels imports nothing from here, but keep the import graph one-way at run time
    from .labels import LabelConfig

FORMAT_VERSION = 2
_ARRAYS = ("timestamps", "prices", "vwap", "raw_features", "features", "labels", "row_asset_ids", "offsets")
# dtype and number of dimensions of each array (shapes are checked against each other on load)
_ARRAY_KINDS: dict[str, tuple[str, int]] = {
    "timestamps": ("int64", 1), "prices": ("float64", 2), "vwap": ("float64", 1),
    "raw_features": ("float64", 2), "features": ("float32", 2), "labels": ("float32", 1),
    "row_asset_ids": ("int64", 1), "offsets": ("int64", 1),
}


class DatasetIntegrityError(ValueError):
    """A saved dataset directory that is damaged or inconsistent; the message names the file."""


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
    :param vwap: float64 (N,) the bars' vwap, NaN where the source has none.
    :param raw_features: float64 (N, F) unscaled features; warm-up rows may hold NaN. A saved model
        re-scales these with its own scaler (see :mod:`features.preprocessing`).
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
    vwap: np.ndarray
    raw_features: np.ndarray
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
    def label_config(self) -> "LabelConfig":
        """The label definition as a :class:`features.LabelConfig`."""
        from .labels import LabelConfig

        return LabelConfig(**self.label)

    @property
    def feature_config(self) -> dict[str, Any]:
        """The feature settings the features were built with (``FeatureConfig.to_dict()``)."""
        return dict(self.config.get("features") or {})

    @property
    def warmup(self) -> int:
        """Leading rows of each symbol whose features may be undefined (:func:`features.warmup_bars`)."""
        from .feature_builder import FeatureConfig, warmup_bars

        return warmup_bars(FeatureConfig.from_dict(self.feature_config))

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
            f"label: {self.label_config.describe()}",
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
            warning = "  (below 0.5%: too few to train a classifier)" if len(rows) and positives < 0.005 else ""
            lines.append(f"  {split:<10} {len(rows):>7} samples  positives {positives:6.1%}  {span}{warning}")
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
            "arrays": {
                name: {"file": f"{name}.npy", "dtype": str(getattr(self, name).dtype),
                       "shape": list(getattr(self, name).shape)}
                for name in _ARRAYS
            },
        }

    def save(self, path: str | Path) -> Path:
        """Write the dataset directory atomically (built in a temp dir, then renamed into place).

        The manifest records each array's dtype, shape and the sha256 of its ``.npy`` file, so a
        damaged or edited file is found on load.
        """
        def fill(directory: Path) -> None:
            manifest = self.manifest()
            for name in _ARRAYS:
                file = directory / f"{name}.npy"
                np.save(file, getattr(self, name), allow_pickle=False)
                manifest["arrays"][name]["sha256"] = _file_sha256(file)
            (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

        return write_directory_atomic(path, fill)

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = False) -> "MarketData":
        """Read a directory written by :meth:`save` without recomputing anything.

        Every array is checked against the manifest (file hash, dtype, shape) and the parts against
        each other (offsets, feature count, scaler length, split ranges, asset ids): a damaged directory
        gives a :class:`DatasetIntegrityError` naming the file, never a bare ``KeyError`` or ``IndexError``.

        :param path: the dataset directory.
        :param mmap: map the arrays read-only (``np.load(mmap_mode="r")``) instead of reading them: only
            the pages a caller touches become resident, so a process that uses the scaled features and
            labels but never the raw features or prices (training a classifier) holds about half the
            dataset in memory. The files must not change while the dataset is in use.
        """
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not path.is_dir():
            raise FileNotFoundError(f"dataset directory {path} does not exist")
        if not manifest_path.exists():
            raise FileNotFoundError(f"{path} is not a dataset directory: {manifest_path} is missing")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetIntegrityError(f"{manifest_path} is not valid JSON ({exc}); rebuild the dataset") from None
        if not isinstance(manifest, dict):
            raise DatasetIntegrityError(f"{manifest_path} must hold a JSON object; rebuild the dataset")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise DatasetIntegrityError(
                f"{manifest_path}: format_version {version} is not supported (expected {FORMAT_VERSION}); "
                f"rebuild the dataset with python -m experiments.build_dataset"
            )
        required = ("symbols", "asset_ids", "feature_names", "window", "timeframe", "label", "scaler",
                    "split_ranges", "config", "hashes", "arrays")
        missing = [key for key in required if key not in manifest]
        if missing:
            raise DatasetIntegrityError(f"{manifest_path} lacks {missing}; rebuild the dataset")
        arrays = {name: _load_checked_array(path, manifest_path, manifest["arrays"], name, mmap) for name in _ARRAYS}
        try:
            split_ranges = {k: np.asarray(v, dtype=np.int64) for k, v in manifest["split_ranges"].items()}
            data = cls(
                symbols=[str(v) for v in manifest["symbols"]],
                asset_ids=[int(v) for v in manifest["asset_ids"]],
                feature_names=[str(v) for v in manifest["feature_names"]],
                window=int(manifest["window"]),
                timeframe=str(manifest["timeframe"]),
                split_ranges=split_ranges,
                scaler=FeatureScaler.from_dict(manifest["scaler"], f"{manifest_path}: scaler"),
                label=dict(manifest["label"]),
                config=dict(manifest["config"]),
                hashes=dict(manifest["hashes"]),
                **arrays,
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise DatasetIntegrityError(f"{manifest_path} is malformed ({exc}); rebuild the dataset") from None
        data.check_consistent(str(manifest_path))
        return data

    def check_consistent(self, where: str = "dataset") -> None:
        """Raise :class:`DatasetIntegrityError` when the parts do not fit together.

        :param where: the file or name shown in messages.
        """
        n, n_symbols = len(self.timestamps), len(self.symbols)
        problems = []
        offsets = self.offsets
        if offsets.shape != (n_symbols + 1,) or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0):
            problems.append(f"offsets {offsets.tolist()[:8]} do not split {n} rows into {n_symbols} symbol block(s)")
        for name, expected in (("prices", (n, 5)), ("vwap", (n,)), ("raw_features", (n, len(self.feature_names))),
                               ("features", (n, len(self.feature_names))), ("labels", (n,)), ("row_asset_ids", (n,))):
            if getattr(self, name).shape != expected:
                problems.append(f"{name}.npy has shape {getattr(self, name).shape}, expected {expected}")
        if self.scaler.n_features != len(self.feature_names):
            problems.append(f"the scaler has {self.scaler.n_features} columns for {len(self.feature_names)} features")
        if len(self.asset_ids) != n_symbols:
            problems.append(f"{len(self.asset_ids)} asset ids for {n_symbols} symbols")
        if self.window < 1:
            problems.append(f"window={self.window} must be >= 1")
        if sorted(self.split_ranges) != sorted(SPLITS):
            problems.append(f"split ranges {sorted(self.split_ranges)} must be {list(SPLITS)}")
        elif not problems:
            lengths = np.diff(offsets)
            for split, ranges in self.split_ranges.items():
                if ranges.shape != (n_symbols, 2):
                    problems.append(f"split '{split}' has ranges of shape {ranges.shape}, expected ({n_symbols}, 2)")
                    continue
                bad = (ranges[:, 0] < 0) | (ranges[:, 0] > ranges[:, 1]) | (ranges[:, 1] > lengths)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    problems.append(
                        f"split '{split}' of {self.symbols[i]} is rows {ranges[i].tolist()}, out of bounds "
                        f"for its {int(lengths[i])} rows"
                    )
        if problems:
            raise DatasetIntegrityError(f"{where}: " + "; ".join(problems) + "; rebuild the dataset")


def _file_sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_checked_array(path: Path, manifest_path: Path, entries: Any, name: str, mmap: bool = False) -> np.ndarray:
    """Load ``name``.npy and check it against its manifest entry (hash, dtype, number of dimensions)."""
    entry = entries.get(name) if isinstance(entries, dict) else None
    if not isinstance(entry, dict) or not {"file", "sha256", "dtype", "shape"} <= set(entry):
        raise DatasetIntegrityError(f"{manifest_path}: arrays.{name} is missing or incomplete; rebuild the dataset")
    file = path / f"{name}.npy"
    if not file.exists():
        raise DatasetIntegrityError(f"dataset {path} is incomplete: {file} is missing; rebuild the dataset")
    if _file_sha256(file) != entry["sha256"]:
        raise DatasetIntegrityError(
            f"{file} does not match the sha256 recorded in {manifest_path.name} (changed or damaged since it "
            f"was saved); rebuild the dataset"
        )
    try:
        array = np.load(file, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetIntegrityError(f"{file} cannot be read ({exc}); rebuild the dataset") from None
    dtype, ndim = _ARRAY_KINDS[name]
    if str(array.dtype) != dtype or array.ndim != ndim or list(array.shape) != list(entry["shape"]):
        raise DatasetIntegrityError(
            f"{file} holds {array.dtype} {array.shape}; the manifest declares {entry['dtype']} {tuple(entry['shape'])} "
            f"and the format needs {dtype} with {ndim} dimension(s); rebuild the dataset"
        )
    return array


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not known; expected one of {list(SPLITS)}")
