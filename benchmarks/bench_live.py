"""Live equals backtest, measured: a saved policy replayed through the live loop (``--broker sim``) against
``envs.backtest.backtest`` on the same data, split and costs, per symbol.

    python -m benchmarks.bench_live --policy runs/sup_mlp [--symbols AAPL IBM MSFT GOOG] [--split test]

Prints, per symbol, the bars and fills of each, whether every fill (bar, units, price, commission) is
identical, the largest |equity difference| over all bars, both final equities, and the loop's time per
decision (features from the latest bars with the policy's own preprocessing, the policy, sizing, journal).
Risk limits are set so that they cannot bind: the comparison is of the loop itself. Default data: the
embedded daily AAPL/IBM/MSFT/GOOG (``--dataset`` for a saved one).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from envs.backtest import backtest
from live import Journal, LiveLoop, PaperConfig, SimBroker, load_live_policy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_live", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="a saved agent runs/<rl>/best or bundle runs/<sup>/model")
    parser.add_argument("--symbols", nargs="+", default=None, help="default: every symbol of the data")
    parser.add_argument("--dataset", type=Path, default=None, help="a saved dataset (default: the embedded data)")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
    args = parser.parse_args(argv)

    if args.dataset is not None:
        from features.dataset import load_dataset

        data = load_dataset(args.dataset)
    else:
        from envs.core import default_market_data

        data = default_market_data()
    policy = load_live_policy(args.policy)
    symbols = args.symbols or list(data.symbols)
    config = PaperConfig.from_dict({"risk": {"max_daily_loss": 0.99, "max_orders_per_day": 10**6},
                                    "alerts": {"daily_loss": 0.99}})
    costs = config.costs.costs()
    with tempfile.TemporaryDirectory() as folder:
        broker = SimBroker(data, symbols, args.split, costs, min_bars=policy.preprocessing.min_bars,
                           allow_short=policy.allow_short)
        journal = Journal(Path(folder) / "journal.sqlite", durable=False)
        loop = LiveLoop(policy, broker, journal, symbols, config, run_name="bench", run_dir=folder,
                        write_monitor=False)
        start = time.perf_counter()
        loop.run()
        elapsed = time.perf_counter() - start
        n_decisions = len(journal.decisions())
        print(f"policy {policy.name}; split {args.split}; costs {costs.describe()}; history {loop.history_bars} bars "
              f"per decision; {n_decisions} decisions in {elapsed:.1f} s ({1000 * elapsed / n_decisions:.1f} ms each)")
        print(f"{'symbol':8} {'bars':>6} {'fills':>12} {'fills equal':>11} {'max |equity diff|':>18} "
              f"{'final equity (replay)':>22} {'final equity (backtest)':>24}")
        for symbol in symbols:
            reference = backtest(load_live_policy(args.policy).policy, data, args.split, costs, symbol=symbol,
                                 **policy.env_settings)
            fills = journal.fills(symbol)
            marks = np.array([m["equity"] for m in journal.equity(symbol)])
            stamps = pd.to_datetime(reference.row_timestamps[reference.fills["row"].astype(np.int64)], utc=True)
            same = (len(fills) == len(reference.fills["row"])
                    and [pd.Timestamp(f["bar_time"]) for f in fills] == list(stamps)
                    and all(np.array([f[k] for f in fills]) .tolist() == reference.fills[r].tolist()
                            for k, r in (("units", "units"), ("price", "fill_price"), ("commission", "commission"))))
            diff = float(np.max(np.abs(marks - reference.equity))) if len(marks) == len(reference.equity) else float("nan")
            print(f"{symbol:8} {len(marks):>6} {len(fills):>5} / {len(reference.fills['row']):<5} {str(same):>11} "
                  f"{diff:>18.3g} {marks[-1]:>22,.6f} {reference.equity[-1]:>24,.6f}")
        journal.close()


if __name__ == "__main__":
    main()
