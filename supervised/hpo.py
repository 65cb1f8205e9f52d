"""Hyperparameter search with Optuna: seeded TPE, median pruning on per-epoch validation F1, and the
best trial handed back as a model.

Any Optuna storage URL works through the same code: ``sqlite:///runs/hpo.db`` on one machine,
``postgresql://user@host/db`` shared by workers on several (the ``postgres`` extra installs the driver).
Running again with the same storage and study name resumes the study and adds trials; several
processes given the same storage and study name at once share it (unique trial numbers, one pruner
over all their trials). A worker that dies mid-trial stops sending heartbeats; the next worker to start
a trial marks it failed and queues it once more with the same parameters (:class:`HPOConfig`
``heartbeat_interval``, ``max_retry``).

A PostgreSQL storage is opened with a connect timeout and a statement timeout (:class:`HPOConfig`
``connect_timeout``, ``statement_timeout``): a server that does not answer, or a statement that runs
too long, ends in one :class:`StorageError` line naming the host and the timeout, never a hang.

The study-level plumbing (:func:`open_study`, :func:`trial_seeded_sampler`, :func:`storage_label`) is
shared with ``agents.hpo``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import random
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from configs.loader import config_to_dict, dataclass_from_dict
from features.atomic_io import write_directory_atomic, write_text_atomic
from features.market_data import MarketData

from .models import ModelConfig
from .trainer import TrainConfig, train_classifier

MODEL_KIND_ATTR = "model_kind"
HAND_BACK_FILE = "hpo.json"
#: Seconds to wait for a PostgreSQL storage to connect and answer its startup handshake.
DEFAULT_CONNECT_TIMEOUT = 10
#: Seconds a PostgreSQL statement of the storage may run (0: no limit).
DEFAULT_STATEMENT_TIMEOUT = 120
#: libpq and psycopg treat a connect timeout below 2 s as 2 s.
MIN_CONNECT_TIMEOUT = 2


@dataclass(frozen=True)
class HPOConfig:
    """Study settings.

    :param n_trials: trials to add per run (per worker when several share a study).
    :param seed: TPE seed; trial ``n`` draws from a generator seeded by ``(seed, n)``, so a resumed
        study does not replay its first proposals and concurrent workers do not duplicate each other's.
    :param n_startup_trials: random trials before TPE models the space; also the pruner's warm-up
        count of completed trials.
    :param pruner_warmup_epochs: epochs a trial runs before it can be pruned.
    :param epochs: epochs per trial (None: the train config's). The model handed back at the end is
        retrained with the train config's full ``epochs``.
    :param heartbeat_interval: seconds between a running trial's heartbeats in the storage (0: none).
        A trial whose worker died is marked failed by the next worker that starts a trial once its
        heartbeat is older than ``grace_period``.
    :param grace_period: seconds without a heartbeat before a running trial counts as dead (None: twice
        ``heartbeat_interval``).
    :param max_retry: times a dead worker's trial is queued again with the same parameters.
    :param connect_timeout: seconds to wait for a PostgreSQL storage to accept and answer a connection
        (>= 2; the whole startup handshake, so a server that accepts and stays silent fails too).
    :param statement_timeout: seconds one statement on a PostgreSQL storage may run (0: no limit).
    """

    n_trials: int = 20
    seed: int = 0
    n_startup_trials: int = 5
    pruner_warmup_epochs: int = 3
    epochs: int | None = None
    heartbeat_interval: int = 60
    grace_period: int | None = None
    max_retry: int = 1
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT
    statement_timeout: int = DEFAULT_STATEMENT_TIMEOUT

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise ValueError(f"n_trials={self.n_trials} must be >= 1")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"hpo epochs={self.epochs} must be >= 1")
        check_study_settings(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "hpo config") -> "HPOConfig":
        """Build from a mapping; unknown keys raise ``ValueError`` naming them."""
        return dataclass_from_dict(cls, dict(data or {}), where)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def check_study_settings(config: Any) -> None:
    """``ValueError`` for negative heartbeat, grace period, retry counts or storage timeouts (shared with
    ``agents.hpo``)."""
    if config.heartbeat_interval < 0:
        raise ValueError(f"heartbeat_interval={config.heartbeat_interval} must be >= 0 (0: no heartbeat)")
    if config.grace_period is not None and config.grace_period < 1:
        raise ValueError(f"grace_period={config.grace_period} must be >= 1 second (or null)")
    if config.max_retry < 0:
        raise ValueError(f"max_retry={config.max_retry} must be >= 0")
    if config.n_startup_trials < 0:
        raise ValueError(f"n_startup_trials={config.n_startup_trials} must be >= 0")
    check_storage_timeouts(config.connect_timeout, config.statement_timeout)


def check_storage_timeouts(connect_timeout: int, statement_timeout: int) -> None:
    """``ValueError`` for a connect timeout under 2 s (the driver would raise it silently) or a negative
    statement timeout.

    :param connect_timeout: seconds (hpo ``connect_timeout``, ``--connect-timeout``).
    :param statement_timeout: seconds, 0 for no limit (hpo ``statement_timeout``, ``--statement-timeout``).
    """
    if connect_timeout < MIN_CONNECT_TIMEOUT:
        raise ValueError(f"connect_timeout={connect_timeout} must be >= {MIN_CONNECT_TIMEOUT} seconds (the "
                         f"PostgreSQL driver waits at least {MIN_CONNECT_TIMEOUT} s)")
    if statement_timeout < 0:
        raise ValueError(f"statement_timeout={statement_timeout} must be >= 0 seconds (0: no limit)")


# ----------------------------------------------------------------------------------------------------
# Studies shared by workers


def trial_seeded_sampler(seed: int, n_startup_trials: int) -> Any:
    """TPE whose random draws for trial ``n`` come from a generator seeded by ``(seed, n)``.

    One TPE sampler seeded once gives two workers that start together the same proposals, and a
    resumed study its first ones again. Seeding by trial number (unique across workers) avoids both,
    and a study run in one go or resumed in parts proposes the same parameters for the same history.
    TPE's ``constant_liar`` counts running trials (other workers') as bad, so concurrent workers
    spread out instead of piling on one region.

    :param seed: the study seed.
    :param n_startup_trials: random trials before TPE models the space.
    :return: an ``optuna.samplers.BaseSampler``.
    """
    return _sampler_class()(seed, n_startup_trials)


@functools.lru_cache(maxsize=None)
def _sampler_class() -> type:
    import optuna  # imported on use: optuna is slow to import and only the searches need it

    class TrialSeededSampler(optuna.samplers.BaseSampler):
        def __init__(self, seed: int, n_startup_trials: int) -> None:
            self._seed, self._n_startup_trials = seed, n_startup_trials
            self._by_trial: dict[int, optuna.samplers.TPESampler] = {}

        def _tpe(self, trial: Any) -> optuna.samplers.TPESampler:
            sampler = self._by_trial.get(trial.number)
            if sampler is None:
                trial_seed = int(np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    sampler = optuna.samplers.TPESampler(seed=trial_seed, n_startup_trials=self._n_startup_trials,
                                                         constant_liar=True)
                self._by_trial[trial.number] = sampler
            return sampler

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return self._tpe(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
            return self._tpe(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
            return self._tpe(trial).sample_independent(study, trial, name, distribution)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._tpe(trial).before_trial(study, trial)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            sampler = self._by_trial.pop(trial.number, None)
            if sampler is not None:
                sampler.after_trial(study, trial, state, values)

    return TrialSeededSampler


def storage_label(storage: str) -> str:
    """``storage`` with any password masked, for messages and files."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: show it as given (it will fail later with a reason)
        return storage


class StorageError(ValueError):
    """The Optuna storage cannot be opened or stopped answering: one line naming it (password masked)."""


def _is_postgres(storage: str) -> bool:
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage).get_backend_name() == "postgresql"
    except Exception:  # not a URL: RDBStorage says so when it opens it
        return False


_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def storage_engine_kwargs(storage: str, connect_timeout: int, statement_timeout: int) -> dict[str, Any]:
    """SQLAlchemy ``create_engine`` arguments that bound how long a PostgreSQL storage may keep us waiting.

    ``connect_timeout`` bounds the connection and its whole startup handshake (psycopg enforces it on
    the client, so a server that accepts and never answers fails too); ``statement_timeout`` is sent as
    ``options=-c statement_timeout=<ms>`` (kept after any ``options`` of the URL); TCP keepalives notice a
    server that vanishes in the middle of a session. A URL that sets either
    itself is refused: the flags and config keys are the one place for them. Other databases get none.

    :param storage: the storage URL.
    :param connect_timeout: seconds (>= 2).
    :param statement_timeout: seconds (0: no limit).
    :return: ``{"connect_args": {...}}`` for PostgreSQL, else ``{}``.
    """
    check_storage_timeouts(connect_timeout, statement_timeout)
    if not _is_postgres(storage):
        return {}
    from sqlalchemy.engine import make_url

    query = make_url(storage).query
    url_options = query.get("options", "")
    url_options = " ".join(url_options) if isinstance(url_options, tuple) else url_options
    for key, clash in (("connect_timeout", "connect_timeout" in query),
                       ("statement_timeout", "statement_timeout" in url_options)):
        if clash:
            raise StorageError(f"storage URL {storage_label(storage)} sets {key} itself — remove it from the URL "
                               f"and pass --{key.replace('_', '-')} (or hpo.{key} in the config)")
    options = f"{url_options} -c statement_timeout={statement_timeout * 1000}".strip()
    # TCP keepalives: a server that vanishes mid-session (no RST) is noticed in ~25 s, not the OS's hours
    return {"connect_args": {"connect_timeout": connect_timeout, "options": options, **_KEEPALIVES}}


def _storage_host(storage: str) -> str:
    """``host:port`` of a storage URL (``localhost`` when none is given), for messages."""
    try:
        from sqlalchemy.engine import make_url

        url = make_url(storage)
    except Exception:
        return "?"
    host = url.host or url.query.get("host") or "localhost"
    return f"{host}:{url.port}" if url.port else str(host)


def storage_error(storage: str, error: BaseException, connect_timeout: int, statement_timeout: int,
                  doing: str = "cannot open") -> StorageError:
    """The one-line :class:`StorageError` for a database ``error`` of ``storage`` (password masked).

    A connect or statement timeout is named as such with its length and the setting that changes it.

    :param storage: the storage URL.
    :param error: the SQLAlchemy error (its driver error is in ``.orig``).
    :param connect_timeout: the connect timeout in force (seconds).
    :param statement_timeout: the statement timeout in force (seconds).
    :param doing: what failed, in words (``"cannot open"``, ``"cannot use"``).
    """
    orig = getattr(error, "orig", None) or error
    names = {cls.__name__ for cls in type(orig).__mro__}
    where = f"Optuna storage {storage_label(storage)}"
    host = _storage_host(storage)
    if "ConnectionTimeout" in names:
        return StorageError(
            f"{doing} {where}: host {host} did not answer within the {connect_timeout} s connect timeout — check "
            f"that the database server runs and is reachable, or raise --connect-timeout (hpo.connect_timeout)")
    if "QueryCanceled" in names and "statement timeout" in str(orig):
        return StorageError(
            f"{doing} {where}: a statement on host {host} ran past the {statement_timeout} s statement timeout — "
            f"check the database server's load and locks, or raise --statement-timeout (hpo.statement_timeout)")
    reason = " ".join(str(orig).split())[:300]
    return StorageError(f"{doing} {where}: {reason} — check the URL, that the database server runs and accepts "
                        f"this user, and that the database exists")


@contextlib.contextmanager
def storage_errors(storage: str, connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
                   statement_timeout: int = DEFAULT_STATEMENT_TIMEOUT) -> Iterator[None]:
    """Turn a database error of ``storage`` inside the block into a one-line :class:`StorageError`.

    :param storage: the storage URL.
    :param connect_timeout: the connect timeout in force (seconds), for the message.
    :param statement_timeout: the statement timeout in force (seconds), for the message.
    """
    try:
        yield
    except Exception as error:
        database = database_error(error)
        if database is None or not hasattr(database, "orig"):  # only the driver's: connection, timeout, server
            raise
        raise storage_error(storage, database, connect_timeout, statement_timeout, doing="cannot use") from error


def database_error(error: BaseException) -> Any:
    """The SQLAlchemy error behind ``error`` (itself, or the cause of Optuna's ``StorageInternalError``,
    which wraps what fails in a commit), or None.

    :param error: the exception raised by a storage call.
    """
    import optuna.exceptions
    import sqlalchemy.exc

    if isinstance(error, optuna.exceptions.StorageInternalError):
        error = error.__cause__
    return error if isinstance(error, sqlalchemy.exc.SQLAlchemyError) else None


def check_storage(storage: str, connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
                  statement_timeout: int = DEFAULT_STATEMENT_TIMEOUT) -> None:
    """Connect to a database server storage once, so an unreachable one fails before any slow work.

    SQLite files (``sqlite:///``) are not touched (opening one would create it).

    :param storage: the storage URL.
    :param connect_timeout: seconds (>= 2).
    :param statement_timeout: seconds (0: no limit).
    :raises StorageError: one line naming the host and, for a timeout, its length.
    """
    engine_kwargs = storage_engine_kwargs(storage, connect_timeout, statement_timeout)
    if storage.startswith("sqlite:"):
        return
    import sqlalchemy
    import sqlalchemy.exc
    from sqlalchemy.pool import NullPool

    try:
        engine = sqlalchemy.create_engine(storage, poolclass=NullPool, **engine_kwargs)
    except ImportError as error:
        raise _no_driver(storage, error) from error
    except sqlalchemy.exc.ArgumentError as error:
        raise StorageError(f"--storage {storage_label(storage)} is not a database URL ({error}) — pass e.g. "
                           f"sqlite:///runs/hpo.db or postgresql://USER:PASSWORD@HOST/DB") from error
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.DBAPIError as error:
        raise storage_error(storage, error, connect_timeout, statement_timeout) from error
    finally:
        engine.dispose()


def _no_driver(storage: str, error: ImportError) -> StorageError:
    return StorageError(f"no database driver for storage {storage_label(storage)} ({error.__cause__ or error}) — "
                        f"install it: pip install -e '.[postgres]' for postgresql://")


def _is_race(error: BaseException) -> bool:
    """Whether ``error`` is what two workers creating the same fresh storage at once run into."""
    import sqlalchemy.exc

    if isinstance(error, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)):
        return True  # duplicate tables/types/rows of the schema another worker is creating
    text = str(error).lower()
    return isinstance(error, sqlalchemy.exc.OperationalError) and ("locked" in text or "already exists" in text)


def open_study(
    storage: str,
    study_name: str,
    *,
    pruner: Any,
    seed: int,
    n_startup_trials: int,
    heartbeat_interval: int = 60,
    grace_period: int | None = None,
    max_retry: int = 1,
    direction: str = "maximize",
    attempts: int = 8,
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
    statement_timeout: int = DEFAULT_STATEMENT_TIMEOUT,
) -> Any:
    """Create or load ``study_name`` in ``storage``: safe when several workers start at the same moment.

    Optuna creates its tables on first use; two workers doing that at once on a fresh PostgreSQL
    database collide (a duplicate-type error). Opening is retried with a random back-off on such
    collisions, never on other errors (a wrong host or password fails at once). A PostgreSQL server
    that does not answer within ``connect_timeout`` fails with one line naming its host and the timeout.

    :param storage: an Optuna storage URL (``sqlite:///...``, ``postgresql://...``).
    :param study_name: the study.
    :param pruner: the study's pruner.
    :param seed: the :func:`trial_seeded_sampler` seed.
    :param n_startup_trials: random trials before TPE.
    :param heartbeat_interval: seconds between heartbeats of a running trial (0: none).
    :param grace_period: seconds without heartbeat before a running trial is failed (None: 2 intervals).
    :param max_retry: times a failed-by-heartbeat trial is queued again with the same parameters.
    :param direction: ``"maximize"`` or ``"minimize"``.
    :param attempts: tries before a collision is given up on.
    :param connect_timeout: seconds to wait for a PostgreSQL server to connect and answer (>= 2).
    :param statement_timeout: seconds one PostgreSQL statement may run (0: no limit).
    :raises StorageError: the storage cannot be opened (one line, password masked).
    """
    import optuna

    engine_kwargs = storage_engine_kwargs(storage, connect_timeout, statement_timeout)
    if storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    heartbeat: dict[str, Any] = {}
    if heartbeat_interval > 0:
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        key = "heartbeat_stale_trial_callback"
        if retry is None:  # Optuna < 4.9
            retry, key = optuna.storages.RetryFailedTrialCallback, "failed_trial_callback"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period,
                         key: retry(max_retry=max_retry)}
    sampler = trial_seeded_sampler(seed, n_startup_trials)
    rng = random.Random()
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs, **heartbeat)
            return optuna.create_study(storage=rdb, study_name=study_name, direction=direction,
                                       load_if_exists=True, pruner=pruner, sampler=sampler)
        except ImportError as error:
            raise _no_driver(storage, error) from error
        except Exception as error:
            database = database_error(error)
            if database is None:
                raise
            if not _is_race(database) or attempt == attempts - 1:
                raise storage_error(storage, database, connect_timeout, statement_timeout) from error
            time.sleep(rng.uniform(0.05, 0.3) * (attempt + 1))  # another worker is creating the schema
    raise AssertionError("unreachable")  # pragma: no cover


class _NoInterruptTraceback(logging.Filter):
    """Drops the traceback Optuna logs with a trial stopped by Ctrl-C or SIGTERM (its one line stays)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.exc_info, record.exc_text = None, None
        return True


@contextlib.contextmanager
def interrupted_trials_in_one_line() -> Iterator[None]:
    """While the block runs (``study.optimize``), a trial stopped by Ctrl-C or SIGTERM is logged without
    its traceback: the entry point then ends with its own one line (shared with ``agents.hpo``)."""
    logger = logging.getLogger("optuna.study._optimize")  # where Optuna logs a failed trial
    quiet = _NoInterruptTraceback()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def fail_dead_trials(study: Any) -> None:
    """Mark running trials whose worker stopped sending heartbeats as failed (and queue their retry).

    Optuna does this before each trial too; doing it first lets a resumed study clean up at once.
    """
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a no-op without heartbeats


def remove_failed_trial_leftovers(study: Any, trial_root: Path) -> list[str]:
    """Delete the half-written ``.trial_<n>.tmp*`` folders of failed trials (a killed worker's).

    Running trials' folders are left alone: another worker may be writing them.
    """
    import optuna

    failed = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))}
    removed = []
    for path in trial_root.glob(".trial_*.tmp*"):
        number = path.name[len(".trial_"):].split(".", 1)[0]
        if number.isdigit() and int(number) in failed:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def worker_label() -> str:
    """``host:pid`` of this process: recorded on each trial, so a shared study shows who ran what."""
    return f"{socket.gethostname()}:{os.getpid()}"


# ----------------------------------------------------------------------------------------------------
# The supervised search


def suggest_configs(trial: Any, base_model: ModelConfig, base_train: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    """Sample a model and train config for ``base_model.kind`` from its search space.

    Shared: lr, weight decay, batch size, dropout, asset embedding size, focal gamma (focal loss only).
    MLP: depth and width. LSTM/GRU: state size, layers, pooling. CNN-LSTM: convolutions, kernel, LSTM.

    :param trial: an ``optuna.Trial``.
    :param base_model: the model defaults (its kind picks the space).
    :param base_train: the train defaults.
    """
    train_changes: dict[str, Any] = {
        "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-4, 1e-1, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [128, 256, 512]),
    }
    if base_train.loss == "focal":
        train_changes["focal_gamma"] = trial.suggest_float("focal_gamma", 0.0, 3.0)
    model_changes: dict[str, Any] = {
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "asset_embedding_dim": trial.suggest_categorical("asset_embedding_dim", [0, 4, 8]),
    }
    kind = base_model.kind
    if kind == "mlp":
        width, depth = trial.suggest_categorical("width", [64, 128, 256]), trial.suggest_int("layers", 1, 3)
        model_changes["hidden_sizes"] = tuple(max(width // 2**i, 16) for i in range(depth))
    else:
        model_changes["hidden_size"] = trial.suggest_categorical("hidden_size", [32, 64, 128])
        model_changes["num_layers"] = trial.suggest_int("num_layers", 1, 2)
        model_changes["pooling"] = trial.suggest_categorical("pooling", ["attention", "last"])
    if kind == "cnn_lstm":
        channels, n_convs = trial.suggest_categorical("conv_channels", [16, 32, 64]), trial.suggest_int("n_convs", 1, 2)
        model_changes["conv_channels"] = (channels,) * n_convs
        model_changes["kernel_size"] = trial.suggest_categorical("kernel_size", [3, 5])
    return dataclasses.replace(base_model, **model_changes), dataclasses.replace(base_train, **train_changes)


def prepare_trial_root(study: Any, study_name: str, storage: str, runs_dir: str | Path, overwrite: bool) -> Path:
    """The study's trial folder root, checked and tidied before a worker runs trials.

    Trial folders the study does not know are refused unless ``overwrite``; trials of a dead worker are
    marked failed and their half-written folders removed.

    :param study: the Optuna study.
    :param study_name: its name.
    :param storage: its storage URL (shown with the password masked).
    :param runs_dir: root of run outputs.
    :param overwrite: replace unknown trial folders as their new trials end.
    """
    trial_root = Path(runs_dir) / "hpo" / study_name
    foreign = unknown_trial_dirs(study, trial_root)
    if foreign and not overwrite:
        raise FileExistsError(
            f"{trial_root} holds trial folder(s) {foreign} that study {study_name!r} in {storage_label(storage)} does "
            f"not know (from a deleted study of that name?) — pass --overwrite to replace each as its new trial "
            f"ends, or choose another --study-name"
        )
    fail_dead_trials(study)
    remove_failed_trial_leftovers(study, trial_root)
    return trial_root


def run_study(
    data: MarketData,
    base_model: ModelConfig,
    *,
    storage: str,
    study_name: str | None = None,
    base_train: TrainConfig | None = None,
    hpo: HPOConfig | None = None,
    runs_dir: str | Path = "runs",
    progress: bool = False,
    overwrite: bool = False,
) -> Any:
    """Create or resume a study and add ``hpo.n_trials`` trials; returns the ``optuna.Study``.

    Each trial maximises the best validation F1 of :func:`train_classifier` and logs TensorBoard
    scalars under ``runs_dir/hpo/<study>/trial_<n>/``, written in a temporary folder beside it and moved
    into place when the trial ends (completed or pruned; a failed trial leaves nothing). Trial folders
    that the study does not know (left by a deleted study of the same name) are an error before any
    training, unless ``overwrite``: then each is replaced when the new trial of that number ends.
    Several processes may run this on one storage and study at once (see the module docstring).

    :param data: the dataset.
    :param base_model: model defaults; its ``kind`` picks the search space.
    :param storage: an Optuna storage URL (``sqlite:///runs/hpo.db``, ``postgresql://...``).
    :param study_name: the study; None gives ``sup_<kind>``.
    :param base_train: train defaults (None: :class:`TrainConfig` defaults).
    :param hpo: study settings.
    :param runs_dir: root of the TensorBoard logs.
    :param progress: show tqdm bars inside each trial.
    :param overwrite: replace trial folders the study does not know instead of refusing to start.
    :raises StorageError: the storage cannot be opened, or a statement on it timed out (one line).
    """
    import optuna

    hpo = hpo or HPOConfig()
    base_train = base_train or TrainConfig()
    if hpo.epochs is not None:
        base_train = dataclasses.replace(base_train, epochs=hpo.epochs)
    kind = base_model.kind
    study_name = study_name or f"sup_{kind}"
    pruner = optuna.pruners.MedianPruner(n_startup_trials=hpo.n_startup_trials, n_warmup_steps=hpo.pruner_warmup_epochs)
    study = open_study(storage, study_name, pruner=pruner, seed=hpo.seed, n_startup_trials=hpo.n_startup_trials,
                       heartbeat_interval=hpo.heartbeat_interval, grace_period=hpo.grace_period,
                       max_retry=hpo.max_retry, connect_timeout=hpo.connect_timeout,
                       statement_timeout=hpo.statement_timeout)
    with storage_errors(storage, hpo.connect_timeout, hpo.statement_timeout):
        recorded = study.user_attrs.get(MODEL_KIND_ATTR)
        if recorded is not None and recorded != kind:
            raise ValueError(
                f"study {study_name!r} searches model {recorded!r}; got --model {kind!r} (use another study name)"
            )
        if recorded is None:
            study.set_user_attr(MODEL_KIND_ATTR, kind)
        trial_root = prepare_trial_root(study, study_name, storage, runs_dir, overwrite)
        worker = worker_label()

        def objective(trial: optuna.Trial) -> float:
            model_config, train_config = suggest_configs(trial, base_model, base_train)
            run_dir = trial_root / f"trial_{trial.number}"
            trial.set_user_attr("run_dir", str(run_dir))
            trial.set_user_attr("worker", worker)
            outcome: dict[str, Any] = {}

            def fill(directory: Path) -> None:
                try:
                    outcome["result"] = train_classifier(data, model_config, train_config, directory, trial=trial,
                                                         progress=progress)
                except optuna.TrialPruned as pruned:  # a pruned trial's curves are kept too
                    outcome["pruned"] = pruned

            write_directory_atomic(run_dir, fill)
            if "pruned" in outcome:
                raise outcome["pruned"]
            result = outcome["result"]
            trial.set_user_attr("best_epoch", result.best_epoch)
            trial.set_user_attr("threshold", result.threshold)
            trial.set_user_attr("train_seconds", round(result.train_seconds, 3))
            trial.set_user_attr("model_config", result.model_config.to_dict())
            trial.set_user_attr("train_config", train_config.to_dict())
            return result.best_val_f1

        with interrupted_trials_in_one_line():
            study.optimize(objective, n_trials=hpo.n_trials)
        return study


def unknown_trial_dirs(study: Any, trial_root: Path) -> list[str]:
    """Names of ``trial_<n>`` folders under ``trial_root`` with no trial ``n`` in ``study``."""
    found = [p for p in trial_root.glob("trial_*") if p.is_dir() and p.name[len("trial_"):].isdigit()]
    known = len(study.get_trials(deepcopy=False))  # read after listing: a folder's trial is already stored
    return sorted((p.name for p in found if int(p.name[len("trial_"):]) >= known), key=lambda n: int(n[6:]))


def best_trial(study: Any) -> Any:
    """The study's best completed trial, or None when none has completed."""
    import optuna

    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return None
    return study.best_trial


def describe_best(study: Any, score: str = "validation F1") -> str:
    """A few lines on the study's best trial (value, params, where its logs are).

    :param study: the study.
    :param score: what the trial value is, in words.
    """
    import optuna

    states = [t.state for t in study.get_trials(deepcopy=False)]
    counts = {s.name.lower(): states.count(s) for s in optuna.trial.TrialState if states.count(s)}
    header = f"study {study.study_name!r}: {len(states)} trial(s) {counts}"
    best = best_trial(study)
    if best is None:
        return header + "\nno completed trial yet"
    lines = [header, f"best trial #{best.number}: {score} {best.value:.4f}"]
    lines += [f"  {k} = {v}" for k, v in sorted(best.params.items())]
    for key in ("best_epoch", "threshold", "fallback", "run_dir", "worker"):
        if key in best.user_attrs:
            lines.append(f"  ({key}: {best.user_attrs[key]})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Handing back the best model


def hand_back_record(study: Any, trial: Any, storage: str, **extra: Any) -> dict[str, Any]:
    """What ``hpo.json`` of a hand-back says: the study, storage (password masked), trial and value."""
    return {"study": study.study_name, "storage": storage_label(storage), "trial": trial.number,
            "trial_value": trial.value, "params": dict(trial.params), **extra}


def read_hand_back(folder: str | Path) -> dict[str, Any] | None:
    """The ``hpo.json`` record of a hand-back folder, or None when ``folder`` is not one."""
    import json

    path = Path(folder) / HAND_BACK_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def retrain_trial(
    study: Any,
    trial: Any,
    data: MarketData,
    run_dir: str | Path,
    *,
    storage: str,
    full_train: TrainConfig,
    evaluation: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Retrain a trial's model and train settings with the full budget and save it as a run.

    The trial trained for ``hpo.epochs`` (and may have run on another machine); its settings are
    retrained here for ``full_train.epochs`` epochs with early stopping on validation F1, as
    ``experiments.train_supervised`` does: ``run_dir`` gets ``model/`` (the bundle), ``metrics.json``
    (threshold chosen on validation, test scored once), TensorBoard events, and ``hpo.json`` naming the
    study and trial.

    :param study: the study.
    :param trial: the trial to retrain (usually ``best_trial(study)``).
    :param data: the dataset the study searched on.
    :param run_dir: the (new, empty) run folder.
    :param storage: the storage URL (recorded with its password masked).
    :param full_train: the full-budget train config (its ``epochs`` and ``seed`` are used).
    :param evaluation: ``supervised.experiment.EvaluationConfig`` (None: defaults).
    :param progress: show tqdm bars.
    :return: ``hpo.json``'s record, with the retrained model's validation F1.
    """
    import json

    from .experiment import run_supervised

    best = trial
    settings = best.user_attrs
    if "model_config" not in settings or "train_config" not in settings:
        raise ValueError(f"best trial #{best.number} of study {study.study_name!r} records no model settings "
                         f"(added by hand?) — nothing to retrain")
    model_config = ModelConfig.from_dict(settings["model_config"], f"trial {best.number} model_config")
    trial_train = TrainConfig.from_dict(settings["train_config"], f"trial {best.number} train_config")
    train = dataclasses.replace(trial_train, epochs=full_train.epochs, seed=full_train.seed)
    metrics = run_supervised(data, model_config, train, run_dir, evaluation=evaluation, progress=progress)
    record = hand_back_record(study, best, storage, handed_back="retrained", epochs=train.epochs,
                              validation_f1=metrics["training"]["best_val_f1"], train_config=train.to_dict())
    write_text_atomic(Path(run_dir) / HAND_BACK_FILE, json.dumps(record, indent=2) + "\n")
    return record

