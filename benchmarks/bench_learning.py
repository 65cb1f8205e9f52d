"""How much of a planted edge PPO learns, and how it fares without one: the long versions of the learning tests.

Run ``python -m benchmarks.bench_learning`` (``--steps`` PPO steps per run, default 50000 200000;
``--seeds`` PPO seeds, default 0 1; ``--quick`` for 20000 steps, seed 0). Not a test: it prints one table.

Markets: ``synthetic_bars(4500, phi=phi, sigma=0.02, seed=--market-seed)`` for phi = -0.3 (planted
edge), -0.1 (weak edge) and 0.0 (no edge), built with ``DatasetConfig(window=8)`` (70/15/15 split with
the purge gap). Every run trains with ``AgentConfig`` defaults (PPO, 16 envs, torch threads 1) except
``total_timesteps``, ``seed``, ``eval_freq = steps // 5`` and env ``episode_length`` 256, as
``tests/test_agent_learning.py`` does, into a temporary directory. Two policies of each run are scored:

* ``PPO + val selection``: ``run/best``, the checkpoint chosen on validation against cash (log return
  above 0 and t statistic >= ``min_tstat``), or the cash fallback when none qualified;
* ``plain PPO (final)``: ``run/final``, the last checkpoint, with no validation selection.

Everything is reported on the TEST split with costs on (0.10% commission + 5 bps slippage per side)
through :func:`agents.evaluation.evaluate_policy`, next to cash (0), buy-and-hold, a random policy
(seed 0) and an oracle on the same bars.

The oracle is the best long/flat log return with perfect foresight, found by dynamic programming with
the backtester's timing and cost accounting. The backtest starts flat at the close of the split's first
usable bar ``r0``; at each step it observes bar ``r`` (close) and the chosen position is filled at
``open[r+1]``, so a position chosen at bar ``r`` earns ``open[r+2] / open[r+1]``, except at the last
decision bar ``r = end-2``, whose position earns ``close[end-1] / open[end-1]``: the backtest marks the
last bar at its close and does not liquidate, so no exit cost is charged at the end (for any policy).
Costs are charged exactly as the simulator charges them (commission 0.001 and slippage 0.0005 per side
on the traded notional, paid from cash), which makes each long stretch a wealth multiplier of its own
(see :func:`oracle_path`); the simpler convention of a ``log(1 - 0.0015)`` cost per switch differs by a
few 1e-5 per round trip (the entry cost, paid from cash, does not grow with the position), about 0.15%
of the oracle's log return on the planted-edge market. The DP's action path is replayed through the real
backtester, which must reproduce the DP's value to 1e-6; the table shows that replay. ``% oracle`` is a
policy's test log return divided by the oracle's.

``val t`` and ``val log`` are the policy's validation t statistic and log return as the training run
measured them (0 for the cash fallback); ``ckpt`` is the step of the checkpoint scored.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.baselines import BuyAndHoldPolicy, CashPolicy, RandomPolicy
from agents.config import AgentConfig
from agents.evaluation import evaluate_policy
from agents.saved_agent import load_agent
from agents.training import train_agent
from envs.core import EnvConfig, TradingCore
from features import DatasetConfig, build_market_data, synthetic_bars
from features.market_data import MarketData
from sim.engine import Costs

COSTS = Costs()  # 0.10% commission + 5 bps slippage per side
SLIPPAGE = 5.0 * 1e-4  # the default fixed 5 bps per side
MARKETS = ((-0.3, "planted edge"), (-0.1, "weak edge"), (0.0, "no edge"))
SPLIT = "test"
ENV_SETTINGS = {"action_mode": "discrete", "allow_short": False, "fill_at": "next_open"}


def make_market(phi: float, seed: int) -> MarketData:
    bars = synthetic_bars(4500, phi=phi, sigma=0.02, seed=seed)
    return build_market_data({"SYN": bars}, DatasetConfig(window=8))


def decision_prices(data: MarketData, split: str) -> tuple[np.ndarray, float]:
    """Fill price (next open) of each backtest step's order, and the close the backtest ends on."""
    core = TradingCore(data, EnvConfig(split=split, random_start=False, episode_length=None))
    start, end = int(core.sym_start[0]), int(core.sym_end[0])  # decisions at rows start .. end-2
    return data.open[start + 1:end].astype(np.float64), float(data.close[end - 1])


def oracle_path(fills: np.ndarray, last_close: float, commission: float = COSTS.commission,
                slippage: float = SLIPPAGE) -> tuple[float, np.ndarray]:
    """Best long/flat log return with perfect foresight (start flat, no exit at the end) and its actions.

    A long stretch entered by the order of step ``k`` (filled at ``fills[k]``) and left by the order of
    step ``j`` multiplies wealth by ``fills[j]/fills[k] * (1-s)(1-c) + 1 - (1+s)(1+c)``: the simulator
    buys ``equity / open`` units and pays slippage ``s`` and commission ``c`` from cash, and sells them
    back net of both. Held to the end it multiplies by ``last_close/fills[k] + 1 - (1+s)(1+c)``. Flat
    steps earn nothing. ``G[j]`` is the best log wealth flat before step ``j``; O(n^2), exact.

    :param fills: fill price of the order of each step (``open[r+1]`` for the decision at bar ``r``).
    :param last_close: close of the last bar (where the backtest marks a position still held).
    :param commission: commission fraction per fill.
    :param slippage: slippage fraction per fill.
    """
    n = len(fills)
    keep_out = (1 - slippage) * (1 - commission)
    entry_debt = 1 - (1 + slippage) * (1 + commission)  # negative: cash left after buying with all equity
    best = np.full(n + 1, -np.inf)  # best[j]: flat before step j
    best[0] = best[1] = 0.0  # step 0 can only be flat or an entry
    entered = np.full(n + 1, -1, dtype=np.int64)  # entry step of the stretch that ended at j-1 (-1: flat step)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j in range(1, n):
            best[j + 1] = best[j]  # flat at step j
            stretch = best[:j] + np.log(fills[j] / fills[:j] * keep_out + entry_debt)
            k = int(np.argmax(stretch))
            if stretch[k] > best[j + 1]:
                best[j + 1], entered[j + 1] = stretch[k], k
        held = best[:n] + np.log(last_close / fills + entry_debt)
    k_end = int(np.argmax(held))
    actions = np.zeros(n, dtype=np.int64)
    if held[k_end] > best[n]:
        value, j = float(held[k_end]), k_end
        actions[k_end:] = 1
    else:
        value, j = float(best[n]), n
    while j > 0:  # walk back: j is a "flat before step j" state
        if entered[j] >= 0:
            actions[entered[j]:j - 1] = 1
            j = int(entered[j])
        else:
            j -= 1
    return value, actions


class ReplayPolicy:
    """Plays a fixed sequence of discrete actions, one per backtest step."""

    name = "oracle"

    def __init__(self, actions: np.ndarray) -> None:
        self.actions = actions
        self.k = 0

    def reset(self) -> None:
        self.k = 0

    def act(self, observation: np.ndarray) -> int:
        action = int(self.actions[self.k])
        self.k += 1
        return action


@dataclass
class Row:
    market: str
    steps: str
    seed: str
    policy: str
    log_return: float
    orders: int
    fallback: str = "-"
    ckpt: str = "-"
    val_t: float | None = None
    val_log: float | None = None
    oracle: float = float("nan")


def baseline_rows(label: str, data: MarketData) -> tuple[list[Row], float]:
    dp_value, path = oracle_path(*decision_prices(data, SPLIT))
    oracle = evaluate_policy(ReplayPolicy(path), data, SPLIT, COSTS, ENV_SETTINGS)
    if abs(oracle["log_return"] - dp_value) > 1e-6:
        raise AssertionError(f"oracle DP {dp_value:.6f} and its simulated replay {oracle['log_return']:.6f} disagree")
    rows = [Row(label, "-", "-", "oracle (perfect foresight)", oracle["log_return"], oracle["n_orders"])]
    for policy in (BuyAndHoldPolicy(), RandomPolicy(seed=0), CashPolicy()):
        result = evaluate_policy(policy, data, SPLIT, COSTS, ENV_SETTINGS)
        rows.append(Row(label, "-", "-", policy.name, result["log_return"], result["n_orders"]))
    for row in rows:
        row.oracle = oracle["log_return"]
    return rows, oracle["log_return"]


def agent_rows(label: str, data: MarketData, steps: int, seed: int, root: Path) -> tuple[list[Row], dict[str, Any]]:
    config = AgentConfig.from_dict({"total_timesteps": steps, "eval_freq": max(1, steps // 5), "seed": seed,
                                    "torch_threads": 1, "env": {"episode_length": 256}})
    run_dir = root / f"{label.replace(' ', '_')}-{steps}-s{seed}"
    summary = train_agent(config, data, run_dir, progress=False)
    best, final = load_agent(run_dir / "best", data), load_agent(run_dir / "final", data)
    best_test = evaluate_policy(best, data, SPLIT, COSTS, best.env_settings)
    final_test = evaluate_policy(final, data, SPLIT, COSTS, final.env_settings)
    chosen = summary["best_validation"]
    last = summary["validation_history"][-1]
    fell_back = summary["fallback"] is not None
    selected = Row(label, f"{steps:,}", str(seed), "PPO + val selection", best_test["log_return"],
                   best_test["n_orders"], "cash" if fell_back else "no",
                   "-" if fell_back else f"{chosen['timesteps']:,}",
                   0.0 if fell_back else chosen["tstat"], 0.0 if fell_back else chosen["log_return"])
    plain = Row(label, f"{steps:,}", str(seed), "plain PPO (final)", final_test["log_return"], final_test["n_orders"],
                "-", f"{last['timesteps']:,}", last["tstat"], last["log_return"])
    return [selected, plain], summary


def fmt_opt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[Row]) -> None:
    header = ("market", "steps", "seed", "policy", "test log", "% oracle", "orders", "fallback", "ckpt",
              "val t", "val log")
    lines = []
    for r in rows:
        share = f"{100 * r.log_return / r.oracle:.0f}%" if r.oracle > 0 else "-"
        lines.append((r.market, r.steps, r.seed, r.policy, f"{r.log_return:+.3f}", share, str(r.orders), r.fallback,
                      r.ckpt, fmt_opt(r.val_t, "+.2f"), fmt_opt(r.val_log, "+.3f")))
    widths = [max(len(line[i]) for line in lines + [header]) for i in range(len(header))]
    left = {0, 3, 7}
    fmt = lambda cells: "  ".join(c.ljust(w) if i in left else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    previous = None
    for r, line in zip(rows, lines):
        if previous is not None and r.market != previous:
            print()
        previous = r.market
        print(fmt(line))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[50_000, 200_000],
                        help="PPO training steps per run (default 50000 200000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="PPO seeds (default 0 1)")
    parser.add_argument("--phis", type=float, nargs="+", default=[phi for phi, _ in MARKETS],
                        help="AR(1) coefficients of the markets (default -0.3 -0.1 0.0)")
    parser.add_argument("--market-seed", type=int, default=1,
                        help="seed of the synthetic bars (default 1, as tests/test_agent_learning.py)")
    parser.add_argument("--quick", action="store_true", help="20000 steps and seed 0 unless --steps/--seeds are given")
    args = parser.parse_args(argv)
    steps, seeds = args.steps, args.seeds
    if args.quick:
        steps = [20_000] if steps == parser.get_default("steps") else steps
        seeds = [0] if seeds == parser.get_default("seeds") else seeds
    torch.set_num_threads(1)
    names = dict(MARKETS)

    started = time.perf_counter()
    rows: list[Row] = []
    train_seconds = 0.0
    trained_steps = 0
    shape = ""
    with tempfile.TemporaryDirectory(prefix="bench_learning_") as tmp:
        for phi in args.phis:
            label = f"phi {phi:+.1f} ({names.get(phi, 'custom')})"
            data = make_market(phi, args.market_seed)
            bars = {s: int(np.diff(data.split_ranges[s][0])[0]) for s in ("train", "validation", "test")}
            shape = ", ".join(f"{s} {n}" for s, n in bars.items())
            market_rows, oracle = baseline_rows(label, data)
            rows += market_rows
            for n_steps in steps:
                for seed in seeds:
                    new, summary = agent_rows(label, data, n_steps, seed, Path(tmp))
                    for row in new:
                        row.oracle = oracle
                    rows += new
                    train_seconds += summary["train_seconds"]
                    trained_steps += summary["timesteps"]
    total = time.perf_counter() - started
    print(f"PPO learning on synthetic AR(1) markets (4,500 bars, sigma 2%, market seed {args.market_seed}, window 8; "
          f"bars per split: {shape}). Scored on the TEST split, costs {COSTS.describe()}.")
    print_table(rows)
    print(f"test log: log(final/initial equity) on test. % oracle: test log / oracle's (shown when the oracle > 0). "
          f"fallback: cash = no checkpoint beat cash on validation (t >= {AgentConfig().min_tstat}). ckpt: step of "
          f"the scored checkpoint. val t / val log: its validation t statistic and log return.")
    rate = trained_steps / train_seconds if train_seconds > 0 else float("nan")
    print(f"trained {trained_steps:,} steps at {rate:,.0f} steps/s (incl. validation); torch threads "
          f"{torch.get_num_threads()}; {os.cpu_count()} CPUs; load1 {os.getloadavg()[0]:.1f}; total {total:.0f} s")


if __name__ == "__main__":
    main()
