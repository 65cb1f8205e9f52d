"""Train an RL allocation agent (PPO or SAC) on PortfolioEnv-v0: ``python -m experiments.train_portfolio --help``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from agents.portfolio_agent import (
    PORTFOLIO_ALGORITHMS,
    FixedWeights,
    PortfolioAgentConfig,
    evaluate_allocation,
    load_portfolio_agent,
    train_portfolio_agent,
)
from configs.loader import CONFIG_DIR, load_yaml_config
from experiments.common import (
    cli,
    existing_file,
    make_parser,
    positive_int,
    resolve_bundle_path,
    resolve_dataset_path,
    seed_everything,
    staged_run_directory,
)
from features.dataset import load_dataset
from sim.metrics import metrics_to_json

#: The top-level sections of configs/portfolio.yaml.
CONFIG_SECTIONS = ("agent", "dataset")


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        "python -m experiments.train_portfolio",
        "Train an RL allocation agent on PortfolioEnv-v0's train split (random starts, costs on), evaluate it\n"
        "on validation every eval_freq steps, keep the best checkpoint that beats both buy-and-hold and\n"
        "equal weight (else the config's fallback: equal weight or cash), and log to TensorBoard.\n\n"
        "Writes runs/<name>/: best/ (the agent to backtest), final/, tb/ and summary.json, built in a\n"
        "temporary folder and moved into place when complete.",
    )
    parser.add_argument("--config", type=Path, default=CONFIG_DIR / "portfolio.yaml",
                        help="YAML with an 'agent:' section (PortfolioAgentConfig)")
    parser.add_argument("--algo", choices=list(PORTFOLIO_ALGORITHMS), default=None,
                        help="learner (default: the config's agent.algo)")
    parser.add_argument("--data", type=Path, default=None,
                        help="saved dataset directory of the universe (default: the embedded 20-stock universe)")
    parser.add_argument("--bundle", type=str, default=None,
                        help="supervised run folder runs/<sup> (or its model/ bundle) whose frozen encoder embeds "
                             "every asset's window (default: the agent sees the raw features)")
    parser.add_argument("--total-timesteps", type=positive_int, default=None,
                        help="environment steps (default: the config's agent.total_timesteps)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's agent.seed)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="root of run outputs")
    parser.add_argument("--run-name", default=None, help="run folder name (default: portfolio_<YYYYmmdd-HHMMSS>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing run of that name once the new one is complete")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--verbose", action="store_true", help="print each validation evaluation")
    return parser


def load_portfolio_config(path: str | Path) -> PortfolioAgentConfig:
    """The ``agent:`` section of a portfolio YAML (other sections than ``agent``/``dataset`` are errors)."""
    return load_yaml_config(PortfolioAgentConfig, existing_file(path, "--config"), "agent", sections=CONFIG_SECTIONS)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    config = load_portfolio_config(args.config)
    overrides = {"algo": args.algo, "total_timesteps": args.total_timesteps, "seed": args.seed}
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    bundle = resolve_bundle_path(args.bundle, "--bundle") if args.bundle else None
    data = load_dataset(resolve_dataset_path(args.data, "--data")) if args.data is not None else None
    with staged_run_directory(args.runs_dir, args.run_name, args.overwrite, prefix="portfolio") as run:
        seed_everything(config.seed)
        print(f"training {config.algo.upper()} allocation over {'the embedded universe' if data is None else data.symbols}"
              f" ({config.total_timesteps} steps, {config.n_envs} envs); costs: {config.env.costs().describe()}; "
              f"logs: {run.final / 'tb'}")
        summary = train_portfolio_agent(config, data, run.path, bundle=bundle, progress=not args.no_progress,
                                        verbose=int(args.verbose))
        best = load_portfolio_agent(run.path / "best")
        panel = best.prepare(data)
        validation = evaluate_allocation(best, panel, "validation", config.env)
        equal = evaluate_allocation(FixedWeights.equal_weight(panel.n_assets), panel, "validation", config.env)
        summary["best_dir"] = str(run.final / "best")
        summary["validation"] = {k: v for k, v in validation.items() if k != "returns"}
        (run.path / "summary.json").write_text(json.dumps(metrics_to_json(summary), indent=2) + "\n")
    state = (f"{summary['fallback']} fallback (no checkpoint beat buy-and-hold and equal weight on validation)"
             if summary["fallback"] else "trained checkpoint")
    print(f"best agent: {run.final / 'best'} [{state}]; validation log return {validation['log_return']:+.4f} "
          f"(equal weight {equal['log_return']:+.4f}), turnover {validation['turnover']:.1f}; "
          f"{summary['steps_per_second']:.0f} env steps/s")
    return summary


if __name__ == "__main__":
    cli(main)
