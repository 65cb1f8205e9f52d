"""The live loop: bars in, the policy's decision, orders out, everything journalled.

One :meth:`LiveLoop.cycle`, whatever the broker:

1. the kill switch (file, SIGTERM/SIGINT): cancel open orders, flatten if configured, exit;
2. every journalled order that may still change is looked up at the broker by ``client_order_id``
   (fills are booked once; an intent that never reached the broker is marked ``not_sent``);
3. the latest *complete* bars of each symbol (``history_bars`` of them);
4. reconciliation: the broker's positions, open orders and cash against the journal, each difference
   journalled and alerted; a position no order explains changed outside the run: the broker's position and
   the cash that came with it are adopted together, and the day's loss baseline moves by the change, so it
   is never counted as profit or loss (:mod:`live.reconcile`); then each sleeve is marked at its last close
   (once per bar);
5. the daily-loss limit (flatten and halt);
6. a decision on each symbol's newest bar not decided yet - refused when the data is stale or too short:
   the observation is the env's (the policy's own features of those bars, the sleeve's position state,
   the asset id), the action becomes a target exposure, the risk limits cut it, and it is journalled;
7. when the market is open, each decision on the newest bar is executed once: the simulator's sizing
   rule turns the target into a quantity at the broker's reference price (:mod:`live.sizing`), the
   order's intent is journalled, the order sent with ``client_order_id`` = (run, symbol, bar, intent), and
   the broker's answer booked;
8. a JSON line and the monitor page.

A restart with the same run name resumes from the journal alone. The simulator broker's replay lives in the
process, so it is rebuilt from the journal (:meth:`live.sim_broker.SimBroker.restore`: its clock at the
journal's last moment, the journalled orders sent again); a resumed replay ends with the fills and equity of
one never interrupted, and a finished one does not trade again.

Orders never double: the intent is committed before the order is sent, the id is derived from what the
order is for, the broker refuses a second order with the same id, and a restart asks the broker about
every intent before deciding anything. A decision on bar ``t`` is executed at the first open moment
while ``t`` is still the newest complete bar (the next bar's open for daily bars, at once for intraday
bars); a newer bar supersedes it.

The loop waits between cycles through ``broker.sleep``: real time for Alpaca, the replay's next event for
the simulator broker, so ``--broker sim`` runs the identical code path fast.

Each symbol follows its own calendar (:mod:`features.calendars`). A crypto pair (``BTC/USD``) trades round the
clock: its decisions are executed, its positions flattened and priced whatever the equity clock's ``is_open``
says, and its next bar closes on the 24/7 grid; a stock waits for the equity market as always (its next bar
close comes from the broker's equity clock, Alpaca's own calendar). The next wake is the earliest over the
symbols. A replaying broker says itself which symbols trade at a moment (``can_trade``: a bar of the symbol opens
then), so a replay of stocks beside crypto trades each at its own bars, as the backtest does.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from features.bars import Timeframe
from features.calendars import asset_class_of, calendar_for
from sim.settings import check_integer

from .alerts import Alerter, json_line
from .broker import BUY, SELL, Broker, BrokerError, Clock, Position
from .config import PaperConfig
from .journal import Journal, client_order_id, iso
from .policy import LivePolicy, act_together, load_live_policy, position_state, settled_history_bars
from .retrain import RETRAIN_KIND, LoopRetrainer, champion_path
from .orders import OrderDesk
from .reconcile import OutsideChange, reconcile
from .risk import KillSwitch, limit_targets
from .sizing import OrderPlanner, float_columns, round_quantity

logger = logging.getLogger("live.loop")

#: Named moments at which tests inject a crash (see ``crash`` of :class:`LiveLoop`).
CRASH_POINTS = ("after_decide", "after_intent", "after_submit", "after_book", "after_sync", "after_cancel")
#: ... and those passed only with a ``retrain`` section (a retraining started; a promotion committed).
RETRAIN_CRASH_POINTS = ("after_retrain_start", "after_promotion")


class LoopStopped(Exception):
    """The loop ended on purpose (kill switch, halt); the message says why."""


@dataclass
class CycleReport:
    """What one cycle saw and did (also written as one JSON line)."""

    at: pd.Timestamp
    is_open: bool = False
    status: str = "ok"
    decisions: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    fills: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    equity: float | None = None
    clock: Clock | None = None
    waiting_for_bars: bool = False

    def record(self) -> dict[str, Any]:
        return {"at": iso(self.at), "is_open": self.is_open, "status": self.status, "equity": self.equity,
                "decisions": self.decisions, "orders": self.orders, "fills": self.fills, "alerts": self.alerts,
                "errors": self.errors}


class LiveLoop:
    """Trade ``policy`` on ``symbols`` through ``broker``, journalled in ``journal``.

    :param policy: the saved policy (:func:`live.policy.load_live_policy`).
    :param broker: :class:`live.alpaca_broker.AlpacaBroker` or :class:`live.sim_broker.SimBroker`.
    :param journal: the run's journal (a restart reopens the same file and resumes).
    :param symbols: the symbols traded, one sleeve each.
    :param config: the paper config.
    :param run_name: the run's name (part of every ``client_order_id``).
    :param run_dir: the run folder (kill file, ``cycles.jsonl``, ``monitor.html``).
    :param crash: called with each name of :data:`CRASH_POINTS` as the loop passes it (fault-injection
        tests raise or SIGKILL there); None: nothing.
    :param clear_halt: resume a run halted by the daily-loss limit.
    :param write_monitor: regenerate ``monitor.html`` after each cycle.
    :param alert_post: the webhook's ``post`` (tests); None: ``requests.post``.
    :param retrain_command: with a ``retrain`` section: the command a retraining runs (``--run DIR --request N``
        follow); None: ``python -m experiments.retrain``.
    """

    def __init__(self, policy: LivePolicy, broker: Broker, journal: Journal, symbols: list[str], config: PaperConfig,
                 *, run_name: str, run_dir: str | Path, crash: Callable[[str], None] | None = None,
                 clear_halt: bool = False, write_monitor: bool = True, alert_post: Callable[..., Any] | None = None,
                 retrain_command: list[str] | None = None) -> None:
        if not symbols:
            raise ValueError("no symbols to trade — pass --symbols AAPL MSFT ...")
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols {symbols} repeat a symbol")
        self.policy = policy
        self._open(policy.preprocessing, broker, journal, symbols, config, run_name=run_name, run_dir=run_dir,
                   crash=crash, clear_halt=clear_halt, write_monitor=write_monitor, alert_post=alert_post)
        fill_at = policy.env_settings.get("fill_at", "next_open")
        if fill_at != "next_open":
            raise ValueError(f"the policy was trained with fill_at={fill_at!r}, the backtest's optimistic fill at the "
                             f"decision bar's close; live orders fill at the next price - backtest it with "
                             f"--fill-at next_open to see what it does live")
        self.actors = {symbol: policy.actor() for symbol in self.symbols}
        if config.retrain.enabled:
            config.retrain.check_schedule(self.timeframe)
            champion_path(policy)  # a champion that cannot be retrained is refused before the run starts
            self.retrainer = LoopRetrainer(self.run_dir, journal, self.alert, config.retrain,
                                           dataclasses.asdict(config.costs), wait=bool(getattr(broker, "fast", False)),
                                           command=retrain_command)

    def _open(self, pre: Any, broker: Broker, journal: Journal, symbols: list[str], config: PaperConfig, *,
              run_name: str, run_dir: str | Path, crash: Callable[[str], None] | None, clear_halt: bool,
              write_monitor: bool, alert_post: Callable[..., Any] | None) -> None:
        """What every loop sets up (this one and the portfolio loop): the run, the symbols checked against the
        preprocessing ``pre`` the observations are built with, the timeframe and history, the order desk, alerts,
        the kill switch and the cycle counters."""
        self.broker = broker
        self.journal = journal
        self.symbols = list(symbols)
        self.config = config
        self.run_name = run_name
        self.run_dir = Path(run_dir)
        self.crash = crash
        self.clear_halt = clear_halt
        self.write_monitor = write_monitor
        for symbol in self.symbols:
            pre.asset_id(symbol)  # a symbol the policy never saw is an error naming the ones it knows
        timeframe = config.loop.timeframe or pre.timeframe
        if Timeframe.parse(timeframe).seconds != Timeframe.parse(pre.timeframe).seconds:
            raise ValueError(f"timeframe {timeframe} differs from the policy's {pre.timeframe} — its features would "
                             f"mean something else; drop --timeframe or train on {timeframe} bars")
        self.timeframe = str(Timeframe.parse(timeframe))
        self.bar = pd.Timedelta(seconds=Timeframe.parse(self.timeframe).seconds)
        self.history_bars = int(config.loop.history_bars or settled_history_bars(pre))
        self.min_bars = pre.min_bars  # a property computed from the feature settings each time it is read
        if self.history_bars < pre.min_bars:
            raise ValueError(f"loop.history_bars={self.history_bars} is below the policy's {pre.min_bars} bars of "
                             f"warm-up + window — raise it or leave it null")
        self.costs = config.costs.costs()
        self._planner: OrderPlanner | None = None  # the simulator's sizing rule, built at the first order
        self.qty_decimals = getattr(broker, "qty_decimals", None)
        self.alert = Alerter(journal, config.alerts, run_name, post=alert_post)
        self.desk = OrderDesk(broker, journal, self.alert, self.timeframe, crash=self._crash)
        self.killswitch = KillSwitch(self.run_dir / config.risk.kill_file)
        self.stopped: str | None = None
        self.broker_error_streak = 0
        self.waiting_streak = 0
        self.pending_streak = 0
        self.late_since: dict[tuple[str, pd.Timestamp], pd.Timestamp] = {}
        self._closes: dict[str, tuple[pd.DataFrame, float, pd.Timestamp]] = {}  # this cycle's last bars (see _last_bar)
        self.jsonl = self.run_dir / "cycles.jsonl"
        self.monitor_path = self.run_dir / "monitor.html"
        self.retrainer: LoopRetrainer | None = None  # LiveLoop sets it up when the config has a retrain section


    @property
    def crypto(self) -> frozenset[str]:
        """The traded symbols that are crypto pairs (24/7 markets); a property, so a subclass that builds its own
        ``symbols`` (the portfolio loop) has it too."""
        return frozenset(symbol for symbol in self.symbols if asset_class_of(symbol) == "crypto")

    # ----- start --------------------------------------------------------------------------------
    def start(self) -> None:
        """Open (or resume) the run: check it is the same run, set up the sleeves, restore the policy's state."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        identity = {"run": self.run_name, "policy": self.policy.name, "preprocessing": self.policy.preprocessing.digest(),
                    "symbols": self.symbols, "timeframe": self.timeframe, "broker": self.broker.name}
        known = self.journal.meta("identity")
        if known is None:
            clock = self.broker.clock()
            account = self.broker.account()
            capital = self.config.loop.capital or account.equity
            if not capital > 0:
                raise ValueError(f"capital {capital} must be > 0 (the account's equity is {account.equity})")
            share = capital / len(self.symbols)
            self.journal.set_meta("identity", identity)
            self.journal.set_meta("started_at", iso(clock.timestamp))
            # the cost model the run sizes (and a replay fills) with: the parity report compares live fills to it
            self.journal.set_meta("costs", dataclasses.asdict(self.config.costs))
            self.journal.set_meta("cash_offset", account.cash - capital)
            self.journal.open_sleeves({symbol: share for symbol in self.symbols}, clock.timestamp)
            logger.info("run %s: %s on %s, %.2f per symbol, broker %s", self.run_name, self.policy.name,
                        ", ".join(self.symbols), share, self.broker.name)
        else:
            differs = [k for k in identity if k != "preprocessing" and known.get(k) != identity[k]]
            if known.get("preprocessing") != identity["preprocessing"]:
                differs.append("policy preprocessing")
            if differs:
                raise ValueError(f"run {self.run_name} was started with another {', '.join(differs)} "
                                 f"({ {k: known.get(k) for k in differs if k in known} }) — resume it with the same "
                                 f"--policy/--symbols/--broker, or start a new --run-name")
            restore = getattr(self.broker, "restore", None)
            if restore is not None:  # a replay lives in this process: rebuild it from the journal
                restore(self.journal)
            logger.info("run %s resumed from %s", self.run_name, self.journal.path)
        if self.clear_halt and self.journal.meta("halted"):
            self.journal.set_meta("halted", None)
            self.journal.set_meta("day_start", None)  # the day's loss counts again from the equity at the restart
        self.journal.set_meta("status", "running")
        self._load_active_policy()
        self._restore_policy_state()
        self._remember_replay_history()

    # ----- retraining: champion and challenger ------------------------------------------------------
    def _load_active_policy(self) -> None:
        """After a promotion the journal's meta ``policy`` names the active policy: a restart trades it (the
        run's identity stays the policy it was started with)."""
        active = self.journal.meta("policy")
        if active is None or active.get("path") is None:
            return
        self._swap(load_live_policy(active["path"]), active["path"])

    def _swap(self, policy: LivePolicy, path: str) -> None:
        """Trade ``policy`` from now on (between cycles only): checked against the run's symbols and timeframe,
        fresh actors, the replay's history remembered."""
        for symbol in self.symbols:
            policy.preprocessing.asset_id(symbol)
        if Timeframe.parse(policy.preprocessing.timeframe).seconds != self.bar.total_seconds():
            raise ValueError(f"policy {path} was trained on {policy.preprocessing.timeframe} bars, the run trades "
                             f"{self.timeframe}")
        if policy.env_settings.get("fill_at", "next_open") != "next_open":
            raise ValueError(f"policy {path} was trained with fill_at={policy.env_settings['fill_at']!r}")
        self.policy = policy
        self.actors = {symbol: policy.actor() for symbol in self.symbols}
        self.min_bars = policy.preprocessing.min_bars
        self._remember_replay_history()
        logger.info("run %s now trades %s (%s)", self.run_name, policy.name, path)

    def _retrain_poll(self, now: pd.Timestamp) -> None:
        """At the start of a cycle: journal a finished retraining and, on a promotion, swap the policy (a
        promoted policy that cannot be loaded is journalled and changes nothing)."""
        if self.retrainer is None:
            return
        decision = self.retrainer.poll(now)
        if decision is None or not decision.promoted:
            return
        try:
            policy = load_live_policy(decision.challenger)
            self._swap(policy, str(decision.challenger))
        except (OSError, ValueError) as error:
            self.journal.set_meta("policy", {"path": decision.champion, "n": None, "since": iso(now),
                                             "previous": decision.challenger})
            self.alert(now, RETRAIN_KIND, f"retraining {decision.n}: the promoted policy could not be loaded "
                       f"({error}); the champion trades on", key=f"retrain:{decision.n}:load")
            return
        self.journal.commit()  # the promotion is durable before anything is decided with the new policy
        self._crash("after_promotion")

    def _retrain_start(self, now: pd.Timestamp, bars: dict[str, pd.DataFrame | None]) -> None:
        """After the cycle's decisions: every ``retrain.every`` newly decided bars, start a retraining in its own
        process on the bars up to now (nothing later exists yet)."""
        if self.retrainer is None:
            return
        state = self.retrainer.state
        last = state.get("last_bar")
        rows = self.journal.decisions(self.symbols[0])
        new = [row["bar_time"] for row in rows if last is None or row["bar_time"] > last]
        if not self.retrainer.due(len(new)):
            return
        fetched = {}
        for symbol in self.symbols:
            history = self.broker.bars(symbol, self.timeframe, self.config.retrain.history_bars)
            if history is None or len(history) == 0:
                return
            fetched[symbol] = history
        active = self.journal.meta("policy") or {}
        champion = active.get("path") or str(champion_path(self.policy))
        self.retrainer.start(fetched, Path(champion), now, pd.Timestamp(new[-1]))
        self._crash("after_retrain_start")

    def _remember_replay_history(self) -> None:
        """A replaying broker knows each symbol's bars up front (``history(symbol)``): the policy computes their
        features once (:meth:`live.policy.LivePolicy.remember_history`) instead of once per decision; the loop still
        fetches each cycle's bars and the policy reads the window of exactly those bars."""
        history = getattr(self.broker, "history", None)
        if history is None:
            return
        for symbol in self.symbols:
            self.policy.remember_history(history(symbol), symbol)

    def _restore_policy_state(self) -> None:
        """A stateful policy (the threshold policy counts bars in position) gets back its state by replaying
        the observations it decided on, in order (since it became the active policy, after a promotion)."""
        active = self.journal.meta("policy") or {}
        since = active.get("since")
        for symbol, actor in self.actors.items():
            actor.reset()
            rows = self.journal.decisions(symbol)
            if since is not None:
                start = pd.Timestamp(since)
                rows = [row for row in rows if pd.Timestamp(row["decided_at"]) >= start]
            if rows and any(row["observation"] is None for row in rows):
                logger.warning("%s: decisions without observations; a stateful policy restarts its state", symbol)
                continue
            for row in rows:
                actor.act(np.frombuffer(row["observation"], dtype=np.float32).copy()[None])

    # ----- run ----------------------------------------------------------------------------------
    def run(self, once: bool = False, max_cycles: int | None = None, until: pd.Timestamp | None = None,
            on_cycle: Callable[[CycleReport], Any] | None = None) -> str:
        """Cycle until the kill switch, a halt, the end of a replay, ``once``, ``max_cycles`` or the market
        clock passing ``until``.

        :param on_cycle: called with each cycle's report (a progress bar).
        :return: why it ended.
        """
        if max_cycles is not None:  # 0 or -1 would still run a cycle that can place orders
            check_integer("max_cycles", max_cycles, 1)
        if self.config.retrain.enabled and self.retrainer is None:
            raise ValueError("retrain: only a single policy's run is retrained (not --portfolio) — drop the retrain "
                             "section from the config")
        self.start()
        self.killswitch.install()
        # what exists now (the policy, the data, the libraries: hundreds of thousands of objects) lives as long as
        # the run: kept out of the collector's full passes, which would walk it again and again
        freeze = gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        threads = _single_thread_torch()
        try:
            cycles = 0
            while True:
                report = self.cycle()
                cycles += 1
                if on_cycle is not None:
                    on_cycle(report)
                if self.stopped:
                    return self.stopped
                if getattr(self.broker, "finished", False):
                    self.journal.set_meta("status", "finished")
                    self._publish(report, final=True)
                    return "replay finished"
                if once or (max_cycles is not None and cycles >= max_cycles):
                    return "one cycle" if once else f"{cycles} cycles"
                wake = self.next_wake(report)
                if until is not None and wake > until:
                    return f"reached {until}"
                seconds = max((wake - report.at).total_seconds(), 0.0) if report.at is not None else 0.0
                self.broker.sleep(seconds, stop=lambda: self.killswitch.triggered() is not None)
        finally:
            if freeze:
                gc.unfreeze()
            if threads is not None:
                sys.modules["torch"].set_num_threads(threads)
            self.killswitch.uninstall()

    def _crash(self, name: str) -> None:
        if self.crash is not None:
            self.crash(name)

    def cycle(self) -> CycleReport:
        """One pass: sync, reconcile, mark, decide, execute, publish; its journal writes in one transaction
        (:meth:`live.journal.Journal.batch`), committed at the end and around each order sent or canceled
        (:class:`live.orders.OrderDesk`)."""
        with self.journal.batch():
            return self._cycle()

    def _cycle(self) -> CycleReport:
        try:
            clock = self.broker.clock()
        except BrokerError as error:
            report = CycleReport(at=pd.Timestamp.now(tz="UTC"), status="broker error")
            self._broker_error(report, error)
            self._publish(report)
            return report
        now = clock.timestamp
        report = CycleReport(at=now, is_open=clock.is_open, clock=clock)
        try:
            reason = self.killswitch.triggered()
            if reason is not None:
                self._kill(clock, reason, report)
                return report
            self._retrain_poll(now)
            self.desk.sync(now, report.fills)
            self._crash("after_sync")
            positions = self.broker.positions()
            self._closes = {}
            bars = self._latest_bars(now, report)
            changes = reconcile(self.journal, self.broker, self.alert, self.symbols, positions, now,
                                self.config.risk.adopt_broker_positions,
                                price=lambda symbol: self._price(symbol, clock, bars))
            if changes:
                self._move_day_start(changes, clock, bars)
            self._mark(bars, report)
            if self._daily_loss(clock, bars, report) or self.journal.meta("halted"):
                self._halted(clock, bars, report)
            else:
                self._trade(clock, bars, positions, report)
                self._retrain_start(now, bars)
            self.broker_error_streak = 0
        except BrokerError as error:
            self._broker_error(report, error)
        except LoopStopped as stop:
            self.stopped = str(stop)
            report.status = "stopped"
        self._publish(report)
        return report

    def _trade(self, clock: Clock, bars: dict[str, pd.DataFrame | None], positions: dict[str, Position],
               report: CycleReport) -> None:
        """Steps 6 and 7 of the cycle: decide on the newest bars, then execute when the market is open (the
        portfolio loop decides once for the universe instead)."""
        self._decide(clock.timestamp, bars, positions, report)
        if clock.is_open or self.crypto:
            self._execute(clock, bars, report)

    # ----- bars and marks ----------------------------------------------------------------------
    def _latest_bars(self, now: pd.Timestamp, report: CycleReport) -> dict[str, pd.DataFrame | None]:
        out: dict[str, pd.DataFrame | None] = {}
        for symbol in self.symbols:
            try:
                frame = self.broker.bars(symbol, self.timeframe, self.history_bars)
            except ValueError as error:  # bars that fail validation: no decision on them
                frame, why = None, str(error)
            else:
                why = "the broker returned none"
            if frame is None or len(frame) == 0:
                self.alert(now, "stale_data", f"{symbol}: no bars ({why}); no decision", symbol,
                           key=f"nobars:{symbol}:{self.broker.session_date(now)}")
                report.waiting_for_bars = True
                frame = None
            out[symbol] = frame
        return out

    def _mark(self, bars: dict[str, pd.DataFrame | None], report: CycleReport) -> None:
        sleeves = self.journal.sleeves()
        total = 0.0
        for symbol, frame in bars.items():
            sleeve = sleeves[symbol]
            if frame is None:
                continue
            close = self._close(symbol, frame)
            equity = sleeve.cash + sleeve.units * close
            position = sleeve.units * close / equity if equity > 0 else 0.0
            self.journal.record_equity(symbol, self._bar_time(symbol, frame), close, sleeve.cash, sleeve.units, equity, position)
            total += equity
        report.equity = total

    def _close(self, symbol: str, frame: pd.DataFrame) -> float:
        """The close of ``frame``'s last bar (see :meth:`_last_bar`).

        :param symbol: the frame's symbol.
        :param frame: its bars (this cycle's).
        """
        return self._last_bar(symbol, frame)[0]

    def _bar_time(self, symbol: str, frame: pd.DataFrame) -> pd.Timestamp:
        """The time of ``frame``'s last bar (see :meth:`_last_bar`).

        :param symbol: the frame's symbol.
        :param frame: its bars (this cycle's).
        """
        return self._last_bar(symbol, frame)[1]

    def _last_bar(self, symbol: str, frame: pd.DataFrame) -> tuple[float, pd.Timestamp]:
        """The close and the time of ``frame``'s last bar, read once per cycle and symbol (the cycle's bars do not
        change while it runs; the memo is emptied when a cycle fetches its bars and holds the frame it was read from).

        :param symbol: the frame's symbol.
        :param frame: its bars (this cycle's).
        """
        hit = self._closes.get(symbol)
        if hit is None or hit[0] is not frame:
            hit = self._closes[symbol] = (frame, _last_close(frame), frame.index[-1])
        return hit[1], hit[2]

    # ----- decisions ------------------------------------------------------------------------------
    def _decide(self, now: pd.Timestamp, bars: dict[str, pd.DataFrame | None], positions: dict[str, Position],
                report: CycleReport) -> None:
        pre = self.policy.preprocessing
        sleeves = self.journal.sleeves()
        observed: dict[str, tuple[pd.Timestamp, np.ndarray]] = {}
        for symbol in self.symbols:
            frame = bars[symbol]
            if frame is None:
                continue
            bar_time = self._bar_time(symbol, frame)
            if self.journal.decision(symbol, bar_time) is not None:
                continue
            if len(frame) < self.min_bars:
                self.alert(now, "stale_data", f"{symbol}: {len(frame)} bars, the policy needs {pre.min_bars} "
                           f"({pre.warmup} warm-up + {pre.window} window); no decision", symbol,
                           key=f"short:{symbol}:{iso(bar_time)}")
                continue
            behind = self.broker.expected_bar_times(symbol, self.timeframe, bar_time, now)
            if len(behind) >= self.config.risk.stale_bars:
                # data arrives a little after the close: alert only once it is late by a few polls
                report.waiting_for_bars = True
                first_seen = self.late_since.setdefault((symbol, behind[-1]), now)
                grace = pd.Timedelta(seconds=self.config.loop.bar_delay_seconds + 3 * self.config.loop.poll_seconds)
                if now - first_seen >= grace:
                    self.alert(now, "stale_data", f"{symbol}: the newest bar is {bar_time}, {len(behind)} newer bar(s) "
                               f"should have closed (last {behind[-1]}); no decision on stale data", symbol,
                               key=f"stale:{symbol}:{iso(behind[-1])}")
                continue
            sleeve = sleeves[symbol]
            close = self._close(symbol, frame)
            basis = positions[symbol].cost_basis if symbol in positions and sleeve.units != 0 else 0.0
            state = position_state(sleeve.cash, sleeve.units, close, basis, self._bars_held(symbol, sleeve.entry_bar, frame))
            observed[symbol] = (bar_time, self.policy.observation(frame, symbol, state))
        if not observed:
            return
        # one forward pass for every symbol decided now (each symbol's actor keeps its own state)
        actions = act_together([self.actors[symbol] for symbol in observed],
                               np.stack([observation for _, observation in observed.values()]))
        new: dict[str, tuple[pd.Timestamp, Any, float, np.ndarray]] = {}
        for (symbol, (bar_time, observation)), action in zip(observed.items(), actions):
            new[symbol] = (bar_time, action, self.policy.target(action), observation)
        equity, held = {}, {}
        for symbol, sleeve in sleeves.items():
            frame = bars.get(symbol)
            close = self._close(symbol, frame) if frame is not None else 0.0
            equity[symbol] = sleeve.cash + sleeve.units * close
            held[symbol] = sleeve.units * close / equity[symbol] if equity[symbol] > 0 else 0.0
        limited = limit_targets({s: v[2] for s, v in new.items()}, equity, held, self.config.risk)
        for symbol, (bar_time, action, target, observation) in new.items():
            risk_target, note = limited[symbol]
            self.journal.record_decision(symbol, bar_time, now, action, target, risk_target, note,
                                         observation if self.config.loop.record_observations else None)
            self.journal.supersede(symbol, bar_time, now)
            report.decisions.append({"symbol": symbol, "bar": iso(bar_time), "action": _plain(action),
                                     "target": target, "risk_target": risk_target, "note": note})
        self._crash("after_decide")

    def _bars_held(self, symbol: str, entry_bar: pd.Timestamp | None, frame: pd.DataFrame) -> int | None:
        """Bars since the position was opened (the env's ``row - entry_row``); None when flat."""
        if entry_bar is None:
            return None
        index = frame.index
        if entry_bar >= index[0]:
            return int(len(index) - 1 - index.searchsorted(entry_bar))
        return len(self.broker.expected_bar_times(symbol, self.timeframe, entry_bar, index[-1] + self.bar))

    # ----- execution ------------------------------------------------------------------------------
    def _execute(self, clock: Clock, bars: dict[str, pd.DataFrame | None], report: CycleReport) -> None:
        now = clock.timestamp
        day = str(self.broker.session_date(now))
        for symbol in self.symbols:
            frame = bars[symbol]
            if frame is None or not self._tradable(symbol, clock):
                continue
            bar_time = self._bar_time(symbol, frame)
            decision = self.journal.decision(symbol, bar_time)
            if decision is None or decision["executed_at"] is not None:
                continue
            cid = client_order_id(self.run_name, symbol, bar_time, "rebalance")
            existing = self.journal.order(cid)
            if existing is not None and existing["status"] != "not_sent":
                self.journal.mark_executed(symbol, bar_time, now, f"order {cid} {existing['status']}")
                continue
            if not self.desk.cancel(now, "superseded by a newer decision", report.fills, symbol=symbol, keep=cid):
                continue  # an older order of this symbol is still open: cancel it, then size against what filled
            sent_today = self.journal.count_orders(day)
            if sent_today >= self.config.risk.max_orders_per_day:
                self.alert(now, "trades_per_day", f"{sent_today} orders today reach risk.max_orders_per_day="
                           f"{self.config.risk.max_orders_per_day}; no more orders today", key=f"maxorders:{day}")
                self.journal.mark_executed(symbol, bar_time, now, "blocked: max orders per day")
                continue
            self._send(symbol, bar_time, float(decision["risk_target"]), "rebalance", frame, clock, report)
        sent = self.journal.count_orders(day)
        if sent > self.config.alerts.max_trades_per_day:
            self.alert(now, "trades_per_day", f"{sent} orders today, above alerts.max_trades_per_day="
                       f"{self.config.alerts.max_trades_per_day}", key=f"trades:{day}")

    def _send(self, symbol: str, bar_time: pd.Timestamp, target: float, intent: str, frame: pd.DataFrame | None,
              clock: Clock, report: CycleReport) -> None:
        """Size the order by the simulator's rule (or close the position), then hand it to the desk."""
        now = clock.timestamp
        cid = client_order_id(self.run_name, symbol, bar_time, intent)
        sleeve = self.journal.sleeves()[symbol]
        reference = self.broker.reference_price(symbol)
        if intent != "rebalance" or frame is None:
            units = -sleeve.units  # flatten: sell (or cover) exactly what is held
        else:
            planner = self._planner
            if planner is None or planner.allow_short != self.policy.allow_short:  # (a promoted policy may differ)
                planner = self._planner = OrderPlanner(self.costs, self.policy.allow_short,
                                                       self.config.loop.min_rebalance)
            plan = planner.plan(frame, reference, target=target, last_target=self.journal.last_target(symbol),
                                cash=sleeve.cash, units=sleeve.units)
            units = round_quantity(plan.units, self._decimals(symbol))
        if units == 0.0:
            self.journal.mark_executed(symbol, bar_time, now, "no order (target reached or below the rebalance band)")
            return
        order = self.desk.send(cid=cid, symbol=symbol, bar_time=bar_time, intent=intent, units=units, target=target,
                               reference=reference, now=now, trading_day=str(self.broker.session_date(now)),
                               fills=report.fills)
        status = "rejected" if order is None else order.status
        self.journal.mark_executed(symbol, bar_time, now, f"order {cid} {status}")
        report.orders.append({"client_order_id": cid, "symbol": symbol, "side": BUY if units > 0 else SELL,
                              "qty": abs(units), "target": target, "reference_price": reference, "status": status})

    def _tradable(self, symbol: str, clock: Clock) -> bool:
        """Whether ``symbol``'s market trades now: a crypto pair always, a stock while the equity clock is open; a
        replaying broker that knows (``can_trade``: a bar of the symbol opens now) says so itself.

        :param symbol: a ticker or a crypto pair.
        :param clock: the broker's (equity) clock.
        """
        can_trade = getattr(self.broker, "can_trade", None)
        if can_trade is not None:
            return bool(can_trade(symbol))
        return clock.is_open or symbol in self.crypto

    def _decimals(self, symbol: str) -> int | None:
        """Decimals an order of ``symbol`` is rounded to: the broker's per-symbol rule when it has one (crypto is
        fractional even when stocks trade whole shares), else its ``qty_decimals``.

        :param symbol: a ticker or a crypto pair.
        """
        per_symbol = getattr(self.broker, "quantity_decimals", None)
        return per_symbol(symbol) if per_symbol is not None else self.qty_decimals

    # ----- limits: daily loss, halt, kill -----------------------------------------------------------
    def _daily_loss(self, clock: Clock, bars: dict[str, pd.DataFrame | None], report: CycleReport) -> bool:
        """Track the day's starting equity; alert and halt when the day's loss passes the limits."""
        now = clock.timestamp
        day = str(self.broker.session_date(now))
        marks = self.journal.latest_marks()
        if not marks:
            return False
        sleeves = self.journal.sleeves()
        equity = 0.0
        for symbol, sleeve in sleeves.items():
            price = self._price(symbol, clock, bars, marks) if sleeve.units != 0 else 0.0
            equity += sleeve.cash + sleeve.units * price
        self.journal.set_meta("equity_now", {"at": iso(now), "equity": equity})  # for the monitor page
        start = self.journal.meta("day_start")
        if start is None or start.get("day") != day:
            # the first cycle of a trading day: the day starts from the last marks (the previous close); after
            # --clear-halt, from the equity now
            begin = sum(row["equity"] for row in marks.values()) if start is not None else equity
            start = {"day": day, "equity": begin}
            self.journal.set_meta("day_start", start)
        if not start["equity"] > 0:
            return False
        loss = 1.0 - equity / start["equity"]
        if loss > self.config.alerts.daily_loss:
            self.alert(now, "daily_loss", f"down {loss:.2%} today (from {start['equity']:,.2f} to {equity:,.2f}); alert "
                       f"threshold {self.config.alerts.daily_loss:.2%}", key=f"lossalert:{day}")
        if loss > self.config.risk.max_daily_loss and not self.journal.meta("halted"):
            self.journal.set_meta("halted", {"day": day, "at": iso(now), "loss": loss,
                                             "reason": f"daily loss {loss:.2%} > risk.max_daily_loss "
                                                       f"{self.config.risk.max_daily_loss:.2%}"})
            self.alert(now, "halted", f"daily loss {loss:.2%} passed risk.max_daily_loss "
                       f"{self.config.risk.max_daily_loss:.2%}: flattening and halting (restart with --clear-halt)",
                       key=f"halt:{day}")
            return True
        return False

    def _price(self, symbol: str, clock: Clock, bars: dict[str, pd.DataFrame | None],
               marks: dict[str, Any] | None = None) -> float:
        """The price a sleeve is valued at now: the broker's reference price while the market is open, else (or
        when the broker cannot say) the latest bar's close, else the sleeve's last mark's close (0 without one).

        :param marks: the journal's latest marks (read when None and needed).
        """
        if self._tradable(symbol, clock):
            try:
                return float(self.broker.reference_price(symbol))
            except BrokerError:
                pass
        frame = bars.get(symbol)
        if frame is not None:
            return self._close(symbol, frame)
        marks = self.journal.latest_marks() if marks is None else marks
        return float(marks[symbol]["close"]) if symbol in marks else 0.0

    def _move_day_start(self, changes: list[OutsideChange], clock: Clock, bars: dict[str, pd.DataFrame | None]) -> None:
        """Take changes made outside the run out of the day's profit and loss: the daily-loss baseline moves by what
        they added to the run's equity at today's prices (a position closed by hand at the market moves it by
        little; its proceeds are the sleeve's cash now)."""
        now = clock.timestamp
        day = str(self.broker.session_date(now))
        value = sum(change.value(self._price(change.symbol, clock, bars)) for change in changes)
        start = self.journal.meta("day_start")
        if start is None:
            return  # the day's baseline is not taken yet: it will be taken after the change
        if start.get("day") != day:  # the first cycle of the day: it starts from the last marks, before the change
            marks = self.journal.latest_marks()
            if not marks:
                return
            start = {"day": day, "equity": sum(row["equity"] for row in marks.values())}
        moved = {"day": day, "equity": start["equity"] + value}
        self.journal.set_meta("day_start", moved)
        self.journal.record_reconciliation(now, None, "day_start", start["equity"], moved["equity"],
                                           f"moved by {value:+,.2f}: a change outside the run is not profit or loss")

    def _halted(self, clock: Clock, bars: dict[str, pd.DataFrame | None], report: CycleReport) -> None:
        """Halted: flatten whatever is held (when the market is open), then stop."""
        report.status = "halted"
        self.journal.set_meta("status", "halted")
        if self._flatten(clock, "flatten", report):
            raise LoopStopped(f"halted: {self.journal.meta('halted', {}).get('reason', 'risk limit')}")

    def _flatten(self, clock: Clock, intent: str, report: CycleReport, wait_seconds: float = 0.0) -> bool:
        """Cancel open orders, then send orders that close every position; True once everything is flat and
        nothing is open."""
        now = clock.timestamp
        if not self.desk.cancel(now, intent, report.fills, wait_seconds=wait_seconds):
            return False
        held = {s: sleeve for s, sleeve in self.journal.sleeves().items() if sleeve.units != 0.0}
        if not held:
            return True
        waiting = [s for s in held if not self._tradable(s, clock)]
        if waiting:
            self.alert(now, "halted", f"the market is closed: {', '.join(waiting)} stay open until it opens",
                       key=f"closed:{intent}:{self.broker.session_date(now)}")
        bar_time = self.broker.bar_time_of(now, self.timeframe)
        for symbol in (s for s in held if s not in waiting):
            cid = client_order_id(self.run_name, symbol, bar_time, intent)
            existing = self.journal.order(cid)
            if existing is not None and existing["status"] != "not_sent":
                continue
            self._send(symbol, bar_time, 0.0, intent, None, clock, report)
        return False

    def _kill(self, clock: Clock, reason: str, report: CycleReport) -> None:
        now = clock.timestamp
        self.alert(now, "kill_switch", f"kill switch ({reason}): canceling open orders"
                   + (" and flattening" if self.config.risk.flatten_on_kill else ""), key=f"kill:{iso(now)}")
        report.status = "killed"
        self.desk.sync(now, report.fills)
        if self.config.risk.flatten_on_kill:
            self._flatten(clock, "kill", report, wait_seconds=10.0)
            self.desk.await_fills(now, report.fills, wait_seconds=10.0)  # book the closing fills now
        else:
            self.desk.cancel(now, "kill switch", report.fills, wait_seconds=10.0)
        self.journal.set_meta("status", f"killed ({reason})")
        self.stopped = f"killed: {reason}"
        self._publish(report)

    # ----- errors, schedule, publishing -------------------------------------------------------------
    def _broker_error(self, report: CycleReport, error: BrokerError) -> None:
        self.broker_error_streak += 1
        report.status = "broker error"
        report.errors.append(str(error))
        logger.warning("broker error (%d in a row): %s", self.broker_error_streak, error)
        if self.broker_error_streak >= self.config.alerts.broker_errors:
            self.alert(report.at, "broker_errors", f"{self.broker_error_streak} cycles in a row failed on the broker; "
                       f"last: {error}", key=f"errors:{self.broker_error_streak // self.config.alerts.broker_errors}:"
                       f"{self.broker.session_date(report.at) if report.clock else ''}")

    def next_wake(self, report: CycleReport) -> pd.Timestamp:
        """When the cycle after ``report``'s should run: soon while orders are open or bars are late (backing off
        while they stay late), at the next open when a decision waits for it, else after the next bar closes."""
        now = report.at
        poll = _timedelta(self.config.loop.poll_seconds)
        delay = _timedelta(self.config.loop.bar_delay_seconds)
        clock = report.clock
        if clock is None or report.status == "broker error":
            return now + poll
        open_orders = self.journal.orders(pending_only=True)
        pending = bool(open_orders)
        following = self._next_bar_close(clock, delay)
        if any(self._tradable(row["symbol"], clock) for row in open_orders):  # poll open orders, backing off
            self.pending_streak += 1
            return min(now + poll * 2 ** min(self.pending_streak - 1, 6), following)
        self.pending_streak = 0
        if report.waiting_for_bars:
            self.waiting_streak += 1
            return min(now + poll * 2 ** min(self.waiting_streak - 1, 8), following)
        self.waiting_streak = 0
        if not clock.is_open and self._waits_for_open(pending):
            following = min(following, clock.next_open + pd.Timedelta(seconds=1))  # nothing fills while closed
        return max(following, now)

    def _waits_for_open(self, pending: bool) -> bool:
        """Whether something of a stock waits for the equity market to open: an open order, a decision not
        executed, or a halt (a crypto pair's wait for nothing: it trades now).

        :param pending: the journal has open orders.
        """
        stocks = [s for s in self.symbols if s not in self.crypto]
        if not stocks:
            return False
        if pending and any(row["symbol"] not in self.crypto for row in self.journal.orders(pending_only=True)):
            return True
        if any(row["symbol"] not in self.crypto for row in self.journal.unexecuted_decisions()):
            return True
        return bool(self.journal.meta("halted"))

    def _next_bar_close(self, clock: Clock, delay: pd.Timedelta) -> pd.Timestamp:
        """When the next bar of any symbol closes (plus ``delay``): the earliest over the symbols' calendars.

        :param clock: the broker's (equity) clock.
        :param delay: how long after the close its bar is looked for.
        """
        closes = []
        if any(s not in self.crypto for s in self.symbols):
            closes.append(self._next_equity_bar_close(clock))
        if self.crypto:
            closes.append(calendar_for("crypto").next_bar_close(clock.timestamp, self.timeframe))
        return min(closes) + delay

    def _next_equity_bar_close(self, clock: Clock) -> pd.Timestamp:
        """The next stock bar's close from the broker's equity clock (Alpaca's own sessions and holidays).

        :param clock: the broker's (equity) clock.
        """
        if self.bar >= pd.Timedelta(days=1):
            return clock.next_close
        grid = clock.timestamp.floor(self.bar) + self.bar
        if not clock.is_open:
            grid = clock.next_open.floor(self.bar) + self.bar
        return min(grid, clock.next_close)

    def _publish(self, report: CycleReport, final: bool = False) -> None:
        report.alerts = self.alert.take()
        if report.status == "ok" and report.alerts:
            report.status = "alert"
        self.journal.record_cycle(report.at, report.is_open, report.status,
                                  {"decisions": len(report.decisions), "orders": len(report.orders)})
        _append(self.jsonl, json_line(report.record()) + "\n")
        if self.write_monitor and (final or not getattr(self.broker, "fast", False)):
            from .monitor import write_monitor

            write_monitor(self.journal, self.monitor_path, refresh_seconds=self.config.monitor.refresh_seconds,
                          chart_bars=self.config.monitor.chart_bars, drift_bps=self.config.monitor.drift_bps)


def _single_thread_torch() -> int | None:
    """Run torch on one thread (when the policy loaded it), returning the thread count to put back after the run: a
    cycle decides a few observations, where intra-op threads only wait on each other (measured: a supervised replay
    fell from ~1,300 to ~110 decisions per second with another process busy on the second of 2 cores)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return threads


@functools.lru_cache(maxsize=64)
def _timedelta(seconds: float) -> pd.Timedelta:
    """``pd.Timedelta(seconds=seconds)`` (immutable: shared by the cycles that wait as long).

    :param seconds: the duration in seconds.
    """
    return pd.Timedelta(seconds=seconds)


def _append(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (created when missing) in one write: ``open(path, "a")`` without the buffered text
    layer, which costs more than the write itself once per cycle.

    :param path: the file.
    :param text: what is appended (UTF-8).
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def _last_close(frame: pd.DataFrame) -> float:
    """The close of the last bar of ``frame`` (read from the frame's values: a column lookup and ``iloc`` cost more
    than the rest of a mark)."""
    return float(float_columns(frame, ("close",))["close"][-1])


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
