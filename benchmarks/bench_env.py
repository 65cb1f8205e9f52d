"""Environment throughput: TradingEnv-v0, TradingVecEnv, gym-anytrading's StocksEnv and backtest().

Run ``python -m benchmarks.bench_env`` (``--seconds`` per row, default 2; ``--profile`` adds a cProfile
of ``TradingEnv.step``). Random actions are drawn up front with numpy, so the numbers are the env's own
cost; resets at the end of each full episode are inside the timed loop. All rows run on the default
(embedded) dataset; StocksEnv gets the same close prices (the first symbol's train split), window 24.
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
from envs import TradingEnv, TradingVecEnv, backtest, default_market_data

ACTION_BLOCK = 4096


class BuyAndHold:
    name = "buy_and_hold"

    def reset(self) -> None:
        pass

    def act(self, observation: np.ndarray) -> int:
        return 1


def timed(run_block: Callable[[], int], seconds: float) -> float:
    """Units per second of ``run_block`` (which returns the units it did), after one warm-up block."""
    run_block()
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += run_block()
    return done / elapsed


def single_env_rate(env: gym.Env, seconds: float, seed: int = 0) -> float:
    """Env steps/s with uniformly random actions over full episodes (reset when an episode ends)."""
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

    return timed(block, seconds)


def vec_env_rate(n_envs: int, seconds: float, seed: int = 0) -> tuple[float, int]:
    """Env steps/s (n_envs per call) of TradingVecEnv, random actions, auto-reset."""
    vec = TradingVecEnv(n_envs, seed=seed)
    vec.reset()
    calls = max(8, ACTION_BLOCK // n_envs)
    actions = np.random.default_rng(seed).integers(0, vec.action_space.n, size=(calls, n_envs))

    def block() -> int:
        for row in actions:
            vec.step(row)
        return calls * n_envs

    return timed(block, seconds), vec.observation_space.shape[0]


def anytrading_rate(seconds: float, seed: int = 0) -> tuple[float | None, int | None]:
    """gym-anytrading StocksEnv on the first symbol's train closes, window 24; None if not installed."""
    try:
        import pandas as pd
        from gym_anytrading.envs import StocksEnv
    except ImportError:
        return None, None
    data = default_market_data()
    lo, hi = data.split_range("train", data.symbols[0])
    frame = pd.DataFrame({"Close": data.close[lo - 24:hi]})
    env = StocksEnv(frame, window_size=24, frame_bound=(24, len(frame)))
    return single_env_rate(env, seconds, seed), int(np.prod(env.observation_space.shape))


def backtest_rate(seconds: float) -> tuple[float, int, int]:
    """Bars/s of backtest() with buy-and-hold on the first symbol's train split (metrics included)."""
    data = default_market_data()
    bars = 0

    def block() -> int:
        nonlocal bars
        result = backtest(BuyAndHold(), data, "train")
        bars = len(result.equity) - 1
        return bars

    rate = timed(block, seconds)
    return rate, TradingEnv(data).observation_space.shape[0], bars


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
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per row")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of TradingEnv.step")
    args = parser.parse_args(argv)

    rows: list[tuple[str, int | None, str, str]] = []
    made = gym.make(envs.ENV_ID)
    rate = single_env_rate(made, args.seconds)
    size = made.observation_space.shape[0]
    rows.append(("TradingEnv-v0 via gym.make (checker + order wrappers)", size, f"{rate:,.0f}", "env steps/s"))
    raw = made.unwrapped
    rows.append(("TradingEnv-v0 raw (unwrapped)", size, f"{single_env_rate(raw, args.seconds):,.0f}", "env steps/s"))
    for n_envs in (1, 16, 64, 256):
        rate, size = vec_env_rate(n_envs, args.seconds)
        rows.append((f"TradingVecEnv, {n_envs} envs", size, f"{rate:,.0f}", "env steps/s"))
    rate, size = anytrading_rate(args.seconds)
    rows.append(("gym-anytrading StocksEnv, window 24", size,
                 "not installed" if rate is None else f"{rate:,.0f}", "env steps/s"))
    rate, size, bars = backtest_rate(args.seconds)
    rows.append((f"backtest() buy-and-hold, {bars} bars incl. metrics", size, f"{rate:,.0f}", "bars/s"))

    widths = [max(len(str(row[i])) for row in rows + [("benchmark", "obs size", "rate", "unit")]) for i in range(4)]
    header = ("benchmark", "obs size", "rate", "unit")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for name, size, rate, unit in rows:
        print(f"{name.ljust(widths[0])}  {str(size if size is not None else '-').rjust(widths[1])}  "
              f"{rate.rjust(widths[2])}  {unit}")
    if args.profile:
        print()
        print(profile_step())


if __name__ == "__main__":
    main()
