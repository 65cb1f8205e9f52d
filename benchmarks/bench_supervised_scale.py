"""Time and peak memory of ``experiments.train_supervised`` as the data grows (issue 12).

    python -m benchmarks.bench_supervised_scale --symbols 1 10 100 --bars 10000 --model lstm --epochs 1

For each symbol count: a fresh child process builds a synthetic hourly dataset (``features.synthetic_bars``
with ``freq="h"``, one seed per symbol, built in memory by ``features.build_market_data``) and saves it
(``MarketData.save``); a second fresh child runs ``experiments.train_supervised.main`` on that saved
dataset (``--dataset``, the repository's ``configs/supervised.yaml`` unless ``--config``, ``--epochs``,
``--no-progress``), so build and training peaks do not mix. Reported per size:

- disk MB: size of the saved dataset directory;
- build s / build MB: building + saving the dataset, and that child's peak RSS;
- load s: reading the saved dataset in the training child;
- train s: ``train_classifier`` wall time (sample preparation, the epochs, per-epoch validation);
  epoch s: the last epoch's ``charts/epoch_seconds`` (one optimisation pass + its validation);
- post s: everything ``run_supervised`` does after training (predictions, threshold sweep, metrics,
  permutation importance, bundle and metrics.json);
- total s: the whole ``main`` call; peak MB: the training child's peak RSS (``ru_maxrss``);
- post/train and peak/disk: the ratios of issue 12's goals (post-training <= one training epoch,
  peak < 2x the dataset on disk). Ratios come from one process each, so they stay meaningful when the
  machine is busy; absolute seconds do not.

``--repeat N`` trains N times on each size's dataset (one fresh child per run, one row each: the peak
varies between runs with the allocator's history); ``--datasets DIR`` keeps each size's dataset in
``DIR/<symbols>`` and reuses it when a later run asks for the same size (the build columns then come from
``DIR/<symbols>_bench_build.json``, written when it was built).

Not a test: it prints a table (and ``--json`` writes the rows).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LABELS = {"profit": 0.02, "stop": 0.02, "horizon": 8}
SIGMA = 0.01  # hourly return noise: enough label hits both ways for a 2% / 2% barrier within 8 bars


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def proc_status_mb() -> dict[str, float]:
    """VmHWM (peak), RssAnon and RssFile (mapped dataset pages) of this process now, in MB (Linux)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmHWM", "RssAnon", "RssFile") if key in fields}


def directory_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def child_build(symbols: int, bars: int, seed: int, out: Path) -> dict[str, Any]:
    """Build and save the synthetic hourly dataset of ``symbols`` x ``bars``."""
    from features import DatasetConfig, LabelConfig, build_market_data, synthetic_bars

    start = time.perf_counter()
    frames = {f"SYN{i:03d}": synthetic_bars(bars, freq="h", sigma=SIGMA, seed=seed + i, start="2015-01-01")
              for i in range(symbols)}
    data = build_market_data(frames, DatasetConfig(labels=LabelConfig(**LABELS)))
    del frames
    data.save(out)
    return {"build_s": time.perf_counter() - start, "build_mb": peak_rss_mb(), "disk_mb": directory_mb(out),
            "rows": int(len(data.timestamps)), "features": data.n_features,
            "samples": {s: int(len(data.sample_indices(s))) for s in ("train", "validation", "test")}}


def child_train(dataset: Path, runs: Path, model: str, epochs: int, seed: int, config: str | None) -> dict[str, Any]:
    """``experiments.train_supervised.main`` on ``dataset``, timing its stages by wrapping them."""
    import supervised.experiment as experiment
    from experiments import train_supervised

    times: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[name] = time.perf_counter() - start
        return wrapper

    train_supervised.prepare_data = timed("load_s", train_supervised.prepare_data)
    train_supervised.run_supervised = timed("run_s", train_supervised.run_supervised)
    experiment.train_classifier = timed("train_s", experiment.train_classifier)
    argv = ["--model", model, "--dataset", str(dataset), "--runs-dir", str(runs), "--run-name", "bench",
            "--epochs", str(epochs), "--seed", str(seed), "--no-progress"]
    if config:
        argv += ["--config", config]
    start = time.perf_counter()
    metrics = train_supervised.main(argv)
    total = time.perf_counter() - start
    return {**times, "total_s": total, "post_s": times["run_s"] - times["train_s"],
            "epoch_s": metrics["history"][-1]["charts/epoch_seconds"], "peak_mb": peak_rss_mb(), **proc_status_mb(),
            "importance": metrics.get("permutation_importance", {}).get("n_samples")}


def run_child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_supervised_scale", *args],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child {args[:2]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def reuse_or_build(symbols: int, dataset: Path, common: list[str], keep: bool) -> dict[str, Any]:
    """Build ``symbols``' dataset at ``dataset`` in a fresh child, or reuse the one a kept earlier run built
    with the same arguments (recorded in ``bench_build.json`` beside it)."""
    record = dataset.with_name(dataset.name + "_bench_build.json")
    data_args = common[:4]  # --bars and --seed: all the build reads
    if keep and record.exists():
        saved = json.loads(record.read_text())
        if saved.get("args") == data_args and dataset.is_dir():
            return saved["build"]
    shutil.rmtree(dataset, ignore_errors=True)
    build = run_child(["--child-build", str(symbols), str(dataset), *common])
    if keep:
        record.write_text(json.dumps({"args": data_args, "build": build}) + "\n")
    return build


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, nargs="+", default=[1, 10, 100], help="symbol counts to run")
    parser.add_argument("--bars", type=int, default=10_000, help="hourly bars per symbol")
    parser.add_argument("--model", default="lstm", help="supervised model kind")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed")
    parser.add_argument("--config", default=None, help="supervised YAML config (default: configs/supervised.yaml)")
    parser.add_argument("--repeat", type=int, default=1, help="training runs per symbol count")
    parser.add_argument("--datasets", default=None,
                        help="keep the built datasets in DIR/<symbols> and reuse them (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--child-build", nargs=2, metavar=("SYMBOLS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--child-train", nargs=2, metavar=("DATASET", "RUNS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_build:
        print(json.dumps(child_build(int(args.child_build[0]), args.bars, args.seed, Path(args.child_build[1]))))
        return []
    if args.child_train:
        dataset, runs = (Path(p) for p in args.child_train)
        print(json.dumps(child_train(dataset, runs, args.model, args.epochs, args.seed, args.config)))
        return []

    common = ["--bars", str(args.bars), "--seed", str(args.seed), "--model", args.model, "--epochs", str(args.epochs)]
    if args.config:
        common += ["--config", args.config]
    print(f"train_supervised --model {args.model} --epochs {args.epochs}, synthetic hourly data, {args.bars} bars "
          f"per symbol, load average {os.getloadavg()[0]:.1f} at start")
    header = (f"{'symbols':>7} {'rows':>9} {'disk MB':>8} {'build s':>8} {'build MB':>8} {'load s':>7} "
              f"{'train s':>8} {'epoch s':>8} {'post s':>7} {'total s':>8} {'peak MB':>8} {'post/train':>10} "
              f"{'post/epoch':>10} {'peak/disk':>9}")
    print(header, flush=True)
    rows = []
    for n in args.symbols:
        with tempfile.TemporaryDirectory(prefix="bench_sup_scale_") as tmp:
            dataset = (Path(args.datasets) if args.datasets else Path(tmp)) / (str(n) if args.datasets else "dataset")
            build = reuse_or_build(n, dataset, common, keep=bool(args.datasets))
            for _ in range(args.repeat):
                train = run_child(["--child-train", str(dataset), str(Path(tmp) / "runs"), *common])
                shutil.rmtree(Path(tmp) / "runs", ignore_errors=True)
                row = {"symbols": n, **build, **train}
                rows.append(row)
                print(f"{n:>7} {row['rows']:>9} {row['disk_mb']:>8.1f} {row['build_s']:>8.1f} {row['build_mb']:>8.0f} "
                      f"{row['load_s']:>7.1f} {row['train_s']:>8.1f} {row['epoch_s']:>8.1f} {row['post_s']:>7.1f} "
                      f"{row['total_s']:>8.1f} {row['peak_mb']:>8.0f} {row['post_s'] / row['train_s']:>10.2f} "
                      f"{row['post_s'] / row['epoch_s']:>10.2f} {row['peak_mb'] / row['disk_mb']:>9.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
