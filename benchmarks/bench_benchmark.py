"""Wall time of the benchmark itself: ``--quick``, and (with --default) the default config, then a rebuild
of the finished report from the job cache. Prints a table; never asserted in tests.

    python -m benchmarks.bench_benchmark [--default] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "experiments.benchmark", "--no-progress", *args], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--default", action="store_true", help="also time the default benchmark (about 30 min)")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench_benchmark_"))
    rows = []
    try:
        runs = [("quick", ["--quick"])] + ([("default", [])] if args.default else [])
        for label, extra in runs:
            common = ["--runs-dir", str(root), "--run-name", label, "--workers", str(args.workers), *extra]
            rows.append((f"{label}: every job", timed(common)))
            rows.append((f"{label}: rebuild from the cache", timed(common)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{'run':<36}{'seconds':>10}")
    for label, seconds in rows:
        print(f"{label:<36}{seconds:>10.1f}")


if __name__ == "__main__":
    main()
