"""A ``--broker sim`` paper run stopped any way - SIGKILL at any moment, SIGTERM, the KILL file, a normal finish -
resumes with the same ``--run-name``: the replay's accounts are rebuilt from the run's journal, and the resumed run
ends with exactly the fills and equity of a run never interrupted (and a finished run does not trade again)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from features.preprocessing import Preprocessing
from live import Journal, LiveLoop, PaperConfig, SimBroker, load_live_policy
from live.loop import CRASH_POINTS
from supervised.bundle import load_model, save_bundle

from live_helpers import two_symbol_classifier

from experiments import paper_trade
from experiments.common import run_cli

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ["SYN", "SYN2"]
LOOSE_RISK = {"risk": {"max_daily_loss": 0.99, "max_orders_per_day": 1000}, "alerts": {"daily_loss": 0.99}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A two-symbol dataset with a 30-bar test split, a small supervised policy that trades it (its threshold at
    the median probability, so it enters and exits), and the paper config."""
    root = tmp_path_factory.mktemp("resume")
    bars, data, result = two_symbol_classifier(root)
    bundle = root / "sup" / "model"
    lo, hi = data.split_range("test", "SYN")
    windows = np.stack([data.features[r - data.window + 1: r + 1] for r in range(lo, hi)])
    save_bundle(bundle, result.classifier, result.model_config, preprocessing=Preprocessing.of(data),
                label=data.label, threshold=0.5, dataset_hashes=data.hashes)
    median = float(np.median(load_model(bundle).predict_proba(windows, np.full(len(windows), data.asset_ids[0]))))
    save_bundle(bundle, result.classifier, result.model_config, preprocessing=Preprocessing.of(data),
                label=data.label, threshold=median, dataset_hashes=data.hashes)
    config = root / "paper.yaml"
    config.write_text(yaml.safe_dump(LOOSE_RISK))
    return {"root": root, "data": data, "bundle": bundle, "config": config}


def argv(setup, runs: Path, name: str) -> list[str]:
    return ["--policy", str(setup["bundle"]), "--broker", "sim", "--dataset", str(setup["root"] / "dataset"),
            "--symbols", *SYMBOLS, "--config", str(setup["config"]), "--runs-dir", str(runs), "--run-name", name,
            "--no-progress"]


def journal_of(runs: Path, name: str) -> Journal:
    return Journal(runs / name / "journal.sqlite", durable=False)


def outcome(journal: Journal) -> tuple[list, np.ndarray, list, np.ndarray]:
    """The run's fills and equity marks: keys (symbol, bar, ...) and their numbers."""
    fills = journal.fills()
    marks = journal.equity()
    return ([(f["symbol"], f["bar_time"]) for f in fills],
            np.array([[f["units"], f["price"], f["commission"], f["cash_after"]] for f in fills]),
            [(m["symbol"], m["bar_time"]) for m in marks],
            np.array([[m["equity"], m["cash"], m["units"]] for m in marks]))


def assert_same_run(journal: Journal, reference: tuple) -> None:
    fill_keys, fill_values, mark_keys, mark_values = outcome(journal)
    assert fill_keys == reference[0]
    np.testing.assert_allclose(fill_values, reference[1], rtol=0, atol=1e-9)
    assert mark_keys == reference[2]
    np.testing.assert_allclose(mark_values, reference[3], rtol=0, atol=1e-9)
    assert not [a["message"] for a in journal.alerts() if a["kind"] in ("daily_loss", "halted", "reconciliation")]
    assert journal.meta("halted") is None and journal.meta("status") == "finished"
    assert len({o["client_order_id"] for o in journal.orders()}) == len(journal.orders())


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
    """The run never interrupted."""
    runs = tmp_path_factory.mktemp("reference")
    assert paper_trade.main(argv(setup, runs, "whole")) == "replay finished"
    journal = journal_of(runs, "whole")
    ref = outcome(journal)
    assert len(ref[0]) >= 6 and {key[0] for key in ref[0]} == set(SYMBOLS)  # both symbols trade, several times
    return runs, ref


def start_subprocess(setup, runs: Path, name: str, **env: str) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen([sys.executable, "-m", "experiments.paper_trade", *argv(setup, runs, name)], cwd=ROOT,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_decisions(runs: Path, name: str, k: int, process: subprocess.Popen) -> int:
    """Poll the run's journal until it has at least ``k`` decisions; return how many it has."""
    path = runs / name / "journal.sqlite"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended before {k} decisions: {process.communicate()}"
        if path.exists():
            try:
                with sqlite3.connect(path, timeout=5) as db:
                    n = db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
            except sqlite3.OperationalError:  # the tables are not there yet
                n = 0
            if n >= k:
                return n
        time.sleep(0.005)
    raise AssertionError(f"no {k} decisions within 90 s")


def resume(setup, runs: Path, name: str) -> Journal:
    assert paper_trade.main(argv(setup, runs, name)) == "replay finished"
    return journal_of(runs, name)


# ---- SIGKILL ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [2, 9])
def test_a_sim_run_killed_with_sigkill_resumes_to_the_fills_and_equity_of_an_uninterrupted_run(setup, reference,
                                                                                                 tmp_path, k):
    process = start_subprocess(setup, tmp_path, "killed")
    seen = wait_for_decisions(tmp_path, "killed", k, process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    stopped = journal_of(tmp_path, "killed")
    assert stopped.meta("status") == "running" and len(stopped.decisions()) >= seen  # killed mid-run
    assert len(stopped.equity()) < len(reference[1][2])
    stopped.close()
    assert_same_run(resume(setup, tmp_path, "killed"), reference[1])


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_submit", "after_book"])
def test_a_sim_run_killed_between_an_order_and_its_booking_resumes_exactly(setup, reference, tmp_path, point):
    """SIGKILL the moment the simulator filled an order the journal has not booked (after_submit), and the moment
    it is booked but its decision not yet marked executed (after_book): the order is neither lost nor doubled."""
    process = start_subprocess(setup, tmp_path, "crashed", PAPER_TRADE_CRASH_AT=f"{point}:3")
    process.communicate(timeout=90)
    assert process.returncode == -signal.SIGKILL
    stopped = journal_of(tmp_path, "crashed")
    statuses = [o["status"] for o in stopped.orders()]
    assert statuses[-1] == ("intent" if point == "after_submit" else "filled") and len(statuses) == 3
    stopped.close()
    assert_same_run(resume(setup, tmp_path, "crashed"), reference[1])


def test_a_crash_at_every_point_of_the_loop_resumes_exactly(setup, reference, tmp_path):
    """In-process: the loop dies at each named point (several passes in), a new broker and loop resume from the
    journal alone, and the end is the uninterrupted run's."""

    class Died(BaseException):
        pass

    config = PaperConfig.from_dict(LOOSE_RISK)
    data = setup["data"]

    def loop(name, crash=None):
        policy = load_live_policy(setup["bundle"])
        broker = SimBroker(data, SYMBOLS, "test", config.costs.costs(), min_bars=policy.preprocessing.min_bars,
                           capital_per_symbol=100_000.0, allow_short=policy.allow_short)
        return LiveLoop(policy, broker, journal_of(tmp_path, name), SYMBOLS, config, run_name=name,
                        run_dir=tmp_path / name, crash=crash, write_monitor=False)

    for point in CRASH_POINTS:
        if point == "after_cancel":
            continue  # the simulator's orders fill at once: nothing is ever canceled
        passes = {"n": 0}

        def crash(name, point=point):
            if name == point:
                passes["n"] += 1
                if passes["n"] == 4:
                    raise Died(point)

        with pytest.raises(Died):
            loop(point, crash).run()
        assert loop(point).run() == "replay finished"
        assert_same_run(journal_of(tmp_path, point), reference[1])


# ---- stopped on purpose, and finished --------------------------------------------------------------------------

def stop_on_purpose(setup, tmp_path, name, stop) -> str:
    """Run a replay in-process whose ``stop(run_dir)`` is called at the 6th decision; return why it ended."""
    config = PaperConfig.from_dict(LOOSE_RISK)
    policy = load_live_policy(setup["bundle"])
    broker = SimBroker(setup["data"], SYMBOLS, "test", config.costs.costs(), min_bars=policy.preprocessing.min_bars)
    run_dir = tmp_path / name
    passes = {"n": 0}

    def at_the_sixth_decision(point):
        if point == "after_decide":
            passes["n"] += 1
            if passes["n"] == 6:
                stop(run_dir)

    loop = LiveLoop(policy, broker, journal_of(tmp_path, name), SYMBOLS, config, run_name=name, run_dir=run_dir,
                    crash=at_the_sixth_decision, write_monitor=False)
    reason = loop.run()
    assert "killed" in loop.journal.meta("status")
    loop.journal.close()
    return reason


def test_a_sim_run_stopped_with_sigterm_resumes_exactly(setup, reference, tmp_path):
    reason = stop_on_purpose(setup, tmp_path, "termed", lambda run_dir: os.kill(os.getpid(), signal.SIGTERM))
    assert reason == "killed: SIGTERM"
    assert_same_run(resume(setup, tmp_path, "termed"), reference[1])


def test_a_sim_run_stopped_with_the_kill_file_resumes_exactly(setup, reference, tmp_path):
    reason = stop_on_purpose(setup, tmp_path, "stopped", lambda run_dir: (run_dir / "KILL").touch())
    assert reason.startswith("killed: kill file")
    (tmp_path / "stopped" / "KILL").unlink()  # the user lifts the kill switch, then starts the run again
    assert_same_run(resume(setup, tmp_path, "stopped"), reference[1])


def test_a_finished_sim_run_started_again_neither_trades_nor_reports_a_loss(setup, reference, tmp_path):
    
    shutil.copytree(reference[0] / "whole", tmp_path / "whole")
    before = journal_of(tmp_path, "whole")
    counts = (len(before.orders()), len(before.fills()), len(before.decisions()), len(before.alerts()))
    before.close()
    again = resume(setup, tmp_path, "whole")
    assert (len(again.orders()), len(again.fills()), len(again.decisions()), len(again.alerts())) == counts
    assert_same_run(again, reference[1])


def test_resuming_a_sim_run_on_another_split_is_one_line_naming_the_journal(setup, reference, tmp_path, capsys):
    import shutil

    shutil.copytree(reference[0] / "whole", tmp_path / "whole")
    assert run_cli(paper_trade.main, argv(setup, tmp_path, "whole") + ["--split", "validation"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "journal.sqlite" in err and "--run-name" in err, err


def test_a_run_decides_on_one_torch_thread_with_its_startup_objects_frozen_and_restores_both(setup, tmp_path):
    """While the loop runs, torch has one thread (a cycle's few observations gain nothing from more) and what existed
    at its start is out of the collector's full passes; after the run (finished or failed) both are as before."""
    import gc

    import torch

    config = PaperConfig.from_dict(LOOSE_RISK)
    policy = load_live_policy(setup["bundle"])
    seen = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for k, fail in enumerate((False, True)):
            broker = SimBroker(setup["data"], SYMBOLS, "test", config.costs.costs(),
                               min_bars=policy.preprocessing.min_bars)
            loop = LiveLoop(policy, broker, journal_of(tmp_path, f"r{k}"), SYMBOLS, config, run_name=f"r{k}",
                            run_dir=tmp_path / f"r{k}", write_monitor=False)

            def on_cycle(report, fail=fail):
                seen.append((torch.get_num_threads(), gc.get_freeze_count() > 0))
                if fail:
                    raise RuntimeError("a callback failed")

            if fail:
                with pytest.raises(RuntimeError, match="a callback failed"):
                    loop.run(on_cycle=on_cycle)
            else:
                assert loop.run(on_cycle=on_cycle) == "replay finished"
            assert torch.get_num_threads() == 2 and gc.get_freeze_count() == 0
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {(1, True)}
