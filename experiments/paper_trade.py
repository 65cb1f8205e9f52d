"""Paper trading: a saved policy traded on Alpaca's paper account (or replayed through the simulator).

    export APCA_API_KEY_ID=... APCA_API_SECRET_KEY=...          # paper keys; never printed or logged
    python -m experiments.paper_trade --policy runs/ppo_default --symbols AAPL MSFT
    python -m experiments.paper_trade --policy runs/sup_lstm --symbols AAPL --once        # one cycle, then exit
    python -m experiments.paper_trade --policy runs/ppo_default --symbols AAPL --broker sim   # replay the test split
    python -m experiments.paper_trade --portfolio --policy minimum_variance --broker sim    # one account, all symbols

Each bar close: the latest bars (enough for the policy's features), the policy's observation and decision,
risk limits, orders with an idempotent client_order_id, everything in runs/<name>/journal.sqlite, one JSON
line in runs/<name>/cycles.jsonl and the page runs/<name>/monitor.html. Stop it with Ctrl-C / SIGTERM or
`touch runs/<name>/KILL` (open orders are canceled; positions flattened when risk.flatten_on_kill).
A run resumes where it stopped - after a crash too - when started again with the same --run-name.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Callable

from experiments.common import (
    UsageError,
    add_universe_arguments,
    check_run_name,
    cli,
    existing_file,
    make_parser,
    policy_label,
    portfolio_and_policy,
    positive_int,
    resolve_dataset_path,
    resolve_policy_path,
    seed_everything,
    symbols_from_args,
    timestamp,
    try_lock_run,
)
from live import Journal, LiveLoop, load_live_policy
from live.broker import BrokerError
from live.config import BROKERS, PaperConfig, check_port
from live.monitor import serve

CRASH_ENV = "PAPER_TRADE_CRASH_AT"  # fault injection for the kill tests: "<point>[:<nth pass>]" -> SIGKILL itself


class BrokerUnavailable(UsageError):
    """The broker could not be used (bad keys, a wrong URL, an unreachable host, a server error after the
    retries): one line with the endpoint, the status and what to check.

    :param error: the broker's error (its message is ``<what> — <what to check>``, keys masked).
    """

    def __init__(self, error: BrokerError) -> None:
        what, _, fix = " ".join(str(error).split()).partition(" — ")
        super().__init__(f"the broker failed: {what}", fix or "check the keys APCA_API_KEY_ID / APCA_API_SECRET_KEY "
                         "and broker.trading_url in the config, then try again")


def _port(text: str) -> int:
    """``--serve``: a TCP port in 0..65535 (0: any free port).

    :param text: the argument.
    """
    try:
        return check_port("--serve", int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: pass a whole number in [0, 65535] "
                                         f"(0: any free port)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("python -m experiments.paper_trade", __doc__)
    parser.add_argument("--policy", required=True,
                        help="a saved RL agent runs/<rl>/best, a supervised bundle runs/<sup>/model, or the run folder holding either")
    parser.add_argument("--symbols", nargs="+", default=None,
                        help="symbols to trade, one sleeve each (default with --broker sim: every symbol of the dataset)")
    add_universe_arguments(parser)
    parser.add_argument("--timeframe", default=None, help="bar length; default: the policy's own (another one is refused)")
    parser.add_argument("--broker", choices=list(BROKERS), default=None,
                        help="alpaca (paper) or sim (historical replay); default: the config's broker.kind (alpaca)")
    parser.add_argument("--config", type=Path, default=None, help="YAML config (default: the built-in values of configs/paper.yaml)")
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    parser.add_argument("--max-cycles", type=positive_int, default=None, help="stop after this many cycles, >= 1 (default: run on)")
    parser.add_argument("--run-name", default=None,
                        help="run folder under --runs-dir; an existing run is resumed (default: paper_<policy>_<broker>_<time>)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="root of run outputs")
    parser.add_argument("--serve", type=_port, default=None, metavar="PORT",
                        help="also serve the monitor page on http://127.0.0.1:PORT/monitor.html, PORT in 0..65535 "
                             "(0: any free port; default: the config's monitor.serve_port, else file only)")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="--broker sim: the dataset replayed (default: the config's sim.dataset, else the embedded data)")
    parser.add_argument("--split", default=None, choices=["train", "validation", "test"],
                        help="--broker sim: the split replayed (default: the config's sim.split, test)")
    parser.add_argument("--clear-halt", action="store_true", help="resume a run halted by risk.max_daily_loss")
    parser.add_argument("--seed", type=int, default=0, help="seed of torch and numpy (policies act deterministically)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar of a --broker sim replay")
    parser.add_argument("--portfolio", action="store_true",
                        help="one account allocating across the symbols: --policy is an allocation (cash, "
                             "equal_weight, buy_and_hold, inverse_volatility, minimum_variance, ...) fitted on the "
                             "dataset's train split, or a saved portfolio agent folder")
    parser.add_argument("--rebalance-every", type=positive_int, default=None,
                        help="with --portfolio: bars between rebalances of an allocation (default 21; buy_and_hold never)")
    return parser


def main(argv: list[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    args.symbols = symbols_from_args(args, None)
    config = PaperConfig.from_yaml(existing_file(args.config, "--config") if args.config is not None else None)
    kind = args.broker or config.broker.kind
    seed_everything(args.seed)
    if args.portfolio:
        return _portfolio_main(args, config, kind)
    if not Path(args.policy).exists():
        raise UsageError(f"--policy {args.policy} does not exist",
                         "pass a saved agent runs/<rl>/best, a supervised bundle runs/<sup>/model, or the run folder "
                         "holding either (baselines carry no preprocessing of their own to trade live with)")
    spec = resolve_policy_path(args.policy)
    policy = load_live_policy(spec)
    if args.timeframe is not None:
        config.loop.timeframe = args.timeframe
    data = _replay_data(args, config, policy) if kind == "sim" else None
    symbols = args.symbols or (list(data.symbols) if data is not None else None)
    if not symbols:
        raise UsageError("no symbols given", "pass --symbols AAPL MSFT ... (symbols the policy was trained on: "
                         f"{', '.join(sorted(policy.preprocessing.asset_map))})")
    broker = _broker(kind, config, policy, symbols, data)  # missing keys end here, before anything is written
    _check_broker(broker, kind)  # bad keys, a wrong URL, an unreachable host too
    def make_loop(journal: Journal, name: str, run_dir: Path) -> LiveLoop:
        return LiveLoop(policy, broker, journal, symbols, config, run_name=name, run_dir=run_dir,
                        crash=_crash_from_environment(), clear_halt=args.clear_halt)

    return _run(args, config, kind, broker, spec, make_loop, f"policy {policy.name} on {', '.join(symbols)}",
                _print_replay)


def _run(args: argparse.Namespace, config: PaperConfig, kind: str, broker: Any, label: str,
         make_loop: Callable[[Journal, str, Path], LiveLoop], describe: str, print_replay: Callable[[Path], None]) -> str:
    """The run folder (locked; removed again if the run never began), the journal, the monitor page and the loop.

    :param label: what the default run name says the policy is.
    :param make_loop: builds the loop on the journal, the run's name and folder.
    :param describe: the policy and symbols, for the start line.
    :param print_replay: prints a finished ``--broker sim`` replay's summary from the run folder.
    """
    name = check_run_name(args.run_name) if args.run_name else _default_name(args.runs_dir, label, kind)
    run_dir = args.runs_dir / name
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(run_dir)
    journal = server = None
    log_path, handlers = _logging(run_dir, args.debug, quiet=kind == "sim")
    started = False
    try:
        journal = Journal(run_dir / "journal.sqlite", durable=kind != "sim")
        resumed = journal.meta("identity") is not None
        loop = make_loop(journal, name, run_dir)
        server = _serve(run_dir, args, config)
        print(f"run {run_dir} ({'resumed' if resumed else 'new'}; resume it with --run-name {name}); "
              f"{describe} via {kind}; log {log_path}")
        progress = None
        if kind == "sim" and not args.no_progress:
            from tqdm import tqdm

            progress = tqdm(total=2 * len(broker.ticks) - 1, unit="step", desc="replay", leave=False)
        started = True
        try:
            reason = loop.run(once=args.once, max_cycles=args.max_cycles,
                              on_cycle=(lambda report: progress.update(1)) if progress is not None else None)
        except BrokerError as error:  # a failure while the run starts (a cycle's own failures are retried)
            raise BrokerUnavailable(error) from error
        if progress is not None:
            progress.close()
    finally:
        if server is not None:
            server.shutdown()
        if journal is not None:
            journal.close()
        lock.close()
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
        if created and not started:  # a mistake found before the run began leaves no folder behind
            shutil.rmtree(run_dir, ignore_errors=True)
    print(f"stopped: {reason}; journal {run_dir / 'journal.sqlite'}, page {run_dir / 'monitor.html'}")
    if kind == "sim":
        print_replay(run_dir)
    return reason


def _portfolio_main(args: argparse.Namespace, config: PaperConfig, kind: str) -> str:
    """``--portfolio``: one account across the symbols (:class:`live.portfolio.PortfolioLiveLoop`), on the sim
    broker (the dataset's split replayed with one account) or Alpaca.

    :param args: the parsed arguments.
    :param config: the paper config.
    :param kind: ``"sim"`` or ``"alpaca"``.
    """
    from live.portfolio import PortfolioLiveLoop, PortfolioSimBroker, check_portfolio_policy

    data, panel, policy = _portfolio_policy(args, config)
    from features.preprocessing import Preprocessing

    preprocessing = Preprocessing.of(data)
    if args.timeframe is not None:
        config.loop.timeframe = args.timeframe
    check_portfolio_policy(policy)
    if kind == "sim":
        broker: Any = PortfolioSimBroker(panel, config.sim.split, config.costs.costs(),
                                         capital=config.loop.capital or 100_000.0)
    else:
        broker = _broker(kind, config, None, panel.symbols, None)
        _check_broker(broker, kind)
    def make_loop(journal: Journal, name: str, run_dir: Path) -> LiveLoop:
        return PortfolioLiveLoop(policy, preprocessing, broker, journal, panel.symbols, config, run_name=name,
                                 run_dir=run_dir, crash=_crash_from_environment(), clear_halt=args.clear_halt,
                                 policy_name=args.policy)

    return _run(args, config, kind, broker, f"portfolio_{args.policy}", make_loop,
                f"portfolio {args.policy} on {', '.join(panel.symbols)}", _print_portfolio_replay)


def _portfolio_policy(args: argparse.Namespace, config: PaperConfig) -> tuple[Any, Any, Any]:
    """The dataset, its universe (a :class:`features.panel.Panel` of --symbols, default all) and the policy: an
    allocation fitted on the train split, ``cash``, or a saved portfolio agent; mistakes in one line.

    :param args: the parsed arguments.
    :param config: the paper config (``sim.dataset``, ``sim.split``).
    """
    from agents.portfolio_baselines import DEFAULT_REBALANCE_EVERY

    data = _replay_data(args, config, None)
    panel, policy = portfolio_and_policy(data, args.symbols, "--symbols", args.policy,
                                         args.rebalance_every or DEFAULT_REBALANCE_EVERY)
    return data, panel, policy


def _print_portfolio_replay(run_dir: Path) -> None:
    journal = Journal(run_dir / "journal.sqlite", durable=False)
    try:
        marks = journal.equity()
        by_bar: dict[str, float] = {}
        for mark in marks:
            by_bar[mark["bar_time"]] = by_bar.get(mark["bar_time"], 0.0) + mark["equity"]
        if by_bar:
            values = [by_bar[k] for k in sorted(by_bar)]
            print(f"account: {len(values)} bars, {len(journal.fills())} fills, equity {values[0]:,.2f} -> "
                  f"{values[-1]:,.2f} ({values[-1] / values[0] - 1:+.2%})")
    finally:
        journal.close()


def _replay_data(args: argparse.Namespace, config: PaperConfig, policy: Any) -> Any:
    from features.dataset import load_dataset

    if args.split is not None:
        config.sim.split = args.split
    source = args.dataset or (Path(config.sim.dataset) if config.sim.dataset else None)
    if source is not None:
        data = load_dataset(resolve_dataset_path(source))
    else:
        from envs.core import default_market_data

        data = default_market_data()
    if policy is not None:
        policy.preprocessing.check(data)  # timeframe, and symbols the policy knows
    return data


def _broker(kind: str, config: PaperConfig, policy: Any, symbols: list[str], data: Any) -> Any:
    settings = config.broker
    if kind == "sim":
        from live import SimBroker

        capital = (config.loop.capital or 100_000.0 * len(symbols)) / len(symbols)
        return SimBroker(data, symbols, config.sim.split, config.costs.costs(), min_bars=policy.preprocessing.min_bars,
                         capital_per_symbol=capital, allow_short=policy.allow_short,
                         min_rebalance=config.loop.min_rebalance)
    from live.alpaca_broker import AlpacaBroker

    missing = [name for name in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY") if not os.environ.get(name)]
    if missing:
        raise UsageError(f"Alpaca paper keys missing: set {' and '.join(missing)} in the environment",
                         "create paper keys at https://app.alpaca.markets (Paper account, API keys), or replay history "
                         "without keys with --broker sim")
    return AlpacaBroker(trading_url=settings.trading_url, data_url=settings.data_url, feed=settings.feed,
                        fractional=settings.fractional, qty_decimals=settings.qty_decimals,
                        connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
                        max_retries=settings.max_retries, backoff_base=settings.backoff_base,
                        backoff_max=settings.backoff_max)


def _check_broker(broker: Any, kind: str) -> None:
    """Ask Alpaca for its clock and the account before anything is written, so that bad keys, a wrong URL,
    an unreachable host or a server that keeps failing end here in one line (the sim broker needs no check).

    :param broker: the broker.
    :param kind: ``"alpaca"`` or ``"sim"``.
    """
    if kind == "sim":
        return
    try:
        broker.clock()
        broker.account()
    except BrokerError as error:
        raise BrokerUnavailable(error) from error


def _serve(run_dir: Path, args: argparse.Namespace, config: PaperConfig) -> Any:
    """The monitor's server on ``--serve`` (else ``monitor.serve_port``), or None when neither is set; a port
    that cannot be listened on is one line naming it and where it came from.

    :param run_dir: the run folder served.
    :param args: the parsed arguments (``serve``, ``config``).
    :param config: the loaded config.
    """
    if args.serve is not None:
        port, source = args.serve, f"--serve {args.serve}"
    elif config.monitor.serve_port is not None:
        port = config.monitor.serve_port
        source = f"{args.config or 'the config'}: monitor.serve_port={port}"
    else:
        return None
    try:
        server = serve(run_dir, port)
    except ValueError as error:
        what, _, fix = str(error).partition(" — ")
        raise UsageError(f"{source}: {what}", fix or "choose another port") from error
    print(f"monitor: http://127.0.0.1:{server.server_address[1]}/monitor.html")
    return server


def _default_name(runs_dir: Path, spec: str, kind: str) -> str:
    base = f"paper_{policy_label(spec)}_{kind}_{timestamp()}"
    name, n = base, 1
    while (runs_dir / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _lock(run_dir: Path) -> Any:
    """One process per run: an exclusive lock on runs/<name>/.lock (released by the OS if the process dies)."""
    handle = try_lock_run(run_dir)
    if handle is None:
        raise UsageError(f"run {run_dir} is already running in another process",
                         "stop it first (touch its KILL file or send SIGTERM), or choose another --run-name")
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _logging(run_dir: Path, debug: bool, quiet: bool = False) -> tuple[Path, list[logging.Handler]]:
    """Log lines to runs/<name>/paper_trade.log and stderr (the keys never reach a log line); ``quiet`` (a
    replay, with its progress bar) shows only warnings and alerts on stderr."""
    path = run_dir / "paper_trade.log"
    form = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    level = logging.DEBUG if debug else logging.INFO
    root.setLevel(level)
    handlers: list[logging.Handler] = [logging.FileHandler(path), logging.StreamHandler(sys.stderr)]
    for handler in handlers:
        handler.setFormatter(form)
        handler.setLevel(level)
        root.addHandler(handler)
    if quiet and not debug:
        handlers[1].setLevel(logging.WARNING)
    for noisy in ("urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return path, handlers


def _crash_from_environment() -> Any:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return None
    point, _, nth = spec.partition(":")
    target = int(nth or 1)
    seen = {"n": 0}

    def crash(name: str) -> None:
        if name == point:
            seen["n"] += 1
            if seen["n"] == target:
                os.kill(os.getpid(), signal.SIGKILL)

    return crash


def _print_replay(run_dir: Path) -> None:
    journal = Journal(run_dir / "journal.sqlite", durable=False)
    try:
        for symbol, sleeve in journal.sleeves().items():
            marks = journal.equity(symbol)
            fills = journal.fills(symbol)
            if marks:
                print(f"{symbol}: {len(marks)} bars, {len(fills)} fills, equity {marks[0]['equity']:,.2f} -> "
                      f"{marks[-1]['equity']:,.2f} ({marks[-1]['equity'] / marks[0]['equity'] - 1:+.2%})")
    finally:
        journal.close()


if __name__ == "__main__":
    cli(main)
