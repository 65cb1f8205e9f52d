"""One retraining of a paper run's policy: a challenger trained on the latest data, scored against the champion.

    python -m experiments.retrain --run runs/paper_x --request 3       # what the paper loop starts (its request)
    python -m experiments.retrain --run paper_x --dataset data/ds --config configs/paper.yaml   # by hand

The challenger is trained on everything before the last ``retrain.validation_bars`` bars (the benchmark's walk-
forward code) and scored there after the run's costs against the champion, buy-and-hold and cash; it is promoted
only when it beats the champion by more than ``retrain.margin`` with a paired t statistic of at least
``retrain.min_t`` (see :mod:`live.retrain`). It is written to runs/<run>/policies/<n>/ (built aside, renamed into
place), the decision to runs/<run>/retrain/<n>.json. While the run's loop runs (it holds runs/<run>/.lock), the
loop journals the decision at the start of its next cycle and swaps the policy on a promotion; when no loop runs,
this process journals it itself (an alert of kind "retraining", meta "policy"), and the next start trades it.

By hand (no --request): the bars come from --dataset, cut at the run's last journalled moment (nothing later), the
settings from --config's retrain section, the champion from the run's journal (after a promotion) or --policy.
"""

from __future__ import annotations

import argparse
import json
import pickle
import traceback
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.common import (UsageError, cli, existing_file, make_parser, positive_int, resolve_dataset_path,
                                seed_everything, try_lock_run)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("python -m experiments.retrain", __doc__)
    parser.add_argument("--run", required=True, help="the paper run: its folder, or its name under --runs-dir")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="root of run outputs")
    parser.add_argument("--request", type=positive_int, default=None,
                        help="the loop's request number (runs/<run>/retrain/<n>.request.json); default: a retraining "
                             "by hand from --dataset")
    parser.add_argument("--config", type=Path, default=None,
                        help="by hand: the paper YAML config (its retrain section and costs; default: built-in values)")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="by hand: a saved dataset whose bars of the run's symbols are retrained on, cut at the run's "
                             "last journalled moment")
    parser.add_argument("--policy", default=None,
                        help="by hand: the champion's folder when the journal names none (no promotion yet)")
    parser.add_argument("--seed", type=int, default=None, help="the challenger's training seed (default: retrain.seed)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    run_dir = Path(args.run) if Path(args.run).is_dir() else args.runs_dir / args.run
    if not (run_dir / "journal.sqlite").exists():
        raise UsageError(f"--run {args.run}: {run_dir} is not a paper run (no journal.sqlite)",
                         "pass the folder of a run of python -m experiments.paper_trade, or its --run-name")
    if args.request is not None:
        return _from_request(run_dir, args.request, args.seed)
    return _by_hand(run_dir, args)


def _from_request(run_dir: Path, n: int, seed: int | None) -> dict[str, Any]:
    """The loop's retraining ``n``: its request's bars, champion and settings; the decision file always written
    (a failure too), journalled here only when no loop holds the run.

    :param run_dir: the run folder.
    :param n: the request's number.
    :param seed: overrides the config's seed.
    """
    from live.config import CostConfig
    from live.retrain import RetrainConfig, request_path

    path = request_path(run_dir, n)
    if not path.exists():
        raise UsageError(f"--request {n}: {path} does not exist", "pass the number of a request the loop wrote")
    request = json.loads(path.read_text())
    config = RetrainConfig(**request["config"])
    if seed is not None:
        config.seed = seed
    bars = pickle.loads((path.parent / request["bars"]).read_bytes())
    decision = _decide(run_dir, n, bars, request["champion"], config, CostConfig(**request["costs"]).costs())
    _journal_if_free(run_dir)
    return decision


def _by_hand(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A retraining started by hand while no loop runs the run: numbered after the journal's, journalled here.

    :param run_dir: the run folder.
    :param args: the parsed arguments.
    """
    from features.dataset import load_dataset
    from live import Journal, PaperConfig
    from live.retrain import write_request
    from live.sim_broker import _bars_frame

    if args.dataset is None:
        raise UsageError("a retraining by hand needs bars", "pass --dataset DIR (or --request N, the loop's request)")
    config = PaperConfig.from_yaml(existing_file(args.config, "--config") if args.config is not None else None)
    retrain_config = config.retrain
    if args.seed is not None:
        retrain_config.seed = args.seed
    lock = try_lock_run(run_dir)
    if lock is None:
        raise UsageError(f"run {run_dir} is running", "its loop retrains on its own schedule (retrain.every); "
                         "stop it first to retrain by hand")
    try:
        journal = Journal(run_dir / "journal.sqlite")
        try:
            identity = journal.meta("identity") or {}
            symbols = list(identity.get("symbols") or [])
            last = journal.last_moment()
            active = journal.meta("policy") or {}
            champion = active.get("path") or args.policy
            if champion is None:
                raise UsageError("the run's journal names no promoted policy", "pass --policy, the folder the run "
                                 "was started with")
            data = load_dataset(resolve_dataset_path(args.dataset))
            bars = {}
            for symbol in symbols:
                frame = _bars_frame(data, data.symbol_index(symbol))
                bars[symbol] = frame[frame.index <= last] if last is not None else frame  # nothing after the run
            state = dict(journal.meta("retrain") or {})
            n = int(state.get("requested", 0)) + 1
            write_request(run_dir, n, bars, Path(champion), retrain_config, vars(config.costs),
                          last or pd.Timestamp.now(tz="UTC"))
            state["requested"] = n
            journal.set_meta("retrain", state)
        finally:
            journal.close()
        decision = _decide(run_dir, n, bars, champion, retrain_config, config.costs.costs())
        _journal(run_dir, config)
    finally:
        lock.close()
    return decision


def _decide(run_dir: Path, n: int, bars: dict[str, pd.DataFrame], champion: str, config: Any, costs: Any) -> dict[str, Any]:
    """Train and score; the decision written to retrain/<n>.json whatever happens (a failure says why)."""
    from features.atomic_io import write_text_atomic
    from live.policy import load_live_policy
    from live.retrain import Decision, decision_path, policy_dir, retrain

    seed_everything(config.seed)
    print(f"retraining {n} of {run_dir}: champion {champion}, {sum(len(f) for f in bars.values())} bars", flush=True)
    try:
        decision = retrain(bars, load_live_policy(champion), config, costs, policy_dir(run_dir, n), n=n,
                           champion_dir=Path(champion))
    except Exception as error:  # a failed retraining changes nothing: the loop journals the failure
        traceback.print_exc()
        decision = Decision(n=n, status="failed", promoted=False, champion=str(champion),
                            reason=f"{type(error).__name__}: {' '.join(str(error).split())}")
    decision_path(run_dir, n).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(decision_path(run_dir, n), decision.to_json())
    print(decision.message(), flush=True)
    return json.loads(decision.to_json())


def _journal_if_free(run_dir: Path) -> None:
    """Journal the decisions here when no loop holds the run's lock (it died, or it finished)."""
    lock = try_lock_run(run_dir)
    if lock is None:
        return  # the loop runs: it journals the decision at the start of its next cycle
    try:
        _journal(run_dir, None)
    finally:
        lock.close()


def _journal(run_dir: Path, config: Any) -> None:
    from live import Journal, PaperConfig
    from live.alerts import Alerter
    from live.retrain import journal_pending

    config = config or PaperConfig()
    journal = Journal(run_dir / "journal.sqlite")
    try:
        last = journal.last_moment()
        at = (last + pd.Timedelta(microseconds=1)) if last is not None else pd.Timestamp.now(tz="UTC")
        identity = journal.meta("identity") or {}
        with journal.batch():
            journal_pending(run_dir, journal, Alerter(journal, config.alerts, identity.get("run", run_dir.name)), at)
    finally:
        journal.close()


if __name__ == "__main__":
    cli(main)
