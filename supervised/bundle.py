"""The checkpoint bundle: a directory that loads alone, without the training config or the dataset.

Layout::

    <bundle>/weights.pt    torch.save(classifier.state_dict())
    <bundle>/bundle.json   format version, model config, preprocessing (feature settings, timeframe,
                           window, feature names, scaler, asset map), label, decision threshold,
                           dataset hashes, metrics

The bundle is the single source of its preprocessing: :meth:`LoadedModel.prepare` turns any dataset
into what the model was trained to see (its scaler, asset ids, window; see :mod:`features.preprocessing`).
Written atomically: built in a temp directory next to the target, then renamed into place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from features.atomic_io import write_directory_atomic
from features.market_data import MarketData
from features.preprocessing import Preprocessing
from features.scaling import FeatureScaler

from .evaluation import json_safe
from .models import Classifier, ModelConfig, build_model

BUNDLE_VERSION = 2
WEIGHTS_FILE = "weights.pt"
MANIFEST_FILE = "bundle.json"


@dataclass
class LoadedModel:
    """A classifier with everything needed to use it on new data.

    :param classifier: the model, in eval mode.
    :param model_config: its architecture.
    :param preprocessing: feature settings, timeframe, window, feature names, scaler and asset map of
        its training data.
    :param label: the label definition (profit, stop, horizon).
    :param threshold: decision threshold chosen on validation.
    :param dataset_hashes: hashes of the training dataset's config and source bars.
    :param metrics: metrics saved with the bundle (may be empty).
    :param path: where it was loaded from.
    """

    classifier: Classifier
    model_config: ModelConfig
    preprocessing: Preprocessing
    label: dict[str, Any]
    threshold: float
    dataset_hashes: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def feature_names(self) -> list[str]:
        return self.preprocessing.feature_names

    @property
    def scaler(self) -> FeatureScaler:
        return self.preprocessing.scaler

    @property
    def asset_map(self) -> dict[str, int]:
        return self.preprocessing.asset_map

    @property
    def window(self) -> int:
        return self.preprocessing.window

    def prepare(self, data: MarketData) -> MarketData:
        """``data`` rebuilt with this model's own preprocessing (features, scaler, asset ids, window).

        :param data: any dataset of the model's timeframe whose symbols the model knows.
        """
        return self.preprocessing.apply(data)

    @property
    def encoder(self) -> nn.Module:
        """The classifier's encoder (window + asset id -> embedding), for reuse by the RL agents."""
        return self.classifier.encoder

    def predict_proba(self, windows: np.ndarray, asset_ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """P(label = 1) for each window, float64 (n,).

        :param windows: scaled features (n, window, n_features); cast to float32.
        :param asset_ids: (n,) integer asset ids (floats holding whole numbers are accepted).
        """
        windows = np.asarray(windows, dtype=np.float32)
        ids = np.asarray(asset_ids)
        if ids.dtype.kind == "f":
            if not np.all(ids == np.round(ids)):
                raise ValueError(f"asset_ids must be whole numbers, got {ids[ids != np.round(ids)][:3].tolist()}")
            ids = np.round(ids)
        return self.classifier.predict_proba(torch.from_numpy(windows), torch.from_numpy(ids.astype(np.int64)))

    def check_compatible(self, feature_names: Sequence[str], window: int) -> None:
        """Raise ``ValueError`` saying what differs when data with these features/window cannot be fed.

        :param feature_names: the data's feature columns, in order.
        :param window: the data's window.
        """
        check_compatible(self.feature_names, self.window, feature_names, window)


def check_compatible(
    bundle_features: Sequence[str], bundle_window: int, feature_names: Sequence[str], window: int
) -> None:
    """Raise ``ValueError`` naming the mismatch between a bundle's inputs and the data's.

    :param bundle_features: the bundle's feature names.
    :param bundle_window: the bundle's window.
    :param feature_names: the data's feature names.
    :param window: the data's window.
    """
    problems = []
    if int(window) != int(bundle_window):
        problems.append(f"window {window} != the model's {bundle_window}")
    ours, theirs = list(bundle_features), list(feature_names)
    if ours != theirs:
        missing = [f for f in ours if f not in theirs]
        extra = [f for f in theirs if f not in ours]
        detail = []
        if missing:
            detail.append(f"missing {missing}")
        if extra:
            detail.append(f"unexpected {extra}")
        if not detail:
            detail.append("same names in a different order")
        problems.append(f"feature names differ ({len(theirs)} given, model expects {len(ours)}): {'; '.join(detail)}")
    if problems:
        raise ValueError("data does not fit this model: " + "; ".join(problems))


def save_bundle(
    path: str | Path,
    classifier: Classifier,
    model_config: ModelConfig,
    *,
    preprocessing: Preprocessing,
    label: Mapping[str, Any],
    threshold: float,
    dataset_hashes: Mapping[str, str],
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write a bundle directory atomically (an existing one is replaced).

    :param path: the bundle directory.
    :param classifier: the trained model.
    :param model_config: its architecture (with window/n_features/n_assets set).
    :param preprocessing: the training data's preprocessing (``Preprocessing.of(data)``).
    :param label: label definition (profit, stop, horizon).
    :param threshold: decision threshold (chosen on validation).
    :param dataset_hashes: the training dataset's hashes.
    :param metrics: optional metrics to keep with the model.
    """
    feature_names, window = preprocessing.feature_names, preprocessing.window
    if len(feature_names) != model_config.n_features or window != model_config.window:
        raise ValueError(
            f"bundle inputs ({len(feature_names)} features, window {window}) do not match the model config "
            f"(n_features={model_config.n_features}, window={model_config.window})"
        )
    if max(preprocessing.asset_map.values(), default=-1) >= model_config.n_assets:
        raise ValueError(
            f"the asset map has ids up to {max(preprocessing.asset_map.values())} but the model embeds "
            f"n_assets={model_config.n_assets}"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold} must be a probability in [0, 1]")
    manifest = {
        "format_version": BUNDLE_VERSION,
        "model_config": model_config.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "label": dict(label),
        "threshold": float(threshold),
        "dataset_hashes": dict(dataset_hashes),
        "metrics": json_safe(dict(metrics or {})),
        "torch_version": torch.__version__,
    }

    def fill(directory: Path) -> None:
        state = {k: v.detach().cpu().clone() for k, v in classifier.state_dict().items()}
        torch.save(state, directory / WEIGHTS_FILE)
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    return write_directory_atomic(path, fill)


def load_model(
    path: str | Path, *, feature_names: Sequence[str] | None = None, window: int | None = None
) -> LoadedModel:
    """Load a bundle written by :func:`save_bundle`; optionally check it fits the given data.

    :param path: the bundle directory.
    :param feature_names: if given, must equal the bundle's (see :func:`check_compatible`).
    :param window: if given, must equal the bundle's window.
    """
    path = Path(path)
    manifest_path, weights_path = path / MANIFEST_FILE, path / WEIGHTS_FILE
    if not path.is_dir():
        raise FileNotFoundError(f"model bundle {path} does not exist (expected a directory with {MANIFEST_FILE})")
    for file in (manifest_path, weights_path):
        if not file.exists():
            raise FileNotFoundError(f"model bundle {path} is incomplete: {file.name} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"model bundle {path} is corrupt: {MANIFEST_FILE} is not valid JSON ({error})") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != BUNDLE_VERSION:
        hint = " (format 1 bundles do not record their preprocessing: retrain the model)" if version == 1 else ""
        raise ValueError(
            f"{manifest_path}: format_version {version} is not supported (expected {BUNDLE_VERSION}){hint}"
        )
    required = ("model_config", "preprocessing", "label", "threshold")
    missing = [k for k in required if k not in manifest]
    if missing:
        raise ValueError(f"model bundle {path} is corrupt: {MANIFEST_FILE} lacks {missing}")
    config = ModelConfig.from_dict(manifest["model_config"], f"{manifest_path}:model_config")
    preprocessing = Preprocessing.from_dict(manifest["preprocessing"], f"{manifest_path}:preprocessing")
    names, bundle_window = preprocessing.feature_names, preprocessing.window
    if len(names) != config.n_features or bundle_window != config.window:
        raise ValueError(
            f"model bundle {path} is inconsistent: {len(names)} feature names and window {bundle_window} "
            f"but the model config has n_features={config.n_features}, window={config.window}"
        )
    if feature_names is not None or window is not None:
        check_compatible(names, bundle_window, names if feature_names is None else feature_names,
                         bundle_window if window is None else window)
    classifier = build_model(config)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        classifier.load_state_dict(state)
    except Exception as error:  # torch raises several types for truncated files and key/shape mismatches
        reason = f"{type(error).__name__}: {error}"
        raise ValueError(f"model bundle {path} is corrupt: cannot load {WEIGHTS_FILE} ({reason})") from None
    classifier.eval()
    return LoadedModel(
        classifier=classifier,
        model_config=config,
        preprocessing=preprocessing,
        label=dict(manifest["label"]),
        threshold=float(manifest["threshold"]),
        dataset_hashes=dict(manifest.get("dataset_hashes", {})),
        metrics=dict(manifest.get("metrics", {})),
        path=path,
    )
