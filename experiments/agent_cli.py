"""The shared command line of ``experiments.train_ppo`` and ``experiments.train_dqn``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from agents.config import EXTRACTORS, AgentConfig
from agents.evaluation import evaluate_policy
from agents.saved_agent import load_agent
from agents.training import train_agent
from configs.loader import CONFIG_DIR, load_yaml_config
from experiments.common import (
    dataset_from_args,
    existing_file,
    make_parser,
    resolve_bundle_path,
    seed_everything,
    staged_run_directory,
)
from sim.metrics import metrics_to_json

#: The top-level sections of configs/ppo.yaml and configs/dqn.yaml.
AGENT_CONFIG_SECTIONS = ("agent", "dataset")


def build_parser(algo: str) -> argparse.ArgumentParser:
    parser = make_parser(
        f"python -m experiments.train_{algo}",
        f"Train a {algo.upper()} agent on TradingEnv-v0's train split, evaluate it on validation every\n"
        f"--eval-freq steps, keep the best checkpoint (or fall back to cash when none beats cash), and log\n"
        f"SB3 and trading curves to TensorBoard.\n\n"
        f"Writes runs/<name>/: best/ (the agent to backtest), final/, tb/{algo}_1/ (TensorBoard) and\n"
        f"summary.json, built in a temporary folder and moved into place when complete.",
    )
    parser.add_argument("--config", type=Path, default=CONFIG_DIR / f"{algo}.yaml",
                        help="YAML with 'agent:' and 'dataset:' sections")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="saved dataset directory (default: build the config's 'dataset:' section)")
    parser.add_argument("--pretrained", type=str, default=None,
                        help="supervised run folder runs/<sup> (or its model/ bundle) whose encoder becomes the "
                             "features extractor")
    parser.add_argument("--fine-tune", action="store_true", help="train the pretrained encoder too (else frozen)")
    parser.add_argument("--init-from-classifier", action="store_true",
                        help="clone the supervised threshold policy into the agent before RL (discrete actions)")
    parser.add_argument("--extractor", choices=list(EXTRACTORS), default=None,
                        help="architecture without --pretrained: flat MLP or a fresh supervised encoder "
                             "(default: the config's agent.extractor)")
    parser.add_argument("--timesteps", type=int, default=None,
                        help="total environment steps (default: the config's agent.total_timesteps)")
    parser.add_argument("--n-envs", type=int, default=None,
                        help="parallel environments, native batched VecEnv (default: the config's agent.n_envs)")
    parser.add_argument("--eval-freq", type=int, default=None,
                        help="env steps between validation evaluations (default: the config's agent.eval_freq)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's agent.seed)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="root of run outputs")
    parser.add_argument("--run-name", default=None, help=f"run folder name (default: {algo}_<YYYYmmdd-HHMMSS>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing run of that name once the new one is complete")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--verbose", action="store_true", help="print each validation evaluation")
    return parser


def load_agent_config(path: str | Path) -> AgentConfig:
    """The ``agent:`` section of a ppo/dqn YAML (sections other than ``agent``/``dataset`` are errors)."""
    return load_yaml_config(AgentConfig, existing_file(path, "--config"), "agent", sections=AGENT_CONFIG_SECTIONS)


def main(algo: str, argv: list[str] | None = None) -> dict:
    args = build_parser(algo).parse_args(argv)
    config = load_agent_config(args.config)
    overrides = {
        "algo": algo,
        "total_timesteps": args.timesteps,
        "n_envs": args.n_envs,
        "eval_freq": args.eval_freq,
        "seed": args.seed,
        "extractor": args.extractor,
        "pretrained": resolve_bundle_path(args.pretrained) if args.pretrained else None,
        "freeze_encoder": False if args.fine_tune else None,
        "init_from_classifier": True if args.init_from_classifier else None,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if config.pretrained and not args.pretrained:
        config = dataclasses.replace(config, pretrained=resolve_bundle_path(config.pretrained, "agent.pretrained"))
    with staged_run_directory(args.runs_dir, args.run_name, args.overwrite, prefix=algo) as run:
        seed_everything(config.seed)
        data = dataset_from_args(args, AGENT_CONFIG_SECTIONS)
        print(f"training {algo.upper()} on {data.symbols} ({config.total_timesteps} steps, {config.n_envs} envs); "
              f"costs: {config.env.costs().describe()}; logs: {run.final / 'tb'}")
        summary = train_agent(config, data, run.path, progress=not args.no_progress, verbose=int(args.verbose))
        best = load_agent(run.path / "best", data)
        validation = evaluate_policy(best, data, "validation", config.env.costs(), best.env_settings)
        summary["best_dir"] = str(run.final / "best")
        summary["validation"] = metrics_to_json(validation)
        (run.path / "summary.json").write_text(json.dumps(metrics_to_json(summary), indent=2) + "\n")
    state = "cash fallback (no checkpoint beat cash on validation)" if summary["fallback"] else "trained checkpoint"
    print(f"best agent: {run.final / 'best'} [{state}]; validation log return {validation['log_return']:+.4f}, "
          f"{validation['n_orders']} orders; {summary['steps_per_second']:.0f} env steps/s, "
          f"{summary['eval_share']:.0%} of the training time in validation")
    print(f"backtest it on test: python -m experiments.backtest --policy {run.final / 'best'}")
    return summary
