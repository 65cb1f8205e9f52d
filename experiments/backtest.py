"""Backtest a policy on a split, with costs, and write its trade log, metrics and equity plot.

    python -m experiments.backtest --policy buy_and_hold
    python -m experiments.backtest --policy runs/ppo_default/best      # a trained RL agent
    python -m experiments.backtest --policy runs/sup_lstm/model         # a supervised threshold policy
    python -m experiments.backtest --policy runs/ppo_default            # a run folder: its best/ (or model/)

Outputs under runs/<name>/<symbol>/: trades.csv, equity.csv, metrics.json, equity.png (buy-and-hold drawn
on the same bars and costs), and
runs/<name>/summary.json. The default name is backtest_<policy>_<split>_<YYYYmmdd-HHMMSS>, the policy
named by its run and folder (runs/ppo_x/best -> ppo_x-best), so no backtest replaces another.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agents.baselines import BASELINES
from agents.policy_loader import load_policy
from envs.backtest import backtest
from experiments.common import (
    UsageError,
    add_dataset_arguments,
    cli,
    dataset_from_args,
    make_parser,
    policy_label,
    resolve_policy_path,
    staged_run_directory,
)
from sim.engine import FILL_AT, Costs
from sim.metrics import metrics_to_json


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("python -m experiments.backtest", __doc__)
    parser.add_argument("--policy", default="buy_and_hold",
                        help=f"baseline name ({', '.join(BASELINES)}), a saved agent runs/<rl>/best, a supervised "
                             f"bundle runs/<sup>/model, or the run folder holding either")
    add_dataset_arguments(parser)
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"], help="split to run on")
    parser.add_argument("--symbol", action="append", default=None,
                        help="symbol to backtest (repeatable; default: every symbol of the dataset)")
    parser.add_argument("--commission", type=float, default=0.001, help="commission, fraction of notional")
    parser.add_argument("--slippage-bps", type=float, default=5.0, help="fixed slippage in basis points")
    parser.add_argument("--fixed-fee", type=float, default=0.0, help="fee per order in currency")
    parser.add_argument("--fill-at", default=None, choices=list(FILL_AT),
                        help="next_open or close (optimistic); default: a saved agent's own setting, else next_open")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="root of run outputs")
    parser.add_argument("--run-name", default=None,
                        help="output folder name (default: backtest_<policy>_<split>_<YYYYmmdd-HHMMSS>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output folder of that name once the new one is complete")
    parser.add_argument("--seed", type=int, default=0, help="seed of stochastic policies")
    parser.add_argument("--no-plot", action="store_true", help="skip the equity/drawdown PNG")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    spec = resolve_policy_path(args.policy, BASELINES)
    data = dataset_from_args(args)
    symbols = args.symbol or data.symbols
    unknown = [s for s in symbols if s not in data.symbols]
    if unknown:
        raise UsageError(f"--symbol {', '.join(unknown)} is not in the dataset",
                         f"pass one of {', '.join(data.symbols)} (or no --symbol for all)")
    costs = Costs(commission=args.commission, fixed_fee=args.fixed_fee, slippage=args.slippage_bps)
    policy = load_policy(spec, data, seed=args.seed)
    buy_and_hold = load_policy("buy_and_hold", data)
    prefix = f"backtest_{policy_label(spec)}_{args.split}"
    results = {}
    with staged_run_directory(args.runs_dir, args.run_name, args.overwrite, prefix=prefix) as run:
        for symbol in symbols:
            settings = dict(getattr(policy, "env_settings", {}))
            if args.fill_at is not None:
                settings["fill_at"] = args.fill_at
            result = backtest(policy, data, args.split, costs, symbol=symbol, **settings)
            reference = None if args.no_plot else backtest(buy_and_hold, data, args.split, costs, symbol=symbol,
                                                           fill_at=settings.get("fill_at", "next_open"))
            result.save(run.path / symbol, plot=not args.no_plot, benchmark=reference)
            print(result.table())
            print()
            results[symbol] = metrics_to_json(result.metrics)
        (run.path / "summary.json").write_text(json.dumps({"policy": spec, "split": args.split,
                                                          "costs": costs.describe(), "metrics": results}, indent=2) + "\n")
    print(f"written to {run.final}")
    return results


if __name__ == "__main__":
    cli(main)
