"""A PostgreSQL storage that accepts connections and never answers ends an HPO run in seconds with one line
naming the host and the timeout (never the password), instead of hanging; the timeouts are settable and
checked."""

from __future__ import annotations

import socket
import threading
import time
from typing import Iterator

import optuna
import pytest

from experiments import hpo as hpo_cli
from experiments import hpo_agent as hpo_agent_cli
from experiments.common import run_cli
from supervised.hpo import HPOConfig, StorageError, open_study, storage_engine_kwargs

PASSWORD = "s3cret-pw"


@pytest.fixture()
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts every connection and never writes a byte; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # held open, never answered
            except OSError:  # the accept timeout: look at the stop flag again
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()


def silent_url(port: int) -> str:
    return f"postgresql://trader:{PASSWORD}@127.0.0.1:{port}/hpo"


def assert_one_timeout_line(message: str, port: int, seconds: int) -> None:
    assert "\n" not in message.strip()
    assert f"127.0.0.1:{port}" in message and f"{seconds} s connect timeout" in message
    assert PASSWORD not in message and "trader:***@" in message


def test_opening_a_study_on_a_silent_server_fails_within_the_connect_timeout(silent_server) -> None:
    started = time.monotonic()
    with pytest.raises(StorageError) as raised:
        open_study(silent_url(silent_server), "s", pruner=optuna.pruners.NopPruner(), seed=0, n_startup_trials=1,
                   heartbeat_interval=0, connect_timeout=2)
    assert time.monotonic() - started < 6  # 2 s, not psycopg's default 130 s
    assert_one_timeout_line(str(raised.value), silent_server, 2)


@pytest.mark.parametrize("entry, first", [(hpo_cli.main, ["--model", "mlp"]), (hpo_agent_cli.main, ["--algo", "ppo"])])
def test_hpo_entry_points_on_a_silent_server_end_in_seconds_with_one_line(entry, first, silent_server, tmp_path,
                                                                         capsys) -> None:
    # The storage is tried before the dataset is built, so no dataset is needed to see the error.
    argv = [*first, "--storage", silent_url(silent_server), "--connect-timeout", "2", "--runs-dir",
            str(tmp_path / "runs")]
    started = time.monotonic()
    assert run_cli(entry, argv) == 2
    assert time.monotonic() - started < 6
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot open Optuna storage postgresql://trader:***@127.0.0.1:")
    assert_one_timeout_line(err, silent_server, 2)
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_postgres_storages_get_a_connect_and_a_statement_timeout() -> None:
    kwargs = storage_engine_kwargs("postgresql+psycopg://u@h/db?options=-c%20search_path%3Dx", 7, 30)
    assert kwargs == {"connect_args": {"connect_timeout": 7, "options": "-c search_path=x -c statement_timeout=30000",
                                       "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                                       "keepalives_count": 3}}
    assert storage_engine_kwargs("postgresql://u@h/db", 10, 0)["connect_args"]["options"] == "-c statement_timeout=0"
    assert storage_engine_kwargs("sqlite:///runs/hpo.db", 10, 120) == {}  # sqlite's busy timeout is another thing


def test_a_timeout_set_in_the_url_too_is_refused_in_one_line() -> None:
    with pytest.raises(StorageError, match="sets connect_timeout itself — remove it from the URL"):
        storage_engine_kwargs(f"postgresql://u:{PASSWORD}@h/db?connect_timeout=3", 10, 120)
    with pytest.raises(StorageError, match="sets statement_timeout itself") as raised:
        storage_engine_kwargs(f"postgresql://u:{PASSWORD}@h/db?options=-c%20statement_timeout%3D5", 10, 120)
    assert PASSWORD not in str(raised.value)


@pytest.mark.parametrize("changes, message", [({"connect_timeout": 1}, "connect_timeout=1 must be >= 2"),
                                              ({"statement_timeout": -1}, "statement_timeout=-1 must be >= 0")])
def test_bad_storage_timeouts_are_refused(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        HPOConfig(**changes)


def test_the_timeout_flags_reach_the_study_settings(tmp_path, capsys) -> None:
    argv = ["--model", "mlp", "--storage", "postgresql://u@127.0.0.1:1/db", "--connect-timeout", "1"]
    assert run_cli(hpo_cli.main, argv) == 2
    assert "connect_timeout=1 must be >= 2" in capsys.readouterr().err
