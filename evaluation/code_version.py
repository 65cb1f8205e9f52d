"""Which code produced a result: the installed package version and a digest of the package's source.

    from evaluation.code_version import code_version
    code_version()   # {"version": "0.1.0", "digest": "3f2a...", "files": 187}

The digest is the sha256 of every ``.py`` file under the package directories :data:`PACKAGES` (the
``[tool.setuptools] packages`` of ``pyproject.toml``; a test checks the two agree) plus ``configs/*.yaml``, each hashed with its path relative
to the source root. It depends on the files' contents and relative paths only: not on where the tree
lives, file modification times, ``__pycache__`` or other generated files. It is computed once per
process (about 20 ms). A result cache (the benchmark's jobs) records it so a result of other code is
never reused silently.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from functools import lru_cache
from pathlib import Path
from typing import Any

#: The distribution whose version is recorded.
DISTRIBUTION = "trading-rl"
#: What :func:`package_version` gives when the distribution is not installed (a bare source tree).
NOT_INSTALLED = "not installed"
#: ``[tool.setuptools] packages`` of pyproject.toml (a test checks the two agree).
PACKAGES: tuple[str, ...] = ("features", "sim", "envs", "agents", "supervised", "evaluation", "live",
                             "experiments", "configs")
#: The source root: the folder holding the packages (and pyproject.toml in a checkout).
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def package_version(distribution: str = DISTRIBUTION) -> str:
    """The installed version of ``distribution`` (``importlib.metadata``), or :data:`NOT_INSTALLED`.

    :param distribution: the distribution name.
    """
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED


def source_files(root: Path = SOURCE_ROOT, packages: tuple[str, ...] = PACKAGES) -> list[Path]:
    """The files the digest covers, sorted by relative path: every ``.py`` under each package directory
    (``__pycache__`` and hidden folders skipped) and ``configs/*.yaml``.

    :param root: the source root.
    :param packages: the package directories.
    """
    found: set[Path] = set()
    for package in packages:
        directory = root / package.replace(".", "/")
        for path in directory.rglob("*.py"):
            parts = path.relative_to(root).parts
            if path.is_file() and not any(p == "__pycache__" or p.startswith(".") for p in parts):
                found.add(path)
    found.update(p for p in (root / "configs").glob("*.yaml") if p.is_file())
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def source_digest(root: Path = SOURCE_ROOT, packages: tuple[str, ...] = PACKAGES) -> str:
    """sha256 over :func:`source_files`: each file's relative path, length and bytes.

    :param root: the source root.
    :param packages: the package directories.
    """
    digest = hashlib.sha256()
    for path in source_files(root, packages):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def _this_process() -> tuple[str, str, int]:
    return package_version(), source_digest(), len(source_files())


def code_version() -> dict[str, Any]:
    """``{"version", "digest", "files"}`` of the code this process runs (computed once per process)."""
    version, digest, files = _this_process()
    return {"version": version, "digest": digest, "files": files}


def describe(version: Any, digest: Any) -> str:
    """``0.1.0 (code 3f2a9c1b0d4e)``: a version and a short digest, for messages.

    :param version: the package version (None: unrecorded).
    :param digest: the source digest (None: unrecorded).
    """
    short = str(digest)[:12] if digest else "unrecorded"
    return f"{version or 'version unrecorded'} (code {short})"


__all__ = ["DISTRIBUTION", "NOT_INSTALLED", "PACKAGES", "code_version", "describe", "package_version", "source_digest", "source_files"]
