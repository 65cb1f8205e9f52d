"""Portfolio speed side by side: PortfolioEnv-v0, PortfolioVecEnv, the portfolio backtest and PPO, against FinRL.

Run ``python -m benchmarks.bench_portfolio`` (``--rounds`` interleaved rounds, default 3; ``--seconds`` per row per
round, default 1.0; ``--skip-ppo`` / ``--skip-finrl``). Every row runs on the embedded universe (skfolio's 20 S&P 500
stocks, daily closes) with random actions drawn up front, costs on (0.10% + 5 bps); rows take turns round after round
and each keeps its best round, so ratios are within one run on the same load.

- FinRL 0.3.7's ``StockPortfolioEnv`` (its module file alone: ``pip install --no-deps finrl==0.3.7``), on the same 20
  stocks with random actions, timed by ``../shared/anchors/finrl_portfolio_speed.py`` (``--finrl-anchor``); it charges
  no cost at all and builds pandas per step.
- ``PortfolioEnv`` with an observation of FinRL's size class (``window=1``: the latest features per asset and the
  weights), and with the default window (24 bars x every feature per asset: ~15k floats), reported beside the
  observation bytes per second it produces.
- ``PortfolioVecEnv`` at 256 envs x 20 assets, default window.
- A portfolio backtest of 20 assets x 8,000 daily bars (equal weight, rebalanced every 21 bars).
- PPO (the portfolio agent's defaults) on the portfolio env, observing a frozen encoder's cached embeddings.
- Memory: the env's arrays at 5, 10 and 20 assets (grows linearly with assets x bars).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from envs import PortfolioEnv, PortfolioVecEnv
from features.dataset import DatasetConfig, build_dataset
from features.embedded import SKFOLIO_SYMBOLS
from features.panel import Panel

ANCHOR = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "finrl_portfolio_speed.py"
ACTION_BLOCK = 2048


def interleaved(blocks: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Best rate of each block (a callable returning units per second of one timed run) over ``rounds`` rounds."""
    best = {name: 0.0 for name in blocks}
    for _ in range(rounds):
        for name, block in blocks.items():
            best[name] = max(best[name], block())
    return best


def env_block(env: PortfolioEnv, seconds: float, seed: int = 0) -> Callable[[], float]:
    """Steps/s of ``env`` with random non-negative weights (reset at each episode's end) for ``seconds``."""
    actions = np.random.default_rng(seed).random((ACTION_BLOCK, env.action_space.shape[0])).astype(np.float32)
    env.reset(seed=seed)
    for action in actions[:64]:  # compile and warm
        if any(env.step(action)[2:4]):
            env.reset()

    def block() -> float:
        step, reset = env.step, env.reset
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for action in actions:
                _, _, terminated, truncated, _ = step(action)
                if terminated or truncated:
                    reset()
            done += len(actions)
        return done / (time.perf_counter() - start)

    return block


def vec_block(vec: PortfolioVecEnv, seconds: float, seed: int = 0) -> Callable[[], float]:
    """Env steps/s of the batched env with random weights."""
    actions = np.random.default_rng(seed).random((8, vec.num_envs, vec.action_space.shape[0])).astype(np.float32)
    vec.reset()
    vec.step(actions[0])

    def block() -> float:
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for batch in actions:
                vec.step(batch)
            done += len(actions) * vec.num_envs
        return done / (time.perf_counter() - start)

    return block


def finrl_block(anchor: Path, n_steps: int) -> Callable[[], float] | None:
    """FinRL's StockPortfolioEnv steps/s through the anchor script; None when FinRL or the anchor is missing."""
    if not anchor.exists():
        print(f"(FinRL row skipped: the anchor script {anchor} is not there)")
        return None
    spec = importlib.util.spec_from_file_location("finrl_portfolio_speed", anchor)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module._finrl_env_module()
    except ImportError as exc:
        print(f"(FinRL row skipped: {exc})")
        return None
    workdir = tempfile.mkdtemp(prefix="finrl-bench-")  # FinRL writes results/*.png where it runs

    def block() -> float:
        here = os.getcwd()
        os.chdir(workdir)
        try:
            return module.finrl_steps_per_second(n_steps=n_steps)
        finally:
            os.chdir(here)

    return block


def backtest_seconds() -> float:
    """Seconds of one backtest of equal weight (rebalanced every 21 bars) over ~8,000 daily bars of the 20 stocks
    (a dataset whose train split is 97% of the 8,313 bars)."""
    from agents.portfolio_baselines import AllocationPolicy
    from envs.portfolio_backtest import backtest_portfolio

    data = build_dataset(DatasetConfig(source="skfolio", symbols=SKFOLIO_SYMBOLS, window=1,
                                       split={"train": 0.97, "validation": 0.015, "test": 0.015}))
    panel = Panel.from_market_data(data)
    policy = AllocationPolicy("equal_weight", np.full(panel.n_assets, 1.0 / panel.n_assets), panel.symbols, 21)
    backtest_portfolio(policy, panel, split="test")  # compile
    start = time.perf_counter()
    result = backtest_portfolio(policy, panel, split="train")
    elapsed = time.perf_counter() - start
    print(f"backtest: {len(result.equity) - 1:,} daily bars x {panel.n_assets} assets, {result.n_orders:,} orders")
    return elapsed


def memory_table(window: int) -> list[tuple[int, int, float]]:
    """(assets, timeline rows, MB of the env's arrays) at 5, 10 and 20 assets."""
    rows = []
    for n in (5, 10, 20):
        data = build_dataset(DatasetConfig(source="skfolio", symbols=SKFOLIO_SYMBOLS[:n], window=window))
        env = PortfolioEnv(data=data)
        core = env.core
        arrays = [core.panel.padded_features, core.panel.window_start, core.panel.rows, core.panel.has_bar,
                  core.panel.open, core.panel.high, core.panel.low, core.panel.close, core.panel.volume,
                  core.sim.market, core.sim.assets, core.obs]
        rows.append((n, core.panel.n_times, sum(a.nbytes for a in arrays) / 1e6))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--finrl-anchor", type=Path, default=ANCHOR)
    parser.add_argument("--skip-finrl", action="store_true")
    parser.add_argument("--skip-ppo", action="store_true")
    args = parser.parse_args(argv)

    data_1 = build_dataset(DatasetConfig(source="skfolio", symbols=SKFOLIO_SYMBOLS, window=1))
    data_24 = build_dataset(DatasetConfig(source="skfolio", symbols=SKFOLIO_SYMBOLS))
    env_1 = PortfolioEnv(data=data_1)
    env_24 = PortfolioEnv(data=data_24)
    vec = PortfolioVecEnv(256, data=data_24, seed=0)
    blocks: dict[str, Callable[[], float]] = {}
    if not args.skip_finrl:
        finrl = finrl_block(args.finrl_anchor, n_steps=2000)
        if finrl is not None:
            blocks["FinRL StockPortfolioEnv (no costs)"] = finrl
    blocks["PortfolioEnv, window=1"] = env_block(env_1, args.seconds)
    blocks["PortfolioEnv, window=24"] = env_block(env_24, args.seconds)
    blocks["PortfolioVecEnv 256 envs, window=24"] = vec_block(vec, args.seconds)
    rates = interleaved(blocks, args.rounds)
    finrl_rate = rates.get("FinRL StockPortfolioEnv (no costs)")
    print(f"\n{'row (20 assets)':40s} {'env steps/s':>14s} {'obs floats':>11s} {'obs MB/s':>10s} {'vs FinRL':>9s}")
    sizes = {"PortfolioEnv, window=1": env_1.observation_space.shape[0],
             "PortfolioEnv, window=24": env_24.observation_space.shape[0],
             "PortfolioVecEnv 256 envs, window=24": vec.observation_space.shape[0],
             "FinRL StockPortfolioEnv (no costs)": 20 * 21}
    for name, rate in rates.items():
        floats = sizes[name]
        ratio = f"{rate / finrl_rate:8.1f}x" if finrl_rate else "      n/a"
        print(f"{name:40s} {rate:14,.0f} {floats:11,d} {rate * floats * 4 / 1e6:10,.1f} {ratio}")

    print(f"\nportfolio backtest, 20 assets: {backtest_seconds():.3f} s")
    if not args.skip_ppo:
        print(f"PPO on PortfolioVecEnv (agent defaults, cached embeddings): {ppo_steps_per_second():,.0f} env steps/s")
    print("\nmemory of the env's arrays (window=24):")
    for n, t_len, mb in memory_table(24):
        print(f"  {n:3d} assets x {t_len:,} rows: {mb:8.1f} MB ({mb / n:.2f} MB per asset)")


def ppo_steps_per_second(steps: int = 60_000) -> float:
    """Env steps/s of the portfolio agent's PPO (``configs/portfolio.yaml``) on PortfolioVecEnv over the embedded
    20-stock universe, observing a frozen encoder's cached embeddings per asset (an MLP encoder of the supervised
    models, untrained: its speed is any pretrained one's): ``embed_panel`` once, then ``model.learn``."""
    import torch

    from agents.portfolio_agent import PortfolioAgentConfig, build_portfolio_model, make_portfolio_env
    from agents.portfolio_encoder import embed_panel
    from envs.portfolio_core import PortfolioLayout, resolve_panel
    from supervised.models import ModelConfig, build_encoder

    panel = resolve_panel(None, window=24)
    torch.manual_seed(0)
    encoder = build_encoder(ModelConfig(kind="mlp", window=panel.window, n_features=panel.n_features,
                                        n_assets=panel.data.n_assets, dropout=0.0))
    start = time.perf_counter()
    embedded = embed_panel(panel, encoder)
    print(f"embed_panel: {time.perf_counter() - start:.1f} s for {embedded.n_assets} assets x {embedded.n_times:,} rows "
          f"-> {embedded.n_features} floats each")
    config = PortfolioAgentConfig.from_yaml()
    torch.set_num_threads(config.torch_threads)
    env = make_portfolio_env(config, embedded)
    model = build_portfolio_model(config, env, PortfolioLayout(embedded.n_assets, 1, embedded.n_features), None)
    model.learn(4096)  # warm up
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
