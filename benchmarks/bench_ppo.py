"""End-to-end PPO training speed (env steps/s): SB3 defaults vs this project's defaults, and vec-env choices.

Run ``python -m benchmarks.bench_ppo`` (``--timesteps`` timed steps per row, default 32768; ``--quick``
for 8192). Every row trains a fresh, seeded (seed 0) SB3 PPO ``MlpPolicy`` on the default embedded dataset
(window 24, 31 features: a 749-float observation), on CPU, with ``torch.set_num_threads(--threads)``
(default 1; 0 leaves torch's default, which is the core count). One thread is the default because on a
shared 2-core machine (load average above the core count) two intra-op threads made single PPO gradient
steps 10-200x slower and erratic (OpenMP threads waiting on each other), while one thread stayed steady.
All rows use the same env settings, ``AgentConfig().env`` (train split, episodes of 256
steps), so only the vectorisation and the PPO settings differ:

* ``SB3 defaults``: n_steps 2048, batch 64, n_epochs 10, gamma 0.99, ent_coef 0 (net_arch 64x64 as ours),
  on ``DummyVecEnv``/``SubprocVecEnv`` of ``gym.make("TradingEnv-v0")`` + ``VecMonitor``;
  with 1 env this is the reference row.
* ``ours``: ``AgentConfig()`` (n_steps 256, batch 1024, n_epochs 4, gamma 0.9) built by
  ``agents.training.make_train_env``/``build_model`` on one native ``TradingVecEnv`` + ``VecMonitor``,
  trained by ``agents.fast_ppo.FastPPO``. ``..., SB3 PPO loop`` rows train the same model with SB3's
  ``PPO`` class: the same weights bit for bit (``tests/test_fast_ppo.py``), SB3's rollout loop and update.

* ``ours, pretrained lstm ...``: ``AgentConfig(pretrained=<an LSTM bundle>)`` (the weights do not matter for
  speed): frozen (each window's embedding computed once and cached by ``agents.extractor``; the cache fills
  during the run, so the row includes its cold start), frozen without the cache (the plain path), and
  fine-tuned. ``--only-encoders`` runs just the reference, ``ours`` (16 envs, both loops) and these rows.

``--against REV`` adds the ``ours`` row of an older git revision, timed by that revision's own code in a
worktree (e.g. ``--against 7d5375c``, the code at which issue 12 measured the default PPO at 19.9k steps/s).

``--rounds N`` runs every row N times, the rows taking turns, and shows each row's fastest round with the
list of all rounds: on a shared machine a slow spell then hits every row, not one.

Warm-up is excluded: each row runs one untimed PPO iteration (rollout + update) first, then times
whole iterations (rollout + update), enough of them to cover ``--timesteps``. ``collect`` is the share
of the timed wall time spent in rollouts (env steps + policy forward), the rest is the gradient update.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

import envs
from agents.config import AgentConfig
from agents.training import build_model, make_train_env
from envs import default_market_data

SB3_DEFAULTS = {"n_steps": 2048, "batch_size": 64, "n_epochs": 10}


class IterationTimer(BaseCallback):
    """Wall time of every PPO iteration after the first, split into rollout and update."""

    def __init__(self) -> None:
        super().__init__()
        self.iteration = 0
        self.start_time: float | None = None
        self.start_steps = 0
        self.collect_seconds = 0.0
        self._rollout_started = 0.0

    def _on_rollout_start(self) -> None:
        self.iteration += 1
        now = time.perf_counter()
        if self.iteration == 2:  # the first iteration (rollout + update) was the warm-up
            self.start_time, self.start_steps = now, self.num_timesteps
        self._rollout_started = now

    def _on_rollout_end(self) -> None:
        if self.iteration >= 2:
            self.collect_seconds += time.perf_counter() - self._rollout_started

    def _on_step(self) -> bool:
        return True


@dataclass
class Row:
    setting: str
    vec_env: str
    n_envs: int
    n_steps: int
    batch_size: int
    n_epochs: int
    timed_steps: int = 0
    seconds: float = 0.0
    collect_share: float = 0.0
    load: float = 0.0
    round_rates: tuple[float, ...] = ()  # with --rounds: every round's steps/s (the row is the fastest)

    @property
    def rate(self) -> float:
        return self.timed_steps / self.seconds if self.seconds > 0 else float("nan")


def timed_learn(model: PPO, rollout: int, timesteps: int) -> tuple[int, float, float]:
    """Train ``model`` for one warm-up iteration plus enough timed iterations to cover ``timesteps``."""
    iterations = 1 + max(1, math.ceil(timesteps / rollout))
    timer = IterationTimer()
    model.learn(total_timesteps=iterations * rollout, callback=timer)
    elapsed = time.perf_counter() - timer.start_time
    steps = model.num_timesteps - timer.start_steps
    return steps, elapsed, timer.collect_seconds / elapsed


def gym_env_factory(settings: dict[str, Any], data: Any) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        return gym.make(envs.ENV_ID, data=data, **settings)

    return make


def run_sb3_defaults(vec_env: str, n_envs: int, timesteps: int, seed: int) -> Row:
    """SB3 PPO defaults on DummyVecEnv/SubprocVecEnv of gym.make("TradingEnv-v0")."""
    settings = asdict(AgentConfig().env)
    settings["split"] = "train"
    if vec_env == "SubprocVecEnv":
        # workers build the (same) default dataset themselves instead of unpickling it
        factories = [gym_env_factory(settings, None) for _ in range(n_envs)]
        env: VecEnv = SubprocVecEnv(factories)
    else:
        factories = [gym_env_factory(settings, default_market_data()) for _ in range(n_envs)]
        env = DummyVecEnv(factories)
    env = VecMonitor(env)
    row = Row("SB3 defaults", vec_env, n_envs, **SB3_DEFAULTS)
    try:
        model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **SB3_DEFAULTS)
        row.timed_steps, row.seconds, row.collect_share = timed_learn(model, row.n_steps * n_envs, timesteps)
    finally:
        env.close()
    return row


def run_ours(n_envs: int, timesteps: int, seed: int, extractor: str = "flat", sb3_loop: bool = False) -> Row:
    """AgentConfig() defaults on TradingVecEnv, built the way agents.training builds them."""
    config = replace(AgentConfig(), n_envs=n_envs, seed=seed, extractor=extractor)
    return timed_config(config, "ours" if extractor == "flat" else f"ours, {extractor} extractor", timesteps,
                        sb3_loop=sb3_loop)


def timed_config(config: AgentConfig, label: str, timesteps: int, embedding_cache: bool = True,
                 sb3_loop: bool = False) -> Row:
    """``config``'s PPO on the default data, built as agents.training builds it (``FastPPO``; SB3's ``PPO``
    with ``sb3_loop``), timed by :func:`timed_learn`."""
    data = default_market_data()
    env = make_train_env(config, data)
    model = build_model(config, env, data, None, ppo_class=PPO if sb3_loop else None)
    label += ", SB3 PPO loop" if sb3_loop else ""
    if not embedding_cache:
        model.policy.features_extractor.cache_embeddings = False
    row = Row(label, "TradingVecEnv", config.n_envs, model.n_steps, model.batch_size, model.n_epochs)
    try:
        row.timed_steps, row.seconds, row.collect_share = timed_learn(model, model.n_steps * config.n_envs, timesteps)
    finally:
        env.close()
    return row


def pretrained_bundle(directory: str, seed: int) -> str:
    """An (untrained) supervised LSTM bundle on the default dataset: its weights do not change the speed."""
    from features.preprocessing import Preprocessing
    from supervised.bundle import save_bundle
    from supervised.models import ModelConfig, build_model as build_classifier

    data = default_market_data()
    torch.manual_seed(seed)
    config = ModelConfig(kind="lstm", window=data.window, n_features=data.n_features, n_assets=data.n_assets)
    path = os.path.join(directory, "lstm")
    save_bundle(path, build_classifier(config), config, preprocessing=Preprocessing.of(data), label=data.label,
                threshold=0.5, dataset_hashes={})
    return path


def run_pretrained(bundle: str, n_envs: int, timesteps: int, seed: int, freeze: bool, cache: bool = True,
                   sb3_loop: bool = False) -> Row:
    """AgentConfig(pretrained=bundle): the supervised LSTM encoder as extractor, frozen (with or without the
    embedding cache) or fine-tuned."""
    config = replace(AgentConfig(), n_envs=n_envs, seed=seed, pretrained=bundle, freeze_encoder=freeze)
    label = ("ours, pretrained lstm frozen" + ("" if cache else ", no embedding cache")) if freeze else \
        "ours, pretrained lstm fine-tuned"
    return timed_config(config, label, timesteps, embedding_cache=cache, sb3_loop=sb3_loop)


REVISION_ROW = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from benchmarks.bench_ppo import run_ours
row = run_ours(16, int(sys.argv[2]), int(sys.argv[3]))
print(json.dumps({k: getattr(row, k) for k in ("n_steps", "batch_size", "n_epochs", "timed_steps", "seconds",
                                                "collect_share")}))
"""


def checkout_revision(revision: str, directory: str) -> str:
    """A detached git worktree of ``revision`` of this repository under ``directory`` (for ``--against``)."""
    root = Path(__file__).resolve().parents[1]
    path = os.path.join(directory, "revision")
    done = subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", path, revision],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"--against {revision}: git could not check it out ({done.stderr.strip()})")
    return path


def remove_revision(path: str) -> None:
    root = Path(__file__).resolve().parents[1]
    subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", path], check=False, capture_output=True)


def run_revision(path: str, label: str, timesteps: int, seed: int, threads: int) -> Row:
    """The ``ours`` row (16 envs) of that revision's own ``bench_ppo``, run by its code in a child process
    (same interpreter and packages; its working tree first on ``sys.path``)."""
    done = subprocess.run([sys.executable, "-c", REVISION_ROW, str(threads), str(timesteps), str(seed)], cwd=path,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the ours row of {label} failed:\n{done.stderr[-2000:]}")
    fields = json.loads(done.stdout.strip().splitlines()[-1])
    return Row(f"ours @ {label}", "TradingVecEnv", 16, **fields)


def print_table(rows: list[Row], reference: float | None) -> None:
    header = ("setting", "vec env", "envs", "n_steps", "batch", "epochs", "timed steps", "steps/s",
              "vs ref", "collect", "load1", "rounds (k steps/s)")
    lines = []
    for r in rows:
        ratio = f"{r.rate / reference:.1f}x" if reference else "-"
        rounds = " ".join(f"{rate / 1000:.1f}" for rate in r.round_rates) if len(r.round_rates) > 1 else "-"
        lines.append((r.setting, r.vec_env, str(r.n_envs), str(r.n_steps), str(r.batch_size), str(r.n_epochs),
                      f"{r.timed_steps:,}", f"{r.rate:,.0f}", ratio, f"{100 * r.collect_share:.0f}%",
                      f"{r.load:.1f}", rounds))
    widths = [max(len(line[i]) for line in lines + [header]) for i in range(len(header))]
    left = {0, 1}
    fmt = lambda cells: "  ".join(c.ljust(w) if i in left else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print(fmt(line))


def jobs_for(args: argparse.Namespace, timesteps: int, directory: str,
             revision: str | None) -> list[Callable[[], Row]]:
    """The rows the options ask for, as calls that each build, train and time one model."""
    jobs: list[Callable[[], Row]] = [lambda: run_sb3_defaults("DummyVecEnv", 1, timesteps, args.seed)]
    jobs += [lambda n=n: run_ours(n, timesteps, args.seed) for n in ((16,) if args.only_encoders else (1, 4, 8, 16))]
    jobs.append(lambda: run_ours(16, timesteps, args.seed, sb3_loop=True))
    if revision:
        jobs.append(lambda: run_revision(revision, args.against, timesteps, args.seed, torch.get_num_threads()))
    if not args.only_encoders:
        jobs += [lambda n=n: run_sb3_defaults("DummyVecEnv", n, timesteps, args.seed) for n in (4, 8)]
    if not (args.quick or args.no_subproc or args.only_encoders):
        jobs.append(lambda: run_sb3_defaults("SubprocVecEnv", 4, timesteps, args.seed))
    if not args.no_lstm:
        bundle = pretrained_bundle(directory, args.seed)
        jobs.append(lambda: run_ours(16, timesteps, args.seed, extractor="lstm"))
        jobs.append(lambda: run_pretrained(bundle, 16, timesteps, args.seed, freeze=True))
        jobs.append(lambda: run_pretrained(bundle, 16, timesteps, args.seed, freeze=True, sb3_loop=True))
        jobs.append(lambda: run_pretrained(bundle, 16, timesteps, args.seed, freeze=True, cache=False))
        jobs.append(lambda: run_pretrained(bundle, 16, timesteps, args.seed, freeze=False))
    return jobs


def run_rows(jobs: list[Callable[[], Row]], n_rounds: int) -> tuple[list[Row], float]:
    """Every job ``n_rounds`` times, the jobs taking turns (a slow spell of a shared machine hits every row);
    each row is its fastest round, with every round's rate. Also returns when the timing started."""
    started = time.perf_counter()
    rounds: list[list[Row]] = [[] for _ in jobs]
    for _ in range(n_rounds):
        for job, done in zip(jobs, rounds):
            load_before = os.getloadavg()[0]
            row = job()
            row.load = (load_before + os.getloadavg()[0]) / 2
            done.append(row)
    rows = []
    for done in rounds:
        best = max(done, key=lambda r: r.rate)
        best.round_rates = tuple(r.rate for r in done)
        rows.append(best)
    return rows, started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=32_768,
                        help="timed env steps per row, after one untimed warm-up iteration (default 32768)")
    parser.add_argument("--quick", action="store_true", help="8192 timed steps per row, no SubprocVecEnv row")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads; 0 keeps torch's default (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the envs and networks (default 0)")
    parser.add_argument("--no-subproc", action="store_true", help="skip the SubprocVecEnv row")
    parser.add_argument("--no-lstm", action="store_true", help="skip the LSTM-extractor rows")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every row this many times, rows taking turns; each row shows its fastest "
                             "round and lists all of them (default 1)")
    parser.add_argument("--against", metavar="REV", default=None,
                        help="also time the ours row (16 envs) of git revision REV with its own code, in a "
                             "worktree (e.g. 7d5375c, the code issue 12 measured at 19.9k steps/s)")
    parser.add_argument("--only-encoders", action="store_true",
                        help="only the reference, ours (16 envs) and the LSTM-extractor rows")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    timesteps = 8_192 if args.quick and args.timesteps == parser.get_default("timesteps") else args.timesteps
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    data = default_market_data()  # built once, before any timing
    size = envs.TradingEnv(data).observation_space.shape[0]

    tmp = tempfile.TemporaryDirectory()
    revision = checkout_revision(args.against, tmp.name) if args.against else None
    try:
        rows, started = run_rows(jobs_for(args, timesteps, tmp.name, revision), args.rounds)
    finally:
        if revision:
            remove_revision(revision)
        tmp.cleanup()
    print(f"PPO training speed, default embedded dataset ({data.window} x {data.n_features} features, "
          f"observation {size} floats), CPU, torch threads {torch.get_num_threads()}, seed {args.seed}; "
          f"{os.cpu_count()} CPUs")
    print_table(rows, rows[0].rate)
    print(f"vs ref: against the first row (SB3 defaults, 1 env). collect: share of timed wall time in rollouts. "
          f"load1: 1-min load average around the row. total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
