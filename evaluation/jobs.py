"""Benchmark jobs (market x fold x policy x seed), their content hash, and the on-disk cache.

A job's key is the sha256 of everything that defines its result: the market's dataset settings, the
fold's dates and purge gap, the policy's settings and budget, the seed, the cost levels it is scored
at, and :data:`JOB_FORMAT` (bumped when the meaning of a result changes). A finished job is stored
under ``<run>/jobs/<key>/`` (written aside, then renamed), so a killed benchmark resumes with every
finished job skipped, and a changed setting can never reuse a stale result. The key holds no code
version: each result's ``meta["code"]`` records the package version and source digest that computed it
(:mod:`evaluation.code_version`), and :func:`evaluation.benchmark.run_benchmark` refuses to reuse a
result of other code unless told to. :meth:`JobCache.load` reads every file whole, so a truncated or
corrupted job is a :class:`DamagedJobError` naming the file (the benchmark runs that job again).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from features.atomic_io import write_directory_atomic

JOB_FORMAT = 1
META_FILE = "meta.json"
ARRAYS_FILE = "arrays.npz"
ARTIFACT_FILE = "artifact.tar.gz"


@dataclass(frozen=True)
class Job:
    """One unit of work, small and picklable (it travels to local or Dask workers).

    :param key: content hash (see the module docstring).
    :param market: market name.
    :param fold: fold index.
    :param policy: policy name.
    :param seed: seed.
    :param spec: everything that defines the job, JSON-able (hashed into ``key``).
    :param depends_on: the key of the job whose artifact this one needs (a ``pretrained`` supervised bundle), or
        the keys of the jobs whose results it needs (an ensemble's or an agent selector's members), in order.
    :param inputs: filled in by the coordinator: that artifact (a tar.gz of its directory) for one key, the
        :class:`JobResult` of each key (artifact included) for a tuple of keys.
    """

    key: str
    market: str
    fold: int
    policy: str
    seed: int
    spec: dict[str, Any]
    depends_on: str | tuple[str, ...] | None = None
    inputs: bytes | tuple["JobResult", ...] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.market}/fold{self.fold}/{self.policy}/seed{self.seed}"

    @property
    def dependencies(self) -> tuple[str, ...]:
        """The keys of the jobs this one needs (none, one or several)."""
        if self.depends_on is None:
            return ()
        return (self.depends_on,) if isinstance(self.depends_on, str) else tuple(self.depends_on)

    def __repr__(self) -> str:
        return f"Job({self.name}, key={self.key[:12]})"


@dataclass
class JobResult:
    """What a job returns: metadata, arrays (equity curves per symbol and cost level) and its artifact.

    :param key: the job's key.
    :param meta: JSON-able results (metrics per cost level and symbol, validation, selection, timing).
    :param arrays: named numpy arrays (see :func:`evaluation.runner.run_job`).
    :param artifact: the trained model as a tar.gz of its directory (None for baselines).
    """

    key: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    artifact: bytes | None = None


def job_key(spec: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``spec`` and the job format."""
    payload = json.dumps({"format": JOB_FORMAT, **spec}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class JobCache:
    """Finished jobs of one benchmark run, one directory per job key.

    :param root: ``<run>/jobs``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        return (self.path(key) / META_FILE).exists()

    def save(self, result: JobResult) -> Path:
        """Write one result atomically (a kill leaves either nothing or the whole job)."""

        def fill(directory: Path) -> None:
            np.savez(directory / ARRAYS_FILE, **result.arrays)
            if result.artifact is not None:
                (directory / ARTIFACT_FILE).write_bytes(result.artifact)
            (directory / META_FILE).write_text(json.dumps(result.meta, indent=1, sort_keys=True, default=_json) + "\n")

        self.root.mkdir(parents=True, exist_ok=True)
        return write_directory_atomic(self.path(result.key), fill)

    def load(self, key: str) -> JobResult:
        """Read a finished job, every file checked whole (the JSON parsed, every array read, the artifact's
        archive listed); a damaged one is a :class:`DamagedJobError` naming the file.

        :param key: the job's key.
        """
        path = self.path(key)
        meta = _read(path / META_FILE, lambda file: json.loads(file.read_text()))
        if not isinstance(meta, dict):
            raise DamagedJobError(f"cached job file {path / META_FILE} is damaged (not a JSON object)")
        arrays = _read(path / ARRAYS_FILE, _read_arrays)
        artifact_path = path / ARTIFACT_FILE
        artifact = _read(artifact_path, _read_archive) if artifact_path.exists() else None
        return JobResult(key, meta, arrays, artifact)

    def artifact(self, key: str) -> bytes:
        path = self.path(key) / ARTIFACT_FILE
        if not path.exists():
            raise FileNotFoundError(f"cached job {self.path(key)} has no {ARTIFACT_FILE}")
        return path.read_bytes()


class DamagedJobError(ValueError):
    """A cached job's file that cannot be read whole (truncated, corrupted); the message names the file."""


def _read(file: Path, reader: Any) -> Any:
    """``reader(file)``; any failure to read or parse it is a :class:`DamagedJobError` naming ``file``."""
    try:
        return reader(file)
    except Exception as error:  # json, zipfile, gzip, tarfile, numpy: each fails with its own type
        reason = " ".join(str(error).split()) or "unreadable"
        raise DamagedJobError(f"cached job file {file} is damaged ({type(error).__name__}: {reason})") from None


def _read_arrays(file: Path) -> dict[str, np.ndarray]:
    with np.load(file, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def _read_archive(file: Path) -> bytes:
    payload = file.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
        for member in archive:  # reads every member's data: a truncated archive fails here
            if member.isfile():
                archive.extractfile(member).read()
    return payload


def pack_directory(directory: str | Path) -> bytes:
    """A tar.gz of ``directory``'s contents (deterministic member order)."""
    directory = Path(directory)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for file in sorted(p for p in directory.rglob("*") if p.is_file()):
            archive.add(file, arcname=str(file.relative_to(directory)))
    return buffer.getvalue()


def unpack_directory(payload: bytes, directory: str | Path) -> Path:
    """Extract a :func:`pack_directory` archive into ``directory`` (created)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
        archive.extractall(directory, filter="data")
    return directory


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


__all__ = ["DamagedJobError", "Job", "JobCache", "JobResult", "job_key", "pack_directory", "unpack_directory"]
