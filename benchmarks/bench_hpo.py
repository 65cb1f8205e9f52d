"""Trials per minute of experiments.hpo with one and two workers sharing a study, and the best value of each.

    python -m benchmarks.bench_hpo --storage postgresql://USER@HOST/DB [--trials 16] [--model mlp] [--epochs 10]

Runs the same total budget (--trials) as one worker, then as two workers started at once (--trials/2 each),
on the embedded default dataset (saved once), each in its own study; prints wall time, trials per minute
epochs per minute (pruned trials run fewer epochs, so this is the throughput) and the best validation F1. Each worker is a separate `python -m experiments.hpo` process (1 torch thread).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


def run_workers(n_workers: int, trials: int, args: argparse.Namespace, data: Path, runs: Path) -> tuple[float, object]:
    import optuna

    study = f"bench_{n_workers}w_{uuid.uuid4().hex[:6]}"
    per_worker = trials // n_workers
    command = [sys.executable, "-m", "experiments.hpo", "--model", args.model, "--trials", str(per_worker),
               "--storage", args.storage, "--study-name", study, "--dataset", str(data), "--runs-dir", str(runs),
               "--epochs", str(args.epochs), "--seed", str(args.seed), "--no-best"]
    start = time.perf_counter()
    workers = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for _ in range(n_workers)]
    for worker in workers:
        _, err = worker.communicate()
        if worker.returncode != 0:
            raise SystemExit(err[-2000:])
    elapsed = time.perf_counter() - start
    return elapsed, optuna.load_study(study_name=study, storage=args.storage)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", required=True, help="Optuna storage URL shared by the workers")
    parser.add_argument("--trials", type=int, default=16, help="total trials of each run")
    parser.add_argument("--model", default="mlp", help="supervised model to search")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per trial")
    parser.add_argument("--seed", type=int, default=0, help="study seed")
    args = parser.parse_args(argv)
    import features
    import optuna

    work = Path(tempfile.mkdtemp(prefix="bench_hpo_"))
    data = work / "data"
    features.build_dataset(features.DatasetConfig()).save(data)
    print(f"{args.model}, {args.epochs} epochs per trial, {args.trials} trials per run, storage "
          f"{args.storage.split('@')[-1]}, load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'workers':>7} {'wall s':>8} {'trials/min':>10} {'epochs/min':>10} {'complete':>8} {'pruned':>6} {'best F1':>8}")
    for n_workers in (1, 2):
        elapsed, study = run_workers(n_workers, args.trials, args, data, work / "runs")
        states = [t.state for t in study.trials]
        complete = states.count(optuna.trial.TrialState.COMPLETE)
        pruned = states.count(optuna.trial.TrialState.PRUNED)
        epochs = sum(len(t.intermediate_values) for t in study.trials)  # pruned trials run fewer
        print(f"{n_workers:>7} {elapsed:>8.1f} {len(states) / elapsed * 60:>10.1f} {epochs / elapsed * 60:>10.1f} "
              f"{complete:>8} {pruned:>6} {study.best_value:>8.4f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
