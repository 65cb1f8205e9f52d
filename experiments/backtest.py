"""Backtest a policy on a split, with costs, and write its trade log, metrics and equity plot.

    python -m experiments.backtest --policy buy_and_hold
    python -m experiments.backtest --policy runs/ppo_default/best      # a trained RL agent
    python -m experiments.backtest --policy runs/sup_lstm/model         # a supervised threshold policy

Outputs under runs/<name>/<symbol>/: trades.csv, equity.csv, metrics.json, equity.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agents.policy_loader import load_policy
from envs.backtest import backtest
from experiments.common import add_dataset_arguments, dataset_from_args, run_directory
from sim.engine import FILL_AT, Costs
from sim.metrics import metrics_to_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.backtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="buy_and_hold",
                        help="baseline name (cash, buy_and_hold, random, sma_crossover) or a saved agent/model directory")
    add_dataset_arguments(parser)
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"],
                        help="split to run on (default: test)")
    parser.add_argument("--symbol", action="append", default=None,
                        help="symbol to backtest (repeatable; default: every symbol of the dataset)")
    parser.add_argument("--commission", type=float, default=0.001, help="commission, fraction of notional (default 0.001)")
    parser.add_argument("--slippage-bps", type=float, default=5.0, help="fixed slippage in basis points (default 5)")
    parser.add_argument("--fixed-fee", type=float, default=0.0, help="fee per order in currency (default 0)")
    parser.add_argument("--fill-at", default=None, choices=list(FILL_AT),
                        help="next_open (default; a saved agent's own setting otherwise) or close (optimistic)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="root of run outputs (default: runs)")
    parser.add_argument("--run-name", default=None, help="output folder name (default: backtest_<policy>_<split>)")
    parser.add_argument("--seed", type=int, default=0, help="seed of stochastic policies (default 0)")
    parser.add_argument("--no-plot", action="store_true", help="skip the equity/drawdown PNG")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    data = dataset_from_args(args)
    costs = Costs(commission=args.commission, fixed_fee=args.fixed_fee, slippage=args.slippage_bps)
    policy = load_policy(args.policy, data, seed=args.seed)
    label = Path(args.policy).name if Path(args.policy).exists() else args.policy
    out = run_directory(args.runs_dir, args.run_name or f"backtest_{label}_{args.split}", "backtest")
    results = {}
    for symbol in args.symbol or data.symbols:
        settings = dict(getattr(policy, "env_settings", {}))
        if args.fill_at is not None:
            settings["fill_at"] = args.fill_at
        result = backtest(policy, data, args.split, costs, symbol=symbol, **settings)
        result.save(out / symbol, plot=not args.no_plot)
        print(result.table())
        print()
        results[symbol] = metrics_to_json(result.metrics)
    (out / "summary.json").write_text(json.dumps({"policy": args.policy, "split": args.split,
                                                   "costs": costs.describe(), "metrics": results}, indent=2) + "\n")
    print(f"written to {out}")
    return results


if __name__ == "__main__":
    main()
