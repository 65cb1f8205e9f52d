"""SIGTERM (``kill``, a job scheduler) stops a training run cleanly: its temporary folder and lock go, the
process exits non-zero with one line, and an older complete run of the same name is left as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

from experiments.common import run_cli, staged_run_directory
from features import DatasetConfig, LabelConfig, build_market_data, synthetic_bars

ROOT = Path(__file__).resolve().parents[1]
OLD_RUN = {"metrics.json": '{"old": true}\n', "model/bundle.json": "{}\n"}
# A supervised config whose training goes on long enough to be stopped in the middle.
LONG_SUPERVISED = "train: {epochs: 100000, batch_size: 64, num_threads: 1, early_stopping_patience: 0}\n"
LONG_PPO = "agent: {total_timesteps: 10000000, n_envs: 1, eval_freq: 10000000}\n"
LONG_HPO = "train: {epochs: 100000, batch_size: 64, num_threads: 1, early_stopping_patience: 0}\nhpo: {heartbeat_interval: 0}\n"


def hidden(folder: Path) -> list[str]:
    """Temporary folders and lock files left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def write_old_run(folder: Path) -> None:
    for name, text in OLD_RUN.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def old_run_intact(folder: Path) -> bool:
    found = {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("*") if p.is_file()}
    return found == OLD_RUN


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("signals") / "data"
    bars = {"SYN": synthetic_bars(400, seed=0), "SYN2": synthetic_bars(400, seed=1)}
    build_market_data(bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4))).save(folder)
    return folder


def test_sigterm_inside_a_run_removes_its_temporary_folder_and_lock_and_exits_143(tmp_path, capsys) -> None:
    write_old_run(tmp_path / "r")

    def fallback(signum, frame):  # what runs if run_cli left SIGTERM to the default (the test would die)
        raise AssertionError("run_cli did not handle SIGTERM")

    def main(argv: list[str]) -> None:
        with staged_run_directory(tmp_path, "r", overwrite=True) as run:
            (run.path / "metrics.json").write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted by the signal
            raise AssertionError("SIGTERM did not stop the run")

    previous = signal.signal(signal.SIGTERM, fallback)
    try:
        assert run_cli(main, []) == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is fallback  # put back after the run
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: terminated by SIGTERM — nothing of the unfinished run was kept") and "\n" not in err
    assert hidden(tmp_path) == [] and old_run_intact(tmp_path / "r")


def test_sigterm_handled_inside_a_weakref_callback_still_stops_the_run(tmp_path, capsys) -> None:
    """Python drops an exception raised in a weakref callback or ``__del__`` (garbage collection, torch's
    and SQLAlchemy's WeakKeyDictionary clean-ups run them in the middle of training): a SIGTERM handled
    there must still stop the run, not be lost while the training goes on."""
    write_old_run(tmp_path / "r")

    class Thing:
        pass

    def main(argv: list[str]) -> None:
        with staged_run_directory(tmp_path, "r", overwrite=True) as run:
            (run.path / "metrics.json").write_text("half")
            thing = Thing()
            ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGTERM))  # handled in the callback
            del thing
            assert ref() is None
            time.sleep(2)  # interrupted by the SIGTERM delivered again
            raise AssertionError("the SIGTERM handled inside a weakref callback was lost")

    previous_hook = sys.unraisablehook
    assert run_cli(main, []) == 128 + signal.SIGTERM
    assert sys.unraisablehook is previous_hook  # put back after the run
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: terminated by SIGTERM — nothing of the unfinished run was kept") and "\n" not in err
    assert hidden(tmp_path) == [] and old_run_intact(tmp_path / "r")


def test_other_exceptions_dropped_during_a_run_are_still_reported(tmp_path) -> None:
    reported = []

    class Broken:
        def __del__(self) -> None:
            raise ValueError("from __del__")

    def main(argv: list[str]) -> None:
        Broken()

    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda report: reported.append(report.exc_value)
    try:
        assert run_cli(main, []) == 0
    finally:
        sys.unraisablehook = previous_hook
    assert [str(e) for e in reported] == ["from __del__"]


def start(module: str, args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_until(ready, process: subprocess.Popen, what: str, timeout: float, runs: Path | None = None) -> float:
    """Poll ``ready()``; returns the seconds it took (fails the test after ``timeout``, showing the hidden
    paths left under ``runs`` and the process's stderr)."""
    started = time.monotonic()
    while not ready():
        if time.monotonic() - started > timeout:
            process.kill()
            try:
                _, err = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                err = "(no stderr: the killed process did not end)"
            left = leftovers(runs) if runs is not None else []
            pytest.fail(f"{what}: not after {timeout} s; left under {runs}: {left}; exit code "
                        f"{process.returncode}; stderr:\n{err[-4000:]}")
        time.sleep(0.05)
    return time.monotonic() - started


def leftovers(runs: Path) -> list[str]:
    """Hidden files and folders (temporary folders, locks) anywhere under ``runs``, relative to it."""
    return sorted(str(p.relative_to(runs)) for p in runs.rglob("*") if p.name.startswith("."))


def terminate(process: subprocess.Popen, runs: Path, what: str) -> tuple[int, str, float]:
    """SIGTERM ``process``; returns its exit code, its stderr and the seconds until nothing hidden is left
    under ``runs``."""
    assert process.poll() is None, f"{what} ended before SIGTERM: {process.stderr.read()[-2000:]}"
    process.send_signal(signal.SIGTERM)
    seconds = wait_until(lambda: not leftovers(runs), process,
                         f"{what}: temporary folder and lock removed after SIGTERM", 30, runs)
    try:
        _, err = process.communicate(timeout=60)  # the interpreter's own teardown (torch, ...) takes a while
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"{what} did not exit within 60 s of SIGTERM; left under {runs}: {leftovers(runs)}")
    return process.returncode, err, seconds


def test_sigterm_during_training_or_a_search_cleans_up_exits_143_and_keeps_the_old_run(tmp_path, tiny_dataset) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    cases = {  # entry point: (arguments, config, TensorBoard events that show it is training)
        "experiments.train_supervised": (["--model", "mlp", "--no-progress", "--run-name", "r", "--overwrite"],
                                         LONG_SUPERVISED, ".r.tmp-*/events.*"),
        "experiments.train_ppo": (["--no-progress", "--run-name", "r", "--overwrite"], LONG_PPO,
                                  ".r.tmp-*/tb/*/events.*"),
        "experiments.hpo": (["--model", "mlp", "--trials", "1", "--storage", storage, "--study-name", "s"], LONG_HPO,
                            "hpo/s/.trial_0.tmp*/events.*"),
    }
    processes = {}
    for module, (args, config, _) in cases.items():  # all at once: their start-up (imports) overlaps
        folder = tmp_path / module
        write_old_run(folder / "runs" / "r")
        (folder / "config.yaml").write_text(config)
        processes[module] = start(module, [*args, "--config", str(folder / "config.yaml"), "--dataset",
                                           str(tiny_dataset), "--runs-dir", str(folder / "runs")], folder)
    for module, process in processes.items():
        runs, events = tmp_path / module / "runs", cases[module][2]
        wait_until(lambda: any(runs.glob(events)) or process.poll() is not None, process, f"{module} training", 180,
                   runs)
        if module != "experiments.hpo":
            assert (runs / ".r.lock").exists()
        code, err, seconds = terminate(process, runs, module)
        last = (err.strip().splitlines() or [""])[-1]
        assert code == 128 + signal.SIGTERM, (module, code, err[-2000:])
        assert "Traceback" not in err, (module, err[-2000:])  # Optuna's log of the stopped trial: one line
        assert seconds < 5, (module, seconds)
        assert last.startswith("error: terminated by SIGTERM — nothing of the unfinished run was kept"), (module, last)
        assert old_run_intact(runs / "r"), module
    assert list((tmp_path / "experiments.hpo" / "runs" / "hpo" / "s").iterdir()) == []
    (trial,) = optuna.load_study(study_name="s", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.FAIL  # not left running for another worker to wait on


def test_a_sigterm_while_the_summary_writer_starts_closes_its_thread(tmp_path, monkeypatch) -> None:
    from torch.utils.tensorboard import SummaryWriter

    from supervised.models import ModelConfig
    from supervised.trainer import TrainConfig, _summary_writer

    closed = []
    monkeypatch.setattr(SummaryWriter, "add_text", lambda self, *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    original_close = SummaryWriter.close
    monkeypatch.setattr(SummaryWriter, "close", lambda self: (closed.append(self), original_close(self)))
    with pytest.raises(KeyboardInterrupt):
        _summary_writer(tmp_path / "run", ModelConfig(), TrainConfig())
    assert len(closed) == 1  # else its writer thread outlives the run and may write into a deleted folder
