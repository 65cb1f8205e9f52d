"""Runs are never lost or mixed: every entry point builds its run folder aside and swaps it in whole.

The heavy training functions are replaced by stubs that write files (or raise), so these tests are fast.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments import agent_cli, backtest, build_dataset, pipeline, train_supervised
from experiments import hpo as hpo_cli
from experiments import common
from experiments.common import RunExistsError, policy_label, resolve_bundle_path, resolve_policy_path, staged_run_directory
from features import DatasetConfig, LabelConfig, build_market_data, synthetic_bars


def hidden(runs_dir: Path) -> list[str]:
    """Temporary folders, lock files and swapped-out runs left in ``runs_dir``."""
    return sorted(p.name for p in Path(runs_dir).iterdir() if p.name.startswith("."))


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file()}


@pytest.fixture()
def frozen_time(monkeypatch):
    """Every default run name gets the same timestamp, as two runs started in the same second do."""
    monkeypatch.setattr(common, "timestamp", lambda: "20240102-030405")


# ---------------------------------------------------------------------------------------------------
# staged_run_directory


def test_a_run_is_built_aside_and_moved_into_place(tmp_path) -> None:
    with staged_run_directory(tmp_path, "r") as run:
        assert run.final == tmp_path / "r" and not run.final.exists()
        assert run.path.parent == tmp_path and run.path.name.startswith(".r.tmp-")
        (run.path / "a.txt").write_text("new")
    assert (tmp_path / "r" / "a.txt").read_text() == "new"
    assert hidden(tmp_path) == []


def test_an_existing_run_is_refused_without_overwrite(tmp_path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        with staged_run_directory(tmp_path, "r"):
            pytest.fail("the block must not run")
    assert files(tmp_path / "r") == {"old.txt"} and hidden(tmp_path) == []


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_an_overwrite_that_fails_midway_leaves_the_old_run(tmp_path, interruption) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "old.txt").write_text("old")
    with pytest.raises(interruption):
        with staged_run_directory(tmp_path, "r", overwrite=True) as run:
            (run.path / "new.txt").write_text("half")
            raise interruption()
    assert files(tmp_path / "r") == {"old.txt"} and hidden(tmp_path) == []


def test_an_overwrite_replaces_the_whole_old_run(tmp_path) -> None:
    (tmp_path / "r" / "tb" / "ppo_1").mkdir(parents=True)
    (tmp_path / "r" / "tb" / "ppo_1" / "events.out.tfevents.old").write_text("old")
    (tmp_path / "r" / "summary.json").write_text("{}")
    with staged_run_directory(tmp_path, "r", overwrite=True) as run:
        assert (tmp_path / "r" / "summary.json").exists()  # untouched until the new run is complete
        (run.path / "tb" / "ppo_1").mkdir(parents=True)
        (run.path / "tb" / "ppo_1" / "events.out.tfevents.new").write_text("new")
    assert files(tmp_path / "r") == {"tb/ppo_1/events.out.tfevents.new"} and hidden(tmp_path) == []


def test_default_names_never_collide(tmp_path, frozen_time) -> None:
    with staged_run_directory(tmp_path, None, prefix="ppo") as first:
        with staged_run_directory(tmp_path, None, prefix="ppo") as concurrent:  # started while the first runs
            pass
    with staged_run_directory(tmp_path, None, prefix="ppo") as later:
        pass
    assert [first.name, concurrent.name, later.name] == ["ppo_20240102-030405", "ppo_20240102-030405-2",
                                                         "ppo_20240102-030405-3"]
    assert hidden(tmp_path) == []


def test_a_name_being_written_is_refused(tmp_path) -> None:
    with staged_run_directory(tmp_path, "r"):
        with pytest.raises(RunExistsError, match="being written"):
            with staged_run_directory(tmp_path, "r", overwrite=True):
                pass


def test_what_a_killed_run_left_is_cleaned(tmp_path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)

    (tmp_path / ".r.lock").write_text(f"{int(dead.stdout)} {socket.gethostname()}\n")
    (tmp_path / ".r.tmp-abc").mkdir()
    with staged_run_directory(tmp_path, "r") as run:
        (run.path / "a.txt").write_text("new")
    assert files(tmp_path / "r") == {"a.txt"} and hidden(tmp_path) == []


def test_run_names_must_be_plain(tmp_path) -> None:
    for bad in ("a/b", ".hidden", ".."):
        with pytest.raises(common.UsageError, match="plain folder name"):
            with staged_run_directory(tmp_path, bad):
                pass


def test_run_folders_resolve_to_their_agent_or_bundle(tmp_path) -> None:
    (tmp_path / "ppo_x" / "best").mkdir(parents=True)
    (tmp_path / "ppo_x" / "best" / "agent.json").write_text("{}")
    (tmp_path / "sup_x" / "model").mkdir(parents=True)
    (tmp_path / "sup_x" / "model" / "bundle.json").write_text("{}")
    assert resolve_policy_path(str(tmp_path / "ppo_x"), ["cash"]) == str(tmp_path / "ppo_x" / "best")
    assert resolve_policy_path(str(tmp_path / "ppo_x" / "best"), ["cash"]) == str(tmp_path / "ppo_x" / "best")
    assert resolve_policy_path(str(tmp_path / "sup_x"), ["cash"]) == str(tmp_path / "sup_x" / "model")
    assert resolve_policy_path("cash", ["cash"]) == "cash"
    assert resolve_bundle_path(tmp_path / "sup_x") == str(tmp_path / "sup_x" / "model")
    with pytest.raises(FileNotFoundError, match="ppo_x/best"):  # names what the folder holds
        resolve_policy_path(str(tmp_path), ["cash"])
    with pytest.raises(FileNotFoundError, match="not a supervised bundle"):
        resolve_bundle_path(tmp_path / "ppo_x")
    assert policy_label(str(tmp_path / "ppo_x" / "best")) == "ppo_x-best"
    assert policy_label(str(tmp_path / "sup_x" / "model")) == "sup_x-model"
    assert policy_label("buy_and_hold") == "buy_and_hold"


# ---------------------------------------------------------------------------------------------------
# Entry points, with stubs for the heavy work


class FakeData:
    symbols = ["SYN"]

    def summary(self) -> str:
        return "fake data"


@pytest.fixture()
def stub_ppo(monkeypatch):
    """train_ppo with a training stub; ``calls['fail']`` makes the next training raise after writing."""
    calls = {"n": 0, "fail": None}

    def train_agent(config, data, run_dir, **kwargs):
        calls["n"] += 1
        run_dir = Path(run_dir)
        for sub in ("best", "final", "tb/ppo_1"):
            (run_dir / sub).mkdir(parents=True)
        (run_dir / "best" / "agent.json").write_text(json.dumps({"run": calls["n"]}))
        (run_dir / "tb" / "ppo_1" / f"events.out.tfevents.{calls['n']}").write_text("")
        if calls["n"] == 1:
            (run_dir / "final" / "only_in_the_first_run.txt").write_text("")
        if calls["fail"]:
            raise calls["fail"]()
        return {"fallback": "cash", "steps_per_second": 1.0, "eval_share": 0.1, "best_dir": str(run_dir / "best")}

    monkeypatch.setattr(agent_cli, "train_agent", train_agent)
    monkeypatch.setattr(agent_cli, "dataset_from_args", lambda args, sections=None: FakeData())
    monkeypatch.setattr(agent_cli, "load_agent", lambda path, data: SimpleNamespace(env_settings={}))
    monkeypatch.setattr(agent_cli, "evaluate_policy", lambda *a, **k: {"log_return": 0.0, "n_orders": 0})
    return calls


def ppo(tmp_path, *extra: str) -> dict:
    return agent_cli.main("ppo", ["--runs-dir", str(tmp_path), "--no-progress", *extra])


def test_train_ppo_overwrite_killed_midway_keeps_the_old_run(tmp_path, stub_ppo) -> None:
    ppo(tmp_path, "--run-name", "r")
    before = {name: (tmp_path / "r" / name).read_bytes() for name in files(tmp_path / "r")}
    stub_ppo["fail"] = KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        ppo(tmp_path, "--run-name", "r", "--overwrite")
    assert {name: (tmp_path / "r" / name).read_bytes() for name in files(tmp_path / "r")} == before
    assert hidden(tmp_path) == []


def test_train_ppo_overwrite_keeps_nothing_of_the_old_run(tmp_path, stub_ppo) -> None:
    ppo(tmp_path, "--run-name", "r")
    assert common.run_cli(lambda argv: ppo(tmp_path, *argv), ["--run-name", "r"]) == 2  # refused
    summary = ppo(tmp_path, "--run-name", "r", "--overwrite")
    assert files(tmp_path / "r") == {"best/agent.json", "tb/ppo_1/events.out.tfevents.2", "summary.json"}
    assert json.loads((tmp_path / "r" / "best" / "agent.json").read_text()) == {"run": 2}
    assert summary["best_dir"] == str(tmp_path / "r" / "best")  # the final place, not the temporary one
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["best_dir"] == str(tmp_path / "r" / "best")


def test_train_ppo_default_names_in_the_same_second_differ(tmp_path, stub_ppo, frozen_time) -> None:
    ppo(tmp_path)
    ppo(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ppo_20240102-030405", "ppo_20240102-030405-2"]


@pytest.fixture()
def stub_supervised(monkeypatch):
    calls = {"n": 0, "fail": None}

    def run_supervised(data, model_config, train_config, run_dir, **kwargs):
        calls["n"] += 1
        run_dir = Path(run_dir)
        (run_dir / "model").mkdir()
        (run_dir / "model" / "bundle.json").write_text(json.dumps({"run": calls["n"]}))
        (run_dir / f"events.out.tfevents.{calls['n']}").write_text("")
        if calls["fail"]:
            raise calls["fail"]()
        metrics = {"run_dir": str(run_dir), "training": {"best_epoch": 1, "epochs_run": 1, "n_parameters": 1,
                                                          "train_seconds": 0.0}}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(train_supervised, "run_supervised", run_supervised)
    monkeypatch.setattr(train_supervised, "prepare_data", lambda config, dataset=None: FakeData())
    monkeypatch.setattr(train_supervised, "format_metrics_table", lambda metrics: "")
    return calls


def supervised(tmp_path, *extra: str) -> dict:
    return train_supervised.main(["--model", "mlp", "--runs-dir", str(tmp_path), "--no-progress", *extra])


def test_train_supervised_overwrite_killed_midway_keeps_the_old_model(tmp_path, stub_supervised) -> None:
    supervised(tmp_path, "--run-name", "s")
    stub_supervised["fail"] = KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        supervised(tmp_path, "--run-name", "s", "--overwrite")
    assert files(tmp_path / "s") == {"model/bundle.json", "events.out.tfevents.1", "metrics.json"}
    assert json.loads((tmp_path / "s" / "model" / "bundle.json").read_text()) == {"run": 1}
    assert hidden(tmp_path) == []
    stub_supervised["fail"] = None
    metrics = supervised(tmp_path, "--run-name", "s", "--overwrite")
    assert files(tmp_path / "s") == {"model/bundle.json", "events.out.tfevents.3", "metrics.json"}  # one run's events
    assert metrics["run_dir"] == str(tmp_path / "s")
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["run_dir"] == str(tmp_path / "s")


def test_train_supervised_default_names_in_the_same_second_differ(tmp_path, stub_supervised, frozen_time) -> None:
    supervised(tmp_path)
    supervised(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sup_mlp_20240102-030405", "sup_mlp_20240102-030405-2"]


@pytest.fixture()
def tiny_dataset(tmp_path):
    bars = {"SYN": synthetic_bars(400, seed=0)}
    data = build_market_data(bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4)))
    return data.save(tmp_path / "dataset")


def test_a_second_backtest_of_another_agent_keeps_the_first(tmp_path, tiny_dataset, monkeypatch, frozen_time) -> None:
    from agents.baselines import make_baseline

    monkeypatch.setattr(backtest, "load_policy", lambda spec, data, seed=0: make_baseline("cash", data))
    runs = tmp_path / "runs"
    for name in ("ppo_a", "ppo_b"):
        (runs / name / "best").mkdir(parents=True)
        (runs / name / "best" / "agent.json").write_text("{}")
    common_args = ["--dataset", str(tiny_dataset), "--runs-dir", str(runs), "--no-plot"]
    backtest.main(["--policy", str(runs / "ppo_a" / "best"), *common_args])
    backtest.main(["--policy", str(runs / "ppo_b"), *common_args])  # a run folder means its best/
    backtest.main(["--policy", str(runs / "ppo_a" / "best"), *common_args])  # the same agent again
    made = sorted(p.name for p in runs.iterdir() if p.name.startswith("backtest_"))
    assert made == ["backtest_ppo_a-best_test_20240102-030405", "backtest_ppo_a-best_test_20240102-030405-2",
                    "backtest_ppo_b-best_test_20240102-030405"]
    for name in made:
        summary = json.loads((runs / name / "summary.json").read_text())
        assert summary["policy"].endswith("best") and (runs / name / "SYN" / "metrics.json").exists()
    assert hidden(runs) == []


def test_build_dataset_refuses_an_existing_output_unless_overwrite(tmp_path, monkeypatch) -> None:
    import experiments.build_dataset as module

    tiny = {"SYN": synthetic_bars(300, seed=0)}
    monkeypatch.setattr(module, "load_bars", lambda *args, **kwargs: tiny)
    out = tmp_path / "datasets" / "d"
    argv = ["--output", str(out)]
    build_dataset.main(argv)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="--output"):
        build_dataset.main(argv)
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    build_dataset.main(argv + ["--overwrite"])
    assert (out / "manifest.json").exists() and hidden(out.parent) == []


def test_pipeline_refuses_an_existing_run_before_any_work(tmp_path, monkeypatch) -> None:
    (tmp_path / "p").mkdir()
    monkeypatch.setattr(pipeline, "build_dataset", lambda *a, **k: pytest.fail("nothing may run"))
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        pipeline.main(["--runs-dir", str(tmp_path), "--run-name", "p"])


def test_hpo_refuses_trial_folders_of_an_unknown_study(tmp_path, tiny_dataset, monkeypatch) -> None:
    import supervised.hpo as hpo_module

    def train_classifier(data, model_config, train_config, run_dir, **kwargs):
        Path(run_dir, "events.out.tfevents.new").write_text("")
        return SimpleNamespace(best_val_f1=0.5, best_epoch=1, threshold=0.5, train_seconds=0.0,
                               model_config=model_config)

    monkeypatch.setattr(hpo_module, "train_classifier", train_classifier)
    stale = tmp_path / "runs" / "hpo" / "s" / "trial_0"
    stale.mkdir(parents=True)
    (stale / "events.out.tfevents.old").write_text("")
    argv = ["--model", "mlp", "--trials", "1", "--storage", f"sqlite:///{tmp_path / 'hpo.db'}", "--study-name", "s",
            "--dataset", str(tiny_dataset), "--runs-dir", str(tmp_path / "runs"), "--epochs", "1", "--no-best"]
    with pytest.raises(FileExistsError, match="trial_0"):
        hpo_cli.main(argv)
    assert files(stale) == {"events.out.tfevents.old"}
    hpo_cli.main(argv + ["--overwrite"])
    assert files(stale) == {"events.out.tfevents.new"} and hidden(stale.parent) == []
    hpo_cli.main(argv)  # resuming the study adds trial_1 and is no conflict
    assert sorted(p.name for p in stale.parent.iterdir()) == ["trial_0", "trial_1"]


def test_no_entry_point_writes_a_run_folder_outside_the_staging_helper() -> None:
    root = Path(__file__).resolve().parents[1] / "experiments"
    for name in ("agent_cli", "backtest", "build_dataset", "hpo", "pipeline", "train_supervised", "common"):
        path = root / f"{name}.py"
        text = path.read_text()
        assert "shutil.rmtree" not in text or path.name == "common.py", path
        assert "run_directory(" not in text.replace("staged_run_directory(", ""), path


def test_lock_files_hold_the_writer_pid(tmp_path) -> None:
    with staged_run_directory(tmp_path, "r"):
        pid, _, host = (tmp_path / ".r.lock").read_text().strip().partition(" ")
        assert int(pid) == os.getpid() and host
    assert not (tmp_path / ".r.lock").exists()
