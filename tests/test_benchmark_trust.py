"""What makes a benchmark result trustworthy: a cached job of other code is never reused silently, a
damaged cached job is run again, the whole config is checked before the first job, a market whose labels
cannot train is refused before any job runs, and a start that fails leaves no run folder behind.

Tiny configs: one embedded symbol, two folds, the cash and buy-and-hold baselines (a run takes about a
second)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from configs.loader import ConfigError
from evaluation import code_version as cv
from evaluation.benchmark import (DamagedJobWarning, JobInputError, StaleJobsError, plan, run_benchmark)
from evaluation.config import BenchmarkConfig, CostGrid, StatisticsConfig
from evaluation.executor import JobError, SchedulerUnreachableError, SerialExecutor
from evaluation.jobs import ARRAYS_FILE, ARTIFACT_FILE, META_FILE, DamagedJobError, JobCache, JobResult, pack_directory
from experiments import benchmark as benchmark_cli
from experiments.common import run_cli

TINY = {
    "markets": {"eq": {"symbols": ["AAPL"], "start": "2006-01-01", "window": 12}},
    "folds": {"n_folds": 2, "test_share": 0.3},
    "seeds": 1,
    "policies": {"cash": {}, "buy_and_hold": {}},
    "costs": {"commissions": [0.0, 0.001], "slippages_bps": [0.0, 5.0], "break_even_scales": [0.0, 1.0]},
    "statistics": {"bootstrap_resamples": 20},
}


class RecordingExecutor(SerialExecutor):
    """Serial, counting the jobs it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0

    def run(self, fn, jobs, *, on_result=None, progress=True, description="jobs"):
        self.started += len(jobs)
        return super().run(fn, jobs, on_result=on_result, progress=False, description=description)


def run(config: BenchmarkConfig, run_dir: Path, **kwargs) -> tuple[dict, RecordingExecutor]:
    executor = RecordingExecutor()
    return run_benchmark(config, run_dir, executor=executor, progress=False, **kwargs), executor


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def job_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "jobs").iterdir() if (p / META_FILE).exists())


def set_code(job_dir: Path, code: dict | None) -> None:
    meta = json.loads((job_dir / META_FILE).read_text())
    if code is None:
        meta.pop("code")
    else:
        meta["code"] = code
    (job_dir / META_FILE).write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def config() -> BenchmarkConfig:
    return BenchmarkConfig.from_dict(TINY)


@pytest.fixture(scope="module")
def finished_run(config, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trust") / "run"
    run(config, run_dir)
    return run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


OLD_CODE = {"version": "0.0.9", "digest": "0123456789ab" + "0" * 52}


# ----------------------------------------------------------------------------------------------------
# the code version of a cached job


def test_new_jobs_record_the_package_version_and_source_digest(finished_run) -> None:
    for job_dir in job_dirs(finished_run):
        assert json.loads((job_dir / META_FILE).read_text())["code"] == cv.code_version()
    report = json.loads((finished_run / "report.json").read_text())
    assert report["run"]["code"]["digest"] == cv.code_version()["digest"]
    assert report["run"]["stale_jobs"]["count"] == 0
    assert f"source digest {cv.code_version()['digest'][:12]}" in (finished_run / "report.md").read_text()


def test_an_unchanged_code_rerun_skips_every_job(config, run_copy) -> None:
    report, executor = run(config, run_copy)
    assert executor.started == 0 and report["run"]["cached"] == report["run"]["jobs"] > 0


def test_a_cached_job_of_other_code_is_refused_naming_both_versions_and_the_flag(config, run_copy) -> None:
    set_code(job_dirs(run_copy)[0], OLD_CODE)
    before = snapshot(run_copy)
    with pytest.raises(StaleJobsError) as caught:
        run(config, run_copy)
    message = str(caught.value)
    assert "\n" not in message and str(run_copy) in message and "--reuse-stale-jobs" in message
    assert "0.0.9 (code 0123456789ab)" in message
    assert cv.describe(cv.code_version()["version"], cv.code_version()["digest"]) in message
    assert snapshot(run_copy) == before  # the run folder is untouched


def test_a_cached_job_without_a_recorded_code_version_is_stale(config, run_copy) -> None:
    set_code(job_dirs(run_copy)[0], None)  # a job cached before jobs recorded their code
    with pytest.raises(StaleJobsError, match="version unrecorded"):
        run(config, run_copy)


def test_reuse_stale_jobs_reuses_them_and_the_report_says_so(config, run_copy) -> None:
    set_code(job_dirs(run_copy)[0], OLD_CODE)
    report, executor = run(config, run_copy, reuse_stale=True)
    assert executor.started == 0 and report["run"]["cached"] == report["run"]["jobs"]
    stale = json.loads((run_copy / "report.json").read_text())["run"]["stale_jobs"]
    assert stale == {"count": 1, "code": [{**OLD_CODE, "jobs": 1}]}
    assert "Stale jobs reused (--reuse-stale-jobs): 1 cached job(s)" in (run_copy / "report.md").read_text()


def test_a_result_computed_by_a_worker_with_other_code_is_not_cached(config, tmp_path) -> None:
    class OtherCodeWorker(SerialExecutor):
        def run(self, fn, jobs, *, on_result=None, progress=True, description="jobs"):
            def other(job):
                result = fn(job)
                result.meta["code"] = OLD_CODE
                return result
            return super().run(other, jobs, on_result=on_result, progress=False, description=description)

    with pytest.raises(StaleJobsError, match="ran on a worker with code 0.0.9"):
        run_benchmark(config, tmp_path / "run", executor=OtherCodeWorker(), progress=False)
    assert not (tmp_path / "run").exists()


def test_the_cli_refuses_stale_jobs_in_one_line_and_reuses_them_with_the_flag(finished_run, tmp_path, capsys) -> None:
    config_file = tmp_path / "bench.yaml"
    config_file.write_text(yaml.safe_dump(TINY))
    runs = tmp_path / "runs"
    shutil.copytree(finished_run, runs / "r")
    set_code(job_dirs(runs / "r")[0], OLD_CODE)
    argv = ["--config", str(config_file), "--runs-dir", str(runs), "--run-name", "r", "--workers", "1",
            "--no-progress"]
    assert run_cli(benchmark_cli.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "--reuse-stale-jobs" in err
    assert run_cli(benchmark_cli.main, argv + ["--reuse-stale-jobs"]) == 0
    assert "Stale jobs reused" in (runs / "r" / "report.md").read_text()


# ----------------------------------------------------------------------------------------------------
# the source digest


TREE_PACKAGES = ("pkg", "configs")


def make_tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "mod.py").write_text("X = 1\n")
    (root / "configs").mkdir()
    (root / "configs" / "__init__.py").write_text("")
    (root / "configs" / "a.yaml").write_text("a: 1\n")
    (root / "other").mkdir()
    (root / "other" / "ignored.py").write_text("Y = 2\n")
    return root


def test_the_source_digest_depends_on_contents_only(tmp_path) -> None:
    a = make_tree(tmp_path / "a")
    digest = cv.source_digest(a, TREE_PACKAGES)
    assert [p.relative_to(a).as_posix() for p in cv.source_files(a, TREE_PACKAGES)] == [
        "configs/__init__.py", "configs/a.yaml", "pkg/__init__.py", "pkg/sub/mod.py"]
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)  # another path, new mtimes
    (b / "pkg" / "__pycache__").mkdir()
    (b / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0compiled")
    (b / "pkg" / "notes.txt").write_text("not source")
    (b / "other" / "ignored.py").write_text("Y = 3\n")  # not a listed package
    assert cv.source_digest(b, TREE_PACKAGES) == digest
    (b / "pkg" / "sub" / "mod.py").write_text("X = 2\n")
    assert cv.source_digest(b, TREE_PACKAGES) != digest
    (b / "pkg" / "sub" / "mod.py").write_text("X = 1\n")
    (b / "configs" / "a.yaml").write_text("a: 2\n")
    assert cv.source_digest(b, TREE_PACKAGES) != digest
    (b / "configs" / "a.yaml").write_text("a: 1\n")
    (b / "pkg" / "sub" / "mod.py").rename(b / "pkg" / "sub" / "renamed.py")
    assert cv.source_digest(b, TREE_PACKAGES) != digest


def test_the_digested_packages_are_the_ones_pyproject_installs() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((cv.SOURCE_ROOT / "pyproject.toml").read_text())
    assert cv.PACKAGES == tuple(pyproject["tool"]["setuptools"]["packages"])
    assert cv.code_version() is not cv.code_version() and cv.code_version() == cv.code_version()


def test_a_missing_distribution_gives_a_plain_version() -> None:
    assert cv.package_version("no-such-distribution-xyz") == cv.NOT_INSTALLED
    assert cv.describe(None, None) == "version unrecorded (code unrecorded)"


# ----------------------------------------------------------------------------------------------------
# damaged cached jobs


def pooled(run_dir: Path) -> dict:
    policies = json.loads((run_dir / "report.json").read_text())["markets"]["eq"]["policies"]
    return {name: result["pooled"] for name, result in policies.items()}


@pytest.mark.parametrize("damage", ["half_json", "truncated_npz", "missing_npz"])
def test_a_damaged_cached_job_is_run_again_with_a_warning_naming_the_file(config, run_copy, damage) -> None:
    job_dir = job_dirs(run_copy)[0]
    before = pooled(run_copy)
    if damage == "half_json":
        text = (job_dir / META_FILE).read_text()
        (job_dir / META_FILE).write_text(text[: len(text) // 2])
        named = job_dir / META_FILE
    elif damage == "truncated_npz":
        data = (job_dir / ARRAYS_FILE).read_bytes()
        (job_dir / ARRAYS_FILE).write_bytes(data[: len(data) // 2])
        named = job_dir / ARRAYS_FILE
    else:
        (job_dir / ARRAYS_FILE).unlink()
        named = job_dir / ARRAYS_FILE
    with pytest.warns(DamagedJobWarning, match=str(named)):
        report, executor = run(config, run_copy)
    assert executor.started == 1 and report["run"]["ran"] == 1
    assert pooled(run_copy) == before  # the same numbers again
    JobCache(run_copy / "jobs").load(job_dir.name)  # replaced whole
    report, executor = run(config, run_copy)
    assert executor.started == 0


def test_a_truncated_artifact_is_a_damaged_job(tmp_path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(bytes(range(256)) * 64)
    cache = JobCache(tmp_path / "jobs")
    cache.save(JobResult("k", {"a": 1}, {"x": __import__("numpy").arange(3.0)}, pack_directory(tmp_path / "model")))
    assert cache.load("k").meta == {"a": 1}
    path = cache.path("k") / ARTIFACT_FILE
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DamagedJobError, match=f"cached job file {path} is damaged"):
        cache.load("k")


# ----------------------------------------------------------------------------------------------------
# the config, checked whole before the first job


def costs(**change) -> dict:
    return {**TINY, "costs": {**TINY["costs"], **change}}


@pytest.mark.parametrize(
    ("data", "match"),
    [(costs(commissions=[0.0, -0.001]), r"bench\.yaml: costs\.commissions\[1\] x costs\.slippages_bps\[0\]: "
                                       r"commission=-0\.001 must be"),
     (costs(slippages_bps=[0.0, float("nan")]), r"bench\.yaml: costs\.commissions\[0\] x costs\.slippages_bps\[1\]: "
                                               r"slippage=nan must be"),
     (costs(commission=-1.0), r"bench\.yaml: costs\.commission/slippage_bps \(the base level\): commission=-1"),
     (costs(break_even_scales=[0.0, -2.0]), r"costs\.break_even_scales\[1\]=-2\.0 x the base level: commission="),
     ({**TINY, "statistics": {"confidence": 95}},
      r"bench\.yaml: statistics\.confidence=95(\.0)? must lie strictly between"),
     ({**TINY, "statistics": {"bootstrap_resamples": 0}}, r"statistics\.bootstrap_resamples=0 must be an integer >= 1"),
     ({**TINY, "statistics": {"mean_block": 0}}, r"statistics\.mean_block=0 must be an integer >= 1"),
     ({**TINY, "seeds": 1.5}, r"bench\.yaml: seeds=1\.5 must be an integer"),
     ({**TINY, "quick": {"statistics": {"confidence": 95}}}, r"bench\.yaml: quick\.statistics|quick: statistics"),
     ({**TINY, "quick": {"folds": {"nfolds": 2}}}, r"quick\.folds: unknown key\(s\) \['nfolds'\]")],
)
def test_bad_config_values_are_one_line_naming_the_file_and_key(data, match) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        BenchmarkConfig.from_dict(data, "bench.yaml")
    assert "\n" not in str(caught.value)


def test_an_unknown_slippage_model_is_refused_by_costs() -> None:
    with pytest.raises(ValueError, match=r"costs\.commissions\[0\] x costs\.slippages_bps\[0\]: slippage model 'foo' "
                                         r"is not known"):
        CostGrid(slippages_bps=("foo",))


def test_cost_levels_are_checked_by_sim_costs() -> None:
    with pytest.raises(ValueError, match=r"^costs\.commissions\[1\] x costs\.slippages_bps\[0\]: commission=5\.0 "
                                         r"must be a fraction of traded notional in \[0, 1\)"):
        CostGrid(commissions=(0.0, 5.0))
    with pytest.raises(ValueError, match=r"^costs\.commissions\[0\] x costs\.slippages_bps\[1\]: slippage=10000\.0 "
                                         r"must be in \[0, 10000\) basis points"):
        CostGrid(slippages_bps=(0.0, 10_000.0))


def test_statistics_settings_are_checked_on_their_own() -> None:
    assert StatisticsConfig(confidence=0.9, bootstrap_resamples=10, mean_block=3).confidence == 0.9
    for bad in ({"confidence": 1.0}, {"confidence": 0.0}, {"confidence": math.nan}, {"bootstrap_resamples": 2.5},
                {"seed": -1}, {"bootstrap_resamples": True}):
        with pytest.raises(ValueError, match="statistics"):
            StatisticsConfig(**bad)


def bad_start(config: BenchmarkConfig, runs: Path, **kwargs) -> tuple[BaseException, RecordingExecutor]:
    executor = RecordingExecutor()
    with pytest.raises(Exception) as caught:
        run_benchmark(config, runs / "new", executor=executor, progress=False, **kwargs)
    return caught.value, executor


def test_bad_policy_settings_are_refused_before_any_job_and_leave_no_run_folder(tmp_path) -> None:
    config = BenchmarkConfig.from_dict({**TINY, "policies": {**TINY["policies"], "dqn": {"kind": "dqn"}},
                                        "budgets": {"dqn": {"total_timesteps": 0}}})
    error, executor = bad_start(config, tmp_path / "runs")
    assert isinstance(error, ValueError) and "policies.dqn" in str(error) and "total_timesteps=0" in str(error)
    assert executor.started == 0 and not (tmp_path / "runs").exists()
    config = BenchmarkConfig.from_dict({**TINY, "policies": {**TINY["policies"], "sup": {
        "kind": "supervised", "model": "mlp"}}, "budgets": {"supervised": {"epoch": 1}}})
    error, executor = bad_start(config, tmp_path / "runs")
    assert "budgets.supervised: unknown key(s) ['epoch']" in str(error) and executor.started == 0
    assert not (tmp_path / "runs").exists()


def test_a_market_without_label_positives_is_refused_before_any_job(tmp_path) -> None:
    config = BenchmarkConfig.from_dict({
        **TINY, "markets": {"flat": {"symbols": ["AAPL"], "start": "2006-01-01", "window": 12,
                                     "labels": {"profit": 5.0, "stop": 0.02, "horizon": 8}}},
        "policies": {**TINY["policies"], "sup": {"kind": "supervised", "model": "mlp"}}})
    error, executor = bad_start(config, tmp_path)
    message = str(error)
    assert isinstance(error, ValueError) and "\n" not in message
    assert message.startswith("market 'flat', fold 0: ") and "positives in the train split" in message
    assert executor.started == 0 and not (tmp_path / "new").exists()


def test_a_job_that_refuses_its_input_is_one_line_and_leaves_no_run_folder(config, tmp_path) -> None:
    class Refusing(SerialExecutor):
        def run(self, fn, jobs, *, on_result=None, progress=True, description="jobs"):
            raise JobError(jobs[0], 0, ValueError("labels give 0.00% positives in the train split"))

    with pytest.raises(JobInputError, match=r"^job eq/fold0/cash/seed0 failed: ValueError: labels give") as caught:
        run_benchmark(config, tmp_path / "run", executor=Refusing(), progress=False)
    assert isinstance(caught.value.__cause__, JobError)
    assert not (tmp_path / "run").exists()


def test_an_unreachable_scheduler_leaves_no_run_folder(config, tmp_path, monkeypatch) -> None:
    import evaluation.executor as executor_module

    def unreachable(workers, scheduler):
        raise SchedulerUnreachableError(f"no Dask scheduler answers at {scheduler}")
    monkeypatch.setattr(executor_module, "make_executor", unreachable)
    with pytest.raises(SchedulerUnreachableError):
        run_benchmark(config, tmp_path / "runs" / "new", scheduler="tcp://127.0.0.1:9", progress=False)
    assert not (tmp_path / "runs").exists()


def test_folds_that_do_not_fit_leave_no_run_folder(tmp_path) -> None:
    config = BenchmarkConfig.from_dict({**TINY, "folds": {"n_folds": 2, "test_share": 0.89}})
    error, executor = bad_start(config, tmp_path)
    assert "fold 0 would train on" in str(error) and not (tmp_path / "new").exists()


def test_a_refused_start_leaves_an_existing_run_folder_as_it_was(config, run_copy) -> None:
    before = snapshot(run_copy)
    other = BenchmarkConfig.from_dict({**TINY, "seeds": 2})
    with pytest.raises(FileExistsError):
        run(other, run_copy)
    assert snapshot(run_copy) == before


def test_a_run_stopped_after_a_finished_job_keeps_its_folder_to_resume(config, tmp_path) -> None:
    class StopAfterOne(SerialExecutor):
        def run(self, fn, jobs, *, on_result=None, progress=True, description="jobs"):
            on_result(jobs[0], fn(jobs[0]))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_benchmark(config, tmp_path / "run", executor=StopAfterOne(), progress=False)
    assert len(job_dirs(tmp_path / "run")) == 1
    report, executor = run(config, tmp_path / "run")
    assert report["run"]["cached"] == 1 and executor.started == len(plan(config)[1]) - 1


def test_the_cli_refuses_a_bad_config_in_one_line_and_writes_nothing(tmp_path, capsys) -> None:
    config_file = tmp_path / "bench.yaml"
    config_file.write_text(yaml.safe_dump({**TINY, "statistics": {"confidence": 95}}))
    runs = tmp_path / "runs"
    code = run_cli(benchmark_cli.main, ["--config", str(config_file), "--runs-dir", str(runs), "--run-name", "r",
                                        "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and f"{config_file}: statistics.confidence=95" in err
    assert not runs.exists()
