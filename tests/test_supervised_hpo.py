"""Optuna search on tiny data: SQLite storage, resume adds trials, per-trial TensorBoard logs."""

from __future__ import annotations

import optuna
import pytest

from features import DatasetConfig, LabelConfig, build_market_data, synthetic_bars
from supervised.hpo import HPOConfig, describe_best, run_study, suggest_configs
from supervised.models import MODEL_KINDS, ModelConfig, build_model
from supervised.trainer import TrainConfig

FAST = TrainConfig(epochs=2, batch_size=128, num_threads=1)


def tiny_data():
    bars = {"SYN": synthetic_bars(600, seed=0), "SYN2": synthetic_bars(600, seed=1)}
    return build_market_data(bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4)))


def test_study_runs_and_resumes_from_sqlite(tmp_path) -> None:
    data = tiny_data()
    storage = f"sqlite:///{tmp_path / 'db' / 'hpo.db'}"
    hpo = HPOConfig(n_trials=2, epochs=2, n_startup_trials=2)
    model = ModelConfig(kind="mlp")
    study = run_study(data, model, storage=storage, study_name="tiny", base_train=FAST, hpo=hpo, runs_dir=tmp_path)
    assert len(study.trials) == 2
    first_params = [t.params for t in study.trials]
    resumed = run_study(data, model, storage=storage, study_name="tiny", base_train=FAST,
                        hpo=HPOConfig(n_trials=1, epochs=2, n_startup_trials=2), runs_dir=tmp_path)
    assert len(resumed.trials) == 3
    assert [t.params for t in resumed.trials[:2]] == first_params
    assert resumed.trials[2].params != first_params[0]  # the resumed sampler does not replay trial 0
    for number in range(3):
        run_dir = tmp_path / "hpo" / "tiny" / f"trial_{number}"
        assert any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir())
    complete = [t for t in resumed.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(0 <= t.value <= 1 and "threshold" in t.user_attrs for t in complete)
    assert "best trial #" in describe_best(resumed)
    with pytest.raises(ValueError, match="study 'tiny' searches model 'mlp'; got --model 'gru'"):
        run_study(data, ModelConfig(kind="gru"), storage=storage, study_name="tiny", base_train=FAST, hpo=hpo,
                  runs_dir=tmp_path)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_search_spaces_build_valid_models(kind) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        model, train = suggest_configs(trial, ModelConfig(kind=kind, window=8, n_features=31, n_assets=2), FAST)
        build_model(model)
        assert model.kind == kind and 1e-4 <= train.lr <= 3e-3 and train.epochs == FAST.epochs
        study.tell(trial, 0.0)
