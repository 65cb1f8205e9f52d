"""Optuna search on tiny data: SQLite storage, resume adds trials, per-trial TensorBoard logs, trials seeded by
number, the best trial handed back as a model, one-line storage errors."""

from __future__ import annotations

import optuna
import pytest

from experiments import hpo as hpo_cli
from experiments.common import UsageError
from features import DatasetConfig, LabelConfig, build_market_data, synthetic_bars
from supervised.bundle import load_model
from supervised.hpo import HPOConfig, describe_best, open_study, run_study, suggest_configs
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


def test_trials_are_seeded_by_number_so_resuming_and_sharing_never_replay_draws(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'seeded.db'}"

    def objective(trial) -> float:
        return trial.suggest_float("x", 0.0, 1.0) + trial.suggest_float("y", 0.0, 1.0)

    def study(name: str):
        return open_study(storage, name, pruner=optuna.pruners.NopPruner(), seed=3, n_startup_trials=2,
                          heartbeat_interval=0)

    whole = study("whole")
    whole.optimize(objective, n_trials=4)
    study("parts").optimize(objective, n_trials=2)
    parts = study("parts")  # a resumed worker: a new sampler object
    parts.optimize(objective, n_trials=2)
    assert [t.params for t in parts.trials] == [t.params for t in whole.trials]  # TPE trials 2-3 included
    first, second = study("shared"), study("shared")  # two workers that started together, taking turns
    for _ in range(2):
        first.optimize(objective, n_trials=1)
        second.optimize(objective, n_trials=1)
    assert len({tuple(t.params.values()) for t in first.trials}) == 4


def test_a_bad_storage_is_one_line_without_its_password(tmp_path, capsys) -> None:
    from experiments.common import run_cli

    argv = ["--model", "mlp", "--trials", "1", "--storage", "postgresql://trader:s3cret@127.0.0.1:1/hpo",
            "--dataset", str(tiny_saved(tmp_path)), "--runs-dir", str(tmp_path / "runs")]
    assert run_cli(hpo_cli.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: cannot open Optuna storage postgresql://trader:***@127.0.0.1:1/hpo")
    assert "s3cret" not in err


def test_the_best_trial_is_handed_back_once_and_a_foreign_folder_is_refused(tmp_path, capsys) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text("train: {epochs: 2, batch_size: 128, num_threads: 1}\nevaluation: {importance_repeats: 0}\n")
    runs = tmp_path / "runs"
    argv = ["--model", "mlp", "--trials", "1", "--storage", f"sqlite:///{tmp_path / 'hpo.db'}", "--study-name", "s",
            "--config", str(config), "--dataset", str(tiny_saved(tmp_path)), "--runs-dir", str(runs), "--epochs", "1"]
    (runs / "mine").mkdir(parents=True)
    with pytest.raises(UsageError, match="is not a hand-back of study 's'"):
        hpo_cli.main(argv + ["--best-name", "mine"])
    assert list((runs / "mine").iterdir()) == []
    study = hpo_cli.main(argv)
    out = capsys.readouterr().out
    best = runs / "s_best"
    assert f"best model: {best / 'model'} [trial #{study.best_trial.number} retrained with the full budget (2 epochs)" in out
    assert f"python -m experiments.backtest --policy {best / 'model'}" in out
    assert load_model(best / "model").model_config.kind == "mlp"
    stamp = (best / "hpo.json").stat().st_mtime_ns
    study.add_trial(optuna.trial.create_trial(value=-1.0))  # a worse trial from elsewhere: the best is unchanged

    def must_not_write(path, trial):
        raise AssertionError("the same best trial is written again")

    folder, record, fresh = hpo_cli.hand_back(study, runs, None, must_not_write, same={"epochs": 2})
    assert (folder, record["trial"], fresh) == (best, study.best_trial.number, False)
    assert (best / "hpo.json").stat().st_mtime_ns == stamp
    assert [p.name for p in runs.iterdir() if p.name.startswith(".")] == []


def tiny_saved(tmp_path):
    path = tmp_path / "data"
    if not path.exists():
        tiny_data().save(path)
    return path
