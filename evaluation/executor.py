"""One executor interface for the benchmark's jobs: in-process, local worker processes, or a Dask cluster.

    executor = make_executor(workers=2)                               # 2 local worker processes
    executor = make_executor(scheduler="tcp://10.0.0.5:8786")         # the workers of a Dask cluster
    try:
        results = executor.run(run_job, jobs, on_result=save)         # results in the order of jobs
    finally:
        executor.close()

Every executor runs the same ``fn`` on the same jobs: ``fn`` is a top-level (importable, picklable)
function and each job a small picklable object (a dataclass). The contract of :meth:`Executor.run`:

* ``on_result(job, result)`` is called in the calling (coordinating) process as each job completes, in
  completion order, once per job; the benchmark writes its cache there, so a kill loses at most the
  jobs in flight. ``run`` returns the results in the order of ``jobs``.
* A job that raises stops the run: nothing new starts, pending jobs are cancelled, jobs in flight are
  abandoned (local workers are terminated; a Dask worker finishes its running task and drops it), and
  :class:`JobError` names the job (``job.name`` or ``repr(job)``) with the job's exception chained as
  ``__cause__``. Results already handed to ``on_result`` stay handled.
* Ctrl-C (KeyboardInterrupt) does the same and re-raises, without waiting for the jobs in flight.
* A tqdm bar counts completed jobs (``progress=False`` hides it).

Local workers use the ``spawn`` start method: ``fork`` is unsafe once torch (its OpenMP/intra-op
thread pools) or any other threads live in the parent, and ``spawn`` is the one method every OS has
(the default on macOS and Windows) and the one Dask's nanny uses, so a job sees the same fresh
interpreter whether it runs locally or on a cluster. Its cost, a fresh interpreter per worker, is paid
once: the pool lives until :meth:`close` and serves every ``run``. Each local worker is limited to one
OpenMP/BLAS/torch thread, so N workers use N cores (Dask's nanny sets the same ``*_NUM_THREADS=1``; start
cluster workers with ``dask worker ADDRESS --nthreads 1 --nworkers N``).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import pickle
import signal
import sys
import uuid
import warnings
from typing import Any, Callable, Protocol, Sequence, TypeVar

J = TypeVar("J")
R = TypeVar("R")

#: Start method of local worker processes (see the module docstring).
START_METHOD = "spawn"
#: Seconds to wait for a Dask scheduler before giving up.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: What to do when no scheduler answers.
SCHEDULER_HINT = "start one with `dask scheduler` and `dask worker ADDRESS`"
#: Thread-count variables set to 1 in every local worker (read by OpenMP, MKL, OpenBLAS, ... and torch).
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS")


class JobError(RuntimeError):
    """A job raised; the job's exception is the ``__cause__``.

    :param job: the failing job.
    :param index: its position in the ``jobs`` given to :meth:`Executor.run`.
    :param error: the job's exception.
    """

    def __init__(self, job: Any, index: int, error: BaseException) -> None:
        self.job, self.index, self.error = job, index, error
        message = " ".join(str(error).split())
        super().__init__(f"job {job_label(job)} failed: {type(error).__name__}"
                         f"{': ' + message if message else ''}")


class SchedulerUnreachableError(ConnectionError, ValueError):
    """No Dask scheduler answered at the given address (a ValueError too: the command line shows it as
    one ``error: ...`` line)."""


class Executor(Protocol):
    """Runs ``fn(job)`` for every job (see the module docstring for the contract)."""

    def run(self, fn: Callable[[J], R], jobs: Sequence[J], *, on_result: Callable[[J, R], None] | None = None,
            progress: bool = True, description: str = "jobs") -> list[R]:
        """``[fn(job) for job in jobs]``, with ``on_result(job, result)`` called as each completes.

        :param fn: a top-level function (picklable by reference) of one job.
        :param jobs: small picklable job objects.
        :param on_result: called in this process once per job, as it completes.
        :param progress: show a progress bar over completed jobs.
        :param description: the progress bar's label.
        :raises JobError: a job raised (the run was stopped).
        """
        ...

    def close(self) -> None:
        """Release the workers (or the connection); the executor cannot be used afterwards."""
        ...


def job_label(job: Any) -> str:
    """How errors name a job: its ``name`` attribute if it has a string one, else ``repr(job)``."""
    name = getattr(job, "name", None)
    return name if isinstance(name, str) and name else repr(job)


def make_executor(workers: int = 1, scheduler: str | None = None, *,
                  connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Executor:
    """The executor for ``--workers`` / ``--scheduler``.

    :param workers: local worker processes; 1 runs the jobs in this process, in order (ignored with
        ``scheduler``).
    :param scheduler: a Dask scheduler address (``tcp://host:port``; a bare ``host:port`` means tcp):
        the jobs run on that cluster's workers.
    :param connect_timeout: seconds to wait for the scheduler.
    :raises ValueError: ``workers`` < 1 or a malformed ``scheduler`` address.
    :raises SchedulerUnreachableError: no scheduler answers at ``scheduler`` within ``connect_timeout``.
    """
    workers = _check_workers(workers)
    if scheduler is not None:
        return DaskExecutor(scheduler, connect_timeout=connect_timeout)
    if workers == 1:
        return SerialExecutor()
    return ProcessExecutor(workers)


class _ExecutorBase:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        pass


class SerialExecutor(_ExecutorBase):
    """Runs the jobs in this process, one after another in order (debugging, tests, ``--workers 1``)."""

    def run(self, fn: Callable[[J], R], jobs: Sequence[J], *, on_result: Callable[[J, R], None] | None = None,
            progress: bool = True, description: str = "jobs") -> list[R]:
        jobs = list(jobs)
        results: list[R] = []
        with _progress_bar(len(jobs), progress, description) as bar:
            for index, job in enumerate(jobs):
                try:
                    result = fn(job)
                except Exception as error:
                    raise JobError(job, index, error) from error
                results.append(result)
                if on_result is not None:
                    on_result(job, result)
                bar.update()
        return results

    def close(self) -> None:
        pass


WAKE_SECONDS = 0.5  # longest the coordinator sleeps between checks for finished jobs and Ctrl-C


class ProcessExecutor(_ExecutorBase):
    """Runs the jobs in ``workers`` local worker processes (``spawn``ed, one thread each).

    At most ``workers`` jobs are handed to the pool at a time and the next one in ``jobs`` order is
    submitted as one completes, so jobs start in order and a failure starts nothing more. The pool is
    started on the first :meth:`run` and kept for later ones until :meth:`close`; a failed or
    interrupted run terminates it (a later run starts a fresh one).

    :param workers: number of worker processes (>= 1).
    """

    def __init__(self, workers: int) -> None:
        self.workers = _check_workers(workers)
        self._pool: cf.ProcessPoolExecutor | None = None

    def run(self, fn: Callable[[J], R], jobs: Sequence[J], *, on_result: Callable[[J, R], None] | None = None,
            progress: bool = True, description: str = "jobs") -> list[R]:
        jobs = list(jobs)
        if not jobs:
            return []
        _check_picklable(fn)
        pool = self._get_pool()
        results: list[Any] = [None] * len(jobs)
        in_flight: dict[cf.Future, int] = {}
        next_index = 0
        try:
            with _progress_bar(len(jobs), progress, description) as bar:
                while next_index < len(jobs) or in_flight:
                    while next_index < len(jobs) and len(in_flight) < self.workers:
                        in_flight[pool.submit(fn, jobs[next_index])] = next_index
                        next_index += 1
                    # a bounded wait: the main thread wakes at least every WAKE_SECONDS, so a Ctrl-C that the
                    # kernel delivered to one of the pool's threads still raises KeyboardInterrupt here
                    done, _ = cf.wait(in_flight, timeout=WAKE_SECONDS, return_when=cf.FIRST_COMPLETED)
                    for future in sorted(done, key=in_flight.__getitem__):
                        index = in_flight.pop(future)
                        try:
                            result = future.result()
                        except Exception as error:
                            raise JobError(jobs[index], index, error) from error
                        results[index] = result
                        if on_result is not None:
                            on_result(jobs[index], result)
                        bar.update()
        except BaseException:
            self._terminate()
            raise
        return results

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _get_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(max_workers=self.workers,
                                                mp_context=multiprocessing.get_context(START_METHOD),
                                                initializer=_init_worker)
        return self._pool

    def _terminate(self) -> None:
        """Cancel what is queued and terminate the workers now (jobs in flight are abandoned)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():  # pragma: no cover - a worker that ignores SIGTERM
                process.kill()
                process.join(timeout=5)


def _init_worker() -> None:
    """Local worker start-up: one thread for OpenMP/BLAS/torch; Ctrl-C is the coordinator's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in THREAD_ENV_VARS:
        os.environ[name] = "1"  # read by the libraries (torch included) when they are first loaded
    # Libraries already loaded (imported by the main module, which spawn re-imports) are limited directly.
    # torch is not imported just for this: when a job imports it, it reads OMP_NUM_THREADS=1.
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if "numpy" in sys.modules:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            pass
        else:
            threadpool_limits(1)


class DaskExecutor(_ExecutorBase):
    """Runs the jobs on the workers of a Dask cluster (``distributed.Client(address)``).

    Every job is submitted at once under its own key (``<fn name>-<uuid>``): never a key derived from
    the job's content, so two equal jobs in one run are two tasks, each handed to ``on_result``, and a
    rerun never collides with a cancelled key of an earlier run. The scheduler queues what its workers
    cannot start yet; results are gathered as they complete (``as_completed``).

    :param address: the scheduler's address (``tcp://host:port``).
    :param connect_timeout: seconds to wait for it.
    :raises SchedulerUnreachableError: no scheduler answers in time.
    """

    def __init__(self, address: str, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        from distributed import Client

        self.address = check_scheduler_address(address)
        try:
            self.client = Client(self.address, timeout=connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise SchedulerUnreachableError(
                f"no Dask scheduler answers at {self.address} within {connect_timeout:g} s ({reason}) — "
                f"{SCHEDULER_HINT}, or check the address") from error
        if not self.client.nthreads():
            warnings.warn(f"the Dask scheduler at {self.address} has no workers yet; jobs wait until one joins "
                          f"(`dask worker {self.address} --nthreads 1`)", stacklevel=2)

    def run(self, fn: Callable[[J], R], jobs: Sequence[J], *, on_result: Callable[[J, R], None] | None = None,
            progress: bool = True, description: str = "jobs") -> list[R]:
        from distributed import as_completed

        jobs = list(jobs)
        if not jobs:
            return []
        name = getattr(fn, "__name__", "job")
        futures = {}
        for index, job in enumerate(jobs):
            future = self.client.submit(fn, job, key=f"{name}-{uuid.uuid4().hex}", pure=False)
            futures[future.key] = (future, index)
        results: list[Any] = [None] * len(jobs)
        try:
            with _progress_bar(len(jobs), progress, description) as bar:
                for future in as_completed([future for future, _ in futures.values()], loop=self.client.loop):
                    _, index = futures.pop(future.key)
                    try:
                        result = future.result()
                    except Exception as error:
                        raise JobError(jobs[index], index, error) from error
                    finally:
                        future.release()  # the cluster may forget it; the result lives here now
                    results[index] = result
                    if on_result is not None:
                        on_result(jobs[index], result)
                    bar.update()
        except BaseException:
            if futures:
                self.client.cancel([future for future, _ in futures.values()])
            raise
        return results

    def close(self) -> None:
        self.client.close()


def check_scheduler_address(address: str) -> str:
    """``address`` as distributed takes it (``host:port`` gets ``tcp://``); ValueError if malformed."""
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    text = address.strip() if isinstance(address, str) else ""
    if text and "://" not in text:
        text = f"tcp://{text}"  # distributed's default protocol
    try:
        if not text:
            raise ValueError("empty")
        scheme, location = parse_address(text, strict=True)
        get_backend(scheme)
        if scheme in ("tcp", "tls", "ws", "wss"):
            parse_host_port(location)
    except ValueError as error:
        raise ValueError(f"scheduler (--scheduler) {address!r} is not a Dask scheduler address ({error}) — "
                         f"pass tcp://host:port, e.g. tcp://127.0.0.1:8786") from None
    return text


def _check_workers(workers: Any) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers (--workers) must be an integer >= 1, got {workers!r} — pass 1 to run the jobs "
                         f"in this process, N for N worker processes")
    return int(workers)


def _check_picklable(fn: Callable) -> None:
    try:
        pickle.dumps(fn)
    except Exception as error:
        raise TypeError(f"{fn!r} cannot be sent to worker processes ({error}); pass a top-level function "
                        f"(a module-level def), not a lambda or a local function") from error


def _progress_bar(total: int, progress: bool, description: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="job", disable=not progress, dynamic_ncols=True)
