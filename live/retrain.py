"""Retraining a paper run's policy with a champion and a challenger.

Every ``retrain.every`` bars the loop hands the latest bars to a separate process (``python -m
experiments.retrain``), so a cycle never waits on training. That process calls :func:`retrain`: one walk-forward
split of the benchmark's own code (:func:`evaluation.folds.walk_forward_folds` with one fold whose *test* window
is the last ``validation_bars`` bars; :func:`evaluation.folds.fold_market_data` builds it from those bars only,
its scaler fitted on its train rows, purge gaps between the windows), the challenger trained on everything before
that window exactly as a benchmark job trains a supervised policy (:func:`evaluation.runner._trained_policy`:
early stopping and the F1 threshold on the split before the scored window), then the challenger, the champion,
buy-and-hold and cash scored on the scored window after the run's costs (per-bar log returns of the equal-capital
sleeves, :func:`envs.backtest.backtest_many`). The challenger is promoted only when its log return over the
window beats the champion's by more than ``margin`` AND the paired t statistic of the per-bar differences
(:func:`scipy.stats.ttest_rel`) is at least ``min_t``.

The decision (every number, promoted or not) is a JSON file ``runs/<run>/retrain/<n>.json``, the challenger a
bundle ``runs/<run>/policies/<n>/`` (built aside and renamed into place); the loop picks the file up at the start
of a cycle (:class:`LoopRetrainer`), journals it (an alert of kind ``retraining``, meta ``policy``: the active
policy) and, on a promotion, swaps the policy between cycles. Old policies stay on disk.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from features.atomic_io import write_directory_atomic, write_text_atomic
from sim.engine import Costs
from sim.settings import check_integer, check_range

from .journal import Journal, iso

logger = logging.getLogger("live.retrain")

RETRAIN_KIND = "retraining"  # the alert kind live.report reads
KINDS = ("supervised",)
DECISIONS_DIR = "retrain"
POLICIES_DIR = "policies"


@dataclass
class RetrainConfig:
    """The ``retrain:`` section of the paper config (off by default).

    :param every: bars between retrainings; None: never.
    :param validation_bars: the last bars of the data, on which challenger and champion are scored (the
        challenger never trains on them).
    :param selection_bars: bars before them on which the challenger's best epoch and threshold are chosen; None: as
        many as ``validation_bars``.
    :param margin: the challenger's log return over the scored window must beat the champion's by more than this
        (>= 0).
    :param min_t: ... and the paired t statistic of the per-bar log-return differences must be at least this.
    :param kind: the challenger's kind; None: the champion's (``supervised`` is the one trained here).
    :param model: the challenger's model kind (``mlp``, ``lstm``, ...); None: the champion's.
    :param model_settings: the challenger's model settings; None: the champion's (empty when ``model`` is set).
    :param budget: the training budget (:class:`supervised.trainer.TrainConfig` fields: epochs, batch_size, ...).
    :param history_bars: bars per symbol handed to a retraining (the latest).
    :param max_train_seconds: the longest a retraining may run: the schedule must be longer, and a retraining
        still running after it is stopped (and journalled as failed).
    :param purge_gap: bars dropped before each window boundary; None: the label horizon.
    :param seed: the challenger's training seed.
    """

    every: int | None = None
    validation_bars: int = 60
    selection_bars: int | None = None
    margin: float = 0.0
    min_t: float = 2.0
    kind: str | None = None
    model: str | None = None
    model_settings: dict[str, Any] | None = None
    budget: dict[str, Any] = field(default_factory=dict)
    history_bars: int = 5000
    max_train_seconds: float = 3600.0
    purge_gap: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.every is not None:
            check_integer("retrain.every", self.every, 1)
        check_integer("retrain.validation_bars", self.validation_bars, 2)
        if self.selection_bars is not None:
            check_integer("retrain.selection_bars", self.selection_bars, 2)
        if isinstance(self.margin, (int, float)) and not isinstance(self.margin, bool) and self.margin < 0:
            raise ValueError(f"retrain.margin={self.margin} is negative: it is how much the challenger must beat the "
                             f"champion by (a log return over the scored window, >= 0)")
        check_range("retrain.margin", self.margin, 0.0, None)
        check_range("retrain.min_t", self.min_t, -math.inf, None)
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"retrain.kind={self.kind!r} cannot be retrained here; expected one of {list(KINDS)} "
                             f"or null (the champion's)")
        if self.model_settings is not None and not isinstance(self.model_settings, dict):
            raise ValueError(f"retrain.model_settings={self.model_settings!r} must be a mapping or null")
        if not isinstance(self.budget, dict):
            raise ValueError(f"retrain.budget={self.budget!r} must be a mapping of training settings (epochs, ...)")
        check_integer("retrain.history_bars", self.history_bars, 1)
        check_range("retrain.max_train_seconds", self.max_train_seconds, 0.0, None, low_open=True)
        if self.purge_gap is not None:
            check_integer("retrain.purge_gap", self.purge_gap, 0)
        check_integer("retrain.seed", self.seed, 0)

    @property
    def enabled(self) -> bool:
        return self.every is not None

    def check_schedule(self, timeframe: str) -> None:
        """Refuse a schedule shorter than a training run: ``every`` bars of ``timeframe`` must last longer than
        ``max_train_seconds``.

        :param timeframe: the run's bar length (``"1Day"``, ``"1Min"``).
        """
        from features.bars import Timeframe

        if self.every is None:
            return
        seconds = self.every * Timeframe.parse(timeframe).seconds
        if seconds < self.max_train_seconds:
            raise ValueError(f"retrain.every={self.every} bars of {timeframe} ({seconds:g} s) is shorter than a "
                             f"training run (retrain.max_train_seconds={self.max_train_seconds:g}): raise "
                             f"retrain.every or lower max_train_seconds")


@dataclass
class Decision:
    """One retraining's outcome (written as ``retrain/<n>.json``).

    :param n: the retraining's number in the run (1, 2, ...).
    :param status: ``"done"`` or ``"failed"``.
    :param promoted: whether the challenger replaces the champion.
    :param reason: one line saying why.
    :param champion: the champion's folder.
    :param challenger: the challenger's folder (None when it was never built).
    :param as_of: the newest bar the retraining saw.
    :param window: the scored window: ``{"start", "end", "bars"}``.
    :param log_returns: log return over the window after costs: challenger, champion, buy_and_hold, cash.
    :param advantage: challenger minus champion.
    :param t: the paired t statistic of the per-bar differences (None: undefined, e.g. identical returns).
    :param margin: the margin required.
    :param min_t: the t statistic required.
    :param train_seconds: how long training took.
    :param details: what the training recorded (threshold, best epoch, validation F1 ...), or the error.
    """

    n: int
    status: str
    promoted: bool
    reason: str
    champion: str
    challenger: str | None = None
    as_of: str | None = None
    window: dict[str, Any] = field(default_factory=dict)
    log_returns: dict[str, float] = field(default_factory=dict)
    advantage: float | None = None
    t: float | None = None
    margin: float | None = None
    min_t: float | None = None
    train_seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        from .alerts import json_line

        return json_line(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str, where: str) -> "Decision":
        """Read a decision file; anything malformed is a ValueError naming ``where``.

        :param text: the file's text.
        :param where: the file, for the error.
        """
        try:
            record = json.loads(text)
            decision = cls(**record)
        except (json.JSONDecodeError, TypeError) as error:
            raise ValueError(f"{where}: not a retraining decision ({' '.join(str(error).split())})") from None
        if decision.status not in ("done", "failed") or not isinstance(decision.promoted, bool):
            raise ValueError(f"{where}: status={decision.status!r}, promoted={decision.promoted!r} are not a decision")
        if decision.promoted and (decision.status != "done" or not decision.challenger):
            raise ValueError(f"{where}: promoted without a finished challenger")
        return decision

    def message(self) -> str:
        """The alert's one line, with the numbers."""
        if self.status == "failed":
            return f"retraining {self.n} failed, nothing changed: {self.reason}"
        r = self.log_returns
        t = "n/a" if self.t is None else f"{self.t:.2f}"
        verdict = f"PROMOTED {self.challenger}" if self.promoted else f"kept the champion {self.champion}"
        return (f"retraining {self.n}: {verdict}; over {self.window.get('bars')} bars "
                f"{self.window.get('start', '')[:10]}..{self.window.get('end', '')[:10]} log return after costs: "
                f"challenger {r.get('challenger', float('nan')):+.4f}, champion {r.get('champion', float('nan')):+.4f}, "
                f"buy-and-hold {r.get('buy_and_hold', float('nan')):+.4f}, cash {r.get('cash', 0.0):+.4f}; "
                f"advantage {self.advantage:+.4f} (margin {self.margin:g}), t {t} (min {self.min_t:g}); {self.reason}")


# ----- the retraining itself ------------------------------------------------------------------------------
def champion_path(policy: Any) -> Path:
    """The folder a live policy was loaded from (a supervised bundle's ``path``).

    :param policy: a :class:`live.policy.LivePolicy`.
    """
    model = getattr(getattr(policy, "policy", None), "model", None)
    path = getattr(model, "path", None)
    if path is None:
        raise ValueError(f"retrain: policy {getattr(policy, 'name', policy)!r} is not a saved supervised bundle; "
                         f"retrain.kind supports {list(KINDS)} champions only - drop the retrain section")
    return Path(path)


def dataset_config_for(policy: Any) -> Any:
    """The dataset settings the champion was trained with (features, window, labels, scaler, timeframe).

    :param policy: the champion (a live supervised policy).
    """
    from features.dataset import DatasetConfig
    from features.labels import LabelConfig

    pre = policy.preprocessing
    if pre.news is not None:
        raise ValueError(f"retrain: policy {policy.name} reads news columns; a retraining has bars only")
    model = policy.policy.model
    return DatasetConfig(symbols=tuple(pre.asset_map), timeframe=pre.timeframe, window=pre.window,
                         features=pre.features, labels=LabelConfig(**model.label), scaler=pre.scaler.kind,
                         clip=pre.scaler.clip)


def split_fold(bars: Mapping[str, pd.DataFrame], config: RetrainConfig, history: int) -> Any:
    """The benchmark's walk-forward split with one fold: its test window the last ``validation_bars`` bars, its
    validation window the ``selection_bars`` before (purged), its train everything before that.

    :param bars: each symbol's bars, oldest first.
    :param config: the retraining settings.
    :param history: bars of warm-up and window a train row needs.
    """
    from evaluation.config import FoldConfig
    from evaluation.folds import walk_forward_folds

    n = len(np.unique(np.concatenate([frame.index.as_unit("ns").asi8 for frame in bars.values()])))
    share = config.validation_bars / n if n else 1.0
    if not share < 0.9:
        raise ValueError(f"retrain.validation_bars={config.validation_bars} leaves too little to train on: the data "
                         f"has {n} bars")
    folds = walk_forward_folds(bars, FoldConfig(n_folds=1, test_share=share, validation_bars=config.selection_bars
                                                or config.validation_bars, purge_gap=config.purge_gap), history)
    return folds[0]


def train_challenger(policy: Any, config: RetrainConfig, data: Any, out_dir: Path) -> dict[str, Any]:
    """Train the challenger as a benchmark job trains a supervised policy (:func:`evaluation.runner._trained_policy`)
    and save its bundle to ``out_dir`` (built aside, renamed into place); what training recorded is returned.

    :param policy: the champion (its model settings are the default).
    :param config: the retraining settings.
    :param data: the fold's data.
    :param out_dir: the challenger's folder.
    """
    from evaluation.jobs import Job
    from evaluation.runner import _trained_policy

    champion_model = policy.policy.model.model_config
    if config.model is None:
        model = champion_model.kind
        settings = config.model_settings if config.model_settings is not None else {
            k: v for k, v in champion_model.to_dict().items()
            if k not in ("kind", "window", "n_features", "n_assets")}
    else:
        model, settings = config.model, dict(config.model_settings or {})
    spec = {"policy": {"kind": "supervised", "model": model, "model_settings": settings, "thresholds": "f1"},
            "budget": dict(config.budget), "base_cost": [0.0, 0.0]}
    job = Job(key="retrain", market="live", fold=0, policy="challenger", seed=config.seed, spec=spec)
    with tempfile.TemporaryDirectory(prefix="retrain_") as tmp:
        _, _, meta, artifact = _trained_policy(job, data, Path(tmp))
        write_directory_atomic(out_dir, lambda target: _copy_into(artifact, target))
    return {k: v for k, v in meta.items() if k in ("selection", "threshold", "validation_f1", "best_epoch",
                                                   "validation_sharpe")}


def _copy_into(source: Path, target: Path) -> None:
    for item in source.iterdir():
        if item.is_dir():
            shutil.copytree(item, target / item.name)
        else:
            shutil.copy2(item, target / item.name)


def window_log_returns(policy: Any, data: Any, costs: Costs, symbols: list[str]) -> pd.Series:
    """Per-bar log returns of ``policy``'s equal-capital sleeves on ``data``'s test split after ``costs``
    (:func:`envs.backtest.backtest_many`; a policy with its own preprocessing observes the data rebuilt with it).

    :param policy: the policy (a live policy's ``policy``, or a baseline).
    :param data: the fold's data.
    :param costs: the run's cost model.
    :param symbols: the symbols scored.
    """
    from envs.backtest import backtest_many
    from evaluation.analysis import portfolio_equity
    from evaluation.jobs import JobResult

    settings = dict(getattr(policy, "env_settings", {}))
    results = backtest_many(policy, data, "test", [costs], symbols, **settings)
    arrays: dict[str, np.ndarray] = {}
    for symbol, result in zip(symbols, results):
        arrays[f"{symbol}|timestamps"] = result.timestamps.astype("datetime64[ns]").astype(np.int64)
        arrays[f"{symbol}|run|equity"] = result.equity
    equity = portfolio_equity(JobResult("", {"symbols": symbols, "timeframe": data.timeframe}, arrays), "run")
    return pd.Series(np.diff(np.log(equity.to_numpy())), index=equity.index[1:])


def paired_t(challenger: np.ndarray, champion: np.ndarray) -> float | None:
    """The paired t statistic of per-bar differences (:func:`scipy.stats.ttest_rel`); None when undefined.

    :param challenger: per-bar log returns.
    :param champion: per-bar log returns of the same bars.
    """
    from scipy.stats import ttest_rel

    if len(challenger) < 2:
        return None
    t = float(ttest_rel(challenger, champion).statistic)
    return t if math.isfinite(t) else None


def retrain(bars: Mapping[str, pd.DataFrame], champion: Any, config: RetrainConfig, costs: Costs, challenger_dir: Path,
            *, n: int, champion_dir: Path | None = None,
            train: Callable[[Any, RetrainConfig, Any, Path], dict[str, Any]] | None = None,
            returns: Callable[[str, Any, Any], pd.Series] | None = None) -> Decision:
    """One retraining: split, train the challenger, score the four on the last ``validation_bars``, decide.

    :param bars: each traded symbol's latest bars (nothing after the moment of the retraining).
    :param champion: the active live policy.
    :param config: the retraining settings.
    :param costs: the run's cost model.
    :param challenger_dir: where the challenger's bundle goes.
    :param n: the retraining's number.
    :param champion_dir: the champion's folder; None: :func:`champion_path`.
    :param train: trains the challenger (tests plant one); None: :func:`train_challenger`.
    :param returns: ``returns(name, policy, data)`` -> per-bar log returns on the scored window (tests plant
        them); None: :func:`window_log_returns` at ``costs``.
    """
    from evaluation.folds import fold_market_data
    from features.feature_builder import warmup_bars

    from .policy import load_live_policy

    champion_dir = Path(champion_dir) if champion_dir is not None else champion_path(champion)
    dataset = dataset_config_for(champion)
    history = warmup_bars(dataset.features) + dataset.window
    cut = {s: frame.iloc[-config.history_bars:] for s, frame in bars.items()}
    fold = split_fold(cut, config, history)
    data = fold_market_data(cut, dataset, fold, config.purge_gap)
    started = time.perf_counter()
    details = (train or train_challenger)(champion, config, data, challenger_dir)
    train_seconds = time.perf_counter() - started
    challenger = load_live_policy(challenger_dir)
    symbols = [s for s in data.symbols if np.subtract(*data.split_range("test", s)[::-1]) >= 2]
    if not symbols:
        raise ValueError(f"no symbol has 2 bars in the scored window ({fold.describe()})")

    def score(name: str, policy: Any) -> pd.Series:
        if returns is not None:
            return returns(name, policy, data)
        return window_log_returns(policy, data, costs, symbols)

    from agents.baselines import make_baseline

    series = {"challenger": score("challenger", challenger.policy), "champion": score("champion", champion.policy),
              "buy_and_hold": score("buy_and_hold", make_baseline("buy_and_hold", data))}
    ours, theirs = series["challenger"].to_numpy(), series["champion"].to_numpy()
    if len(ours) != len(theirs):
        raise ValueError(f"challenger and champion were scored on {len(ours)} and {len(theirs)} bars")
    log_returns = {name: float(s.sum()) for name, s in series.items()}
    log_returns["cash"] = 0.0
    advantage = log_returns["challenger"] - log_returns["champion"]
    t = paired_t(ours, theirs)
    promoted = advantage > config.margin and t is not None and t >= config.min_t
    if promoted:
        reason = f"beats the champion by {advantage:+.4f} > margin {config.margin:g} with t {t:.2f} >= {config.min_t:g}"
    elif not advantage > config.margin:
        reason = f"advantage {advantage:+.4f} is not above the margin {config.margin:g}"
    else:
        reason = f"t {'undefined' if t is None else f'{t:.2f}'} is below min_t {config.min_t:g}"
    index = series["challenger"].index
    return Decision(n=n, status="done", promoted=bool(promoted), reason=reason, champion=str(champion_dir),
                    challenger=str(challenger_dir),
                    as_of=iso(max(frame.index[-1] for frame in cut.values())),
                    window={"start": iso(index[0]) if len(index) else None, "end": iso(index[-1]) if len(index) else None,
                            "bars": int(len(index)), "symbols": symbols, "fold": fold.describe()},
                    log_returns=log_returns, advantage=advantage, t=t, margin=config.margin, min_t=config.min_t,
                    train_seconds=train_seconds, details=details)


# ----- files shared by the loop and the retraining process ---------------------------------------------------
def decision_path(run_dir: Path, n: int) -> Path:
    return Path(run_dir) / DECISIONS_DIR / f"{n}.json"


def request_path(run_dir: Path, n: int) -> Path:
    return Path(run_dir) / DECISIONS_DIR / f"{n}.request.json"


def bars_path(run_dir: Path, n: int) -> Path:
    return Path(run_dir) / DECISIONS_DIR / f"{n}.bars.pkl"


def policy_dir(run_dir: Path, n: int) -> Path:
    return Path(run_dir) / POLICIES_DIR / str(n)


def write_request(run_dir: Path, n: int, bars: Mapping[str, pd.DataFrame], champion: Path, config: RetrainConfig,
                  costs: Mapping[str, Any], as_of: pd.Timestamp) -> Path:
    """Write what retraining ``n`` needs (the bars up to ``as_of``, the champion, the settings), atomically.

    :param run_dir: the run folder.
    :param n: the retraining's number.
    :param bars: each symbol's latest bars.
    :param champion: the active policy's folder.
    :param config: the retraining settings.
    :param costs: the run's cost settings (:class:`live.config.CostConfig` as a dict).
    :param as_of: the moment of the request.
    """
    import pickle

    folder = Path(run_dir) / DECISIONS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    from features.atomic_io import write_bytes_atomic

    write_bytes_atomic(bars_path(run_dir, n), pickle.dumps({s: f for s, f in bars.items()}))
    request = {"n": n, "as_of": iso(as_of), "champion": str(champion), "config": dataclasses.asdict(config),
               "costs": dict(costs), "bars": bars_path(run_dir, n).name}
    path = request_path(run_dir, n)
    write_text_atomic(path, json.dumps(request, sort_keys=True))
    return path


def read_decision(run_dir: Path, n: int) -> Decision | None:
    """Retraining ``n``'s decision, None while it has none; a malformed file is a ValueError naming it."""
    path = decision_path(run_dir, n)
    if not path.exists():
        return None
    return Decision.from_json(path.read_text(), str(path))


def active_policy(journal: Journal) -> dict[str, Any] | None:
    """The journal's active policy: ``{"path", "n", "since"}`` (None: the one the run started with)."""
    return journal.meta("policy")


def journal_decision(journal: Journal, alert: Callable[..., Any], decision: Decision, at: pd.Timestamp) -> bool:
    """Record ``decision`` in the journal: an alert of kind ``retraining`` with its numbers, the retraining state,
    and on a promotion the active policy (meta ``policy``: its folder, its number, since ``at``). Idempotent: a
    decision already handled changes nothing. Returns whether it was new.

    :param journal: the run's journal.
    :param alert: the run's :class:`live.alerts.Alerter` (or one writing the journal only).
    :param decision: the decision.
    :param at: the moment it is taken into account (a promoted policy decides from then on).
    """
    state = dict(journal.meta("retrain") or {})
    if int(state.get("handled", 0)) >= decision.n:
        return False
    alert(at, RETRAIN_KIND, decision.message(), key=f"retrain:{decision.n}")
    if decision.promoted:
        journal.set_meta("policy", {"path": decision.challenger, "n": decision.n, "since": iso(at),
                                    "previous": decision.champion})
    history = list(state.get("decisions", []))
    history.append({"n": decision.n, "status": decision.status, "promoted": decision.promoted, "at": iso(at),
                    "advantage": decision.advantage, "t": decision.t, "log_returns": decision.log_returns,
                    "challenger": decision.challenger})
    state.update(handled=decision.n, decisions=history[-50:])
    if state.get("running", {}) and state["running"].get("n") == decision.n:
        state["running"] = None
    journal.set_meta("retrain", state)
    return True


def journal_pending(run_dir: Path, journal: Journal, alert: Callable[..., Any], at: pd.Timestamp) -> list[Decision]:
    """Journal, in order, every decision written and not journalled yet (what a retraining does itself when no
    loop runs the run); a request without a decision is left for whoever runs it.

    :param run_dir: the run folder.
    :param journal: the run's journal.
    :param alert: an alerter writing to ``journal``.
    :param at: the moment they are taken into account.
    """
    state = dict(journal.meta("retrain") or {})
    done = []
    for n in range(int(state.get("handled", 0)) + 1, int(state.get("requested", 0)) + 1):
        decision = read_decision(run_dir, n)
        if decision is None:
            break
        journal_decision(journal, alert, decision, at)
        done.append(decision)
    return done


class LoopRetrainer:
    """The loop's side of retraining: start ``python -m experiments.retrain`` every ``every`` bars (never
    blocking a cycle), pick up its decision at the start of a later cycle, journal it, say which policy to swap in.

    A replaying broker (``fast``) waits for a running retraining at the next cycle's start, so a replay is
    deterministic; a live run goes on trading with the champion meanwhile.

    :param run_dir: the run folder.
    :param journal: the run's journal.
    :param alert: the run's alerter.
    :param config: the retraining settings.
    :param costs: the run's cost settings (a dict).
    :param wait: wait for a running retraining at the start of the next cycle (a replay).
    :param command: the command started (its arguments follow: ``--run DIR --request N``); None:
        ``python -m experiments.retrain``.
    """

    def __init__(self, run_dir: Path, journal: Journal, alert: Callable[..., Any], config: RetrainConfig,
                 costs: Mapping[str, Any], *, wait: bool = False, command: list[str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.journal = journal
        self.alert = alert
        self.config = config
        self.costs = dict(costs)
        self.wait = wait
        self.command = list(command) if command is not None else [sys.executable, "-m", "experiments.retrain"]
        self.process: subprocess.Popen | None = None
        self.started_at: float | None = None

    @property
    def state(self) -> dict[str, Any]:
        return dict(self.journal.meta("retrain") or {})

    def due(self, bar_count: int) -> bool:
        """Whether ``bar_count`` new bars since the last retraining call for another (none is running)."""
        return self.config.every is not None and not self.state.get("running") and bar_count >= self.config.every

    def start(self, bars: Mapping[str, pd.DataFrame], champion: Path, at: pd.Timestamp, newest: pd.Timestamp) -> int:
        """Write retraining n's request and start its process; the journal says it is running (with its pid).

        :param bars: each symbol's latest bars.
        :param champion: the active policy's folder.
        :param at: now.
        :param newest: the newest bar decided (the schedule counts from it).
        """
        state = self.state
        n = int(state.get("requested", 0)) + 1
        write_request(self.run_dir, n, {s: f.iloc[-self.config.history_bars:] for s, f in bars.items()}, champion,
                      self.config, self.costs, at)
        log = open(self.run_dir / DECISIONS_DIR / f"{n}.log", "ab")
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                                   os.environ.get("PYTHONPATH", "")])}
        try:
            self.process = subprocess.Popen([*self.command, "--run", str(self.run_dir), "--request", str(n)],
                                            stdout=log, stderr=subprocess.STDOUT, env=environment,
                                            start_new_session=True)
        finally:
            log.close()
        self.started_at = time.monotonic()
        state.update(requested=n, last_bar=iso(newest),
                     running={"n": n, "pid": self.process.pid, "started": iso(at)})
        self.journal.set_meta("retrain", state)
        self.journal.commit()  # the running retraining is known before anything else can happen
        logger.info("retraining %d started (pid %d)", n, self.process.pid)
        return n

    def poll(self, at: pd.Timestamp) -> Decision | None:
        """At the start of a cycle: the finished retraining's decision, journalled (None: nothing finished). A
        retraining that failed (no decision, a non-zero exit, a malformed file, past ``max_train_seconds``) is
        journalled as failed and changes nothing.

        :param at: the cycle's moment.
        """
        self._handle_orphans(at)
        running = self.state.get("running")
        if not running:
            return None
        n = int(running["n"])
        if self.wait:
            self._wait_for(running)
        decision, failure = self._read(n)
        if decision is None and failure is None:
            alive = self._alive(running)
            elapsed = (time.monotonic() - self.started_at) if self.started_at is not None else None
            if alive and elapsed is not None and elapsed > self.config.max_train_seconds:
                self._stop()
                failure = f"still running after retrain.max_train_seconds={self.config.max_train_seconds:g}; stopped"
            elif alive:
                return None  # still training: the champion trades on
            else:
                decision, failure = self._read(n)  # it may have written its file just before ending
                if decision is None and failure is None:
                    failure = f"the process ended without a decision{self._exit_text()} (see {DECISIONS_DIR}/{n}.log)"
        if decision is None:
            decision = Decision(n=n, status="failed", promoted=False, reason=str(failure),
                                champion=str(self.journal.meta("policy", {}).get("path", "")) if
                                self.journal.meta("policy") else "")
        self.process = None
        journal_decision(self.journal, self.alert, decision, at)
        return decision

    def _wait_for(self, running: Mapping[str, Any]) -> None:
        """A replay: wait (at most ``max_train_seconds``) until the running retraining has written its decision or
        ended - its own child, or one started before a restart."""
        n = int(running["n"])
        deadline = time.monotonic() + self.config.max_train_seconds
        while time.monotonic() < deadline and not decision_path(self.run_dir, n).exists() and self._alive(running):
            if self.process is not None:
                try:
                    self.process.wait(timeout=max(deadline - time.monotonic(), 0.0))
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.05)

    def _handle_orphans(self, at: pd.Timestamp) -> None:
        """Decisions written while no loop watched (a retraining the run started before a restart, a standalone
        one) and not journalled yet, in order."""
        state = self.state
        handled = int(state.get("handled", 0))
        running = state.get("running") or {}
        for n in range(handled + 1, int(state.get("requested", 0)) + 1):
            if n == running.get("n"):
                break
            decision, failure = self._read(n)
            decision = decision or Decision(n=n, status="failed", promoted=False, champion="",
                                            reason=str(failure or "no decision was written (the run restarted)"))
            journal_decision(self.journal, self.alert, decision, at)

    def _read(self, n: int) -> tuple[Decision | None, str | None]:
        try:
            return read_decision(self.run_dir, n), None
        except ValueError as error:
            return None, str(error)

    def _alive(self, running: Mapping[str, Any]) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        pid = int(running.get("pid") or 0)  # started before a restart: is its process still there?
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _not_zombie(pid)

    def _exit_text(self) -> str:
        if self.process is None or self.process.poll() is None:
            return ""
        return f" (exit code {self.process.returncode})"

    def _stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        """The loop ends: a running retraining goes on by itself (its decision is picked up at the next start)."""
        self.process = None


def _not_zombie(pid: int) -> bool:
    """False for a finished child not yet reaped (Linux ``/proc``); True when it cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


__all__ = ["Decision", "LoopRetrainer", "RETRAIN_KIND", "RetrainConfig", "champion_path", "journal_decision",
           "journal_pending", "read_decision", "retrain", "write_request"]
