"""The benchmark: supervised vs RL vs baselines, across walk-forward folds, seeds, costs and markets.

    python -m experiments.benchmark                      # configs/benchmark.yaml, 2 local workers
    python -m experiments.benchmark --quick              # small budgets, same code path (about 3 min)
    python -m experiments.benchmark --markets sp500_20    # only the embedded 20-stock universe
    python -m experiments.benchmark --scheduler tcp://host:8786   # jobs on a Dask cluster

Writes runs/<name>/: report.md, report.json, equity_/sharpe_/costs_/trades_<market>.png, and jobs/ (one
folder per finished job, keyed by a hash of everything that defines it). Rerunning the same command
with the same --run-name resumes: finished jobs are skipped, so a killed benchmark continues where it
stopped and a finished one rebuilds its report in seconds. Each job records the code that computed it
(package version and source digest): a run folder holding jobs of other code is refused, naming both,
unless --reuse-stale-jobs (the report then says so); a damaged cached job is run again. The whole
config is checked before the first job, and a start that fails leaves no run folder. To benchmark
your own bars, change only the `markets:` section of the config (any dataset settings: source parquet
or alpaca).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from configs.loader import CONFIG_DIR
from evaluation.config import BenchmarkConfig
from experiments.common import check_run_name, cli, existing_file, make_parser, timestamp

DEFAULT_CONFIG = CONFIG_DIR / "benchmark.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("python -m experiments.benchmark", __doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="benchmark YAML")
    parser.add_argument("--quick", action="store_true", help="apply the config's quick: overrides (small budgets)")
    parser.add_argument("--markets", nargs="+", default=None, metavar="NAME",
                        help="run only these markets of the config (e.g. --markets sp500_20)")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (one core each)")
    parser.add_argument("--scheduler", default=None,
                        help="Dask scheduler address (tcp://host:port): run the jobs on that cluster instead")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="root of run outputs")
    parser.add_argument("--run-name", default=None,
                        help="run folder; an existing one of the same config is resumed "
                             "(default: benchmark[_quick]_<YYYYmmdd-HHMMSS>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="reuse a run folder that holds another config's report (its cached jobs are kept)")
    parser.add_argument("--reuse-stale-jobs", action="store_true",
                        help="reuse finished jobs of the run folder that other code computed (another source "
                             "digest); report.md and report.json say how many")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv: list[str] | None = None) -> dict:
    from evaluation.benchmark import run_benchmark

    args = build_parser().parse_args(argv)
    config = BenchmarkConfig.from_yaml(existing_file(args.config, "--config"))
    if args.quick:
        config = config.with_quick()
    if args.markets:
        config = config.only_markets(args.markets)
    else:
        config, left_out = config.without_uncached_markets()
        for note in left_out:
            print(note)
    name = check_run_name(args.run_name) if args.run_name else f"benchmark{'_quick' if args.quick else ''}_{timestamp()}"
    run_dir = args.runs_dir / name
    report = run_benchmark(config, run_dir, workers=args.workers, scheduler=args.scheduler,
                           progress=not args.no_progress, overwrite=args.overwrite,
                           reuse_stale=args.reuse_stale_jobs)
    print(headline(run_dir / "report.md"))
    run = report["run"]
    print(f"\n{run['jobs']} jobs ({run['cached']} cached) in {run['seconds']:.0f} s; report: {run_dir / 'report.md'}")
    return report


def headline(report_md: Path) -> str:
    """The verdicts and each market's ranking table, from ``report.md``."""
    out: list[str] = []
    keep = False
    for line in report_md.read_text().splitlines():
        if line.startswith("## Verdicts") or line.startswith("## Market:") or line.startswith("### Ranking"):
            keep = True
        elif line.startswith("#") or line.startswith("Orders are totals") or line.startswith("!["):
            keep = False
        if keep:
            out.append(line)
    return "\n".join(out).strip()


if __name__ == "__main__":
    cli(main)
