"""Workers sharing one Optuna study through a real PostgreSQL server (and SQLite, the one-machine default):
unique trial numbers, every worker's trials counted, one pruner over all of them, a killed worker's trial
failed and retried, and the best model handed back and usable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc

from experiments import backtest
from experiments import hpo as hpo_cli
from features import DatasetConfig, LabelConfig, build_market_data, synthetic_bars
from supervised.bundle import load_model
from supervised.hpo import HPOConfig, StorageError, open_study, run_study
from supervised.models import ModelConfig
from supervised.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
FAST = TrainConfig(epochs=2, batch_size=128, num_threads=1)
# The config of the CLI runs: the hand-back retrains for 3 epochs and skips permutation importance.
TINY_CONFIG = """
train: {epochs: 3, batch_size: 128, num_threads: 1}
evaluation: {importance_repeats: 0}
hpo: {n_startup_trials: 2, pruner_warmup_epochs: 1}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A saved tiny dataset and a config for the command line."""
    folder = tmp_path_factory.mktemp("tiny")
    bars = {"SYN": synthetic_bars(600, seed=0), "SYN2": synthetic_bars(600, seed=1)}
    data = build_market_data(bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4)))
    data.save(folder / "data")
    (folder / "config.yaml").write_text(TINY_CONFIG)
    return folder / "data", folder / "config.yaml"


def storage_url(kind: str, tmp_path: Path, request) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'hpo.db'}"
    return request.getfixturevalue("postgres_url")


def start_worker(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "experiments.hpo", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_two_workers_started_at_once_share_one_study_and_hand_back_a_model(kind, tmp_path, tiny, request) -> None:
    data_dir, config = tiny
    url = storage_url(kind, tmp_path, request)
    runs = tmp_path / "runs"
    args = ["--model", "mlp", "--trials", "3", "--storage", url, "--study-name", "duo", "--config", str(config),
            "--dataset", str(data_dir), "--runs-dir", str(runs), "--epochs", "2"]
    workers = [start_worker(args, tmp_path) for _ in range(2)]  # at the same moment, on an empty database
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output

    study = optuna.load_study(study_name="duo", storage=url)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(6))  # unique numbers; the union is what both asked for
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    by_worker: dict[str, int] = {}
    for t in trials:
        by_worker[t.user_attrs["worker"]] = by_worker.get(t.user_attrs["worker"], 0) + 1
    assert sorted(by_worker.values()) == [3, 3]  # both contributed their 3
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6  # no worker replays the other's draws
    trial_root = runs / "hpo" / "duo"
    assert sorted(p.name for p in trial_root.iterdir()) == [f"trial_{n}" for n in range(6)]

    best = runs / "duo_best"
    record = json.loads((best / "hpo.json").read_text())
    assert record["trial"] == study.best_trial.number and record["handed_back"] == "retrained" and record["epochs"] == 3
    assert "password" not in record["storage"]
    assert load_model(best / "model").threshold == json.loads((best / "metrics.json").read_text())["threshold"]["chosen"]
    assert hidden(runs) == [] and hidden(trial_root) == []
    assert any(f"python -m experiments.train_ppo --pretrained {best / 'model'}" in out for out in outputs)
    assert backtest.main(["--policy", str(best), "--dataset", str(data_dir), "--runs-dir", str(runs),
                          "--run-name", "bt", "--no-plot"])
    assert (runs / "bt" / "SYN" / "metrics.json").exists()

    if kind == "postgresql":  # resuming adds trials; the hand-back follows the best trial
        resumed = hpo_cli.main([*args[:3], "1", *args[4:], "--no-best"])
        assert len(resumed.trials) == 7 and resumed.trials[6].state != optuna.trial.TrialState.RUNNING


def test_workers_opening_a_fresh_database_at_the_same_moment_all_succeed(postgres_url) -> None:
    # Plain optuna.create_study fails here: every worker creates the schema and all but one get a
    # duplicate-type error. Threads collide on the database exactly as processes do, without their start-up.
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            study = open_study(postgres_url, "race", pruner=optuna.pruners.NopPruner(), seed=0, n_startup_trials=1,
                               heartbeat_interval=0)
            study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    study = optuna.load_study(study_name="race", storage=postgres_url)
    assert sorted(t.number for t in study.trials) == list(range(8))


def test_pruning_sees_the_other_workers_trials(postgres_url, tmp_path, tiny) -> None:
    data_dir, _ = tiny
    from features import load_dataset

    data = load_dataset(data_dir)
    other = optuna.create_study(study_name="shared", storage=postgres_url, direction="maximize")
    for _ in range(2):  # another worker's completed trials, perfect at every epoch
        other.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={1: 1.0, 2: 1.0, 3: 1.0}))
    hpo = HPOConfig(n_trials=2, epochs=3, n_startup_trials=2, pruner_warmup_epochs=0, heartbeat_interval=0)
    study = run_study(data, ModelConfig(kind="mlp"), storage=postgres_url, study_name="shared", base_train=FAST,
                      hpo=hpo, runs_dir=tmp_path)
    mine = study.trials[2:]
    assert [t.state for t in mine] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(len(t.intermediate_values) == 1 for t in mine)  # stopped after the first epoch
    assert all((tmp_path / "hpo" / "shared" / f"trial_{t.number}").is_dir() for t in mine)  # curves are kept


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_worker_killed_mid_trial_leaves_it_failed_and_it_is_retried(kind, tmp_path, tiny, request) -> None:
    data_dir, config = tiny
    url = storage_url(kind, tmp_path, request)
    runs = tmp_path / "runs"
    args = ["--model", "mlp", "--trials", "1", "--storage", url, "--study-name", "kill", "--config", str(config),
            "--dataset", str(data_dir), "--runs-dir", str(runs), "--epochs", "1000", "--heartbeat", "1", "--no-best"]
    worker = start_worker(args, tmp_path)
    storage = None
    try:
        deadline = time.monotonic() + 120
        while True:  # wait until the worker is inside its trial, with an epoch reported
            assert worker.poll() is None and time.monotonic() < deadline, worker.stdout.read() if worker.poll() else ""
            time.sleep(0.2)
            try:
                storage = storage or optuna.storages.RDBStorage(url)
                trials = optuna.load_study(study_name="kill", storage=storage).get_trials()
            except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # not created yet, or being created
                continue
            if trials and trials[0].intermediate_values:
                break
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)
    time.sleep(2.5)  # its heartbeat is now older than the grace period (2 x 1 s)

    from features import load_dataset

    hpo = HPOConfig(n_trials=1, epochs=2, n_startup_trials=2, heartbeat_interval=1)
    study = run_study(load_dataset(data_dir), ModelConfig(kind="mlp"), storage=url, study_name="kill",
                      base_train=FAST, hpo=hpo, runs_dir=runs)
    killed, retried = study.trials
    assert killed.state == optuna.trial.TrialState.FAIL  # not lost, not counted complete
    assert retried.state == optuna.trial.TrialState.COMPLETE and retried.system_attrs["failed_trial"] == 0
    assert retried.params == killed.params and retried.user_attrs["worker"] != killed.user_attrs["worker"]
    trial_root = runs / "hpo" / "kill"
    assert sorted(p.name for p in trial_root.iterdir()) == ["trial_1"]  # the killed trial's half-written folder is gone


def test_a_statement_stuck_past_the_statement_timeout_ends_in_one_line(postgres_url) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    open_study(postgres_url, "first", pruner=optuna.pruners.NopPruner(), seed=0, n_startup_trials=1,
               heartbeat_interval=0)  # creates the schema
    plain = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain) as blocker:  # another session holds the studies table: every write waits
        blocker.execute("LOCK TABLE studies IN ACCESS EXCLUSIVE MODE")
        release = threading.Timer(20, blocker.rollback)  # without the timeout the test fails, not hangs
        release.start()
        started = time.monotonic()
        try:
            with pytest.raises(StorageError) as raised:
                open_study(postgres_url, "second", pruner=optuna.pruners.NopPruner(), seed=0, n_startup_trials=1,
                           heartbeat_interval=0, statement_timeout=1)
        finally:
            release.cancel()
        assert time.monotonic() - started < 10  # 1 s on the server, not a wait for the lock to go
        blocker.rollback()
    message = str(raised.value)
    assert "\n" not in message and "ran past the 1 s statement timeout" in message and "127.0.0.1:" in message
