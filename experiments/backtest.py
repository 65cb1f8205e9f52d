"""Backtest a policy on a split, with costs, and write its trade log, metrics and equity plot.

    python -m experiments.backtest --policy buy_and_hold
    python -m experiments.backtest --policy runs/ppo_default/best      # a trained RL agent
    python -m experiments.backtest --policy runs/sup_lstm/model         # a supervised threshold policy
    python -m experiments.backtest --policy runs/ppo_default            # a run folder: its best/ (or model/)
    python -m experiments.backtest --portfolio --policy minimum_variance  # one account across the symbols
    python -m experiments.backtest --portfolio --policy runs/portfolio_ppo/best --config configs/portfolio.yaml

With ``--portfolio`` the policy allocates one account across the dataset's symbols (or the --symbol ones, or
those of --universe FILE [--categories ...], which must all be in the dataset): an
allocation fitted on the train split by skfolio (cash, buy_and_hold, equal_weight, inverse_volatility,
minimum_variance, hierarchical_risk_parity, mean_risk; rebalanced every --rebalance-every bars, buy_and_hold
never) or a saved portfolio agent; outputs go to runs/<name>/portfolio/ (equity.csv, weights.csv, fills.csv,
metrics.json, equity.png with buy-and-hold of the universe on it).

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
    add_universe_arguments,
    cli,
    dataset_from_args,
    make_parser,
    portfolio_and_policy,
    policy_label,
    resolve_policy_path,
    staged_run_directory,
    symbols_from_args,
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
    add_universe_arguments(parser, "--symbol")
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
    parser.add_argument("--portfolio", action="store_true",
                        help="one account across the symbols: --policy is an allocation method or a saved "
                             "portfolio agent")
    parser.add_argument("--rebalance-every", type=int, default=21,
                        help="with --portfolio: bars between rebalances of an allocation (buy_and_hold never)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.portfolio:
        return portfolio_main(args)
    spec = resolve_policy_path(args.policy, BASELINES)
    asked = symbols_from_args(args, None, "--symbol")
    data = dataset_from_args(args)
    symbols = asked or data.symbols
    unknown = [s for s in symbols if s not in data.symbols]
    if unknown:
        raise UsageError(f"{_symbols_flag(args)} {', '.join(unknown)} is not in the dataset",
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


def _symbols_flag(args: argparse.Namespace) -> str:
    """The flag that chose the symbols, for error messages: ``--symbol`` or ``--universe FILE [--categories ...]``."""
    if args.universe is None:
        return "--symbol"
    return f"--universe {args.universe}" + (f" --categories {' '.join(args.categories)}" if args.categories else "")


def portfolio_main(args: argparse.Namespace) -> dict:
    """``--portfolio``: one account across the universe (see the module docstring)."""
    from envs.portfolio_backtest import backtest_portfolio

    asked = symbols_from_args(args, None, "--symbol")
    panel, policy = portfolio_and_policy(dataset_from_args(args), asked, _symbols_flag(args), args.policy,
                                         args.rebalance_every)
    costs = Costs(commission=args.commission, fixed_fee=args.fixed_fee, slippage=args.slippage_bps)
    fill_at = args.fill_at or "next_open"
    prefix = f"backtest_portfolio_{policy_label(args.policy)}_{args.split}"
    with staged_run_directory(args.runs_dir, args.run_name, args.overwrite, prefix=prefix) as run:
        result = backtest_portfolio(policy, panel, args.split, costs, fill_at=fill_at)
        result.save(run.path / "portfolio", plot=not args.no_plot)
        print(result.table())
        metrics = metrics_to_json(result.metrics)
        (run.path / "summary.json").write_text(json.dumps(
            {"policy": args.policy, "portfolio": True, "symbols": panel.symbols, "split": args.split,
             "costs": costs.describe(), "description": result.description, "notes": result.notes,
             "metrics": metrics}, indent=2) + "\n")
    print(f"written to {run.final}")
    return {"portfolio": metrics}


if __name__ == "__main__":
    cli(main)
