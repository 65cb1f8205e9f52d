"""Smoke tests of the entry points on a tiny saved dataset: train_supervised and hpo."""

from __future__ import annotations

import json

import pytest
import yaml

from experiments import hpo as hpo_cli
from experiments import train_supervised
from features import DatasetConfig, LabelConfig, build_market_data, synthetic_bars
from supervised.bundle import load_model
from supervised.experiment import load_supervised_config


def tiny_data():
    bars = {"SYN": synthetic_bars(600, seed=0), "SYN2": synthetic_bars(600, seed=1)}
    return build_market_data(bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4)))


@pytest.fixture()
def setup(tmp_path):
    dataset = tiny_data().save(tmp_path / "dataset")
    config = tmp_path / "supervised.yaml"
    config.write_text(yaml.safe_dump({
        "train": {"batch_size": 128, "num_threads": 1},
        "models": {"lstm": {"hidden_size": 16}},
        "evaluation": {"importance_repeats": 1},
    }))
    return tmp_path, dataset, config


def test_train_supervised_main_writes_the_run(setup) -> None:
    tmp_path, dataset, config = setup
    argv = ["--model", "lstm", "--config", str(config), "--dataset", str(dataset), "--run-name", "smoke",
            "--runs-dir", str(tmp_path / "runs"), "--epochs", "1", "--seed", "3", "--no-progress"]
    metrics = train_supervised.main(argv)
    run_dir = tmp_path / "runs" / "smoke"
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved == metrics
    assert saved["training"]["epochs_run"] == 1 and saved["train_config"]["seed"] == 3
    assert saved["model_config"]["hidden_size"] == 16
    for key in ("validation", "test", "validation_sweep", "threshold", "permutation_importance"):
        assert key in saved
    assert saved["threshold"]["chosen_on"] == "validation"
    assert any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir())
    model = load_model(run_dir / "model")
    assert model.threshold == saved["threshold"]["chosen"] and model.window == 8
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        train_supervised.main(argv)
    assert train_supervised.main(argv + ["--overwrite"])["test"] == metrics["test"]  # same seed, same numbers


def test_hpo_main_runs_and_resumes(setup) -> None:
    tmp_path, dataset, config = setup
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    argv = ["--model", "mlp", "--trials", "1", "--storage", storage, "--config", str(config), "--dataset",
            str(dataset), "--runs-dir", str(tmp_path / "runs"), "--epochs", "1"]
    assert len(hpo_cli.main(argv).trials) == 1
    assert len(hpo_cli.main(argv).trials) == 2
    assert (tmp_path / "runs" / "hpo" / "sup_mlp" / "trial_1").is_dir()


def test_config_errors_are_named(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"epochz": 3}}))
    with pytest.raises(ValueError, match=r"bad.yaml.train: unknown key\(s\) \['epochz'\]"):
        load_supervised_config(bad)
    bad.write_text(yaml.safe_dump({"models": {"lstm": {"hidden": 3}}}))
    with pytest.raises(ValueError, match=r"models.lstm: unknown key\(s\) \['hidden'\]"):
        load_supervised_config(bad)
    bad.write_text(yaml.safe_dump({"models": {"rnn": {}}}))
    with pytest.raises(ValueError, match=r"unknown model kind\(s\) \['rnn'\]"):
        load_supervised_config(bad)
    bad.write_text(yaml.safe_dump({"dataset": {"windw": 3}}))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['windw'\]"):
        load_supervised_config(bad)


def test_the_shipped_config_loads() -> None:
    config = load_supervised_config(train_supervised.DEFAULT_CONFIG)
    assert set(config.models) == {"mlp", "lstm", "gru", "cnn_lstm"}
    assert config.dataset == DatasetConfig() and config.train.loss == "focal"
