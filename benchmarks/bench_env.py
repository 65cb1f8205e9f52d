"""Environment throughput side by side: TradingEnv-v0 and TradingVecEnv against gym-anytrading's StocksEnv.

Run ``python -m benchmarks.bench_env`` (``--rounds`` interleaved rounds, default 5; ``--seconds`` per row
per round, default 0.5; ``--profile`` adds a cProfile of ``TradingEnv.step``). The rows take turns, round
after round, and each keeps its best round: on a shared machine every row meets the same load, and
``vs StocksEnv`` is a ratio within one run. Random actions are drawn up front with numpy, so the numbers are
the env's own cost; resets at the end of each full episode are inside the timed loop. All rows run on the
default (embedded) dataset; StocksEnv gets the same close prices (the first symbol's train split), window
24, and is stepped raw (no gym.make wrappers). Backtests: ``python -m benchmarks.bench_backtest``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from typing import Callable

import gymnasium as gym
import numpy as np

import envs
from envs import TradingEnv, TradingVecEnv, default_market_data

ACTION_BLOCK = 4096


def interleaved(blocks: dict[str, Callable[[], int]], rounds: int, seconds: float) -> dict[str, float]:
    """Best units/s of each block (a callable returning the units it did) over ``rounds`` rounds in which
    the blocks take turns for ``seconds`` each, after one warm-up call each."""
    best = {name: 0.0 for name in blocks}
    for block in blocks.values():
        block()
    for _ in range(rounds):
        for name, block in blocks.items():
            done, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                done += block()
            best[name] = max(best[name], done / elapsed)
    return best


def single_env_block(env: gym.Env, seed: int = 0) -> Callable[[], int]:
    """A block of env steps with uniformly random actions over full episodes (reset when one ends)."""
    n_actions = env.action_space.n
    actions = np.random.default_rng(seed).integers(0, n_actions, size=ACTION_BLOCK).tolist()
    env.reset(seed=seed)

    def block() -> int:
        step, reset = env.step, env.reset
        for action in actions:
            _, _, terminated, truncated, _ = step(action)
            if terminated or truncated:
                reset()
        return len(actions)

    return block


def vec_env_block(n_envs: int, seed: int = 0) -> Callable[[], int]:
    """A block of TradingVecEnv steps (n_envs per call), random actions, auto-reset."""
    vec = TradingVecEnv(n_envs, seed=seed)
    vec.reset()
    calls = max(8, ACTION_BLOCK // n_envs)
    actions = np.random.default_rng(seed).integers(0, vec.action_space.n, size=(calls, n_envs))

    def block() -> int:
        for row in actions:
            vec.step(row)
        return calls * n_envs

    return block


def anytrading_env() -> gym.Env | None:
    """gym-anytrading StocksEnv on the first symbol's train closes, window 24; None if not installed."""
    try:
        import pandas as pd
        from gym_anytrading.envs import StocksEnv
    except ImportError:
        return None
    data = default_market_data()
    lo, hi = data.split_range("train", data.symbols[0])
    frame = pd.DataFrame({"Close": data.close[lo - 24:hi]})
    return StocksEnv(frame, window_size=24, frame_bound=(24, len(frame)))


def profile_step(n_steps: int = 50_000) -> str:
    """cProfile of TradingEnv.step (raw env, random actions), top functions by own time."""
    env = TradingEnv()
    actions = np.random.default_rng(0).integers(0, 2, size=n_steps).tolist()
    env.reset(seed=0)
    profiler = cProfile.Profile()
    profiler.enable()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each row keeps its best")
    parser.add_argument("--seconds", type=float, default=0.5, help="timed seconds per row per round")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of TradingEnv.step")
    args = parser.parse_args(argv)

    made = gym.make(envs.ENV_ID)
    size = made.observation_space.shape[0]
    peer = anytrading_env()
    blocks: dict[str, Callable[[], int]] = {}
    sizes: dict[str, int] = {}
    if peer is not None:
        blocks["gym-anytrading StocksEnv, window 24 (raw)"] = single_env_block(peer)
        sizes["gym-anytrading StocksEnv, window 24 (raw)"] = int(np.prod(peer.observation_space.shape))
    blocks["TradingEnv-v0 via gym.make (checker + order wrappers)"] = single_env_block(made)
    blocks["TradingEnv-v0 raw (unwrapped)"] = single_env_block(made.unwrapped)
    for n_envs in (16, 64, 256):
        blocks[f"TradingVecEnv, {n_envs} envs"] = vec_env_block(n_envs)
    rates = interleaved(blocks, args.rounds, args.seconds)
    reference = rates.get("gym-anytrading StocksEnv, window 24 (raw)")

    width = max(len(name) for name in blocks)
    print(f"env steps/s, best of {args.rounds} interleaved rounds of {args.seconds:g} s; TradingEnv-v0 observes "
          f"{size} floats and charges 0.10% commission + 5 bps slippage")
    print(f"{'benchmark'.ljust(width)}  obs size  {'steps/s':>10}  vs StocksEnv")
    for name, rate in rates.items():
        ratio = f"{rate / reference:.2f}x" if reference else "-"
        print(f"{name.ljust(width)}  {sizes.get(name, size):>8}  {rate:>10,.0f}  {ratio}")
    if reference is None:
        print("gym-anytrading is not installed: no StocksEnv row")
    if args.profile:
        print()
        print(profile_step())


if __name__ == "__main__":
    main()
