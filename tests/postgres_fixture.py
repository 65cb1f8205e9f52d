"""A throwaway PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` on a temporary data directory.

The server listens on 127.0.0.1 at a free port with trust authentication, fsync off, and is removed
at the end of the session (or, if the test process is killed, by a watchdog that outlives it). PostgreSQL refuses to run as root: as root (CI) the server runs as the
``postgres`` user through ``runuser``. Binaries are looked up in ``$POSTGRES_BIN``, on ``PATH`` and in
the Debian layout ``/usr/lib/postgresql/<version>/bin``; without them the tests are skipped, unless
``TRADING_RL_REQUIRE_POSTGRES=1`` (then they fail). A missing driver is a failure, not a skip:
``pip install -e '.[postgres]'``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

SERVER_USER = "postgres"


def find_server_binaries() -> Path | None:
    """A folder holding ``initdb`` and ``pg_ctl``: ``$POSTGRES_BIN``, ``PATH``, then the newest Debian one."""
    candidates = [os.environ.get("POSTGRES_BIN", "")]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                         reverse=True)
    candidates.append("/usr/local/pgsql/bin")
    for folder in filter(None, candidates):
        if all(os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory.

    :param bin_dir: the folder of ``initdb`` and ``pg_ctl``.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="trading-rl-pg-"))
        self.data_dir = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._as_user: list[str] = []
        self._watchdog: subprocess.Popen | None = None
        if os.geteuid() == 0:  # the server refuses root: run it as the postgres user
            try:
                user = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise RuntimeError(f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as") from None
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", SERVER_USER, "--"]

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        command = [*self._as_user, str(self.bin_dir / tool), *args]
        return subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        """``initdb`` and start the server (a port taken meanwhile is retried with another)."""
        done = self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", SERVER_USER, "-E", "UTF8",
                         "--locale=C", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        for _ in range(3):
            self.port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                       f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
            done = self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log), "-w", "-t", "60", "-o", options,
                             "start")
            if done.returncode == 0:
                self._watch()
                return
        log = self.log.read_text()[-2000:] if self.log.exists() else ""
        raise RuntimeError(f"pg_ctl start failed ({done.returncode}): {done.stderr.strip()} {log}")

    def _watch(self) -> None:
        """A watchdog in its own session: if this test process is killed (no teardown), it stops the server
        and deletes its directory, so no orphan server outlives the run."""
        stop = " ".join(shlex.quote(part) for part in [*self._as_user, str(self.bin_dir / "pg_ctl"), "-D",
                                                        str(self.data_dir), "-m", "immediate", "stop"])
        script = (f"while [ -d /proc/{os.getpid()} ]; do sleep 2; done; "
                  f"{stop} >/dev/null 2>&1; rm -rf {shlex.quote(str(self.root))}")
        self._watchdog = subprocess.Popen(["sh", "-c", script], cwd="/", start_new_session=True,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def url(self, database: str) -> str:
        """The SQLAlchemy/Optuna URL of ``database`` (psycopg 3 driver)."""
        return f"postgresql+psycopg://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once and delete its directory."""
        if self.data_dir.exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session (skipped where the server binaries are absent)."""
    bin_dir = find_server_binaries()
    if bin_dir is None:
        reason = ("PostgreSQL server binaries (initdb, pg_ctl) not found in $POSTGRES_BIN, PATH or "
                  "/usr/lib/postgresql/*/bin")
        if os.environ.get("TRADING_RL_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " and TRADING_RL_REQUIRE_POSTGRES=1")
        pytest.skip(reason)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("PostgreSQL is installed but its Python driver is not: pip install -e '.[postgres]'")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database on the session's server."""
    return postgres_server.create_database()
