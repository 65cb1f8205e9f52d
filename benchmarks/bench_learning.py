"""How much of a planted edge PPO and DQN learn with the package defaults, and how they fare without one.

Run ``python -m benchmarks.bench_learning`` (every structure x edge x seed x algorithm, two runs at a
time; ``--algos``, ``--structures``, ``--edges``, ``--seeds`` narrow it, ``--set key=value`` overrides
an ``AgentConfig`` key for an experiment, e.g. ``--set dqn.train_freq=1``). Not a test: it prints a table,
with per market the median share of the oracle and how many seeds ended in the cash fallback.
``--rule-table a.json b.json`` trains nothing: it replays the checkpoint rules of ``RULE_GRID`` on the
validation histories saved by earlier ``--json`` runs and counts, per rule, the runs sent to cash on markets
with an edge (false cash) and the runs let trade on zero-edge markets (false trade).

Markets (:func:`sim.synthetic.generate_ohlcv`, 4,500 business-day bars, ``DatasetConfig(window=8)``,
70/15/15 split with the purge gap; seed ``s`` draws market ``s`` and trains agent seed ``s``):

* ``ar1``: AR(1) returns, sigma 2%, phi -0.3 (strong) / -0.15 (weak) / 0 (zero);
* ``regime``: two drift regimes +-mu (mean stay 50 bars), sigma 1%, mu 0.25% / 0.12% / 0;
* ``volume``: the next return loads on today's volume surprise (``signal_carrier="volume"``), sigma 2%,
  loading 0.3 / 0.15 / 0 sigma per unit of volume z;
* ``calendar`` (not in the default set): Monday drift, sigma 2%, 1% / 0.5% / 0.

Each agent trains with ``AgentConfig`` defaults for its algorithm (``configs/ppo.yaml`` or
``configs/dqn.yaml`` agent section, the same values) and is scored through ``run/best`` (the checkpoint
chosen on validation by the config's ``selection_rule``, or the cash fallback).

The oracle knows the planted rule but not the noise: at each close it knows ``E[r_{t+1}]`` (the regime
included) and, flat, goes long when the expected return over the signal's horizon (one bar; for
regimes the mean stay) beats a round trip of costs; long, it exits when the expected next return turns
negative. Fills at the next open; costs 0.10% commission + 5 bps slippage per side, charged by the
real backtester (the oracle is a replayed policy). ``% oracle`` is test log return / oracle's.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.baselines import BuyAndHoldPolicy
from agents.callbacks import CheckpointRule
from agents.config import AgentConfig, package_defaults
from agents.evaluation import evaluate_policy
from agents.saved_agent import load_agent
from envs.core import EnvConfig, TradingCore
from features import DatasetConfig, build_market_data
from features.market_data import MarketData
from sim.engine import Costs
from sim.synthetic import generate_ohlcv

COSTS = Costs()  # 0.10% commission + 5 bps slippage per side
ROUND_TRIP = 2 * (0.001 + 5e-4)
N_BARS = 4500
ENV_SETTINGS = {"action_mode": "discrete", "allow_short": False, "fill_at": "next_open"}
EDGES = ("strong", "weak", "zero")
HISTORY_KEYS = ("timesteps", "log_return", "tstat", "excess_tstat", "alpha_tstat", "n_orders", "n_symbols", "score")
# checkpoint rules compared by --rule-table: (rule, min_tstat, min_excess_tstat)
RULE_GRID: tuple[tuple[str, float, float], ...] = (
    *(("cash", t, 0.0) for t in (0.5, 1.0, 1.5, 2.0)),
    *(("cash_and_buy_and_hold", t, e) for t in (0.5, 1.0, 1.5) for e in (-0.5, 0.0, 0.5)),
)


@dataclass(frozen=True)
class Structure:
    """A planted-market family: generator settings per edge strength, and the horizon of its signal."""

    name: str
    settings: dict[str, dict[str, Any]]
    horizon: float = 1.0


STRUCTURES: dict[str, Structure] = {s.name: s for s in (
    Structure("ar1", {"strong": {"phi": -0.3}, "weak": {"phi": -0.15}, "zero": {"phi": 0.0}}),
    Structure("regime", {e: {"regime_drift": mu, "regime_persistence": 0.98, "sigma": 0.01}
                         for e, mu in (("strong", 0.0025), ("weak", 0.0012), ("zero", 0.0))}, horizon=50.0),
    Structure("volume", {e: {"signal": b, "signal_carrier": "volume"}
                         for e, b in (("strong", 0.3), ("weak", 0.15), ("zero", 0.0))}),
    Structure("calendar", {e: {"period_drift": (m, 0.0, 0.0, 0.0, 0.0)}
                           for e, m in (("strong", 0.01), ("weak", 0.005), ("zero", 0.0))}),
)}
DEFAULT_STRUCTURES = ("ar1", "regime", "volume")


def make_market(structure: str, edge: str, seed: int, dataset: dict[str, Any] | None = None, family: int = 1
                ) -> tuple[MarketData, np.ndarray]:
    """The market's dataset (symbol ``SYN``) and its planted ``E[r_{t+1}]`` at each bar's close.

    :param structure: a ``STRUCTURES`` name.
    :param edge: ``strong``, ``weak`` or ``zero``.
    :param seed: the market's seed.
    :param dataset: ``DatasetConfig`` overrides (dotted keys) on top of ``window=8``.
    :param family: symbols in the dataset: ``SYN`` and ``family - 1`` siblings ``SYN_1``... drawn from the same
        generator settings with other seeds (``10_000 + 100 * seed + j``): more paths of the same rule to train
        and validate on (domain randomisation); ``SYN`` is the same market whatever ``family`` is.
    """
    settings = {"sigma": 0.02, **STRUCTURES[structure].settings[edge]}
    index = pd.date_range("2010-01-04", periods=N_BARS, freq="B", tz="UTC", name="timestamp")
    symbols, expected = {}, None
    for j in range(family):
        arrays = generate_ohlcv(N_BARS, seed=seed if j == 0 else 10_000 + 100 * seed + j, **settings)
        symbols["SYN" if j == 0 else f"SYN_{j}"] = pd.DataFrame(
            {k: arrays[k] for k in ("open", "high", "low", "close", "volume")}, index=index)
        expected = arrays["expected_return"] if j == 0 else expected
    config: dict[str, Any] = {"window": 8}
    for key, value in (dataset or {}).items():
        set_dotted(config, key, value)
    return build_market_data(symbols, DatasetConfig.from_dict(config)), expected


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """``tree[a][b] = value`` for ``key="a.b"``, making the inner dicts it lacks.

    :param tree: nested dicts.
    :param key: dotted path.
    :param value: the value.
    """
    *path, last = key.split(".")
    for part in path:
        tree = tree.setdefault(part, {})
    tree[last] = value


class RulePolicy:
    """The rule-knowing oracle: replays long/flat decisions taken from the planted expected returns."""

    name = "oracle (knows the rule)"

    def __init__(self, actions: np.ndarray) -> None:
        self.actions = actions
        self.k = 0

    def reset(self) -> None:
        self.k = 0

    def act(self, observation: np.ndarray) -> int:
        action = int(self.actions[self.k])
        self.k += 1
        return action


def oracle_actions(data: MarketData, expected: np.ndarray, split: str, horizon: float) -> np.ndarray:
    """Long/flat decisions at each backtest step of ``split`` (decided at the close of bar r, filled next open)."""
    core = TradingCore(data, EnvConfig(split=split, random_start=False, episode_length=None))
    start, end = int(core.sym_start[0]), int(core.sym_end[0])
    actions = np.zeros(end - start, dtype=np.int64)
    long = False
    for k, r in enumerate(range(start, end)):
        e = expected[r]
        long = e > -0.0 if long else e * horizon > ROUND_TRIP
        actions[k] = int(long)
    return actions


def regime_filter_expected(close: np.ndarray, drift: float, persistence: float, sigma: float) -> np.ndarray:
    """``E[r_{t+1}]`` at each close as a causal filter knowing the regime rule (drift, persistence, sigma) but not
    the regime: the two-state Hamilton filter on close-to-close log returns, ``P(up | r_1..r_t)``, carried one
    bar ahead. What an agent could at best infer from prices: the ceiling of the regime markets.

    :param close: close prices.
    :param drift: the up regime's drift per bar (the down regime's is its negative).
    :param persistence: probability of keeping the regime at each bar.
    :param sigma: standard deviation of the per-bar noise.
    """
    returns = np.diff(np.log(close), prepend=np.log(close[0]))
    p_up = 0.5
    expected = np.zeros(len(close))
    for t, r in enumerate(returns):
        prior = p_up * persistence + (1 - p_up) * (1 - persistence) if t else 0.5
        like_up = np.exp(-0.5 * ((r - drift) / sigma) ** 2)
        like_down = np.exp(-0.5 * ((r + drift) / sigma) ** 2)
        p_up = prior * like_up / (prior * like_up + (1 - prior) * like_down) if t else 0.5
        expected[t] = drift * (2 * p_up - 1) * (2 * persistence - 1)
    return expected


def baselines(structure: str, edge: str, seed: int, dataset: dict[str, Any] | None = None
              ) -> dict[str, dict[str, float]]:
    """Test and validation log returns and orders of the oracle, buy-and-hold and, on regime markets with an
    edge, the causal filter (``filter``, :func:`regime_filter_expected`)."""
    data, expected = make_market(structure, edge, seed, dataset)
    settings = {"sigma": 0.02, **STRUCTURES[structure].settings[edge]}
    causal = None
    if settings.get("regime_drift"):
        close = generate_ohlcv(N_BARS, seed=seed, **settings)["close"]
        causal = regime_filter_expected(close, settings["regime_drift"], settings["regime_persistence"],
                                        settings["sigma"])
    out = {}
    for split in ("validation", "test"):
        rule = RulePolicy(oracle_actions(data, expected, split, STRUCTURES[structure].horizon))
        policies = [("oracle", rule), ("buy_and_hold", BuyAndHoldPolicy())]
        if causal is not None:
            policies.append(("filter", RulePolicy(oracle_actions(data, causal, split, STRUCTURES[structure].horizon))))
        for name, policy in policies:
            m = evaluate_policy(policy, data, split, COSTS, ENV_SETTINGS)
            out[f"{name}_{split}"] = {"log_return": m["log_return"], "orders": m["n_orders"]}
    return out


def run_agent(job: dict[str, Any]) -> dict[str, Any]:
    """Train one agent on one market and score ``run/best`` on validation and test (a worker process)."""
    import torch

    from agents.training import train_agent

    torch.set_num_threads(1)
    data, _ = make_market(job["structure"], job["edge"], job["seed"], job.get("dataset"), job.get("family", 1))
    config = package_defaults(job["algo"])
    merged = config.to_dict()
    merged["seed"] = job["seed"]
    for key, value in job["overrides"].items():
        set_dotted(merged, key, value)
    config = AgentConfig.from_dict(merged)
    with tempfile.TemporaryDirectory(prefix="bench_learning_") as tmp:
        started = time.perf_counter()
        summary = train_agent(config, data, Path(tmp) / "run", progress=False)
        seconds = time.perf_counter() - started
        agent = load_agent(Path(tmp) / "run" / "best", data)
        scores = {split: evaluate_policy(agent, data, split, COSTS, agent.env_settings, symbols=["SYN"])
                  for split in ("validation", "test")}
    return {**job, "seconds": seconds, "timesteps": summary["timesteps"], "fallback": summary["fallback"],
            "selection_rule": summary.get("selection_rule", "-"),
            "ckpt": (summary["best_validation"] or {}).get("timesteps"),
            "history": [{k: h.get(k) for k in HISTORY_KEYS}
                        for h in summary["validation_history"]],
            **{f"{split}_log": s["log_return"] for split, s in scores.items()},
            **{f"{split}_orders": s["n_orders"] for split, s in scores.items()}}


def rule_trades(history: list[dict[str, Any]], rule: CheckpointRule) -> bool:
    """Whether ``rule`` keeps any checkpoint of a run's validation ``history`` (False: the cash fallback).

    :param history: the run's validation metrics per checkpoint (``HISTORY_KEYS``).
    :param rule: the checkpoint rule.
    """
    return any(rule.qualifies(h) and rule.score(h) > rule.min_improvement for h in history
               if h.get("alpha_tstat") is not None or rule.rule != "cash_and_alpha")


def rule_table(runs: list[dict[str, Any]], turnover_penalty: float = 0.0015) -> list[str]:
    """For each rule of ``RULE_GRID``: the share of runs it sends to cash on markets with an edge (false cash,
    strong and weak apart) and the share it lets trade on zero-edge markets (false trade), replayed on the
    runs' recorded validation histories (no retraining; per algorithm and over both).

    :param runs: bench rows (``run_agent`` results, e.g. from one or more ``--json`` files).
    :param turnover_penalty: log return charged per validation order (the default rule's).
    """
    lines = [f"{'rule':44s} {'algo':4s} {'strong: cash':>13s} {'weak: cash':>11s} {'zero: trades':>13s}"]
    for name, tstat, excess in RULE_GRID:
        rule = CheckpointRule(name, 0.0, tstat, excess, turnover_penalty)
        label = f"{name} t>={tstat:g}" + (f" excess t>={excess:g}" if name != "cash" else "")
        for algo in sorted({r["algo"] for r in runs}) + ["all"]:
            cells = []
            for edge, trading_is_wrong in (("strong", False), ("weak", False), ("zero", True)):
                group = [r for r in runs if r["edge"] == edge and algo in ("all", r["algo"])]
                wrong = sum(rule_trades(r["history"], rule) == trading_is_wrong for r in group)
                cells.append(f"{wrong}/{len(group)}" if group else "-")
            lines.append(f"{label:44s} {algo:4s} {cells[0]:>13s} {cells[1]:>11s} {cells[2]:>13s}")
    return lines


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["ppo", "dqn"], choices=["ppo", "dqn"])
    parser.add_argument("--structures", nargs="+", default=list(DEFAULT_STRUCTURES), choices=list(STRUCTURES))
    parser.add_argument("--edges", nargs="+", default=list(EDGES), choices=list(EDGES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (default 2)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="AgentConfig overrides (dotted keys, JSON values), e.g. dqn.train_freq=1")
    parser.add_argument("--data", nargs="*", default=[], metavar="KEY=VALUE",
                        help="DatasetConfig overrides (dotted keys, JSON values), e.g. window=24 or "
                             "features.return_windows=[1,5,20,50]")
    parser.add_argument("--family", type=int, default=1,
                        help="symbols per market: SYN and siblings from the same generator, trained and "
                             "validated on together, scored on SYN (default 1)")
    parser.add_argument("--json", help="also write every row to this JSON file")
    parser.add_argument("--rule-table", nargs="+", metavar="JSON",
                        help="train nothing: replay the checkpoint rules of RULE_GRID on the validation histories "
                             "saved by earlier --json runs and print their false-cash / false-trade counts")
    args = parser.parse_args(argv)
    if args.rule_table:
        runs = [r for path in args.rule_table for r in json.loads(Path(path).read_text())["runs"]]
        print(f"{len(runs)} runs from {len(args.rule_table)} file(s): runs sent to cash on markets with an edge, "
              f"runs that trade on zero-edge markets")
        print("\n".join(rule_table(runs)))
        return
    overrides = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    dataset = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.data)}

    started = time.perf_counter()
    markets = [(s, e, seed) for s in args.structures for e in args.edges for seed in args.seeds]
    jobs = [{"structure": s, "edge": e, "seed": seed, "algo": a, "overrides": overrides, "dataset": dataset,
             "family": args.family}
            for a in args.algos for s, e, seed in markets]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        base = dict(zip(markets, pool.map(baselines, *zip(*markets), [dataset] * len(markets))))
        futures = [pool.submit(run_agent, job) for job in jobs]
        for done, future in enumerate(as_completed(futures), 1):
            r = future.result()
            print(f"[{done}/{len(jobs)}] {r['algo']} {r['structure']} {r['edge']} seed {r['seed']}: test log "
                  f"{r['test_log']:+.3f}, {r['test_orders']} orders ({r['seconds']:.0f} s)", file=sys.stderr, flush=True)
        results = [f.result() for f in futures]
    total = time.perf_counter() - started

    print(f"Planted markets ({N_BARS:,} bars, window 8, test 675 bars), seeds {args.seeds}; costs "
          f"{COSTS.describe()}; overrides {overrides or 'none'}; dataset {dataset or 'default'}; family {args.family}. Scored on TEST unless marked val.")
    header = ("algo", "market", "edge", "seed", "oracle", "B&H", "test log", "% oracle", "orders", "val log",
              "val ord", "picked", "secs")
    rows = []
    for r in results:
        b = base[(r["structure"], r["edge"], r["seed"])]
        oracle = b["oracle_test"]["log_return"]
        share = f"{100 * r['test_log'] / oracle:.0f}%" if oracle > 0.05 else "-"
        picked = "cash" if r["fallback"] else f"{r['ckpt']:,}"
        rows.append((r["algo"], r["structure"], r["edge"], str(r["seed"]), f"{oracle:+.3f}",
                     f"{b['buy_and_hold_test']['log_return']:+.3f}", f"{r['test_log']:+.3f}", share,
                     str(r["test_orders"]), f"{r['validation_log']:+.3f}", str(r["validation_orders"]), picked,
                     f"{r['seconds']:.0f}"))
    widths = [max(len(x[i]) for x in rows + [header]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.rjust(w) if i >= 3 else c.ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))

    print("\nMedian over seeds (goals: strong >= 70% of oracle, weak >= 40% where the oracle > 0.3; "
          "zero edge <= 10 orders and > -5% on validation and test):")
    for algo in args.algos:
        for s in args.structures:
            for e in args.edges:
                group = [r for r in results if (r["algo"], r["structure"], r["edge"]) == (algo, s, e)]
                if not group:
                    continue
                oracles = [base[(s, e, r["seed"])]["oracle_test"]["log_return"] for r in group]
                shares = [r["test_log"] / o for r, o in zip(group, oracles) if o > 0.05]
                text = (f"  {algo} {s:8s} {e:6s} oracle {np.median(oracles):+.3f}  test {np.median([r['test_log'] for r in group]):+.3f}"
                        f"  % oracle {100 * np.median(shares):.0f}%" if shares else
                        f"  {algo} {s:8s} {e:6s} oracle {np.median(oracles):+.3f}  test {np.median([r['test_log'] for r in group]):+.3f}")
                causal = [base[(s, e, r["seed"])].get("filter_test", {}).get("log_return") for r in group]
                if all(c is not None and c > 0.05 for c in causal):
                    text += (f"  (causal filter {np.median(causal):+.3f}; agent "
                             f"{100 * np.median([r['test_log'] / c for r, c in zip(group, causal)]):.0f}% of it)")
                text += f"  cash fallback {sum(bool(r['fallback']) for r in group)}/{len(group)} seeds"
                if e == "zero":
                    worst = min(min(np.expm1(r["test_log"]), np.expm1(r["validation_log"])) for r in group)
                    most = max(max(r["test_orders"], r["validation_orders"]) for r in group)
                    text += f"  max orders {most}  worst return {100 * worst:+.1f}%"
                print(text)
    rule = results[0]["selection_rule"] if results else "-"
    print(f"\nselection rule: {rule}")
    print(f"{len(results)} runs, median {np.median([r['seconds'] for r in results]):.0f} s each "
          f"({args.workers} at a time); {os.cpu_count()} CPUs; load1 {os.getloadavg()[0]:.1f}; total {total:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"baselines": {"/".join(map(str, k)): v for k, v in base.items()},
                                               "runs": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
