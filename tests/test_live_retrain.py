"""Retraining with champion and challenger: a decision that promotes and one that does not are journalled with their
numbers, a promotion swaps the policy between cycles, a failed retraining changes nothing, a run killed right after
a promotion (or during a retraining) resumes with the right policy and no duplicate order, and bad settings are
one-line errors.

The loop tests plant the retraining process (a small script that writes the decision the real one would), so they
test the loop's side exactly and fast; ``retrain`` itself is tested with the benchmark's training and planted
scores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs.loader import ConfigError
from features.dataset import load_dataset
from features.preprocessing import Preprocessing
from live_helpers import two_symbol_classifier
from live import Journal, LiveLoop, PaperConfig, SimBroker, load_live_policy
from live.loop import RETRAIN_CRASH_POINTS
from live.retrain import RETRAIN_KIND, RetrainConfig, decision_path, retrain, write_request
from supervised.bundle import save_bundle

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ["SYN", "SYN2"]
RISK = {"risk": {"max_daily_loss": 0.99, "max_orders_per_day": 1000}, "alerts": {"daily_loss": 0.99}}
EVERY = 8

PLANTED = textwrap.dedent('''
    """A planted retraining: the decision the real one would write, from a fixed challenger."""
    import json, shutil, sys
    from pathlib import Path

    source, mode = sys.argv[1], sys.argv[2]
    run, n = Path(sys.argv[sys.argv.index("--run") + 1]), int(sys.argv[sys.argv.index("--request") + 1])
    request = json.loads((run / "retrain" / f"{n}.request.json").read_text())
    if mode == "fail":
        sys.exit(3)
    target = run / "policies" / str(n)
    shutil.copytree(source, run / "policies" / f".{n}.tmp")
    (run / "policies" / f".{n}.tmp").rename(target)
    decision = {"n": n, "status": "done", "promoted": mode == "promote", "reason": "planted",
                "champion": request["champion"], "challenger": str(target), "as_of": request["as_of"],
                "window": {"start": "2020-01-01", "end": "2020-03-01", "bars": 20},
                "log_returns": {"challenger": 0.05, "champion": 0.01, "buy_and_hold": 0.02, "cash": 0.0},
                "advantage": 0.04, "t": 3.1, "margin": 0.0, "min_t": 2.0, "train_seconds": 0.1, "details": {}}
    text = json.dumps(decision) if mode != "garbage" else "{not json"
    (run / "retrain" / f".{n}.tmp").write_text(text)
    (run / "retrain" / f".{n}.tmp").rename(run / "retrain" / f"{n}.json")
''')


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two symbols with a 30-bar test split; a small supervised champion and an always-long challenger bundle."""
    root = tmp_path_factory.mktemp("retrain")
    bars, data, result = two_symbol_classifier(root)
    champion, challenger = root / "sup" / "model", root / "challenger"
    for path, threshold in ((champion, 0.5), (challenger, 0.0)):  # the challenger is always long
        save_bundle(path, result.classifier, result.model_config, preprocessing=Preprocessing.of(data),
                    label=data.label, threshold=threshold, dataset_hashes=data.hashes)
    script = root / "planted.py"
    script.write_text(PLANTED)
    return {"root": root, "bars": bars, "champion": champion, "challenger": challenger, "script": script}


def config_for(every: int | None = EVERY) -> PaperConfig:
    retrain = {"every": every, "max_train_seconds": 60.0} if every else {}
    return PaperConfig.from_dict({**RISK, "retrain": retrain})


def make_loop(setup, run_dir: Path, mode: str = "promote", every: int | None = EVERY, crash=None) -> LiveLoop:
    """A ``--broker sim`` replay of the champion with the planted retraining ``mode``."""
    config = config_for(every)
    policy = load_live_policy(setup["champion"])
    data = load_dataset(setup["root"] / "dataset")
    broker = SimBroker(data, SYMBOLS, "test", config.costs.costs(), min_bars=policy.preprocessing.min_bars,
                       capital_per_symbol=100_000.0)
    journal = Journal(run_dir / "journal.sqlite", durable=False)
    return LiveLoop(policy, broker, journal, SYMBOLS, config, run_name="retrain_test", run_dir=run_dir,
                    write_monitor=False, crash=crash,
                    retrain_command=[sys.executable, str(setup["script"]), str(setup["challenger"]), mode])


def replay(setup, run_dir: Path, mode: str = "promote", every: int | None = EVERY) -> tuple[LiveLoop, list]:
    """Run a replay to its end; the policy's name after each cycle."""
    loop = make_loop(setup, run_dir, mode, every)
    names: list[tuple[pd.Timestamp, str]] = []
    assert loop.run(on_cycle=lambda report: names.append((report.at, loop.policy.name))) == "replay finished"
    return loop, names


def outcome(journal: Journal) -> tuple[list, np.ndarray]:
    fills = journal.fills()
    return ([(f["symbol"], f["bar_time"]) for f in fills],
            np.array([[f["units"], f["price"], f["cash_after"]] for f in fills]))


def retraining_alerts(journal: Journal) -> list:
    return [a for a in journal.alerts() if a["kind"] == RETRAIN_KIND]


# ----- bad input ---------------------------------------------------------------------------------------------
def test_a_negative_promotion_margin_is_a_one_line_error_naming_it():
    with pytest.raises(ConfigError, match=r"^paper config: retrain.margin=-0.01 is negative") as error:
        PaperConfig.from_dict({"retrain": {"every": 20, "margin": -0.01}})
    assert "\n" not in str(error.value)


def test_a_retraining_schedule_shorter_than_a_training_run_is_a_one_line_error_naming_it(setup, tmp_path):
    with pytest.raises(ConfigError, match=r"retrain.every=5 bars of 1Min \(300 s\) is shorter than a training run "
                                          r"\(retrain.max_train_seconds=600\)"):
        PaperConfig.from_dict({"loop": {"timeframe": "1Min"}, "retrain": {"every": 5, "max_train_seconds": 600}})
    config = PaperConfig.from_dict({"retrain": {"every": 2, "max_train_seconds": 3 * 86400}})  # the policy's 1Day bars
    policy = load_live_policy(setup["champion"])
    data = load_dataset(setup["root"] / "dataset")
    broker = SimBroker(data, SYMBOLS, "test", min_bars=policy.preprocessing.min_bars)
    with pytest.raises(ValueError, match=r"retrain.every=2 bars of 1Day \(172800 s\) is shorter than a training run"):
        LiveLoop(policy, broker, Journal(tmp_path / "j.sqlite", durable=False), SYMBOLS, config, run_name="x",
                 run_dir=tmp_path)


# ----- the decision ------------------------------------------------------------------------------------------
def test_retrain_promotes_a_challenger_that_beats_the_champion_and_keeps_the_champion_otherwise(setup, tmp_path):
    """The challenger is trained by the benchmark's code on the bars before the scored window; planted scores
    decide: a clear win is promoted, a tie is not, a win below the margin is not."""
    champion = load_live_policy(setup["champion"])
    config = RetrainConfig(every=10, validation_bars=20, budget={"epochs": 1, "batch_size": 128}, min_t=2.0)
    noise = np.random.default_rng(0).normal(0.0, 1e-3, 400)

    def planted(edge: float):
        def returns(name, policy, data):
            index = pd.RangeIndex(20)
            base = pd.Series(noise[:20], index=index)
            return base + edge + noise[20:40] * 0.1 if name == "challenger" else base
        return returns

    won = retrain(setup["bars"], champion, config, PaperConfig().costs.costs(), tmp_path / "p1", n=1,
                  returns=planted(0.002))
    assert won.promoted and won.status == "done" and won.challenger == str(tmp_path / "p1")
    assert won.advantage == pytest.approx(20 * 0.002 + 0.1 * noise[20:40].sum())
    assert won.t > 2.0 and set(won.log_returns) == {"challenger", "champion", "buy_and_hold", "cash"}
    assert won.window["bars"] == 20 and "validation_f1" in won.details
    assert load_live_policy(tmp_path / "p1").name == "supervised:p1"  # the bundle the loop will trade
    tie = retrain(setup["bars"], champion, config, PaperConfig().costs.costs(), tmp_path / "p2", n=2,
                  returns=planted(0.0))
    assert not tie.promoted and ("below min_t" in tie.reason or "not above the margin" in tie.reason)
    strict = retrain(setup["bars"], champion, RetrainConfig(**{**config.__dict__, "margin": 1.0}),
                     PaperConfig().costs.costs(), tmp_path / "p3", n=3, returns=planted(0.002))
    assert not strict.promoted and "not above the margin 1" in strict.reason


def test_retrain_scores_on_the_last_bars_only_after_costs(setup, tmp_path):
    """Real scores: the scored window is the last validation_bars bars; cash is 0; the decision is JSON."""
    champion = load_live_policy(setup["champion"])
    config = RetrainConfig(every=10, validation_bars=20, budget={"epochs": 1, "batch_size": 128})
    decision = retrain(setup["bars"], champion, config, PaperConfig().costs.costs(), tmp_path / "p", n=1)
    last = max(frame.index[-1] for frame in setup["bars"].values())
    assert pd.Timestamp(decision.window["end"]) == last and decision.window["bars"] == 19  # 20 bars, 19 returns
    assert decision.log_returns["cash"] == 0.0 and decision.log_returns["buy_and_hold"] != 0.0
    assert json.loads(decision.to_json())["n"] == 1


# ----- the loop ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
    """The replay without retraining, and with a planted promotion, never interrupted."""
    plain, _ = replay(setup, tmp_path_factory.mktemp("plain"), every=None)
    promoted_dir = tmp_path_factory.mktemp("promoted")
    promoted, names = replay(setup, promoted_dir, "promote")
    return {"plain": outcome(plain.journal), "promoted": outcome(promoted.journal), "names": names,
            "promoted_loop": promoted}


def test_a_promotion_is_journalled_with_its_numbers_and_swaps_the_policy_between_cycles(setup, reference):
    loop, names = reference["promoted_loop"], reference["names"]
    alerts = retraining_alerts(loop.journal)
    assert len(alerts) >= 2 and "PROMOTED" in alerts[0]["message"] and "challenger +0.0500" in alerts[0]["message"]
    assert "champion +0.0100" in alerts[0]["message"] and "t 3.10" in alerts[0]["message"]
    swapped = [i for i in range(1, len(names)) if names[i][1] != names[i - 1][1]]
    assert len(swapped) >= 1 and names[0][1] == "supervised:sup"
    # the first swap happened at the start of the cycle the decision was journalled in: that whole cycle and the
    # ones after decided with the new policy
    assert names[swapped[0]][0] == pd.Timestamp(alerts[0]["at"])
    active = loop.journal.meta("policy")
    assert Path(active["path"]).parent.name == "policies" and Path(active["path"]).exists()
    assert Path(active["previous"]).exists()  # the old one is kept
    assert reference["promoted"][0] != reference["plain"][0]  # the always-long challenger trades otherwise


def test_the_monitor_page_shows_the_active_policy_and_every_decision(setup, reference):
    from live.monitor import page_figures, render_monitor

    journal = reference["promoted_loop"].journal
    figures = page_figures(journal)
    state = journal.meta("retrain")
    assert figures["active_policy"] == journal.meta("policy")
    assert [d["n"] for d in figures["retrain_decisions"]] == [d["n"] for d in state["decisions"]][::-1]
    page = render_monitor(journal)
    assert f'<b id="active-policy" data-n="{journal.meta("policy")["n"]}">' in page
    for decision in state["decisions"]:
        row = page.split(f'<tr data-n="{decision["n"]}">')[1].split("</tr>")[0]
        assert ("promoted" if decision["promoted"] else "kept champion") in row
        assert f'data-value="{float(decision["advantage"])!r}"' in row


def test_a_decision_that_does_not_promote_is_journalled_and_changes_nothing(setup, reference, tmp_path):
    loop, names = replay(setup, tmp_path, "keep")
    alerts = retraining_alerts(loop.journal)
    assert alerts and all("kept the champion" in a["message"] and "advantage +0.0400" in a["message"] for a in alerts)
    assert {name for _, name in names} == {"supervised:sup"} and loop.journal.meta("policy") is None
    keys, values = outcome(loop.journal)
    assert keys == reference["plain"][0]
    np.testing.assert_allclose(values, reference["plain"][1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["fail", "garbage"])
def test_a_failed_retraining_is_alerted_and_changes_nothing(setup, reference, tmp_path, mode):
    loop, names = replay(setup, tmp_path, mode)
    alerts = retraining_alerts(loop.journal)
    assert alerts and all("failed, nothing changed" in a["message"] for a in alerts)
    assert ("exit code 3" if mode == "fail" else "not a retraining decision") in alerts[0]["message"]
    assert {name for _, name in names} == {"supervised:sup"} and loop.journal.meta("policy") is None
    keys, values = outcome(loop.journal)
    assert keys == reference["plain"][0]
    np.testing.assert_allclose(values, reference["plain"][1], rtol=0, atol=1e-9)


DRIVER = textwrap.dedent('''
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import test_live_retrain as t

    setup = {setup!r}
    setup = {{k: Path(v) for k, v in setup.items()}}
    point = sys.argv[1]
    def crash(name):
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)
    loop = t.make_loop(setup, Path(sys.argv[2]), "promote", crash=crash)
    loop.run()
''')


@pytest.mark.parametrize("point", RETRAIN_CRASH_POINTS)
def test_a_run_killed_during_a_retraining_or_right_after_a_promotion_resumes_with_the_right_policy(
        setup, reference, tmp_path, point):
    paths = {k: str(v) for k, v in setup.items() if k in ("root", "champion", "challenger", "script")}
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(ROOT / "tests"), setup=paths))
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, str(driver), point, str(run_dir)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=100)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    killed = Journal(run_dir / "journal.sqlite", durable=False)
    if point == "after_promotion":
        assert killed.meta("policy") is not None  # committed before the kill
    killed.close()
    loop = make_loop(setup, run_dir, "promote")
    names: list[str] = []
    assert loop.run(on_cycle=lambda report: names.append(loop.policy.name)) == "replay finished"
    if point == "after_promotion":
        assert names[0] == "supervised:1"  # the restart trades the promoted policy at once
    keys, values = outcome(loop.journal)
    assert keys == reference["promoted"][0]
    np.testing.assert_allclose(values, reference["promoted"][1], rtol=0, atol=1e-9)
    orders = loop.journal.orders()
    assert len({o["client_order_id"] for o in orders}) == len(orders)
    assert loop.journal.meta("policy")["path"] == reference["promoted_loop"].journal.meta("policy")["path"].replace(
        str(reference["promoted_loop"].run_dir), str(run_dir))


# ----- the process ---------------------------------------------------------------------------------------------
def test_the_retraining_process_writes_the_challenger_and_its_decision_and_journals_it_when_no_loop_runs(setup,
                                                                                                       tmp_path):
    from experiments import retrain as retrain_cli

    run_dir = tmp_path / "run"
    journal = Journal(run_dir / "journal.sqlite", durable=False)
    journal.set_meta("identity", {"run": "run", "symbols": SYMBOLS})
    journal.set_meta("retrain", {"requested": 1, "running": {"n": 1, "pid": 0}})
    journal.close()
    config = RetrainConfig(every=10, validation_bars=20, budget={"epochs": 1, "batch_size": 128})
    write_request(run_dir, 1, setup["bars"], setup["champion"], config, PaperConfig().costs.__dict__,
                  pd.Timestamp("2024-01-01", tz="UTC"))
    record = retrain_cli.main(["--run", str(run_dir), "--request", "1"])
    assert record["status"] == "done" and (run_dir / "policies" / "1" / "bundle.json").exists()
    assert json.loads(decision_path(run_dir, 1).read_text()) == record
    journal = Journal(run_dir / "journal.sqlite", durable=False)
    assert [a["message"].split(";")[0] for a in retraining_alerts(journal)] == [
        f"retraining 1: {'PROMOTED ' + record['challenger'] if record['promoted'] else 'kept the champion ' + str(setup['champion'])}"]
    assert journal.meta("retrain")["handled"] == 1 and journal.meta("retrain")["running"] is None
