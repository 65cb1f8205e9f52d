"""The checkpoint bundle reloads alone to identical predictions; bad bundles and mismatches are named;
training is reproducible from its seed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from features import DatasetConfig, LabelConfig, build_market_data, synthetic_bars
from features.preprocessing import Preprocessing
from supervised.bundle import check_compatible, load_model, save_bundle
from supervised.models import ModelConfig
from supervised.samples import split_samples
from supervised.trainer import TrainConfig, train_classifier

FAST = TrainConfig(epochs=2, batch_size=128, num_threads=1)


def tiny_data():
    bars = {"SYN": synthetic_bars(600, seed=0), "SYN2": synthetic_bars(600, seed=1)}
    return build_market_data(bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4)))


@pytest.fixture(scope="module")
def data():
    return tiny_data()


@pytest.fixture(scope="module")
def trained(data):
    return train_classifier(data, ModelConfig(kind="gru", hidden_size=16), FAST, progress=False)


def save(path, result, data, threshold=0.35):
    return save_bundle(
        path,
        result.classifier,
        result.model_config,
        preprocessing=Preprocessing.of(data),
        label=data.label,
        threshold=threshold,
        dataset_hashes=data.hashes,
        metrics={"test": {"f1": 0.5, "roc_auc": float("nan")}},
    )


def test_bundle_reloads_to_identical_predictions(tmp_path, data, trained) -> None:
    path = save(tmp_path / "model", trained, data)
    assert sorted(p.name for p in path.iterdir()) == ["bundle.json", "weights.pt"]
    loaded = load_model(path)
    test = split_samples(data, "test")
    expected = trained.classifier.predict_proba(test.windows, test.asset_ids)
    np.testing.assert_array_equal(loaded.predict_proba(test.windows, test.asset_ids), expected)
    np.testing.assert_array_equal(loaded.predict_proba(test.windows, test.asset_ids.astype(np.float32)), expected)
    assert loaded.feature_names == data.feature_names and loaded.window == data.window == 8
    assert loaded.asset_map == data.asset_map and loaded.label == data.label and loaded.threshold == 0.35
    assert loaded.model_config == trained.model_config and loaded.dataset_hashes == data.hashes
    np.testing.assert_allclose(loaded.scaler.center, data.scaler.center)
    assert loaded.metrics["test"]["roc_auc"] is None  # NaN stored JSON-safe
    assert loaded.encoder.output_dim == 16 and loaded.encoder is loaded.classifier.encoder
    assert not loaded.classifier.training


def test_saving_again_replaces_the_bundle_atomically(tmp_path, data, trained) -> None:
    save(tmp_path / "model", trained, data, threshold=0.3)
    save(tmp_path / "model", trained, data, threshold=0.6)
    assert load_model(tmp_path / "model").threshold == 0.6
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temp directories left behind


def test_missing_and_corrupt_bundles_are_named(tmp_path, data, trained) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    path = save(tmp_path / "model", trained, data)
    (path / "weights.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="corrupt: cannot load weights.pt"):
        load_model(path)
    (path / "weights.pt").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete: weights.pt is missing"):
        load_model(path)
    path = save(tmp_path / "model2", trained, data)
    (path / "bundle.json").write_text("{ truncated")
    with pytest.raises(ValueError, match="corrupt: bundle.json is not valid JSON"):
        load_model(path)
    path = save(tmp_path / "model3", trained, data)
    manifest = json.loads((path / "bundle.json").read_text())
    manifest["preprocessing"]["feature_names"] = manifest["preprocessing"]["feature_names"][:-1]
    (path / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="bundle.json:preprocessing: feature names .* do not follow from the feature settings"):
        load_model(path)
    manifest["preprocessing"] = {**Preprocessing.of(data).to_dict(), "scaler": {"kind": "standard", "center": [0.0],
                                                                                 "scale": [1.0], "clip": None}}
    (path / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="the scaler has 1 columns for 31 features"):
        load_model(path)
    manifest["format_version"] = 1
    (path / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="format 1 bundles do not record their preprocessing: retrain"):
        load_model(path)


def test_feature_and_window_mismatches_are_named(tmp_path, data, trained) -> None:
    path = save(tmp_path / "model", trained, data)
    names = list(data.feature_names)
    renamed = names[:-1] + ["sentiment"]
    with pytest.raises(ValueError, match=r"missing \['dow_cos'\]; unexpected \['sentiment'\]"):
        load_model(path, feature_names=renamed)
    loaded = load_model(path, feature_names=names, window=8)
    with pytest.raises(ValueError, match="window 24 != the model's 8"):
        loaded.check_compatible(names, 24)
    with pytest.raises(ValueError, match="same names in a different order"):
        check_compatible(names, 8, names[::-1], 8)
    loaded.check_compatible(names, 8)


def test_save_rejects_inputs_that_do_not_fit_the_model(tmp_path, data, trained) -> None:
    wider = Preprocessing.from_dict({**Preprocessing.of(data).to_dict(), "window": 24})
    with pytest.raises(ValueError, match="do not match the model config"):
        save_bundle(tmp_path / "m", trained.classifier, trained.model_config, preprocessing=wider, label={},
                    threshold=0.5, dataset_hashes={})


@pytest.mark.parametrize("kind", ["mlp", "cnn_lstm"])
def test_same_seed_gives_identical_weights(data, kind) -> None:
    config = ModelConfig(kind=kind, hidden_sizes=(32,), hidden_size=16, conv_channels=(8,))
    first = train_classifier(data, config, FAST, progress=False)
    second = train_classifier(data, config, FAST, progress=False)
    other = train_classifier(data, config, TrainConfig(epochs=2, batch_size=128, num_threads=1, seed=1), progress=False)
    a, b, c = (r.classifier.state_dict() for r in (first, second, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    timeless = [[{k: v for k, v in h.items() if k != "charts/epoch_seconds"} for h in r.history] for r in (first, second)]
    assert timeless[0] == timeless[1]
