"""evaluation.executor: the serial, local-process and Dask executors run the same jobs the same way.

The toy job functions live at the top of this module: worker processes import it by name. Local
workers are spawned with the parent's ``sys.path`` (multiprocessing's spawn hands it over), and so are
the LocalCluster's workers (Dask's nanny spawns them the same way), so this module, found through the
``tests/`` folder pytest puts on ``sys.path``, is importable there too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from evaluation.executor import (DaskExecutor, JobError, ProcessExecutor, SchedulerUnreachableError,
                                 SerialExecutor, make_executor)

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Toy:
    """A toy job: square ``x`` after ``sleep`` seconds; ``fail`` raises; ``marker_dir`` records starts."""

    name: str
    x: int
    sleep: float = 0.0
    fail: bool = False
    marker_dir: str | None = None
    wait_for: str | None = None  # a marker file to wait for (up to 20 s) before sleeping


def square(job: Toy) -> int:
    if job.marker_dir is not None:
        (Path(job.marker_dir) / job.name).write_text(str(os.getpid()))
    if job.wait_for is not None:
        deadline = time.monotonic() + 20
        while not Path(job.wait_for).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    time.sleep(job.sleep)
    if job.fail:
        raise ValueError(f"bad input {job.x}")
    return job.x * job.x


def square_and_pid(job: Toy) -> tuple[int, int]:
    return square(job), os.getpid()


def thread_settings(job: Toy) -> tuple[int, str | None]:
    import torch

    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def _started(marker_dir: Path) -> set[str]:
    return {path.name for path in marker_dir.iterdir()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (terminated, not yet reaped) counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_dead(pids: set[int], seconds: float = 10.0) -> set[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    return {pid for pid in pids if _alive(pid)}


# ----------------------------------------------------------------------------------------------------
# Fixtures: one warm pool and one LocalCluster for the whole module


@pytest.fixture(scope="module")
def process_executor():
    executor = ProcessExecutor(2)
    yield executor
    executor.close()


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def dask_executor(dask_cluster):
    executor = make_executor(scheduler=dask_cluster.scheduler_address)  # the --scheduler code path
    yield executor
    executor.close()


@pytest.fixture(params=["serial", "process", "dask"])
def executor(request):
    if request.param == "serial":
        return SerialExecutor()
    return request.getfixturevalue(f"{request.param}_executor")


# ----------------------------------------------------------------------------------------------------
# make_executor


@pytest.mark.timeout(30)
def test_make_executor_picks_the_executor_and_validates():
    assert isinstance(make_executor(), SerialExecutor)
    assert isinstance(make_executor(1), SerialExecutor)
    executor = make_executor(3)
    assert isinstance(executor, ProcessExecutor) and executor.workers == 3
    executor.close()  # no pool was started
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match=r"workers \(--workers\) must be an integer >= 1"):
            make_executor(bad)
    for bad in ("", "localhost", "tcp://localhost", "tcp://host:port", "bogus://host:8786"):
        with pytest.raises(ValueError, match=r"scheduler \(--scheduler\) .* tcp://host:port") as caught:
            make_executor(scheduler=bad)
        assert not isinstance(caught.value, SchedulerUnreachableError)


@pytest.mark.timeout(30)
def test_unreachable_scheduler_is_one_clear_line_quickly():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(SchedulerUnreachableError) as caught:
        make_executor(scheduler=address, connect_timeout=1)
    assert time.monotonic() - started < 8
    message = str(caught.value)
    assert "\n" not in message
    assert address in message and "dask scheduler" in message and "dask worker ADDRESS" in message
    assert isinstance(caught.value, ValueError)  # the command line prints it as one line, exit code 2
    # a bare host:port means tcp
    with pytest.raises(SchedulerUnreachableError, match=address):
        make_executor(scheduler=f"127.0.0.1:{port}", connect_timeout=1)


# ----------------------------------------------------------------------------------------------------
# The same results, in job order, with on_result in the coordinating process


@pytest.mark.timeout(45)
def test_executors_give_the_same_results_in_job_order(executor):
    # later jobs sleep less, so they tend to complete first; a duplicate job is still two jobs
    jobs = [Toy(f"j{i}", x, sleep=0.02 * (6 - i)) for i, x in enumerate([3, 1, 4, 1, 5, 9])]
    jobs.append(jobs[2])
    handled: list[tuple[Toy, int, int]] = []
    results = executor.run(square, jobs, on_result=lambda job, result: handled.append((job, result, os.getpid())),
                           progress=False)
    assert results == [9, 1, 16, 1, 25, 81, 16]
    assert sorted(handled, key=lambda item: (item[0].name, item[1])) == sorted(
        [(job, job.x * job.x, os.getpid()) for job in jobs], key=lambda item: (item[0].name, item[1]))
    assert executor.run(square, [], progress=False) == []


@pytest.mark.timeout(45)
@pytest.mark.parametrize("kind", ["process", "dask"])
def test_jobs_run_in_two_worker_processes(kind, request):
    executor = request.getfixturevalue(f"{kind}_executor")
    jobs = [Toy(f"j{i}", i, sleep=0.25) for i in range(8)]
    results = executor.run(square_and_pid, jobs, progress=False)
    assert [square for square, _ in results] == [i * i for i in range(8)]
    pids = {pid for _, pid in results}
    assert len(pids) == 2 and os.getpid() not in pids


@pytest.mark.timeout(45)
def test_local_workers_use_one_thread_each(process_executor):
    results = process_executor.run(thread_settings, [Toy("a", 0), Toy("b", 1)], progress=False)
    assert results == [(1, "1"), (1, "1")]


@pytest.mark.timeout(30)
def test_progress_bar_counts_jobs(capsys):
    SerialExecutor().run(square, [Toy("a", 1), Toy("b", 2)], description="toys")
    err = capsys.readouterr().err
    assert "toys" in err and "2/2" in err
    SerialExecutor().run(square, [Toy("a", 1)], progress=False)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------------------------------
# A failing job


@pytest.mark.timeout(30)
def test_serial_failure_names_the_job_and_starts_nothing_more(tmp_path):
    jobs = [Toy(f"job{i}", i, fail=i == 2, marker_dir=str(tmp_path)) for i in range(5)]
    handled = []
    with pytest.raises(JobError, match=r"job job2 failed: ValueError: bad input 2") as caught:
        SerialExecutor().run(square, jobs, on_result=lambda job, result: handled.append(job.name), progress=False)
    assert isinstance(caught.value.__cause__, ValueError) and caught.value.job == jobs[2]
    assert handled == ["job0", "job1"]
    assert _started(tmp_path) == {"job0", "job1", "job2"}


@pytest.mark.timeout(30)
def test_job_without_a_name_is_named_by_its_repr():
    with pytest.raises(JobError, match=r"job -1 failed: ValueError"):
        SerialExecutor().run(_fail_on_negative, [1, -1], progress=False)


def _fail_on_negative(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return x


@pytest.mark.timeout(45)
def test_process_failure_cancels_pending_and_abandons_running(tmp_path):
    executor = ProcessExecutor(2)
    try:
        flag = str(tmp_path / "slow")
        jobs = [Toy("fails", 0, fail=True, wait_for=flag, marker_dir=str(tmp_path)),
                Toy("slow", 1, sleep=30, marker_dir=str(tmp_path))]
        jobs += [Toy(f"later{i}", i, marker_dir=str(tmp_path)) for i in range(2, 8)]
        handled = []
        started = time.monotonic()
        with pytest.raises(JobError, match="job fails failed: ValueError: bad input 0") as caught:
            executor.run(square, jobs, on_result=lambda job, result: handled.append(job), progress=False)
        assert time.monotonic() - started < 20  # did not wait for the 30 s job in flight
        assert isinstance(caught.value.__cause__, ValueError)
        assert handled == [] and _started(tmp_path) == {"fails", "slow"}
        assert not _wait_dead({int((tmp_path / "slow").read_text())})  # its worker was terminated
        # the executor still works: a fresh pool
        assert executor.run(square, [Toy("again", 3)], progress=False) == [9]
    finally:
        executor.close()


@pytest.mark.timeout(45)
def test_dask_failure_cancels_pending(dask_executor, tmp_path):
    jobs = [Toy("fails", 0, fail=True, marker_dir=str(tmp_path))]
    jobs += [Toy(f"later{i}", i, sleep=0.3, marker_dir=str(tmp_path)) for i in range(1, 21)]
    with pytest.raises(JobError, match="job fails failed: ValueError: bad input 0") as caught:
        dask_executor.run(square, jobs, progress=False)
    assert isinstance(caught.value.__cause__, ValueError)
    time.sleep(1.0)  # anything not cancelled would have started by now
    started = _started(tmp_path) - {"fails"}
    assert len(started) <= 6, started  # at most what the two workers held when it failed
    _wait_for_idle_scheduler(dask_executor)
    assert dask_executor.run(square, [Toy("again", 3)], progress=False) == [9]


def _wait_for_idle_scheduler(executor: DaskExecutor, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not executor.client.processing() or not any(executor.client.processing().values()):
            return
        time.sleep(0.05)
    raise AssertionError(f"the scheduler still has tasks: {executor.client.processing()}")


# ----------------------------------------------------------------------------------------------------
# Ctrl-C


@pytest.mark.timeout(45)
def test_interrupt_in_coordinator_terminates_local_workers(tmp_path):
    executor = ProcessExecutor(2)
    flag = str(tmp_path / "slow")
    jobs = [Toy("quick", 0, wait_for=flag, marker_dir=str(tmp_path)),
            Toy("slow", 1, sleep=30, marker_dir=str(tmp_path)),
            Toy("later", 2, marker_dir=str(tmp_path))]

    def interrupt(job, result):
        raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        executor.run(square, jobs, on_result=interrupt, progress=False)
    executor.close()
    assert time.monotonic() - started < 20
    assert _started(tmp_path) == {"quick", "slow"}
    assert not _wait_dead({int((tmp_path / "slow").read_text())})


@pytest.mark.timeout(45)
def test_interrupt_in_coordinator_cancels_dask_jobs(dask_executor, tmp_path):
    jobs = [Toy(f"j{i}", i, sleep=0.3, marker_dir=str(tmp_path)) for i in range(20)]

    def interrupt(job, result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dask_executor.run(square, jobs, on_result=interrupt, progress=False)
    _wait_for_idle_scheduler(dask_executor)
    time.sleep(0.5)
    assert len(_started(tmp_path)) <= 8


CTRL_C_SCRIPT = textwrap.dedent("""
    import signal
    import sys
    # as a program started from a terminal: SIGINT unblocked and handled by Python, whatever mask or
    # disposition the test process (after many other tests) would pass down
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, "tests")
    from test_benchmark_executor import Toy, square
    from evaluation.executor import make_executor

    marker_dir = sys.argv[1]
    executor = make_executor(2)
    try:
        executor.run(square, [Toy(f"long{i}", i, sleep=60, marker_dir=marker_dir) for i in range(4)],
                     progress=False)
    finally:
        executor.close()
""")


@pytest.mark.timeout(45)
def test_ctrl_c_stops_a_local_run_without_hanging(tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C: the run stops and the process exits."""
    process = subprocess.Popen([sys.executable, "-c", CTRL_C_SCRIPT, str(tmp_path)], cwd=REPO,
                               start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(_started(tmp_path)) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert _started(tmp_path) == {"long0", "long1"}, process.communicate(timeout=5)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=40)  # the tasks sleep 60 s: exiting before that is not hanging
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode != 0 and "KeyboardInterrupt" in stderr
    workers = {int(path.read_text()) for path in tmp_path.iterdir()}
    assert not _wait_dead(workers)
