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
from configs.loader import CONFIG_DIR
from experiments.common import dataset_from_args, run_directory, seed_everything
from sim.metrics import metrics_to_json


def build_parser(algo: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments.train_{algo}",
        description=f"Train a {algo.upper()} agent on TradingEnv-v0's train split, evaluate it on validation every "
                    f"--eval-freq steps, keep the best checkpoint (or fall back to cash when none beats cash), and "
                    f"log SB3 and trading curves to TensorBoard under runs/<name>/tb.",
    )
    parser.add_argument("--config", type=Path, default=CONFIG_DIR / f"{algo}.yaml",
                        help=f"YAML with 'agent:' and 'dataset:' sections (default: configs/{algo}.yaml)")
    parser.add_argument("--dataset", type=Path, default=None, help="saved dataset directory (default: build from --config)")
    parser.add_argument("--pretrained", type=str, default=None,
                        help="supervised bundle directory (runs/<supervised>/model) whose encoder becomes the features extractor")
    parser.add_argument("--fine-tune", action="store_true", help="train the pretrained encoder too (default: frozen)")
    parser.add_argument("--init-from-classifier", action="store_true",
                        help="clone the supervised threshold policy into the agent before RL (discrete actions)")
    parser.add_argument("--extractor", choices=list(EXTRACTORS), default=None,
                        help="architecture without --pretrained: flat MLP or a fresh supervised encoder")
    parser.add_argument("--timesteps", type=int, default=None, help="total environment steps")
    parser.add_argument("--n-envs", type=int, default=None, help="parallel environments (native batched VecEnv)")
    parser.add_argument("--eval-freq", type=int, default=None, help="env steps between validation evaluations")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="root of run outputs (default: runs)")
    parser.add_argument("--run-name", default=None, help=f"run folder name (default: {algo}_<timestamp>)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--verbose", action="store_true", help="print each validation evaluation")
    return parser


def main(algo: str, argv: list[str] | None = None) -> dict:
    args = build_parser(algo).parse_args(argv)
    config = AgentConfig.from_yaml(args.config, "agent") if args.config and Path(args.config).exists() else AgentConfig()
    overrides = {
        "algo": algo,
        "total_timesteps": args.timesteps,
        "n_envs": args.n_envs,
        "eval_freq": args.eval_freq,
        "seed": args.seed,
        "extractor": args.extractor,
        "pretrained": args.pretrained,
        "freeze_encoder": False if args.fine_tune else None,
        "init_from_classifier": True if args.init_from_classifier else None,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    seed_everything(config.seed)
    data = dataset_from_args(args)
    run_dir = run_directory(args.runs_dir, args.run_name, algo)
    print(f"training {algo.upper()} on {data.symbols} ({config.total_timesteps} steps, {config.n_envs} envs); "
          f"costs: {config.env.costs().describe()}; logs: {run_dir / 'tb'}")
    summary = train_agent(config, data, run_dir, progress=not args.no_progress, verbose=int(args.verbose))
    best = load_agent(run_dir / "best", data)
    validation = evaluate_policy(best, data, "validation", config.env.costs(), best.env_settings)
    summary["validation"] = metrics_to_json(validation)
    (run_dir / "summary.json").write_text(json.dumps(metrics_to_json(summary), indent=2) + "\n")
    state = "cash fallback (no checkpoint beat cash on validation)" if summary["fallback"] else "trained checkpoint"
    print(f"best agent: {run_dir / 'best'} [{state}]; validation log return {validation['log_return']:+.4f}, "
          f"{validation['n_orders']} orders; {summary['steps_per_second']:.0f} env steps/s")
    print(f"backtest it on test: python -m experiments.backtest --policy {run_dir / 'best'}")
    return summary
