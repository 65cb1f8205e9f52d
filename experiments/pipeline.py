"""The main job: dataset -> supervised model -> PPO agent -> one benchmark table on held-out time, after costs.

    python -m experiments.pipeline [--quick] [--config my.yaml] [--runs-dir runs] [--run-name NAME] [--overwrite]

1. builds the dataset of --config (default: the embedded AAPL, IBM, MSFT, GOOG daily 2000-2013);
2. trains a supervised classifier (``--model``, default lstm) and chooses its threshold on validation;
3. trains a PPO agent on the train split (checkpoint chosen on validation against cash);
4. backtests cash, buy-and-hold, random, SMA crossover, the supervised threshold policy and the PPO agent
   on the test split of every symbol with 0.10% commission and 5 bps slippage, and prints the table.

Writes runs/<name>/ (default pipeline_<YYYYmmdd-HHMMSS>): dataset/, supervised_<model>/, ppo/,
benchmark.json, benchmark.txt; built in a temporary folder and moved into place when complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from agents.baselines import BASELINES, make_baseline
from agents.config import AgentConfig
from agents.evaluation import evaluate_policy
from agents.saved_agent import load_agent
from agents.supervised_policy import SupervisedThresholdPolicy
from agents.training import train_agent
from configs.loader import CONFIG_DIR, load_yaml_config
from experiments.agent_cli import AGENT_CONFIG_SECTIONS
from experiments.common import cli, existing_file, make_parser, staged_run_directory
from features.dataset import build_dataset
from sim.engine import Costs
from sim.metrics import metrics_to_json
from supervised.bundle import load_model
from supervised.experiment import METRICS_FILE, load_supervised_config, run_supervised


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("python -m experiments.pipeline", __doc__)
    parser.add_argument("--config", type=Path, default=CONFIG_DIR / "supervised.yaml",
                        help="YAML whose dataset: section defines the data (any source: embedded, parquet, alpaca) "
                             "and whose train:/models: sections the classifier")
    parser.add_argument("--model", default="lstm", choices=["mlp", "lstm", "gru", "cnn_lstm"],
                        help="supervised architecture")
    parser.add_argument("--timesteps", type=int, default=200_000, help="PPO environment steps")
    parser.add_argument("--epochs", type=int, default=None, help="supervised epochs (default: configs/supervised.yaml)")
    parser.add_argument("--quick", action="store_true", help="a short run (8 epochs, 40k PPO steps) to try it out")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="root of run outputs")
    parser.add_argument("--run-name", default=None, help="run folder name (default: pipeline_<YYYYmmdd-HHMMSS>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing run of that name once the new one is complete")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    sup_config = load_supervised_config(existing_file(args.config, "--config"))
    agent_config = load_yaml_config(AgentConfig, CONFIG_DIR / "ppo.yaml", "agent", sections=AGENT_CONFIG_SECTIONS)

    with staged_run_directory(args.runs_dir, args.run_name, args.overwrite, prefix="pipeline") as run:
        data = build_dataset(dataclasses.replace(sup_config.dataset, output_dir=None))
        data.save(run.path / "dataset")
        print(data.summary())

        epochs = args.epochs or (8 if args.quick else sup_config.train.epochs)
        train_config = dataclasses.replace(sup_config.train, epochs=epochs, seed=args.seed)
        print(f"\n[1/3] supervised {args.model}: {epochs} epochs max")
        sup_dir = run.path / f"supervised_{args.model}"
        metrics = run_supervised(data, sup_config.model(args.model), train_config, sup_dir,
                                 evaluation=sup_config.evaluation, progress=not args.no_progress)
        metrics["run_dir"] = str(run.final / sup_dir.name)  # where it ends up, not the temporary folder
        (sup_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        bundle = sup_dir / "model"

        timesteps = 40_000 if args.quick else args.timesteps
        agent_config = dataclasses.replace(agent_config, total_timesteps=timesteps, seed=args.seed,
                                           eval_freq=min(agent_config.eval_freq, max(timesteps // 4, 1)))
        print(f"\n[2/3] PPO: {timesteps} steps, {agent_config.n_envs} envs")
        summary = train_agent(agent_config, data, run.path / "ppo", progress=not args.no_progress)
        summary["best_dir"] = str(run.final / "ppo" / "best")

        costs = Costs()
        print(f"\n[3/3] test split, every symbol; costs: {costs.describe()}")
        policies = {name: make_baseline(name, data, seed=args.seed) for name in BASELINES}
        policies[f"supervised_{args.model}"] = SupervisedThresholdPolicy(load_model(bundle))
        agent = load_agent(run.path / "ppo" / "best", data)
        policies["ppo" + (" (cash fallback)" if agent.fallback else "")] = agent
        rows = {}
        for name, policy in policies.items():
            rows[name] = evaluate_policy(policy, data, "test", costs, getattr(policy, "env_settings", {}))
        table = format_benchmark(rows)
        table += f"\nppo checkpoint chosen by: {summary.get('selection_rule', 'validation against cash')}"
        if summary.get("fallback"):
            table += " (none passed: cash fallback)"
        print(table)
        result = {"test": metrics_to_json(rows), "ppo_training": metrics_to_json(summary),
                  "seconds": time.perf_counter() - started}
        (run.path / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
        (run.path / "benchmark.txt").write_text(table + "\n")
    print(f"\nwritten to {run.final} in {result['seconds']:.0f} s; tensorboard --logdir {args.runs_dir}")
    return result


def format_benchmark(rows: dict[str, dict]) -> str:
    """One line per policy: mean over symbols of return, Sharpe; worst drawdown; orders; costs."""
    header = f"{'policy':<28}{'return':>9}{'log ret':>9}{'Sharpe':>8}{'max DD':>8}{'orders':>8}{'costs':>11}{'t':>7}"
    lines = [header, "-" * len(header)]
    for name, m in rows.items():
        lines.append(
            f"{name:<28}{m['total_return']:>9.1%}{m['log_return']:>9.3f}{m['sharpe']:>8.2f}{m['max_drawdown']:>8.1%}"
            f"{m['n_orders']:>8d}{m['costs_paid']:>11,.0f}{m['tstat']:>7.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    cli(main)
