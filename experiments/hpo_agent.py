"""Search a PPO or DQN agent's hyperparameters with Optuna, then hand back the best agent.

    python -m experiments.hpo_agent --algo ppo --trials 20 --storage sqlite:///runs/hpo.db
    python -m experiments.hpo_agent --algo ppo --trials 10 --storage sqlite:///runs/hpo.db   # adds 10 more
    python -m experiments.hpo_agent --algo dqn --trials 10 --storage postgresql://USER:PASSWORD@HOST/DB
    tensorboard --logdir runs/hpo

Each trial trains on the train split with the config's per-trial budget and is scored as train_ppo
chooses checkpoints: every --eval-freq steps the policy is backtested on validation and a checkpoint is
kept only if the checkpoint rule accepts it (it beats cash with agent.min_tstat); the trial's value is
the rule's score of the kept checkpoint (its validation log return), 0 when the agent would stay in cash. Test is never touched. Each evaluation reports that
score to the median pruner, which stops trials trailing the others. Searched: learning rate, network
size, gamma, batch size; PPO n_steps, n_epochs, gae_lambda, clip_range, ent_coef; DQN train_freq,
target_update_interval, exploration_fraction, exploration_final_eps.

Trial n writes runs/hpo/<study>/trial_<n>/ (best/ agent, tb/ TensorBoard, summary.json). Several
machines share a study through the same --storage and --study-name (see experiments.hpo; a PostgreSQL
server silent for --connect-timeout seconds ends the run with one line). When the trials are done the
best trial's agent goes to runs/<study>_best/best/ (copied; retrained with the same budget and seed if it
ran on another machine) with config.yaml, which train_ppo/train_dqn --config accept.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Sequence

from agents.config import ALGORITHMS, AgentConfig
from agents.hpo import AgentHPOConfig, hand_back_agent, run_agent_study
from configs.loader import CONFIG_DIR, load_yaml_config, read_yaml_mapping
from experiments.common import cli, dataset_from_args, existing_file, make_parser, seed_everything
from experiments.hpo import add_storage_timeout_arguments, hand_back, storage_timeout_changes
from supervised.hpo import check_storage, describe_best, storage_errors

#: The top-level sections of configs/ppo_hpo.yaml and configs/dqn_hpo.yaml.
HPO_CONFIG_SECTIONS = ("agent", "dataset", "hpo")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser("python -m experiments.hpo_agent", __doc__)
    add = parser.add_argument
    add("--algo", required=True, choices=list(ALGORITHMS), help="the agent to tune")
    add("--trials", type=int, default=None, help="trials this worker adds (default: hpo.n_trials of the config)")
    add("--storage", default="sqlite:///runs/hpo.db",
        help="Optuna storage URL (sqlite:///... on one machine, postgresql://... shared by several)")
    add_storage_timeout_arguments(parser)
    add("--study-name", default=None, help="study to create or resume (default: agent_<algo>)")
    add("--config", type=Path, default=None,
        help="YAML with agent/dataset/hpo sections (default: configs/<algo>_hpo.yaml)")
    add("--dataset", type=Path, default=None, help="saved dataset directory (default: build the config's dataset)")
    add("--runs-dir", type=Path, default=Path("runs"), help="trial folders go under <runs-dir>/hpo/<study>/trial_<n>/")
    add("--timesteps", type=int, default=None, help="env steps per trial (default: the config's agent.total_timesteps)")
    add("--n-envs", type=int, default=None, help="parallel environments (default: the config's agent.n_envs)")
    add("--eval-freq", type=int, default=None,
        help="env steps between validation evaluations, the pruning steps (default: the config's agent.eval_freq)")
    add("--seed", type=int, default=None, help="sampler and training seed (default: hpo.seed / agent.seed)")
    add("--heartbeat", type=int, default=None,
        help="seconds between a running trial's heartbeats; a trial silent for twice that is failed and retried "
             "(0: off; default: hpo.heartbeat_interval of the config)")
    add("--best-name", default=None, help="run folder of the handed-back agent (default: <study>_best)")
    add("--no-best", action="store_true", help="only add trials; hand back no agent (e.g. on helper workers)")
    add("--overwrite", action="store_true",
        help="replace trial folders the study does not know (each once its new trial ends), and a --best-name "
             "folder that is not this study's hand-back, instead of refusing")
    add("--progress", action="store_true", help="show a progress bar per trial")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Any:
    """Run from command-line arguments; returns the ``optuna.Study``."""
    args = parse_args(argv)
    args.config = existing_file(args.config or CONFIG_DIR / f"{args.algo}_hpo.yaml", "--config")
    base = load_yaml_config(AgentConfig, args.config, "agent", sections=HPO_CONFIG_SECTIONS)
    hpo = load_yaml_config(AgentHPOConfig, args.config, "hpo", sections=HPO_CONFIG_SECTIONS)
    agent_changes = {"algo": args.algo, "total_timesteps": args.timesteps, "n_envs": args.n_envs,
                     "eval_freq": args.eval_freq, "seed": args.seed}
    base = dataclasses.replace(base, **{k: v for k, v in agent_changes.items() if v is not None})
    hpo_changes = {"n_trials": args.trials, "seed": args.seed, "heartbeat_interval": args.heartbeat}
    hpo = dataclasses.replace(hpo, **{k: v for k, v in hpo_changes.items() if v is not None},
                              **storage_timeout_changes(args))
    check_storage(args.storage, hpo.connect_timeout, hpo.statement_timeout)  # before the dataset is prepared
    with storage_errors(args.storage, hpo.connect_timeout, hpo.statement_timeout):
        return _search(args, base, hpo)


def _search(args: argparse.Namespace, base: AgentConfig, hpo: AgentHPOConfig) -> Any:
    """Prepare the data, add the trials and hand back the best agent (the body of :func:`main`).

    :param args: the parsed arguments.
    :param base: the agent defaults, with the command line's changes.
    :param hpo: the study settings, with the command line's changes.
    """
    seed_everything(base.seed)
    data = dataset_from_args(args, HPO_CONFIG_SECTIONS)
    print(data.summary())
    print(f"tuning {args.algo.upper()}: {base.total_timesteps} steps per trial, {base.n_envs} envs, validation every "
          f"{min(base.eval_freq, base.total_timesteps)} steps; costs: {base.env.costs().describe()}")
    study = run_agent_study(data, base, storage=args.storage, study_name=args.study_name, hpo=hpo,
                            runs_dir=args.runs_dir, progress=args.progress, overwrite=args.overwrite)
    print(describe_best(study, score="validation score of the kept checkpoint (0 = cash)"))
    if args.no_best:
        return study
    if args.dataset is None:
        dataset_section: dict[str, Any] | None = read_yaml_mapping(args.config, HPO_CONFIG_SECTIONS).get("dataset") or {}
        note = None
    else:
        dataset_section, note = None, f"Trained on the saved dataset {args.dataset}: pass --dataset {args.dataset}."

    def save(path: Path, trial: Any) -> dict[str, Any]:
        return hand_back_agent(study, trial, data, path, storage=args.storage, dataset_section=dataset_section,
                               dataset_note=note, progress=args.progress)

    handed = hand_back(study, args.runs_dir, args.best_name, save, overwrite=args.overwrite)
    if handed is None:
        print("no completed trial: no agent to hand back")
        return study
    folder, record, fresh = handed
    state = "cash fallback (no checkpoint beat cash on validation)" if record.get("fallback") else "trained checkpoint"
    print(f"best agent: {folder / 'best'} [trial #{record['trial']}, {state}; {record['handed_back']}]"
          + ("" if fresh else " (already handed back)"))
    print(f"use it:\n  python -m experiments.backtest --policy {folder / 'best'}\n"
          f"  python -m experiments.train_{args.algo} --config {folder / 'config.yaml'}   # train it again, "
          f"--timesteps N for longer")
    return study


if __name__ == "__main__":
    cli(main)
