"""A saved dataset checks itself on load: hashes, shapes, scaler length and split bounds, each error
naming the file (trust issue, item 4). No bare KeyError / IndexError / reshape error reaches the user.

Edits to the manifest are caught first by its field digests (tests/test_manifest_integrity.py); the
tests here forge the digests too (``resign=True``) to reach the checks of the parts against each other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from features import DatasetConfig, build_market_data, load_dataset, synthetic_bars
from features.market_data import DatasetIntegrityError, field_digests


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    bars = {"A": synthetic_bars(300, seed=0), "B": synthetic_bars(300, seed=1)}
    return build_market_data(bars, DatasetConfig(window=8)).save(tmp_path / "ds")


def edit_manifest(path: Path, change: Callable[[dict], None], resign: bool = False) -> None:
    """Apply ``change`` to the saved manifest; ``resign`` also rewrites its field digests (a forgery)."""
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    if resign:
        manifest["field_sha256"] = field_digests(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_an_edited_array_of_the_same_shape_is_caught_by_its_hash(saved: Path) -> None:
    features = np.load(saved / "features.npy")
    features[200, 3] += 1.0
    np.save(saved / "features.npy", features)
    with pytest.raises(DatasetIntegrityError, match=r"features.npy does not match the sha256 recorded in manifest.json"):
        load_dataset(saved)


def test_an_array_whose_shape_differs_from_the_manifest_is_named(saved: Path) -> None:
    labels = np.load(saved / "labels.npy")[:-5]
    np.save(saved / "labels.npy", labels)
    import hashlib

    digest = hashlib.sha256((saved / "labels.npy").read_bytes()).hexdigest()
    edit_manifest(saved, lambda m: m["arrays"]["labels"].update(sha256=digest), resign=True)  # a consistent-looking forgery
    with pytest.raises(DatasetIntegrityError, match=r"labels.npy holds float32 \(595,\); the manifest declares float32 \(600,\)"):
        load_dataset(saved)


def test_a_scaler_shorter_than_the_feature_list_is_named(saved: Path) -> None:
    def shorten(m: dict) -> None:
        m["scaler"]["center"] = m["scaler"]["center"][:-1]
        m["scaler"]["scale"] = m["scaler"]["scale"][:-1]

    edit_manifest(saved, shorten, resign=True)
    with pytest.raises(DatasetIntegrityError, match=r"manifest.json: the scaler has 30 columns for 31 features"):
        load_dataset(saved)


def test_a_split_range_out_of_bounds_is_named(saved: Path) -> None:
    edit_manifest(saved, lambda m: m["split_ranges"]["test"][1].__setitem__(1, 10_000), resign=True)
    with pytest.raises(DatasetIntegrityError, match=r"manifest.json: split 'test' of B is rows \[\d+, 10000\], out of bounds for its 300 rows"):
        load_dataset(saved)


@pytest.mark.parametrize("key", ["symbols", "scaler", "split_ranges", "arrays", "feature_names"])
def test_a_missing_manifest_key_is_named_not_a_key_error(saved: Path, key: str) -> None:
    edit_manifest(saved, lambda m: m.pop(key))
    with pytest.raises(DatasetIntegrityError, match=rf"manifest.json lacks \['{key}'\]"):
        load_dataset(saved)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.__setitem__("symbols", ["A"]),  # one symbol for two blocks
        lambda m: m.__setitem__("asset_ids", [0]),
        lambda m: m.__setitem__("feature_names", m["feature_names"][:-1]),
        lambda m: m["scaler"].__setitem__("center", "oops"),
        lambda m: m.__setitem__("window", "x"),
        lambda m: m["split_ranges"].pop("validation"),
    ],
)
def test_inconsistent_manifests_are_integrity_errors(saved: Path, change: Callable[[dict], None]) -> None:
    edit_manifest(saved, change, resign=True)
    with pytest.raises(DatasetIntegrityError, match=r"manifest.json"):
        load_dataset(saved)


def test_a_clean_dataset_round_trips(saved: Path) -> None:
    data = load_dataset(saved)
    data.check_consistent()
    assert data.symbols == ["A", "B"] and data.raw_features.shape == data.features.shape
