"""Replay speed, side by side: the backtester against the ``--broker sim`` replay through the live loop.

    python -m benchmarks.bench_live                       # trains a small supervised bundle and a short PPO agent
    python -m benchmarks.bench_live --supervised runs/sup_mlp/model --ppo runs/ppo_default/best

For each policy (a supervised threshold bundle, a PPO agent), on the same data, split and costs:

- ``backtest``: ``envs.backtest.backtest`` per symbol, as ``experiments.backtest`` calls it;
- ``live loop, sim replay``: :class:`live.LiveLoop` on :class:`live.SimBroker` with a journal on disk, as
  ``python -m experiments.paper_trade --broker sim`` runs it (every cycle: order sync, the latest bars,
  reconciliation, marks, the daily-loss limit, decisions with the risk limits, orders sized by the simulator's rule,
  the journal; the monitor page once at the end). Risk limits are set so that they cannot bind.

A decision is one symbol decided on one bar (bars x symbols); both rows count the replay's journalled decisions.
``fills equal`` says whether every replay fill (bar, units, price, commission) is the backtest's. Each row keeps
its best of ``--rounds`` (the policy loaded and the data built outside the timing). Default data: the embedded
daily AAPL/IBM/MSFT/GOOG (``--dataset`` for a saved one).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from envs.backtest import backtest
from live import Journal, LiveLoop, PaperConfig, SimBroker, load_live_policy

LOOSE_RISK = {"risk": {"max_daily_loss": 0.99, "max_orders_per_day": 10**6}, "alerts": {"daily_loss": 0.99}}


def train_policies(data: Any, folder: Path, seed: int) -> tuple[Path, Path]:
    """A small supervised MLP bundle (one epoch, entry at the median test-split probability so that it trades) and
    a PPO agent with continuous targets (512 steps): cheap to train, the same cost per decision as bigger ones of
    their kind in the loop."""
    import torch

    from agents.config import AgentConfig
    from agents.training import train_agent
    from features.preprocessing import Preprocessing
    from supervised.bundle import load_model, save_bundle
    from supervised.models import ModelConfig
    from supervised.trainer import TrainConfig, train_classifier

    torch.manual_seed(seed)
    result = train_classifier(data, ModelConfig(kind="mlp", hidden_size=16, dropout=0.0),
                              TrainConfig(epochs=1, batch_size=256, num_threads=1), progress=False)
    bundle = folder / "sup" / "model"
    symbol = data.symbols[0]
    lo, hi = data.split_range("test", symbol)
    windows = np.stack([data.features[r - data.window + 1: r + 1] for r in range(lo, hi)])
    for threshold in (0.5, None):
        if threshold is None:
            probabilities = load_model(bundle).predict_proba(windows, np.full(len(windows), data.row_asset_ids[lo]))
            threshold = float(np.median(probabilities))
        save_bundle(bundle, result.classifier, result.model_config, preprocessing=Preprocessing.of(data),
                    label=data.label, threshold=threshold, dataset_hashes=data.hashes)
    config = AgentConfig.from_dict({"total_timesteps": 512, "n_envs": 4, "eval_freq": 512, "min_tstat": -1e9,
                                    "min_improvement": -1e9, "seed": seed, "ppo": {"n_steps": 64, "batch_size": 128},
                                    "env": {"episode_length": 64, "action_mode": "continuous"}})
    train_agent(config, data, folder / "ppo", progress=False)
    return bundle, folder / "ppo" / "best"


def time_backtest(spec: Path, data: Any, symbols: list[str], split: str, costs: Any) -> tuple[float, dict]:
    """Seconds for the backtests of ``symbols`` and their results."""
    policy = load_live_policy(spec)
    start = time.perf_counter()
    results = {s: backtest(policy.policy, data, split, costs, symbol=s, **policy.env_settings) for s in symbols}
    return time.perf_counter() - start, results


def time_replay(spec: Path, data: Any, symbols: list[str], split: str, config: PaperConfig,
                folder: Path) -> tuple[float, Journal]:
    """Seconds for a whole ``--broker sim`` replay through the live loop, and its journal."""
    policy = load_live_policy(spec)
    broker = SimBroker(data, symbols, split, config.costs.costs(), min_bars=policy.preprocessing.min_bars,
                       allow_short=policy.allow_short)
    folder.mkdir(parents=True)
    journal = Journal(folder / "journal.sqlite", durable=False)
    loop = LiveLoop(policy, broker, journal, symbols, config, run_name="bench", run_dir=folder)
    start = time.perf_counter()
    reason = loop.run()
    elapsed = time.perf_counter() - start
    if reason != "replay finished":
        raise RuntimeError(f"the replay of {spec} ended early: {reason}")
    return elapsed, journal


def same_fills(journal: Journal, results: dict) -> bool:
    """Whether every symbol's replay fills are its backtest's (bar, units, price, commission), exactly."""
    for symbol, reference in results.items():
        fills = journal.fills(symbol)
        stamps = pd.to_datetime(reference.row_timestamps[reference.fills["row"].astype(np.int64)], utc=True)
        if len(fills) != len(reference.fills["row"]) or [pd.Timestamp(f["bar_time"]) for f in fills] != list(stamps):
            return False
        for key, name in (("units", "units"), ("price", "fill_price"), ("commission", "commission")):
            if [f[key] for f in fills] != reference.fills[name].tolist():
                return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_live", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supervised", type=Path, default=None,
                        help="a saved supervised bundle runs/<sup>/model (default: train a small one)")
    parser.add_argument("--ppo", type=Path, default=None, help="a saved PPO agent runs/<rl>/best (default: train one)")
    parser.add_argument("--symbols", nargs="+", default=None, help="default: every symbol of the data")
    parser.add_argument("--dataset", type=Path, default=None, help="a saved dataset (default: the embedded data)")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"], help="default: test")
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds per row, the best kept (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the policies trained here (default: 0)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds} must be >= 1")

    if args.dataset is not None:
        from features.dataset import load_dataset

        data = load_dataset(args.dataset)
    else:
        from envs.core import default_market_data

        data = default_market_data()
    symbols = args.symbols or list(data.symbols)
    config = PaperConfig.from_dict(LOOSE_RISK)
    costs = config.costs.costs()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.supervised is None or args.ppo is None:
            trained = train_policies(data, folder / "trained", args.seed)
        policies = {"supervised": args.supervised or trained[0], "PPO": args.ppo or trained[1]}
        print(f"data: {', '.join(symbols)}, {data.timeframe} bars, split {args.split}; costs {costs.describe()}; "
              f"best of {args.rounds} round(s)\n")
        print("| policy | path | decisions | wall s | decisions/s | fills equal |")
        print("|---|---|---:|---:|---:|---|")
        for label, spec in policies.items():
            backtests, replays = [], []
            for k in range(args.rounds):
                backtests.append(time_backtest(spec, data, symbols, args.split, costs))
                replays.append(time_replay(spec, data, symbols, args.split, config, folder / f"{label}-{k}"))
            journal = min(replays, key=lambda r: r[0])[1]
            n = len(journal.decisions())
            equal = same_fills(journal, backtests[0][1])
            for path, seconds in (("backtest", min(b[0] for b in backtests)),
                                  ("live loop, sim replay", min(r[0] for r in replays))):
                print(f"| {label} | {path} | {n:,} | {seconds:.2f} | {n / seconds:,.0f} | "
                      f"{'' if path == 'backtest' else equal} |")
            for _, other in replays:
                other.close()


if __name__ == "__main__":
    main()
