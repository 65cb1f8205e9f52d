"""Look-ahead check: values before a cut must not change when the bars from the cut on are removed.

    python -m experiments.check_lookahead                              # the project's features, labels, env
    python -m experiments.check_lookahead --features my_features:build # your own feature function
    python -m experiments.check_lookahead --config configs/ppo.yaml --cuts 10 --seed 1 --symbols AAPL
    python -m experiments.check_lookahead --universe configs/universes/seed.yaml --categories etfs  # with --config

After freqtrade's lookahead-analysis. Every check computes something on all bars and again on the bars
cut at random rows (seeded, after the features' warm-up, before the last bar), and compares the rows
before the cut (NaN equals NaN, floats within --rtol/--atol); see features/lookahead.py.

  features  features.build_features (or --features module:function: bars DataFrame in, DataFrame on
            the same index out), per symbol.
  labels    labels look forward by design and must never be observed: no feature column may be named
            like the label or be a function of it; and the labels themselves must be flagged by the
            truncation (a self-test: their last horizon rows before each cut change).
  env       TradingEnv-v0 observations (feature window, position state, asset id) over one episode per
            symbol and split, built from all bars and from the cut bars with the same scaler and asset
            ids (the split is set by date so that the scaler is fit before every cut). Not run with
            --features: the env observes the project's features.

Each column whose values before a cut change is printed with the first bar (row and timestamp) where
they do. Exit code 0: no look-ahead; 1: look-ahead found; 2: usage error (one line on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from experiments.common import (
    UsageError,
    add_universe_arguments,
    load_dataset_config,
    make_parser,
    positive_int,
    run_cli,
    symbols_from_args,
)
from features.feature_builder import build_features, warmup_bars
from features.labels import make_labels
from features.loading import load_bars
from features.lookahead import (
    ATOL,
    DEFAULT_CUTS,
    RTOL,
    LookaheadError,
    LookaheadFinding,
    choose_cuts,
    find_env_lookahead,
    find_lookahead,
    label_guard,
    label_lookahead,
)

PROG = "python -m experiments.check_lookahead"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, __doc__)
    parser.add_argument("--features", default=None, metavar="MODULE:FUNCTION",
                        help="your feature function, importable from the current directory or PYTHONPATH "
                             "(default: the project's features.build_features, plus the env check)")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file whose 'dataset:' section gives the bars (symbols, timeframe, source, "
                             "start, end) and the feature, label and window settings (default: embedded "
                             "AAPL/IBM/MSFT/GOOG daily bars)")
    parser.add_argument("--cuts", type=positive_int, default=DEFAULT_CUTS, help="random cut points per check")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cut points (and of the env's actions)")
    parser.add_argument("--symbols", nargs="+", default=None, metavar="SYMBOL",
                        help="symbols to check (default: those of --config, else AAPL IBM MSFT GOOG)")
    add_universe_arguments(parser)
    parser.add_argument("--rtol", type=float, default=RTOL, help="relative tolerance of the comparison")
    parser.add_argument("--atol", type=float, default=ATOL, help="absolute tolerance of the comparison")
    return parser


def load_feature_function(spec: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The function named by ``module:function`` (``function`` may be dotted: ``module:Class.method``).

    :param spec: the ``--features`` value.
    :raises UsageError: naming what is wrong (format, import, attribute, not callable).
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name.strip() or not attribute.strip():
        raise UsageError(f"--features {spec!r} is not MODULE:FUNCTION",
                         "e.g. --features my_features:build, with my_features.py in the current directory")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any failure to import is the user's module path or code
        raise UsageError(f"--features {spec!r}: cannot import module {module_name!r} ({type(error).__name__}: "
                         f"{error})", "check the module name; it must be importable from the current directory "
                                      "or PYTHONPATH") from error
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = sorted(n for n, v in vars(target).items() if callable(v) and not n.startswith("_"))
            raise UsageError(f"--features {spec!r}: {getattr(target, '__name__', target)!r} has no attribute "
                             f"{part!r}", f"callables there: {public}")
        target = getattr(target, part)
    if not callable(target):
        raise UsageError(f"--features {spec!r} is a {type(target).__name__}, not a function",
                         "name a function taking a bars DataFrame and returning a DataFrame")
    return _reporting_errors(target, spec)


def _reporting_errors(fn: Callable[[pd.DataFrame], pd.DataFrame], spec: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """``fn`` whose exceptions become one-line usage errors naming ``spec`` (``--debug``: with the traceback)."""

    @functools.wraps(fn)
    def call(bars: pd.DataFrame) -> pd.DataFrame:
        try:
            return fn(bars)
        except Exception as error:  # noqa: BLE001 - the user's function failed; say so in one line
            raise UsageError(f"--features {spec} raised {type(error).__name__}: {error} (on {len(bars)} bars "
                             f"ending {bars.index[-1] if len(bars) else '-'})",
                             "fix the function; --debug shows the traceback") from error

    return call


def _when(stamp: pd.Timestamp | None) -> str:
    if stamp is None:
        return "-"
    return stamp.strftime("%Y-%m-%d") if stamp == stamp.normalize() else stamp.strftime("%Y-%m-%d %H:%M")


def _value(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def findings_table(findings: list[LookaheadFinding], tried: dict[tuple[str, str], int]) -> str:
    """One line per (check, symbol, column): cuts where it changed, and its earliest changed bar.

    :param findings: the findings of all checks.
    :param tried: cuts tried per (check, symbol).
    """
    groups: dict[tuple[str, str, str], list[LookaheadFinding]] = {}
    for finding in findings:
        groups.setdefault((finding.check, finding.symbol, finding.column), []).append(finding)
    header = ("check", "symbol", "column", "cuts", "first bad row", "at", "cut row", "reach", "full -> truncated")
    rows = [header]
    for (check, symbol, column), group in groups.items():
        first = min(group, key=lambda f: (f.first_bad_row, f.cut))
        rows.append((
            check, symbol or "-", column, f"{len(group)}/{tried.get((check, symbol), len(group))}",
            str(first.first_bad_row), _when(first.first_bad_timestamp), str(first.cut),
            str(max(f.reach for f in group)), f"{_value(first.full_value)} -> {_value(first.truncated_value)}",
        ))
    widths = [max(len(r[k]) for r in rows) for k in range(len(header) - 1)]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def check(args: argparse.Namespace) -> int:
    """Run the checks of ``args`` and print the report; return 0 (clean) or 1 (look-ahead found)."""
    started = time.perf_counter()
    config = load_dataset_config(args.config)
    symbols = symbols_from_args(args, None)
    if symbols:
        config = dataclasses.replace(config, symbols=tuple(symbols))
    user_fn = load_feature_function(args.features) if args.features else None
    timeframe = config.timeframe or "1Day"
    bars = load_bars(list(config.symbols), timeframe, config.start, config.end, config.source, config.cache_dir)
    warmup = warmup_bars(config.features)
    tolerance = {"rtol": args.rtol, "atol": args.atol}

    if user_fn is None:
        def feature_fn(frame: pd.DataFrame) -> pd.DataFrame:
            return build_features(frame, config.features, timeframe=timeframe)

        feature_fn.__name__ = "build_features"
        what = "the project's features (features.build_features)"
    else:
        feature_fn, what = user_fn, f"--features {args.features}"
    print(f"look-ahead check of {what} on {', '.join(bars)} ({timeframe} bars, source {config.source!r}): "
          f"{args.cuts} random cut(s) per check, seed {args.seed}, rtol {args.rtol:g}, atol {args.atol:g}")

    findings: list[LookaheadFinding] = []
    problems: list[str] = []
    tried: dict[tuple[str, str], int] = {}
    columns = 0
    label_findings: list[LookaheadFinding] = []
    for symbol, frame in bars.items():
        tried[("features", symbol)] = len(choose_cuts(len(frame), args.cuts, args.seed, first=warmup + 1))
        found = find_lookahead(feature_fn, frame, args.cuts, args.seed, warmup=warmup, symbol=symbol, **tolerance)
        findings += found
        table = feature_fn(frame.copy())
        table = table.to_frame() if isinstance(table, pd.Series) else table
        columns = max(columns, len(table.columns))
        labels = make_labels(frame, config.labels.profit, config.labels.stop, config.labels.horizon)
        problems += [f"{symbol}: {p}" for p in label_guard(table, labels)]
        label_findings += label_lookahead(frame, config.labels, args.cuts, args.seed, warmup=warmup, symbol=symbol)
    flagged, hit = len({f.column for f in findings}), len({f.symbol for f in findings})
    print(f"  features  {columns} column(s) x {len(bars)} symbol(s) x {args.cuts} cut(s): "
          + (f"{flagged} column(s) change before a cut in {hit} symbol(s)" if findings
             else "no value before any cut changed"))

    horizon = config.labels.horizon
    labels_tried = sum(tried[("features", s)] for s in bars)
    exact = all(f.first_bad_row == f.cut - horizon for f in label_findings)
    if len(label_findings) != labels_tried:
        problems.append(f"the labels changed before only {len(label_findings)} of {labels_tried} cuts: the "
                        f"comparison does not see their {horizon}-bar look-forward on these bars")
    print(f"  labels    no column named like the label or a function of it" if not problems else
          f"  labels    {len(problems)} problem(s)")
    print(f"            self-test: the labels themselves changed before {len(label_findings)}/{labels_tried} cuts"
          + (f", from row cut-{horizon} on (their {horizon}-bar horizon)" if exact and label_findings else ""))

    if user_fn is None:
        try:
            env = find_env_lookahead(bars, config, args.cuts, args.seed, **tolerance)
        except LookaheadError as error:
            print(f"  env       LOOK-AHEAD: {error}")
            return 1
        for symbol in bars:
            tried[("env", symbol)] = tried[("dataset", symbol)] = len(env.cut_timestamps)
        findings += env.findings
        print(f"  env       TradingEnv-v0: {env.observations_compared:,} observations of {env.observation_size} values "
              f"before {len(env.cut_timestamps)} cut(s) (split by date at {_when(env.validation_start)}, "
              f"before every cut, so the same scaler): "
              + (f"{len({(f.check, f.symbol, f.column) for f in env.findings})} column(s) change"
                 if env.findings else "no value changed")
              + f"; dataset labels changed before {env.label_changes}/{len(env.cut_timestamps)} cuts (expected)")
    else:
        print("  env       not run: --features checks your function (the env observes the project's features)")

    elapsed = time.perf_counter() - started
    if findings:
        print(f"\nLOOK-AHEAD: {len({(f.check, f.column) for f in findings})} column(s) change before the cut when "
              f"later bars are removed (first bad row: the earliest changed bar; reach: cut row - first bad row, at "
              f"least how far the column looks ahead):")
        print(findings_table(findings, tried))
    for problem in problems:
        print(f"LABEL LEAK: {problem}")
    if findings or problems:
        print(f"look-ahead found ({elapsed:.1f} s)")
        return 1
    print(f"clean: no look-ahead found ({elapsed:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the check on ``argv``; return the exit code: 0 clean, 1 look-ahead found, 2 usage error.

    :param argv: the arguments; None: ``sys.argv[1:]``.
    """
    code: list[int] = []
    try:
        status = run_cli(lambda a: code.append(check(build_parser().parse_args(a))), argv)
    except SystemExit as exit_:  # argparse: --help (0) or a bad argument (2, one line already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    return status or (code[0] if code else 0)


if __name__ == "__main__":
    sys.exit(main())
