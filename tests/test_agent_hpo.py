"""Agent tuning: the search spaces reach SB3, trials are scored on validation only by the checkpoint rule,
pruning uses the study's other trials, studies resume on PostgreSQL and SQLite, and the best agent is handed
back with a config train_ppo/train_dqn accept."""

from __future__ import annotations

import dataclasses
import json
import shutil

import optuna
import pytest

import agents.callbacks
from agents.config import AgentConfig
from agents.hpo import SEARCHED, AgentHPOConfig, hand_back_agent, run_agent_study, suggest_agent_config
from agents.saved_agent import load_agent
from agents.training import build_model, make_train_env
from experiments import backtest, hpo_agent
from experiments.agent_cli import load_agent_config
from features import DatasetConfig, LabelConfig, build_market_data, load_dataset, synthetic_bars


@pytest.fixture(scope="module")
def data():
    bars = {"SYN": synthetic_bars(700, phi=-0.2, seed=0), "SYN2": synthetic_bars(700, phi=-0.2, seed=1)}
    return build_market_data(bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4)))


@pytest.fixture(scope="module")
def saved(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("agent_hpo") / "data"
    data.save(path)
    return path


@pytest.fixture()
def splits_scored(monkeypatch):
    """The splits every validation evaluation of the trials ran on."""
    seen: list[str] = []
    evaluate = agents.callbacks.evaluate_policy

    def recording(policy, data, split, *args, **kwargs):
        seen.append(split)
        return evaluate(policy, data, split, *args, **kwargs)

    monkeypatch.setattr(agents.callbacks, "evaluate_policy", recording)
    return seen


def tiny_base(algo: str) -> AgentConfig:
    return AgentConfig.from_dict({"algo": algo, "total_timesteps": 1024, "n_envs": 4, "eval_freq": 512,
                                  "env": {"episode_length": 64}, "dqn": {"learning_starts": 256}})


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_search_spaces_reach_the_sb3_model(algo, data) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    base = tiny_base(algo)
    for _ in range(4):
        trial = study.ask()
        config = suggest_agent_config(trial, base)
        assert set(trial.params) == {"net_arch", *SEARCHED[algo]}
        assert config.total_timesteps == base.total_timesteps and config.env == base.env  # budget and env kept
        model = build_model(config, make_train_env(config, data), data, None)
        settings = config.ppo if algo == "ppo" else config.dqn
        assert model.gamma == settings.gamma == trial.params["gamma"]
        assert model.learning_rate == settings.learning_rate == trial.params["learning_rate"]
        assert list(config.net_arch) == [int(v) for v in trial.params["net_arch"].split("x")]
        if algo == "ppo":
            assert (model.n_steps, model.n_epochs, model.ent_coef) == (trial.params["n_steps"], trial.params["n_epochs"],
                                                                       trial.params["ent_coef"])
            assert model.batch_size == min(trial.params["batch_size"], model.n_steps * config.n_envs)
        else:
            assert model.train_freq.frequency == trial.params["train_freq"]
            assert model.exploration_fraction == trial.params["exploration_fraction"]
            assert settings.target_update_interval == trial.params["target_update_interval"]
        study.tell(trial, 0.0)


def test_ppo_study_on_postgres_scores_validation_resumes_and_hands_back_an_agent(
        postgres_url, saved, tmp_path, splits_scored, capsys) -> None:
    runs = tmp_path / "runs"
    argv = ["--algo", "ppo", "--trials", "2", "--storage", postgres_url, "--dataset", str(saved), "--runs-dir", str(runs),
            "--timesteps", "1024", "--n-envs", "4", "--eval-freq", "512", "--heartbeat", "0"]
    hpo_agent.main(argv)
    study = hpo_agent.main(argv[:2] + ["--trials", "1"] + argv[4:])  # resumed: one more trial
    assert set(splits_scored) == {"validation"}  # test is never touched
    assert [t.number for t in study.trials] == [0, 1, 2]
    for trial in study.trials:
        assert trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        summary = runs / "hpo" / "agent_ppo" / f"trial_{trial.number}" / "summary.json"
        if trial.state == optuna.trial.TrialState.COMPLETE:  # the value is what the checkpoint rule kept
            kept = json.loads(summary.read_text())["best_validation"]
            assert trial.value == (kept.get("score", kept["log_return"]) if kept else 0.0)
            assert trial.value >= 0.0  # cash is the floor

    best = runs / "agent_ppo_best"
    record = json.loads((best / "hpo.json").read_text())
    assert record["trial"] == study.best_trial.number and record["handed_back"].startswith("copied")
    load_agent(best / "best", load_dataset(saved))
    meta = json.loads((best / "best" / "agent.json").read_text())
    config = load_agent_config(best / "config.yaml")  # what train_ppo --config reads
    assert config == AgentConfig.from_dict(meta["config"]) == AgentConfig.from_dict(study.best_trial.user_attrs["agent_config"])
    assert (config.ppo.gamma, config.ppo.n_steps) == (study.best_trial.params["gamma"], study.best_trial.params["n_steps"])
    out = capsys.readouterr().out
    assert f"python -m experiments.backtest --policy {best / 'best'}" in out
    assert backtest.main(["--policy", str(best), "--dataset", str(saved), "--runs-dir", str(runs), "--run-name", "bt",
                          "--no-plot"])


def test_dqn_study_on_sqlite_prunes_with_the_other_trials_and_retrains_elsewhere(data, tmp_path) -> None:
    # Also: a worker with another algorithm or another dataset is refused before it trains.
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    other = optuna.create_study(study_name="dqn", storage=storage, direction="maximize")
    for _ in range(2):  # another worker's trials, far ahead at every evaluation
        other.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={0: 1.0, 1: 1.0, 2: 1.0}))
    hpo = AgentHPOConfig(n_trials=1, n_startup_trials=2, pruner_warmup_evals=0, heartbeat_interval=0)
    study = run_agent_study(data, tiny_base("dqn"), storage=storage, study_name="dqn", hpo=hpo, runs_dir=tmp_path)
    mine = study.trials[2]
    assert mine.state == optuna.trial.TrialState.PRUNED and list(mine.intermediate_values) == [0]

    hpo = dataclasses.replace(hpo, n_startup_trials=5)  # no pruning before 5 completed trials
    study = run_agent_study(data, tiny_base("dqn"), storage=storage, study_name="dqn", hpo=hpo, runs_dir=tmp_path)
    done = study.trials[3]
    assert done.state == optuna.trial.TrialState.COMPLETE and "target_update_interval" in done.params
    # its folder is not on this machine (it ran on another worker's): the hand-back retrains its config
    trial_dir = tmp_path / "hpo" / "dqn" / "trial_3"
    copied = hand_back_agent(study, done, data, tmp_path / "copied", storage=storage)
    shutil.move(trial_dir, tmp_path / "elsewhere")
    retrained = hand_back_agent(study, done, data, tmp_path / "retrained", storage=storage)
    assert copied["handed_back"].startswith("copied") and retrained["handed_back"].startswith("retrained")
    assert retrained["validation_log_return"] == copied["validation_log_return"]  # same budget and seed
    assert load_agent_config(tmp_path / "retrained" / "config.yaml").dqn == AgentConfig.from_dict(
        done.user_attrs["agent_config"]).dqn
    with pytest.raises(ValueError, match="searches 'dqn' agents; got --algo 'ppo'"):
        run_agent_study(data, tiny_base("ppo"), storage=storage, study_name="dqn", hpo=hpo, runs_dir=tmp_path)
    other_bars = {"SYN": synthetic_bars(700, phi=-0.2, seed=5), "SYN2": synthetic_bars(700, phi=-0.2, seed=6)}
    other_data = build_market_data(other_bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02,
                                                                                           horizon=4)))
    with pytest.raises(ValueError, match="was searched on another dataset"):
        run_agent_study(other_data, tiny_base("dqn"), storage=storage, study_name="dqn", hpo=hpo, runs_dir=tmp_path)
