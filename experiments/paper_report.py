"""A paper run's report: a day (or the whole run) of its journal as Markdown + PNG in runs/<name>/reports/.

    python -m experiments.paper_report --run runs/paper_x                      # the run's latest day
    python -m experiments.paper_report --run paper_x --date 2024-05-03         # one UTC day
    python -m experiments.paper_report --run runs/paper_x --all --send         # the whole run; summary to the alerts

Equity against buy-and-hold of the traded symbols, orders, fills, costs, each fill against the simulator's price
of it (live.parity: slippage per symbol, the equity difference live minus simulator, drift alerts), risk-limit
events, alerts and retraining decisions. It reads the journal only (a running loop is not disturbed); --send
adds the summary (and any drift alert) to the run's alerts: journal, log and the config's webhook.
The fills are compared to the cost model the run recorded when it started (a --config with other costs is
refused); a run started before runs recorded their costs takes --config's.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from pathlib import Path

import pandas as pd

from experiments.common import PathError, UsageError, cli, existing_dir, existing_file, make_parser, resolve_dataset_path
from live import Journal
from live.config import CostConfig, PaperConfig
from sim.engine import Costs
from live.report import WHOLE_RUN, Period, day_period, report_facts, send_summary, summary_line, write_report


def _date(text: str) -> dt.date:
    """``--date``: a ``YYYY-MM-DD`` day.

    :param text: the argument.
    """
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a YYYY-MM-DD date") from None


def _threshold(text: str) -> float:
    """``--drift-bps``: a finite number >= 0.

    :param text: the argument.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bps") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{value} must be a finite number of bps >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("python -m experiments.paper_report", __doc__)
    parser.add_argument("--run", required=True, help="the run folder (runs/<name>), or its name under --runs-dir")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where a --run given by name is")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--date", type=_date, default=None,
                      help="the UTC day reported, YYYY-MM-DD (default: the day of the run's latest bar)")
    when.add_argument("--all", action="store_true", help="report the whole run")
    parser.add_argument("--config", type=Path, default=None,
                        help="the paper config the run used: its costs (the model) and alerts (the webhook); "
                             "default: the built-in values of configs/paper.yaml")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="the bars the run traded (a saved dataset): only for slippage models that read bars "
                             "(volatility, volume); default: none")
    parser.add_argument("--drift-bps", type=_threshold, default=10.0,
                        help="alert when a symbol's mean slippage exceeds the model's by more than this")
    parser.add_argument("--send", action="store_true",
                        help="send the report's summary (and drift alerts) through the run's alert hooks")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Path]:
    args = build_parser().parse_args(argv)
    run = Path(args.run)
    run_dir = run if run.exists() or len(run.parts) > 1 else args.runs_dir / run
    run_dir = existing_dir(run_dir, "--run", "a paper run folder")
    path = run_dir / "journal.sqlite"
    if not path.is_file():  # never create a journal where none is
        raise PathError(f"--run {run_dir} holds no journal.sqlite",
                        "pass a paper run folder (runs/<name>) written by experiments.paper_trade")
    config = PaperConfig.from_yaml(existing_file(args.config, "--config") if args.config is not None else None)
    journal = Journal(path, durable=False)
    try:
        costs = _run_costs(journal, config, args.config)
        bars = _bars(args.dataset, journal) if args.dataset is not None else None
        period = WHOLE_RUN if args.all else (day_period(args.date) if args.date else _latest_day(journal))
        facts = report_facts(journal, costs, period, bars, args.drift_bps)
        written = write_report(run_dir, facts)
        print(summary_line(facts))
        print(f"report {written['markdown']}, chart {written['chart']}")
        if args.send:
            sent = send_summary(journal, config.alerts, facts)
            print("sent through the alert hooks" if sent[0] else
                  f"the summary of {period.label} was sent before (one alert per period); not sent again")
    finally:
        journal.close()
    return written


def _run_costs(journal: Journal, config: PaperConfig, given: Path | None) -> Costs:
    """The cost model the run recorded when it started (``meta costs``); a ``--config`` whose costs differ is an
    error (its fills would be compared to another model). A run that recorded none (started before runs recorded
    their costs) takes ``--config``'s, or the defaults.

    :param journal: the run's journal.
    :param config: the paper config given (or the defaults).
    :param given: the --config path, or None.
    """
    recorded = journal.meta("costs")
    if recorded is None:
        return config.costs.costs()
    if given is not None and dataclasses.asdict(config.costs) != recorded:
        raise UsageError(f"--config {given}: costs {dataclasses.asdict(config.costs)} are not the costs the run "
                         f"recorded when it started ({recorded})",
                         "pass the config the run was started with, or leave --config out")
    return CostConfig(**recorded).costs()


def _latest_day(journal: Journal) -> Period:
    """The UTC day of the run's latest bar.

    :param journal: the run's journal.
    """
    marks = journal.equity()
    if not marks:
        raise UsageError(f"{journal.path}: the run has no bars yet", "report it once it has marked a bar")
    return day_period(max(pd.Timestamp(m["bar_time"]) for m in marks).date())


def _bars(dataset: Path, journal: Journal) -> dict[str, pd.DataFrame]:
    """The traded symbols' bars from a saved dataset (what bar-reading slippage models need).

    :param dataset: the dataset folder (or a run folder holding one).
    :param journal: the run's journal (its symbols).
    """
    from features.dataset import load_dataset

    data = load_dataset(resolve_dataset_path(dataset))
    symbols = sorted(journal.sleeves())
    missing = [s for s in symbols if s not in data.asset_map]
    if missing:
        raise UsageError(f"--dataset {dataset} has no bars of {', '.join(missing)}",
                         "pass the dataset the run traded")
    frames = {}
    for symbol in symbols:
        rows = data.symbol_rows(symbol)
        frames[symbol] = pd.DataFrame({"open": data.open[rows], "high": data.high[rows], "low": data.low[rows],
                                       "close": data.close[rows], "volume": data.volume[rows]},
                                      index=pd.DatetimeIndex(pd.to_datetime(data.timestamps[rows], utc=True)))
    return frames


if __name__ == "__main__":
    cli(main)
