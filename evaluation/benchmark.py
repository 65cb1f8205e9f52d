"""The benchmark as a library call: plan the jobs, run the missing ones, analyse, write the report.

    from evaluation.benchmark import run_benchmark
    from evaluation.config import BenchmarkConfig
    report = run_benchmark(BenchmarkConfig.from_yaml("configs/benchmark.yaml"), "runs/bench", workers=2)

Jobs run in two waves through one executor (local processes or Dask): every job that needs nothing,
then the agents that start from a supervised bundle of the same market, fold and seed. Each finished
job is cached under ``<run>/jobs/<key>`` as it completes; a rerun skips it, so a killed benchmark resumes
and a finished one rebuilds its report in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from features.atomic_io import write_text_atomic
from features.feature_builder import warmup_bars

from .config import BenchmarkConfig, PolicySpec, merged
from .folds import Fold, walk_forward_folds
from .jobs import Job, JobCache, JobResult, job_key
from .runner import _market_bars, run_job

CONFIG_FILE = "benchmark_config.json"


def plan(config: BenchmarkConfig) -> tuple[dict[str, list[Fold]], list[Job]]:
    """The folds of every market and every job, dependencies before dependants.

    :param config: the benchmark config.
    """
    folds: dict[str, list[Fold]] = {}
    jobs: list[Job] = []
    levels = [list(level) for level in config.costs.levels()]
    base = [config.costs.commission, config.costs.slippage_bps]
    for market in config.markets:
        dataset = market.dataset.to_dict()
        dataset.pop("output_dir", None)
        dataset.pop("asset_map_path", None)
        bars = _market_bars(json.dumps(dataset, sort_keys=True))
        history = warmup_bars(market.dataset.features) + market.dataset.window
        folds[market.name] = market_folds = walk_forward_folds(bars, config.folds, history)
        for fold in market_folds:
            keys: dict[tuple[str, int], str] = {}
            for policy in _dependencies_first(config.policies):
                for seed in range(config.seeds) if policy.seeded else [0]:
                    depends_on = keys.get((policy.pretrained, seed)) if policy.pretrained else None
                    spec = {
                        "dataset": dataset,
                        "fold": dataclasses.asdict(fold),
                        "purge_gap": config.folds.purge_gap,
                        "policy": {k: v for k, v in dataclasses.asdict(policy).items() if k != "name"},
                        "budget": _budget(config, policy),
                        "seed": seed,
                        "cost_levels": levels,
                        "base_cost": base,
                        "depends_on": depends_on,
                    }
                    key = job_key(spec)
                    keys[(policy.name, seed)] = key
                    jobs.append(Job(key, market.name, fold.index, policy.name, seed, spec, depends_on))
    return folds, jobs


def run_benchmark(
    config: BenchmarkConfig,
    run_dir: str | Path,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    executor: Any = None,
) -> dict[str, Any]:
    """Run (or resume) the benchmark into ``run_dir`` and write its report; returns the report data.

    :param config: the benchmark config (apply ``with_quick()`` first for ``--quick``).
    :param run_dir: the run folder; its ``jobs/`` cache is reused by a rerun of the same config.
    :param workers: local worker processes (ignored with ``scheduler``).
    :param scheduler: a Dask scheduler address (``tcp://host:port``): jobs run on that cluster.
    :param progress: show progress bars.
    :param overwrite: allow a run folder that holds another config's report (its job cache is kept).
    :param executor: an executor object to use instead of building one (tests).
    """
    from .analysis import analyse
    from .executor import make_executor
    from .report import write_report

    run_dir = Path(run_dir)
    _claim_run_dir(run_dir, config, overwrite)
    started = time.perf_counter()
    folds, jobs = plan(config)
    cache = JobCache(run_dir / "jobs")
    pending_first = [job for job in jobs if job.depends_on is None and not cache.has(job.key)]
    pending_second = [job for job in jobs if job.depends_on is not None and not cache.has(job.key)]
    skipped = len(jobs) - len(pending_first) - len(pending_second)
    if progress:
        print(f"benchmark: {len(jobs)} jobs ({skipped} cached, {len(pending_first) + len(pending_second)} to run) "
              f"in {run_dir}")
    own_executor = executor is None
    executor = executor or make_executor(workers, scheduler)
    try:
        def save(job: Job, result: JobResult) -> None:
            cache.save(result)

        if pending_first:
            executor.run(run_job, pending_first, on_result=save, progress=progress, description="jobs")
        if pending_second:
            ready = [dataclasses.replace(job, inputs=cache.artifact(job.depends_on)) for job in pending_second]
            executor.run(run_job, ready, on_result=save, progress=progress, description="pretrained agents")
    finally:
        if own_executor:
            executor.close()
    results = [cache.load(job.key) for job in jobs]
    report = analyse(config, folds, jobs, results)
    report["run"] = {"jobs": len(jobs), "cached": skipped, "ran": len(jobs) - skipped,
                     "seconds": time.perf_counter() - started, "config_hash": config.hash()}
    write_report(report, run_dir)
    return report


def _dependencies_first(policies: tuple[PolicySpec, ...]) -> list[PolicySpec]:
    return sorted(policies, key=lambda p: p.pretrained is not None)


def _budget(config: BenchmarkConfig, policy: PolicySpec) -> dict[str, Any]:
    if policy.kind == "supervised":
        return dict(config.budgets.supervised)
    if policy.kind in ("ppo", "dqn"):
        from agents.config import package_defaults

        # the package defaults (configs/<kind>.yaml) under the budget: part of the job's key, so a change of
        # the defaults retrains
        defaults = package_defaults(policy.kind).to_dict()
        for key in ("algo", "seed"):
            defaults.pop(key)
        return merged(defaults, dict(getattr(config.budgets, policy.kind)))
    return {}


def _claim_run_dir(run_dir: Path, config: BenchmarkConfig, overwrite: bool) -> None:
    """Record which config a run folder holds; another config's folder needs ``overwrite``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / CONFIG_FILE
    digest = config.hash()
    if marker.exists():
        try:
            previous = json.loads(marker.read_text()).get("hash")
        except (json.JSONDecodeError, AttributeError):
            previous = None
        if previous != digest and not overwrite:
            raise FileExistsError(
                f"{run_dir} holds a benchmark of another config (hash {str(previous)[:12]}, this one {digest[:12]}); "
                f"pick another --run-name, or pass --overwrite to replace its report (cached jobs are kept)"
            )
    write_text_atomic(marker, json.dumps({"hash": digest, "config": config.to_dict()}, indent=1, default=str) + "\n")


__all__ = ["plan", "run_benchmark"]
