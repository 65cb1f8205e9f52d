"""Command lines: user mistakes end in one line ``error: <what> — <what to do>`` and exit code 2, no
traceback (``--debug`` shows it); ``--help`` shows the defaults."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import agent_cli, backtest, build_dataset
from experiments.common import run_cli

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ["backtest", "benchmark", "build_dataset", "check_lookahead", "diagnose", "fetch_bars", "fetch_news",
                "hpo", "hpo_agent", "paper_report", "paper_trade", "pipeline", "retrain", "train_dqn", "train_portfolio",
                "train_ppo", "train_supervised"]


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and " — " in lines[0], lines[0]
    assert "Traceback" not in stderr
    return lines[0]


def test_a_user_error_is_one_line_and_exit_code_2_debug_shows_the_traceback(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "experiments.backtest", "--policy", "no_such_policy", "--runs-dir", str(tmp_path)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "no_such_policy" in line and "buy_and_hold" in line
    debug = subprocess.run(command + ["--debug"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "no_such_policy" in debug.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def run(main, argv, capsys) -> tuple[int, str]:
    code = run_cli(main, argv)
    return code, capsys.readouterr().err


def ppo_main(argv):
    return agent_cli.main("ppo", argv)


def test_a_wrong_path_is_one_line(tmp_path, capsys) -> None:
    code, err = run(backtest.main, ["--dataset", str(tmp_path / "missing")], capsys)
    assert code == 2 and "does not exist" in one_error_line(err)
    code, err = run(ppo_main, ["--config", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "missing.yaml does not exist" in one_error_line(err)
    code, err = run(ppo_main, ["--pretrained", str(tmp_path)], capsys)
    assert code == 2 and "not a supervised bundle" in one_error_line(err)


def test_an_unknown_policy_and_a_folder_without_a_policy_are_one_line(tmp_path, capsys) -> None:
    code, err = run(backtest.main, ["--policy", "buy_and_hodl"], capsys)
    assert code == 2 and "neither a baseline nor an existing path" in one_error_line(err)
    (tmp_path / "pipeline_x" / "ppo" / "best").mkdir(parents=True)
    (tmp_path / "pipeline_x" / "ppo" / "best" / "agent.json").write_text("{}")
    code, err = run(backtest.main, ["--policy", str(tmp_path / "pipeline_x")], capsys)
    line = one_error_line(err)
    assert code == 2 and f"pass one of {tmp_path / 'pipeline_x' / 'ppo' / 'best'}" in line


def test_a_bad_config_is_one_line(tmp_path, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("agnet: {n_envs: 4}\n")
    code, err = run(ppo_main, ["--config", str(config)], capsys)
    assert code == 2 and "unknown section(s) ['agnet']; valid sections: ['agent', 'dataset']" in one_error_line(err)
    config.write_text("agent: {n_envs: four}\n")
    code, err = run(ppo_main, ["--config", str(config)], capsys)
    assert code == 2 and "agent.n_envs: expected int, got str 'four'" in one_error_line(err)
    code, err = run(build_dataset.main, ["--config", str(config), "--output", str(tmp_path / "d1")], capsys)
    assert code == 0 and err == ""  # build_dataset reads only the dataset section, which is fine
    config.write_text("dataset: {window: 0}\n")
    code, err = run(build_dataset.main, ["--config", str(config), "--output", str(tmp_path / "d2")], capsys)
    assert code == 2 and "window" in one_error_line(err)
    assert not (tmp_path / "d2").exists()


def test_an_existing_run_without_overwrite_is_one_line(tmp_path, capsys) -> None:
    (tmp_path / "r").mkdir()
    code, err = run(ppo_main, ["--runs-dir", str(tmp_path), "--run-name", "r"], capsys)
    line = one_error_line(err)
    assert code == 2 and "already exists" in line and "--overwrite" in line


def test_argparse_errors_are_one_line(capsys) -> None:
    code, err = run(backtest.main, ["--split", "tomorrow"], capsys)
    assert code == 2 and "invalid choice" in one_error_line(err)


def test_bugs_still_show_their_traceback() -> None:
    def buggy(argv):
        return {}["missing"]

    with pytest.raises(KeyError):
        run_cli(buggy, [])


def test_ctrl_c_is_one_line_and_exit_code_130(capsys) -> None:
    def interrupted(argv):
        raise KeyboardInterrupt

    assert run_cli(interrupted, []) == 130
    assert "interrupted" in one_error_line(capsys.readouterr().err)
    with pytest.raises(KeyboardInterrupt):
        run_cli(interrupted, ["--debug"])


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help_shows_the_defaults(name, capsys) -> None:
    module = importlib.import_module(f"experiments.{name}")
    try:
        code = module.main(["--help"])
    except SystemExit as exit_info:
        code = exit_info.code
    assert code in (0, None)
    out = capsys.readouterr().out
    assert "default" in out and "--debug" in out
    assert "(default: runs)" in out or name in ("build_dataset", "check_lookahead", "fetch_bars", "fetch_news")
    source = Path(module.__file__).read_text()
    assert "cli(main)" in source or "run_cli(" in source  # the one wrapper behind python -m


def test_a_run_folder_is_accepted_for_its_dataset(tmp_path, capsys) -> None:
    from experiments.common import resolve_dataset_path

    (tmp_path / "pipeline_x" / "dataset").mkdir(parents=True)
    (tmp_path / "pipeline_x" / "dataset" / "manifest.json").write_text("{}")
    assert resolve_dataset_path(tmp_path / "pipeline_x") == tmp_path / "pipeline_x" / "dataset"
    code, err = run(backtest.main, ["--dataset", str(tmp_path)], capsys)
    assert code == 2 and "holds no manifest.json" in one_error_line(err)
