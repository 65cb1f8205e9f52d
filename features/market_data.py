"""``MarketData``: the numpy product of the feature pipeline, read by the simulator, env and models.

All symbols are stacked row-wise; ``offsets[i]:offsets[i+1]`` are symbol i's rows in time order.
Saved as a directory of ``.npy`` files plus ``manifest.json`` (versioned, with the config, feature
names, scaler, asset map, split ranges and hashes of the config and the source bars). The manifest
holds the sha256 of each array file and of each of its own fields (``field_sha256``), so an edit to
any part of the directory is refused on load; the fields are also checked against the arrays.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import numpy as np

from .atomic_io import write_directory_atomic
from .calendars import asset_class_of
from .scaling import FeatureScaler
from .splits import SPLITS

if TYPE_CHECKING:  # labels imports nothing from here, but keep the import graph one-way at run time
    from .dataset import DatasetConfig
    from .labels import LabelConfig

# 4: each symbol's asset class and calendar; 3: the manifest carries field_sha256 (a digest of each of its
# fields); 2 had digests of the arrays only
FORMAT_VERSION = 4
_FIELD_DIGESTS = "field_sha256"
_REQUIRED_FIELDS = ("symbols", "asset_ids", "asset_classes", "calendars", "feature_names", "window", "timeframe",
                    "label", "scaler", "split_ranges", "config", "hashes", "arrays", _FIELD_DIGESTS)
_REBUILD = "rebuild the dataset with python -m experiments.build_dataset"
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
    :param asset_classes: each symbol's asset class (``"us_equity"``, ``"crypto"``:
        :func:`features.calendars.asset_class_of`); empty: derived from the symbols.
    :param calendars: the calendar each symbol's bars follow (``"XNYS"``, ``"24/7 (UTC days)"``, or ``"none"``:
        :func:`features.calendars.bars_calendar`); it annualises the symbol's metrics. Empty: derived from the
        timestamps.
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
    asset_classes: list[str] = field(default_factory=list)
    calendars: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.asset_classes:
            self.asset_classes = [asset_class_of(symbol) for symbol in self.symbols]
        if not self.calendars:
            self.calendars = _bars_calendars(self)

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
            "asset_classes": list(self.asset_classes),
            "calendars": list(self.calendars),
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

        The manifest records each array's dtype, shape and the sha256 of its ``.npy`` file, and the
        sha256 of each of its own fields (:func:`field_digests`), so a damaged or edited file or field is
        found on load.
        """
        def fill(directory: Path) -> None:
            manifest = self.manifest()
            for name in _ARRAYS:
                file = directory / f"{name}.npy"
                np.save(file, getattr(self, name), allow_pickle=False)
                manifest["arrays"][name]["sha256"] = _file_sha256(file)
            manifest = json.loads(json.dumps(manifest))  # the digests are of the fields as they read back
            manifest[_FIELD_DIGESTS] = field_digests(manifest)
            (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

        return write_directory_atomic(path, fill)

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = False) -> "MarketData":
        """Read a directory written by :meth:`save` without recomputing anything.

        Every manifest field is checked against the digest recorded at save (``field_sha256``), every
        array against the manifest (file hash, dtype, shape), and the parts against each other
        (:meth:`check_consistent`): a damaged or edited directory gives a :class:`DatasetIntegrityError`
        naming the file and the field, never a bare ``KeyError`` or ``IndexError``. A dataset saved in an
        older format (no field digests) is refused with a message to rebuild it.

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
        _check_manifest_fields(manifest, manifest_path)
        arrays = {name: _load_checked_array(path, manifest_path, manifest["arrays"], name, mmap) for name in _ARRAYS}
        data = cls(
            symbols=_typed_list(manifest, "symbols", str, manifest_path),
            asset_ids=_typed_list(manifest, "asset_ids", int, manifest_path),
            asset_classes=_typed_list(manifest, "asset_classes", str, manifest_path),
            calendars=_typed_list(manifest, "calendars", str, manifest_path),
            feature_names=_typed_list(manifest, "feature_names", str, manifest_path),
            window=_typed_value(manifest, "window", int, manifest_path),
            timeframe=_typed_value(manifest, "timeframe", str, manifest_path),
            split_ranges=_split_ranges(manifest, manifest_path),
            scaler=_scaler(manifest, manifest_path),
            label=_typed_value(manifest, "label", dict, manifest_path),
            config=_typed_value(manifest, "config", dict, manifest_path),
            hashes=_typed_value(manifest, "hashes", dict, manifest_path),
            **arrays,
        )
        data.check_consistent(str(manifest_path))
        _check_config_hash(data, manifest_path)
        return data

    def check_consistent(self, where: str = "dataset") -> None:
        """Raise :class:`DatasetIntegrityError` when the parts do not fit together.

        Shapes first (offsets, arrays, scaler length, asset ids, split ranges inside each symbol's rows);
        when those hold, the fields are checked against the arrays and the dataset config: splits ordered
        in time with the purge gap between them, symbols against the source-bars hash and the row asset
        ids, feature names against the feature config, scaler against the scaled features, window,
        timeframe and label against the config, the timestamps and the labels. Each problem names its field.

        :param where: the file or name shown in messages.
        """
        problems = self._shape_problems()
        if not problems:
            problems = self._field_problems()
        if problems:
            raise DatasetIntegrityError(f"{where}: " + "; ".join(problems) + "; rebuild the dataset")

    def _shape_problems(self) -> list[str]:
        """Shapes of the arrays and fields against each other."""
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
        return problems

    def _field_problems(self) -> list[str]:
        """The fields against the arrays and the dataset config (the shapes already fit)."""
        from .dataset import DatasetConfig  # dataset imports this module; import late

        try:
            config = DatasetConfig.from_dict(self.config)
        except (TypeError, ValueError) as exc:
            return [f"config is not a dataset config ({exc})"]
        checks = (_symbol_problems, _timeframe_problems, _calendar_problems, _window_problems, _label_problems,
                  _split_problems, _feature_problems, _scaler_problems)
        return [problem for check in checks for problem in check(self, config)]

def field_digests(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The sha256 of each field of a manifest (of its canonical JSON), except ``field_sha256`` itself.

    :param manifest: the manifest as it reads back from JSON.
    """
    return {key: _json_sha256(value) for key, value in manifest.items() if key != _FIELD_DIGESTS}


def source_sha256(blocks: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> str:
    """``hashes.source``: the digest of each symbol's name, timestamps and prices, in block order.

    :param blocks: ``(symbol, int64 timestamps, float64 (n, 5) prices)`` of each symbol.
    """
    digest = hashlib.sha256()
    for symbol, stamps, prices in blocks:
        digest.update(symbol.encode())
        digest.update(np.ascontiguousarray(stamps, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(prices, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _json_sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_manifest_fields(manifest: dict[str, Any], manifest_path: Path) -> None:
    """The format version, the required fields and each field against its digest in ``field_sha256``."""
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        older = isinstance(version, int) and not isinstance(version, bool) and version < FORMAT_VERSION
        why = ""
        if older:
            why = (" (it was saved before datasets recorded each symbol's asset class and calendar)" if version == 3
                   else " (it was saved before manifests carried field_sha256, so its fields cannot be checked)")
        raise DatasetIntegrityError(
            f"{manifest_path}: format_version {version} is not supported (expected {FORMAT_VERSION}){why}; {_REBUILD}"
        )
    missing = [key for key in _REQUIRED_FIELDS if key not in manifest]
    if missing:
        raise DatasetIntegrityError(f"{manifest_path} lacks {missing}; rebuild the dataset")
    recorded = manifest[_FIELD_DIGESTS]
    if not isinstance(recorded, dict):
        raise DatasetIntegrityError(f"{manifest_path}: {_FIELD_DIGESTS} must map each field to its sha256; {_REBUILD}")
    actual = field_digests(manifest)
    for key in sorted(set(actual) | set(recorded)):
        if key not in recorded:
            change = "was added after the dataset was saved (it has no digest in field_sha256)"
        elif key not in actual:
            change = "was removed after the dataset was saved (field_sha256 has a digest for it)"
        elif recorded[key] != actual[key]:
            change = f"was changed after the dataset was saved (its sha256 does not match {_FIELD_DIGESTS}.{key})"
        else:
            continue
        raise DatasetIntegrityError(f"{manifest_path}: field '{key}' {change}; {_REBUILD}")


def _check_config_hash(data: MarketData, manifest_path: Path) -> None:
    """``hashes.config`` is the hash of the saved ``config`` (checked on load only: a dataset adapted in
    memory by :meth:`features.Preprocessing.apply` changes its config but keeps the hash it was built with)."""
    from .dataset import DatasetConfig  # dataset imports this module; import late

    if data.hashes.get("config") != DatasetConfig.from_dict(data.config).hash():
        raise DatasetIntegrityError(
            f"{manifest_path}: hashes.config is not the hash of field 'config' (one of them was edited); {_REBUILD}"
        )


def _typed_value(manifest: dict[str, Any], key: str, kind: type, manifest_path: Path) -> Any:
    """``manifest[key]`` when it is a ``kind`` (a bool is no int), else an error naming the field."""
    value = manifest[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DatasetIntegrityError(
            f"{manifest_path}: field '{key}' must be a JSON {_JSON_KINDS[kind]}, not {type(value).__name__} "
            f"{str(value)[:60]}; rebuild the dataset"
        )
    return dict(value) if kind is dict else value


def _typed_list(manifest: dict[str, Any], key: str, kind: type, manifest_path: Path) -> list[Any]:
    """``manifest[key]`` when it is a list of ``kind``, else an error naming the field."""
    values = manifest[key]
    if not isinstance(values, list) or not all(
        isinstance(v, kind) and not (kind is int and isinstance(v, bool)) for v in values
    ):
        raise DatasetIntegrityError(
            f"{manifest_path}: field '{key}' must be a list of JSON {_JSON_KINDS[kind]}s, not {str(values)[:60]}; "
            f"rebuild the dataset"
        )
    return list(values)


def _split_ranges(manifest: dict[str, Any], manifest_path: Path) -> dict[str, np.ndarray]:
    """``split_ranges`` as int64 arrays; anything but integer rows is an error naming the field."""
    ranges = _typed_value(manifest, "split_ranges", dict, manifest_path)
    out = {}
    for split, rows in ranges.items():
        try:
            array = np.asarray(rows) if isinstance(rows, list) else np.zeros(0, dtype=object)
        except ValueError:  # ragged lists
            array = np.zeros(0, dtype=object)
        if array.dtype.kind not in "iu":
            raise DatasetIntegrityError(
                f"{manifest_path}: field 'split_ranges' entry '{split}' must be [start, end] row pairs of "
                f"integers, not {str(rows)[:60]}; rebuild the dataset"
            )
        out[str(split)] = array.astype(np.int64)
    return out


def _scaler(manifest: dict[str, Any], manifest_path: Path) -> FeatureScaler:
    """``scaler`` as a :class:`FeatureScaler`; a malformed one is an error naming the field."""
    saved = _typed_value(manifest, "scaler", dict, manifest_path)
    clip = saved.get("clip")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
        raise DatasetIntegrityError(f"{manifest_path}: field 'scaler' has clip={clip!r}; expected null or a number "
                                    f"> 0; rebuild the dataset")
    try:
        return FeatureScaler.from_dict(saved, f"{manifest_path}: field 'scaler'")
    except ValueError as exc:
        raise DatasetIntegrityError(f"{exc}; rebuild the dataset") from None


_JSON_KINDS = {int: "integer", str: "string", dict: "object"}
# rows at the end of each symbol whose labels are recomputed on load (besides the horizon and volatility history)
_LABEL_CHECK_ROWS = 64


def _blocks(data: MarketData) -> Iterator[tuple[int, str, slice]]:
    """``(index, symbol, rows)`` of each symbol's block."""
    for i, symbol in enumerate(data.symbols):
        yield i, symbol, slice(int(data.offsets[i]), int(data.offsets[i + 1]))


def _symbol_problems(data: MarketData, config: "DatasetConfig") -> list[str]:
    """Symbols and asset ids against ``hashes.source`` and ``row_asset_ids``."""
    problems = []
    if len(set(data.symbols)) != len(data.symbols):
        problems.append(f"symbols {data.symbols} name a symbol twice")
    if len(set(data.asset_ids)) != len(data.asset_ids) or min(data.asset_ids, default=0) < 0:
        problems.append(f"asset_ids {data.asset_ids} must be distinct ids >= 0")
    for i, symbol, rows in _blocks(data):
        held = np.asarray(data.row_asset_ids[rows])
        if np.any(held != data.asset_ids[i]):
            held = np.unique(held)
            problems.append(f"asset_ids gives {symbol} id {data.asset_ids[i]} but row_asset_ids.npy holds "
                            f"{held.tolist()[:4]} for its rows")
            break
    source = source_sha256((s, data.timestamps[rows], data.prices[rows]) for _, s, rows in _blocks(data))
    if data.hashes.get("source") != source:
        problems.append(f"symbols {data.symbols[:8]} with timestamps.npy and prices.npy do not match hashes.source "
                        f"(the digest of each symbol's bars at build time): names reordered or renamed?")
    return problems


def _bars_calendars(data: MarketData) -> list[str]:
    """The calendar each symbol's bars follow (:func:`features.calendars.bars_calendar`)."""
    from .calendars import bars_calendar

    return [bars_calendar(symbol, np.asarray(data.timestamps[rows]), data.timeframe) for _, symbol, rows in _blocks(data)]


def _calendar_problems(data: MarketData, config: "DatasetConfig") -> list[str]:
    """``asset_classes`` against the symbols and ``calendars`` against each symbol's timestamps."""
    from .calendars import CalendarError

    problems = []
    if len(data.asset_classes) != len(data.symbols) or len(data.calendars) != len(data.symbols):
        return [f"asset_classes ({len(data.asset_classes)}) and calendars ({len(data.calendars)}) must give one "
                f"entry per symbol ({len(data.symbols)})"]
    expected = [asset_class_of(symbol) for symbol in data.symbols]
    problems += [f"asset_classes gives {symbol} {got!r}, but {symbol} is {want!r}"
                 for symbol, got, want in zip(data.symbols, data.asset_classes, expected) if got != want]
    try:
        followed = _bars_calendars(data)
    except CalendarError as exc:
        return problems + [f"calendars: {exc}"]
    problems += [f"calendars gives {symbol} {got!r}, but its bars follow {want!r}"
                 for symbol, got, want in zip(data.symbols, data.calendars, followed) if got != want]
    return problems


def _timeframe_problems(data: MarketData, config: "DatasetConfig") -> list[str]:
    """``timeframe`` against the config and each symbol's timestamps."""
    import pandas as pd

    from .bars import BarsValidationError, Timeframe, infer_timeframe

    try:
        declared = Timeframe.parse(data.timeframe)
    except ValueError as exc:
        return [f"timeframe: {exc}"]
    if config.timeframe is not None and Timeframe.parse(config.timeframe) != declared:
        return [f"timeframe {data.timeframe!r} differs from config.timeframe {config.timeframe!r}"]
    for _, symbol, rows in _blocks(data):
        stamps = np.asarray(data.timestamps[rows])
        if np.any(np.diff(stamps) <= 0):
            return [f"timestamps.npy of {symbol} are not strictly increasing"]
        try:
            inferred = infer_timeframe(pd.to_datetime(stamps, utc=True), symbol)
        except BarsValidationError as exc:
            return [f"timestamps.npy of {symbol}: {exc}"]
        if inferred is not None and inferred.seconds != declared.seconds and not (
            declared.unit == inferred.unit == "Month"
        ):
            return [f"timeframe {data.timeframe!r} contradicts timestamps.npy of {symbol}, whose median spacing "
                    f"is {inferred}"]
    return []


def _window_problems(data: MarketData, config: "DatasetConfig") -> list[str]:
    if data.window != config.window:
        return [f"window {data.window} differs from config.window {config.window}"]
    return []


def _label_problems(data: MarketData, config: "DatasetConfig") -> list[str]:
    """``label`` against the config and the last labels of each symbol (recomputed from its prices)."""
    from .labels import LabelConfig

    try:
        label = LabelConfig(**data.label)
    except (TypeError, ValueError) as exc:
        return [f"label {data.label} is not a label definition ({exc})"]
    if label != config.labels:
        return [f"label {data.label} differs from config.labels {config.labels.to_dict()}"]
    history = label.volatility_window if label.barrier == "volatility" else 0
    for _, symbol, rows in _blocks(data):
        first = max(rows.start, rows.stop - (label.horizon + history + _LABEL_CHECK_ROWS))
        prices = np.asarray(data.prices[first:rows.stop])
        expected = label.labels(prices[:, 3], prices[:, 1], prices[:, 2]).astype(np.float32)[history:]
        if not np.array_equal(expected, np.asarray(data.labels[first + history:rows.stop]), equal_nan=True):
            return [f"labels.npy of {symbol} are not those of label {data.label} on its last bars"]
    return []


def _split_problems(data: MarketData, config: "DatasetConfig") -> list[str]:
    """Split ranges: past the warm-up and window, in time order, the purge gap apart."""
    from .feature_builder import warmup_bars

    horizon = config.labels.horizon
    gap = max(horizon, config.split.purge_gap if config.split.purge_gap is not None else horizon)
    first_usable = warmup_bars(config.features) + data.window - 1
    pairs = (("train", "validation"), ("train", "test"), ("validation", "test"))
    problems = []
    for i, symbol, _ in _blocks(data):
        spans = {split: (int(data.split_ranges[split][i, 0]), int(data.split_ranges[split][i, 1])) for split in SPLITS}
        for split, (start, end) in spans.items():
            if end > start and start < first_usable:
                problems.append(f"split_ranges['{split}'] of {symbol} starts at row {start}, before row "
                                f"{first_usable} where the features' warm-up and the window are complete")
        for earlier, later in pairs:
            (earlier_start, earlier_end), (later_start, later_end) = spans[earlier], spans[later]
            if earlier_end > earlier_start and later_end > later_start and later_start - earlier_end < gap:
                problems.append(
                    f"split_ranges['{later}'] of {symbol} starts at row {later_start}, {later_start - earlier_end} "
                    f"row(s) after '{earlier}' ends at row {earlier_end}: the splits overlap or are closer than "
                    f"the purge gap of {gap} bars (label horizon {horizon})"
                )
        if problems:
            return problems
    return _split_time_problems(data, pairs)


def _split_time_problems(data: MarketData, pairs: tuple[tuple[str, str], ...]) -> list[str]:
    """Every split's rows, over all symbols, lie after every earlier split's rows in time."""
    spans = {}
    for split in SPLITS:
        stamps = [data.timestamps[rows.start + int(data.split_ranges[split][i, 0]):
                                  rows.start + int(data.split_ranges[split][i, 1])] for i, _, rows in _blocks(data)]
        stamps = [s for s in stamps if len(s)]
        if stamps:
            spans[split] = (min(int(s[0]) for s in stamps), max(int(s[-1]) for s in stamps))
    for earlier, later in pairs:
        if earlier in spans and later in spans and spans[later][0] <= spans[earlier][1]:
            return [f"split_ranges['{later}'] starts at {_instant(spans[later][0])}, before '{earlier}' ends at "
                    f"{_instant(spans[earlier][1])} (the splits of all symbols share their boundaries in time)"]
    return []


def _instant(ns: int) -> str:
    return str(np.datetime64(ns, "ns"))


def _feature_problems(data: MarketData, config: "DatasetConfig") -> list[str]:
    """``feature_names`` against the columns the feature (and news) config builds."""
    from .bars import Timeframe
    from .feature_builder import feature_names
    from .news.config import NEWS_FEATURES

    try:
        intraday = Timeframe.parse(data.timeframe).is_intraday
    except ValueError:
        return []  # reported by _timeframe_problems
    expected = feature_names(config.features, intraday) + (list(NEWS_FEATURES) if config.news is not None else [])
    if data.feature_names == expected:
        return []
    where = "config.features and config.news" if config.news is not None else "config.features"
    if len(data.feature_names) != len(expected):
        return [f"feature_names lists {len(data.feature_names)} columns; {where} build {len(expected)}"]
    k = next(k for k, (a, b) in enumerate(zip(data.feature_names, expected)) if a != b)
    return [f"feature_names[{k}] is {data.feature_names[k]!r}; {where} build {expected[k]!r} in that column"]


def _scaler_problems(data: MarketData, config: "DatasetConfig") -> list[str]:
    """The scaler reproduces the scaled features from the raw ones (first and last full row of each symbol)."""
    from .feature_builder import warmup_bars

    warmup = warmup_bars(config.features)
    for _, symbol, rows in _blocks(data):
        picked = np.array([min(rows.start + warmup, rows.stop - 1), rows.stop - 1], dtype=np.int64)
        expected = data.scaler.transform(np.asarray(data.raw_features[picked]))
        if not np.array_equal(expected, np.asarray(data.features[picked]), equal_nan=True):
            return [f"scaler does not turn raw_features.npy into features.npy for {symbol} (row {int(picked[-1])}): "
                    f"its center/scale/clip are not the ones the features were scaled with"]
    return []


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
