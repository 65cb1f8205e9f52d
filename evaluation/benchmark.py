"""The benchmark as a library call: plan the jobs, run the missing ones, analyse, write the report.

    from evaluation.benchmark import run_benchmark
    from evaluation.config import BenchmarkConfig
    report = run_benchmark(BenchmarkConfig.from_yaml("configs/benchmark.yaml"), "runs/bench", workers=2)

Jobs run in waves through one executor (local processes or Dask): every job that needs nothing, then
the jobs that need finished ones of the same market, fold and seed (the agents that start from a supervised
bundle, the ensembles of supervised models), then those that need these (an agent selector over pretrained
agents). Each finished
job is cached under ``<run>/jobs/<key>`` as it completes; a rerun skips it, so a killed benchmark resumes
and a finished one rebuilds its report in seconds.

Trust: every job records the code that computed it (:func:`evaluation.code_version.code_version`); cached
jobs of other code are refused (:class:`StaleJobsError`) unless ``reuse_stale``, and the report then says
how many were reused. A damaged cached job is run again (:class:`DamagedJobWarning`). Everything checkable
is checked before the first job (the config, each policy's settings, label positives), and a start that
fails removes the run folder it created; a job that refuses its input is one :class:`JobInputError` line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from features.atomic_io import write_text_atomic
from features.feature_builder import warmup_bars

from .code_version import code_version, describe
from .config import BenchmarkConfig, PolicySpec, merged, policy_settings
from .folds import Fold, walk_forward_folds
from .jobs import META_FILE, DamagedJobError, Job, JobCache, JobResult, job_key
from .runner import _market_bars, check_job_settings, check_labels, run_job

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
            for policy in _dependencies_first(tuple(p for p in config.policies if market.runs(p))):
                for seed in range(config.seeds) if policy.seeded else [0]:
                    depends_on = _depends_on(policy, seed, keys, market.name)
                    spec = {
                        "dataset": dataset,
                        "fold": dataclasses.asdict(fold),
                        "purge_gap": config.folds.purge_gap,
                        "policy": policy_settings(policy),
                        "budget": _budget(config, policy),
                        "seed": seed,
                        "cost_levels": levels,
                        "base_cost": base,
                        "depends_on": list(depends_on) if isinstance(depends_on, tuple) else depends_on,
                    }
                    key = job_key(spec)
                    keys[(policy.name, seed)] = key
                    jobs.append(Job(key, market.name, fold.index, policy.name, seed, spec, depends_on))
    return folds, jobs


class StaleJobsError(ValueError):
    """The run folder holds finished jobs of other code (another source digest); reusing them needs
    ``reuse_stale`` (``--reuse-stale-jobs``)."""


class JobInputError(ValueError):
    """A job refused its input (a ``ValueError`` inside the job): one line naming the job and the reason."""


class DamagedJobWarning(UserWarning):
    """A cached job's file is damaged: the job is run again."""


def run_benchmark(
    config: BenchmarkConfig,
    run_dir: str | Path,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    reuse_stale: bool = False,
    executor: Any = None,
) -> dict[str, Any]:
    """Run (or resume) the benchmark into ``run_dir`` and write its report; returns the report data.

    Everything that can be checked before a job runs is checked first, and nothing is written until it
    has passed: every policy's settings, the folds, the run folder's config, the cached jobs (a damaged
    one is run again with a :class:`DamagedJobWarning`; one of other code is a :class:`StaleJobsError`
    unless ``reuse_stale``), the label positives of every supervised job to run, and the executor (a
    scheduler that does not answer). A start that fails leaves no run folder that was not there before.

    :param config: the benchmark config (apply ``with_quick()`` first for ``--quick``).
    :param run_dir: the run folder; its ``jobs/`` cache is reused by a rerun of the same config and code.
    :param workers: local worker processes (ignored with ``scheduler``).
    :param scheduler: a Dask scheduler address (``tcp://host:port``): jobs run on that cluster.
    :param progress: show progress bars.
    :param overwrite: allow a run folder that holds another config's report (its job cache is kept).
    :param reuse_stale: reuse cached jobs that other code computed (the report says how many and of which code).
    :param executor: an executor object to use instead of building one (tests).
    """
    run_dir = Path(run_dir)
    created: list[Path] = []  # the folders this call creates, shallowest first
    try:
        return _run(config, run_dir, workers=workers, scheduler=scheduler, progress=progress, overwrite=overwrite,
                    reuse_stale=reuse_stale, executor=executor, created=created)
    except BaseException:
        _remove_if_no_job(created, run_dir)
        raise


def _run(config: BenchmarkConfig, run_dir: Path, *, workers: int, scheduler: str | None, progress: bool,
         overwrite: bool, reuse_stale: bool, executor: Any, created: list[Path]) -> dict[str, Any]:
    """:func:`run_benchmark` without the clean-up of a failed start (same parameters; ``created`` receives
    the folders it creates)."""
    from .analysis import analyse
    from .executor import JobError, make_executor
    from .report import write_report

    started = time.perf_counter()
    code = code_version()
    folds, jobs = plan(config)
    check_settings(jobs)
    _check_run_dir(run_dir, config, overwrite)
    cache = JobCache(run_dir / "jobs")
    cached = _cached_results(cache, jobs)
    stale = _stale(cached, code)
    if stale and not reuse_stale:
        raise StaleJobsError(_stale_message(run_dir, stale, code))
    waves = job_waves(jobs)
    pending = [job for job in jobs if job.key not in cached]
    check_label_positives([job for job in pending if waves[job.key] == 0])
    if progress:
        print(f"benchmark: {len(jobs)} jobs ({len(cached)} cached, {len(pending)} to run) in {run_dir}")
    own_executor = executor is None
    executor = executor or make_executor(workers, scheduler)
    try:
        _write_marker(run_dir, config, created)

        def save(job: Job, result: JobResult) -> None:
            _check_same_code(job, result, code)
            cache.save(result)

        try:
            for wave in sorted({waves[job.key] for job in pending}):
                batch = [job for job in pending if waves[job.key] == wave]
                if wave:
                    batch = [dataclasses.replace(job, inputs=_inputs(cache, job)) for job in batch]
                executor.run(run_job, batch, on_result=save, progress=progress,
                             description="jobs" if wave == 0 else f"dependent jobs (wave {wave + 1})")
        except JobError as error:
            if isinstance(error.error, ValueError):  # the job refused its input: one line, not a traceback
                raise JobInputError(str(error)) from error
            raise
    finally:
        if own_executor:
            executor.close()
    results = [cached[job.key] if job.key in cached else cache.load(job.key) for job in jobs]
    report = analyse(config, folds, jobs, results)
    report["run"] = {"jobs": len(jobs), "cached": len(cached), "ran": len(jobs) - len(cached),
                     "seconds": time.perf_counter() - started, "config_hash": config.hash(),
                     "code": code, "stale_jobs": _stale_summary(stale)}
    write_report(report, run_dir)
    return report


def check_settings(jobs: list[Job]) -> None:
    """Build every policy's training settings once per market (from its first job there), so a bad one is refused
    before any job runs.

    :param jobs: the planned jobs.
    """
    seen: set[tuple[str, str]] = set()
    for job in jobs:
        if (job.market, job.policy) not in seen:
            seen.add((job.market, job.policy))
            check_job_settings(job)


def check_label_positives(jobs: list[Job]) -> None:
    """Refuse, before any job runs, a market and fold whose labels a supervised job cannot train on (too few
    positives in train or validation); the error names the market, the fold and the split.

    :param jobs: the jobs about to run (one of each market, fold and budget is checked).
    """
    seen: set[tuple[str, int, str]] = set()
    for job in jobs:
        if job.spec["policy"]["kind"] != "supervised":
            continue
        key = (job.market, job.fold, json.dumps(job.spec["budget"], sort_keys=True, default=str))
        if key not in seen:
            seen.add(key)
            check_labels(job)


def _cached_results(cache: JobCache, jobs: list[Job]) -> dict[str, JobResult]:
    """The planned jobs already finished, each read whole; a damaged one is left out (so it is run again, its
    folder replaced when it finishes) with a :class:`DamagedJobWarning` naming the file."""
    found: dict[str, JobResult] = {}
    for job in jobs:
        if job.key in found or not cache.has(job.key):
            continue
        try:
            found[job.key] = cache.load(job.key)
        except DamagedJobError as error:
            warnings.warn(f"{error}; job {job.name} is run again", DamagedJobWarning, stacklevel=4)
    return found


def _stale(cached: dict[str, JobResult], code: dict[str, Any]) -> dict[tuple[Any, Any], int]:
    """``{(version, digest): count}`` of cached jobs computed by code other than ``code`` (None: unrecorded)."""
    stale: dict[tuple[Any, Any], int] = {}
    for result in cached.values():
        recorded = result.meta.get("code")
        recorded = recorded if isinstance(recorded, dict) else {}
        if recorded.get("digest") != code["digest"]:
            other = (recorded.get("version"), recorded.get("digest"))
            stale[other] = stale.get(other, 0) + 1
    return stale


def _check_same_code(job: Job, result: JobResult, code: dict[str, Any]) -> None:
    """Refuse a result a worker computed with other code than this process runs (a cluster worker with
    another checkout, or files edited during the run): it is not cached, and the run stops."""
    recorded = result.meta.get("code") or {}
    if recorded.get("digest") != code["digest"]:
        raise StaleJobsError(
            f"job {job.name} ran on a worker with code {describe(recorded.get('version'), recorded.get('digest'))}, "
            f"but this process runs {describe(code['version'], code['digest'])} — run every worker on the same "
            f"code (and do not edit it during a run), then run the benchmark again: finished jobs are kept")


def _stale_message(run_dir: Path, stale: dict[tuple[Any, Any], int], code: dict[str, Any]) -> str:
    count = sum(stale.values())
    others = ", ".join(f"{n} of {describe(version, digest)}" for (version, digest), n in sorted(
        stale.items(), key=lambda item: -item[1])[:3]) + (" and more" if len(stale) > 3 else "")
    return (f"{run_dir} holds {count} finished job(s) computed by other code ({others}); this code is "
            f"{describe(code['version'], code['digest'])}, whose results may differ — pass --reuse-stale-jobs to "
            f"reuse them anyway (report.md and report.json will say so), or pick another --run-name to rerun every job")


def _stale_summary(stale: dict[tuple[Any, Any], int]) -> dict[str, Any]:
    """What the report records of the reused stale jobs."""
    return {"count": sum(stale.values()),
            "code": [{"version": version, "digest": digest, "jobs": n} for (version, digest), n in stale.items()]}


def _make_folders(run_dir: Path, created: list[Path]) -> None:
    """Create ``run_dir`` and its missing parents, appending each folder this call made to ``created``
    (shallowest first; a folder another process made meanwhile is not ours)."""
    missing: list[Path] = []
    path = run_dir.absolute()
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        created.append(folder)


def _remove_if_no_job(created: list[Path], run_dir: Path) -> None:
    """After a failed start: remove the folders this run created (``created``, shallowest first) unless a
    job finished into them (a run that stopped midway is kept, to be resumed)."""
    if not created or any((run_dir / "jobs").glob(f"*/{META_FILE}")):
        return
    shutil.rmtree(created[-1], ignore_errors=True)
    for folder in reversed(created[:-1]):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty: another process may have written beside it meanwhile


def job_waves(jobs: list[Job]) -> dict[str, int]:
    """The wave of each job (by key): 0 for a job that needs none, else one more than the latest wave among the
    jobs it needs; a wave runs once the earlier ones have finished.

    :param jobs: the planned jobs, dependencies before dependants (as :func:`plan` gives them).
    """
    waves: dict[str, int] = {}
    for job in jobs:
        waves[job.key] = 1 + max((waves[key] for key in job.dependencies), default=-1)
    return waves


def _inputs(cache: JobCache, job: Job) -> Any:
    """What a dependent job receives: the artifact of its one ``pretrained`` job, or the whole result of each of
    its members (read from the cache, where every earlier wave saved them)."""
    if isinstance(job.depends_on, str):
        return cache.artifact(job.depends_on)
    return tuple(cache.load(key) for key in job.dependencies)


def _depends_on(policy: PolicySpec, seed: int, keys: dict[tuple[str, int], str],
                market: str) -> str | tuple[str, ...] | None:
    """The key (``pretrained``) or keys (members) of the jobs of the same market, fold and seed that ``policy``'s
    job needs.

    :param policy: the policy.
    :param seed: the job's seed.
    :param keys: ``(policy, seed) -> key`` of the fold's jobs planned so far.
    :param market: named in the error of a dependency not planned.
    """
    missing = [name for name in policy.dependencies if (name, seed) not in keys]
    if missing:
        raise ValueError(f"policies.{policy.name} needs {missing} on market {market!r}, which do not run there")
    if policy.pretrained:
        return keys[(policy.pretrained, seed)]
    if policy.members:
        return tuple(keys[(name, seed)] for name in policy.members)
    return None


def _dependencies_first(policies: tuple[PolicySpec, ...]) -> list[PolicySpec]:
    """``policies`` with every policy after those it depends on (stable otherwise)."""
    by_name = {p.name: p for p in policies}

    def depth(policy: PolicySpec, seen: tuple[str, ...] = ()) -> int:
        if policy.name in seen:
            raise ValueError(f"policies.{policy.name} depends on itself through {list(seen)}")
        return 1 + max((depth(by_name[d], seen + (policy.name,)) for d in policy.dependencies if d in by_name),
                       default=-1)

    return sorted(policies, key=depth)


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
    if policy.kind == "portfolio_agent":
        from agents.portfolio_agent import package_defaults as portfolio_defaults

        defaults = portfolio_defaults().to_dict()
        for key in ("algo", "seed"):
            defaults.pop(key, None)
        return merged(defaults, dict(config.budgets.portfolio_agent))
    return {}


def _check_run_dir(run_dir: Path, config: BenchmarkConfig, overwrite: bool) -> None:
    """Refuse a run folder that holds another config's benchmark (unless ``overwrite``); writes nothing."""
    marker = run_dir / CONFIG_FILE
    if not marker.exists():
        return
    try:
        previous = json.loads(marker.read_text()).get("hash")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        previous = None
    digest = config.hash()
    if previous != digest and not overwrite:
        raise FileExistsError(
            f"{run_dir} holds a benchmark of another config (hash {str(previous)[:12]}, this one {digest[:12]}); "
            f"pick another --run-name, or pass --overwrite to replace its report (cached jobs are kept)"
        )


def _write_marker(run_dir: Path, config: BenchmarkConfig, created: list[Path]) -> None:
    """Record which config the run folder holds (creating the folder; see :func:`_make_folders`)."""
    _make_folders(run_dir, created)
    write_text_atomic(run_dir / CONFIG_FILE,
                      json.dumps({"hash": config.hash(), "config": config.to_dict()}, indent=1, default=str) + "\n")


__all__ = ["DamagedJobWarning", "JobInputError", "StaleJobsError", "check_label_positives", "check_settings",
           "job_waves", "plan", "run_benchmark"]
