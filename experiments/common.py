"""Small pieces every entry point shares: the command-line wrapper and parser, dataset selection, run
folders that are built aside and swapped into place whole, path resolution, seeding.

Run folders. Every entry point writes into a temporary folder beside its target
(``runs/.<name>.tmp-XXXX``) and renames it to ``runs/<name>`` only when everything is written, so a
crash or Ctrl-C leaves no half-written run. An existing run is refused unless ``--overwrite``; with it
the old run stays untouched until the new one is complete, then the two are swapped. A lock file
``runs/.<name>.lock`` (holding the writer's pid) keeps two processes off the same name; default names
``<prefix>_<YYYYmmdd-HHMMSS>`` get ``-2``, ``-3``, ... when taken, so they never collide.

Errors. :func:`cli` runs an entry point's ``main``: a user mistake (bad path, bad config, existing
run, ...) ends in one line ``error: <what> — <what to do>`` on stderr and exit code 2; ``--debug``
shows the traceback instead. Ctrl-C (exit code 130) and SIGTERM (exit code 143, e.g. ``kill`` or a job
scheduler stopping the run) unwind the same way: the unfinished run's temporary folder and lock are
removed and an older run of the same name is left as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import fcntl
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from configs.loader import ConfigError, load_yaml_config
from features.alpaca_source import AlpacaDataError
from features.dataset import DatasetConfig, build_dataset, load_dataset
from features.market_data import MarketData
from features.universe import load_universe

TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"
RL_AGENT_FILE = "agent.json"  # as in agents.policy_loader
BUNDLE_FILE = "bundle.json"
AGENT_DIR = "best"
BUNDLE_DIR = "model"
DATASET_MANIFEST = "manifest.json"
DATASET_DIR = "dataset"  # the pipeline's run folder keeps its dataset here

# ----------------------------------------------------------------------------------------------------
# Errors and the command-line wrapper


class UsageError(Exception):
    """A user mistake with a remedy: printed as ``error: <what> — <fix>`` by :func:`cli`.

    :param what: what is wrong.
    :param fix: what to do instead.
    """

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(f"{what} — {fix}")
        self.what, self.fix = what, fix


class RunExistsError(UsageError, FileExistsError):
    """The run folder exists (or is being written) and ``--overwrite`` was not given."""


class PathError(UsageError, FileNotFoundError):
    """A path on the command line that is missing or is not what the flag needs."""


#: Exceptions that mean "the input is wrong", not "the code is wrong": one line, exit code 2.
#: KeyError, TypeError, AttributeError, IndexError... are left to show a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError,
    ConfigError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    AlpacaDataError,  # the server refused or could not be reached: its message says what to do
)

_DEFAULT_FIXES: tuple[tuple[type[BaseException], str], ...] = (
    (ConfigError, "fix that entry of the config file (configs/*.yaml show the valid keys)"),
    (FileExistsError, "pass --overwrite to replace it, or choose another name"),
    (FileNotFoundError, "check the path (see --help)"),
    (NotADirectoryError, "pass a folder (see --help)"),
    (IsADirectoryError, "pass a file (see --help)"),
    (ValueError, "fix the argument or config value (see --help; --debug shows the traceback)"),
)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while an entry point ran (see :func:`sigterm_raises`).

    A ``KeyboardInterrupt``, so whatever cleans up after Ctrl-C (run folders, Optuna marking the trial
    failed, worker pools) does the same for it.

    :param signum: the signal's number.
    """

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


#: Seconds after a dropped :class:`Terminated` before SIGTERM is sent again (see :class:`_SigtermRaiser`).
REDELIVER_DELAY_S = 0.02


class _SigtermRaiser:
    """The SIGTERM handler of :func:`sigterm_raises`, and the ``sys.unraisablehook`` that keeps a
    :class:`Terminated` that Python dropped from being lost.

    Python runs a signal handler between any two bytecodes of the main thread, also inside a ``__del__``
    method or a weakref callback (garbage collection; torch's and SQLAlchemy's ``WeakKeyDictionary``
    clean-ups), where an exception is dropped ("Exception ignored in ..."). The handler has put back the
    default action by then, so the run would go on as if no SIGTERM had come. The hook sees the dropped
    :class:`Terminated`, puts the handler back and has SIGTERM sent again a moment later from another
    thread, once the callback has returned (if it lands in one again, this repeats).

    :param previous_hook: the ``sys.unraisablehook`` in force before; other reports go on to it.
    """

    def __init__(self, previous_hook: Callable[[Any], Any]) -> None:
        self.previous_hook = previous_hook
        self.in_hook = False

    def handle(self, signum: int, frame: Any) -> None:
        """The signal handler: raise :class:`Terminated` (a second SIGTERM then kills at once)."""
        if self.in_hook:  # never raise inside the hook: Python would drop the exception for good
            self._send_later(signum)
            return
        signal.signal(signum, signal.SIG_DFL)
        raise Terminated(signum)

    def unraisable(self, report: Any) -> None:
        """``sys.unraisablehook``: a dropped :class:`Terminated` is delivered again, the rest reported."""
        dropped = report.exc_value
        if not isinstance(dropped, Terminated) or threading.current_thread() is not threading.main_thread():
            self.previous_hook(report)
            return
        self.in_hook = True
        try:
            signal.signal(dropped.signum, self.handle)
            self._send_later(dropped.signum)
        finally:
            self.in_hook = False

    @staticmethod
    def _send_later(signum: int) -> None:
        timer = threading.Timer(REDELIVER_DELAY_S, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` in the main thread instead of killing the
    process at once, so ``finally`` blocks and the run-folder cleanup run. A second SIGTERM (during that
    cleanup) kills at once. The previous handler is put back after the block. Outside the main thread
    (where no handler can be set) the block runs unchanged. A :class:`Terminated` that Python dropped
    (raised inside a ``__del__`` or weakref callback) is raised again (see :class:`_SigtermRaiser`).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raiser = _SigtermRaiser(sys.unraisablehook)
    previous = signal.signal(signal.SIGTERM, raiser.handle)
    sys.unraisablehook = raiser.unraisable
    try:
        yield
    finally:
        sys.unraisablehook = raiser.previous_hook
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def error_line(error: BaseException) -> str:
    """``error: <what> — <what to do instead>`` on one line."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, FileNotFoundError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    if " — " not in text:
        fix = next((fix for kind, fix in _DEFAULT_FIXES if isinstance(error, kind)), "see --help")
        text = f"{text} — {fix}"
    return f"error: {text}"


def run_cli(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` and return the process exit code.

    A user error (:data:`USER_ERRORS`) prints one line on stderr and returns 2; Ctrl-C prints one line
    and returns 130, SIGTERM one line and 143 (the unfinished run folder and its lock are already removed).
    With ``--debug`` in ``argv`` these propagate with their traceback. Other exceptions (bugs) always
    propagate.

    :param main: the entry point's ``main``, taking the argument list.
    :param argv: the arguments; None: ``sys.argv[1:]``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        with sigterm_raises():
            main(argv)
    except KeyboardInterrupt as stop:
        if debug:
            raise
        how = str(stop) if isinstance(stop, Terminated) else "interrupted"
        print(f"error: {how} — nothing of the unfinished run was kept (an older run of the same name is "
              "untouched); run it again to finish", file=sys.stderr)
        return 128 + stop.signum if isinstance(stop, Terminated) else 130
    except USER_ERRORS as error:
        if debug:
            raise
        print(error_line(error), file=sys.stderr)
        return 2
    except SystemExit as done:  # argparse: --help (0) or a bad argument (2, its one line already printed)
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    return 0


def cli(main: Callable[[list[str]], Any]) -> None:
    """``sys.exit(run_cli(main))``: what every entry point's ``if __name__ == "__main__"`` calls."""
    sys.exit(run_cli(main))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` keeps the docstring's layout and shows every option's default (appended as
    ``(default: X)`` unless the help already says what the default does)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or (action.help and "default" in action.help):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (``error: ... — see --help``), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} — see {self.prog} --help\n")


def make_parser(prog: str, description: str | None) -> ArgumentParser:
    """The parser of an entry point: defaults in ``--help``, one-line errors, and ``--debug``.

    :param prog: e.g. ``"python -m experiments.backtest"``.
    :param description: the module docstring (its layout is kept).
    """
    parser = ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


# ----------------------------------------------------------------------------------------------------
# Datasets and configs


def positive_int(text: str) -> int:
    """An argparse ``type`` for a whole number >= 1 (``--max-cycles 0`` is a usage error, not a run).

    :param text: the argument as typed.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dataset`` (a saved dataset directory) and ``--config`` (YAML with a ``dataset:`` section)."""
    parser.add_argument("--dataset", type=Path, default=None,
                        help="saved dataset directory (from experiments.build_dataset); default: build from --config")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML config; its 'dataset:' section defines the data (default: embedded AAPL/IBM/MSFT/GOOG daily)")


def load_dataset_config(path: str | Path | None, sections: Iterable[str] | None = None) -> DatasetConfig:
    """The ``dataset:`` section of YAML ``path`` (None: the defaults); a section outside ``sections`` is an error.

    :param path: the YAML file.
    :param sections: the file's valid top-level sections (None: any section of the configs in configs/).
    """
    if path is None:
        return DatasetConfig()
    return load_yaml_config(DatasetConfig, existing_file(path, "--config"), "dataset", sections=sections)


def dataset_from_args(args: argparse.Namespace, sections: Iterable[str] | None = None) -> MarketData:
    """Load ``--dataset`` if given, else build the dataset of ``--config`` (defaults: embedded data).

    :param args: parsed arguments with ``dataset`` and ``config``.
    :param sections: the valid top-level sections of ``--config``.
    """
    if getattr(args, "dataset", None) is not None:
        return load_dataset(resolve_dataset_path(args.dataset))
    return build_dataset(load_dataset_config(getattr(args, "config", None), sections))


def resolve_dataset_path(path: str | Path, flag: str = "--dataset") -> Path:
    """A saved dataset folder: ``path`` itself (holding ``manifest.json``) or a run's ``dataset/`` in it
    (``runs/pipeline_x`` -> ``runs/pipeline_x/dataset``)."""
    path = existing_dir(path, flag, "a dataset folder written by experiments.build_dataset")
    if (path / DATASET_MANIFEST).exists():
        return path
    if (path / DATASET_DIR / DATASET_MANIFEST).exists():
        return path / DATASET_DIR
    raise PathError(f"{flag} {path} holds no {DATASET_MANIFEST}",
                    "pass a dataset folder written by experiments.build_dataset (e.g. runs/datasets/default)")


def add_universe_arguments(parser: argparse.ArgumentParser, symbols_flag: str = "--symbols") -> None:
    """``--universe PATH`` (a universe YAML, see features/universe.py) and ``--categories A B ...``.

    :param parser: the entry point's parser.
    :param symbols_flag: the entry point's own symbol-list flag, named in the help (the two exclude each other).
    """
    parser.add_argument("--universe", type=Path, default=None, metavar="PATH",
                        help=f"universe YAML of named symbol categories, e.g. configs/universes/seed.yaml "
                             f"(instead of {symbols_flag}; default: not used)")
    parser.add_argument("--categories", nargs="+", default=None, metavar="CATEGORY",
                        help="with --universe: only the symbols of these categories (default: every category)")


def symbols_from_args(args: argparse.Namespace, default: list[str] | None,
                      symbols_flag: str = "--symbols") -> list[str] | None:
    """The symbols asked for: ``symbols_flag``'s list, else ``--universe`` (its ``--categories``), else ``default``.

    A universe's symbols are printed on one line with their count and categories. Both flags together,
    or ``--categories`` without ``--universe``, is a :class:`UsageError`; a wrong universe file or an unknown
    category is a ``features.universe.UniverseError`` (a ``ValueError``: one line).

    :param args: parsed arguments (from a parser given :func:`add_universe_arguments`).
    :param default: what to return when neither is given.
    :param symbols_flag: the entry point's own symbol-list flag (``--symbols``, ``--symbol``).
    """
    given = getattr(args, symbols_flag.lstrip("-").replace("-", "_"), None)
    path, categories = getattr(args, "universe", None), getattr(args, "categories", None)
    if given is not None and path is not None:
        raise UsageError(f"{symbols_flag} and --universe were both given",
                         f"pass either {symbols_flag} A B ... or --universe FILE [--categories ...]")
    if categories is not None and path is None:
        raise UsageError("--categories was given without --universe",
                         "pass --universe FILE (e.g. configs/universes/seed.yaml) with it")
    if path is None:
        return list(given) if given is not None else default
    universe = load_universe(existing_file(path, "--universe"))
    symbols = universe.symbols(categories)
    print(universe.describe(categories))
    return symbols


def portfolio_and_policy(data: MarketData, symbols: list[str] | None, symbols_flag: str, policy: str,
                         rebalance_every: int) -> tuple[Any, Any]:
    """The universe (a :class:`features.Panel` of ``symbols``, default all of ``data``'s) and the portfolio policy
    ``--policy`` names: ``cash``, an allocation fitted on the train split (rebalanced every ``rebalance_every``
    bars; buy_and_hold never) or a saved portfolio agent folder (checked against the universe). Mistakes are one
    :class:`UsageError` (``experiments.backtest --portfolio`` and ``experiments.paper_trade --portfolio``).

    :param symbols_flag: the flag that chose the symbols, for the message.
    """
    from agents.allocation import ALLOCATIONS
    from agents.portfolio_baselines import CashPolicy, fit_allocation_policy
    from features.panel import Panel, PanelError

    names = ("cash",) + tuple(ALLOCATIONS)
    if policy not in names and not Path(policy).is_dir():
        raise UsageError(f"--policy {policy!r} is neither a portfolio allocation nor a folder",
                         f"pass one of {', '.join(names)} or a saved portfolio agent folder")
    if rebalance_every < 1:
        raise UsageError(f"--rebalance-every {rebalance_every} must be >= 1", "bars between rebalances")
    symbols = list(symbols or data.symbols)
    unknown = [s for s in symbols if s not in data.symbols]
    if unknown:
        raise UsageError(f"{symbols_flag} {', '.join(unknown)} is not in the dataset",
                         f"pass two or more of {', '.join(data.symbols)} (or none for all)")
    try:
        panel = Panel.from_market_data(data, symbols)
    except PanelError as error:
        raise UsageError(str(error), "a portfolio needs two or more symbols of one calendar family") from None
    if policy == "cash":
        return panel, CashPolicy(panel.symbols)
    if policy in ALLOCATIONS:
        return panel, fit_allocation_policy(policy, panel, "train", rebalance_every=rebalance_every)
    from agents.portfolio_agent import load_portfolio_agent

    agent = load_portfolio_agent(policy)
    agent.check_panel(panel)
    return panel, agent


def existing_file(path: str | Path, flag: str) -> Path:
    """``path`` if it is a file, else :class:`PathError` saying so."""
    path = Path(path)
    if not path.exists():
        raise PathError(f"{flag} {path} does not exist", f"pass an existing file (see --help for {flag})")
    if path.is_dir():
        raise PathError(f"{flag} {path} is a folder", "pass a YAML file, e.g. configs/ppo.yaml")
    return path


def existing_dir(path: str | Path, flag: str, what: str) -> Path:
    """``path`` if it is a folder, else :class:`PathError` saying what was expected."""
    path = Path(path)
    if not path.exists():
        raise PathError(f"{flag} {path} does not exist", f"pass {what}")
    if not path.is_dir():
        raise PathError(f"{flag} {path} is a file, not a folder", f"pass {what}")
    return path


# ----------------------------------------------------------------------------------------------------
# Saved agents and bundles: accept a run folder where its best/ or model/ is meant


def _candidates(folder: Path) -> list[str]:
    found = sorted(str(p.parent) for p in folder.glob(f"*/{AGENT_DIR}/{RL_AGENT_FILE}"))
    found += sorted(str(p.parent) for p in folder.glob(f"*/{BUNDLE_DIR}/{BUNDLE_FILE}"))
    return found


def resolve_policy_path(spec: str, baselines: Iterable[str] = ()) -> str:
    """A ``--policy`` value as ``agents.policy_loader.load_policy`` wants it.

    A baseline name stays; a saved agent (``agent.json``) or bundle (``bundle.json``) folder stays; a
    run folder becomes its ``best/`` (RL) or ``model/`` (supervised). Anything else is a
    :class:`PathError` saying what to pass.

    :param spec: the ``--policy`` argument.
    :param baselines: the baseline names.
    """
    baselines = list(baselines)
    if spec in baselines:
        return spec
    path = Path(spec)
    if not path.exists():
        raise PathError(f"--policy {spec!r} is neither a baseline nor an existing path",
                        f"pass one of {', '.join(baselines)}, a saved agent runs/<rl>/best or a bundle runs/<sup>/model")
    if path.is_file():
        path = path.parent
    if (path / RL_AGENT_FILE).exists() or (path / BUNDLE_FILE).exists():
        return str(path)
    if (path / AGENT_DIR / RL_AGENT_FILE).exists():
        return str(path / AGENT_DIR)
    if (path / BUNDLE_DIR / BUNDLE_FILE).exists():
        return str(path / BUNDLE_DIR)
    inside = _candidates(path)
    fix = (f"pass one of {', '.join(inside)}" if inside
           else "pass a saved agent runs/<rl>/best or a supervised bundle runs/<sup>/model")
    raise PathError(f"--policy {path} holds no saved agent ({RL_AGENT_FILE}) and no supervised bundle ({BUNDLE_FILE})", fix)


def resolve_bundle_path(spec: str | Path, flag: str = "--pretrained") -> str:
    """A supervised bundle folder: ``spec`` itself or its ``model/`` (a train_supervised run folder).

    :param spec: the argument.
    :param flag: the flag's name, for the error message.
    """
    path = Path(spec)
    if not path.exists():
        raise PathError(f"{flag} {spec} does not exist", "pass a supervised run folder runs/<sup> or its model/ bundle")
    if path.is_file():
        path = path.parent
    if (path / BUNDLE_FILE).exists():
        return str(path)
    if (path / BUNDLE_DIR / BUNDLE_FILE).exists():
        return str(path / BUNDLE_DIR)
    inside = sorted(str(p.parent) for p in path.glob(f"*/{BUNDLE_DIR}/{BUNDLE_FILE}"))
    fix = f"pass one of {', '.join(inside)}" if inside else "pass a bundle written by experiments.train_supervised (runs/<sup>/model)"
    raise PathError(f"{flag} {path} is not a supervised bundle (no {BUNDLE_FILE}, no {BUNDLE_DIR}/{BUNDLE_FILE})", fix)


def policy_label(spec: str) -> str:
    """A folder-name-safe label of a policy: ``runs/ppo_x/best`` -> ``ppo_x-best``,
    ``runs/sup_x/model`` -> ``sup_x-model``, a baseline name -> itself."""
    path = Path(spec)
    if path.exists():
        path = path.resolve()
        label = f"{path.parent.name}-{path.name}" if path.parent.name else path.name
    else:
        label = spec
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "policy"


# ----------------------------------------------------------------------------------------------------
# Run folders


def timestamp() -> str:
    """The local time as ``YYYYmmdd-HHMMSS`` (the one format of every default run name)."""
    return time.strftime(TIMESTAMP_FORMAT)


def check_run_name(name: str) -> str:
    """``name`` if it is a plain folder name (no ``/``, not hidden), else :class:`UsageError`."""
    if not name or Path(name).name != name or name in (".", "..") or name.startswith("."):
        raise UsageError(f"run name {name!r} is not a plain folder name",
                         "pass a name without '/' or a leading '.' (--runs-dir sets the parent folder)")
    return name


@dataclasses.dataclass(frozen=True)
class StagedRun:
    """A run folder being written.

    :param path: the temporary folder to write into (``runs/.<name>.tmp-XXXX``).
    :param final: where it is moved when complete (``runs/<name>``); record this one in files.
    :param name: the run's name.
    """

    path: Path
    final: Path
    name: str


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def try_lock_run(run_dir: Path) -> Any | None:
    """The run's lock, runs/<run>/.lock, held exclusively (released by the OS when the process dies): the open
    handle, or None while another process holds it (``experiments.paper_trade``'s loop, a retraining by hand).

    :param run_dir: the run folder.
    """
    handle = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _lock_path(runs_dir: Path, name: str) -> Path:
    return runs_dir / f".{name}.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _try_lock(runs_dir: Path, name: str) -> tuple[bool, str]:
    """Create ``.<name>.lock`` exclusively; a stale lock of a dead process on this host is taken over.

    :return: (locked, who holds it otherwise).
    """
    lock = _lock_path(runs_dir, name)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid_text, _, host = lock.read_text().strip().partition(" ")
                pid = int(pid_text)
            except (OSError, ValueError):
                return False, "another process"
            if host == socket.gethostname() and not _pid_alive(pid):
                _clean_after_killed_run(runs_dir, name)
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # its writer was killed: the name is free again
                continue
            return False, f"process {pid} on {host}"
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        return True, ""
    return False, "another process"


def _clean_after_killed_run(runs_dir: Path, name: str) -> None:
    """Remove what a killed writer of ``name`` left; put back an old run it was swapping out."""
    final = runs_dir / name
    for old in runs_dir.glob(f".{name}.old-*"):
        if (old / "previous").is_dir() and not final.exists():
            os.rename(old / "previous", final)
        shutil.rmtree(old, ignore_errors=True)
    for tmp in runs_dir.glob(f".{name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def _unlock(runs_dir: Path, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _lock_path(runs_dir, name).unlink()


def _reserve(runs_dir: Path, name: str | None, overwrite: bool, prefix: str | None, flag: str) -> str:
    """Lock a run name: the given one (refused if it exists without ``overwrite``) or a fresh default."""
    if name is not None:
        check_run_name(name)
        locked, holder = _try_lock(runs_dir, name)
        if not locked:
            raise RunExistsError(f"run folder {runs_dir / name} is being written by {holder}",
                                 f"wait for it to finish or choose another {flag} (delete "
                                 f"{_lock_path(runs_dir, name)} only if no run is writing it)")
        if (runs_dir / name).exists() and not overwrite:
            _unlock(runs_dir, name)
            raise RunExistsError(f"run folder {runs_dir / name} already exists",
                                 "pass --overwrite to replace it (the old run stays until the new one is complete) "
                                 f"or choose another {flag}")
        return name
    base = check_run_name(f"{prefix or 'run'}_{timestamp()}")
    for n in range(1, 10_000):
        candidate = base if n == 1 else f"{base}-{n}"
        if (runs_dir / candidate).exists():
            continue
        locked, _ = _try_lock(runs_dir, candidate)
        if not locked:
            continue
        if (runs_dir / candidate).exists():  # finished between the check and the lock
            _unlock(runs_dir, candidate)
            continue
        return candidate
    raise RunExistsError(f"no free run name {base}-N in {runs_dir}", f"pass {flag}")  # pragma: no cover


def _publish(tmp: Path, final: Path, overwrite: bool) -> Path:
    """Move the complete ``tmp`` to ``final``; an old ``final`` is swapped out and deleted only after."""
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would make the run private
    if not final.exists():
        try:
            os.rename(tmp, final)
            return final
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if overwrite:
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
        os.rename(final, old / "previous")
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(old / "previous", final)  # put the old run back
            shutil.rmtree(old, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return final
    # Someone created the folder without the lock while this run was written: keep both.
    for n in range(2, 10_000):
        other = final.with_name(f"{final.name}-{n}")
        if not other.exists():
            os.rename(tmp, other)
            print(f"warning: {final} appeared while this run was written; the new run is in {other}", file=sys.stderr)
            return other
    raise RunExistsError(f"{final} exists", f"the finished run is kept in {tmp}")  # pragma: no cover


@contextlib.contextmanager
def staged_run_directory(runs_dir: str | Path, name: str | None, overwrite: bool = False, *,
                         prefix: str | None = None, flag: str = "--run-name") -> Iterator[StagedRun]:
    """Write a run folder aside and move it into place whole when the ``with`` block completes.

    Yields a :class:`StagedRun`: write into ``.path`` (``runs_dir/.<name>.tmp-XXXX``), record
    ``.final`` (``runs_dir/<name>``). An exception or Ctrl-C in the block removes the temporary
    folder and leaves any old run untouched.

    :param runs_dir: the parent folder (created if missing).
    :param name: the run's folder name; None: ``<prefix>_<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... if taken).
    :param overwrite: replace an existing run of that name (once the new one is complete); without it
        an existing run raises :class:`RunExistsError` (a ``FileExistsError``) before anything is written.
    :param prefix: the default name's prefix.
    :param flag: the option that names the run, for error messages.
    """
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise PathError(f"--runs-dir {runs_dir} is a file", "pass a folder for the run outputs")
    runs_dir.mkdir(parents=True, exist_ok=True)
    name = _reserve(runs_dir, name, overwrite, prefix, flag)
    try:
        tmp = Path(tempfile.mkdtemp(dir=runs_dir, prefix=f".{name}.tmp-"))
        try:
            yield StagedRun(path=tmp, final=runs_dir / name, name=name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish(tmp, runs_dir / name, overwrite)
    finally:
        _unlock(runs_dir, name)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and (if installed) torch."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass

