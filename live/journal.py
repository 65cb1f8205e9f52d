"""The SQLite journal of a live run: what survives a crash.

Every decision, order, fill, equity mark, alert and reconciliation difference is a row. Each write is all or
nothing; a cycle of the loop writes in one transaction (:meth:`Journal.batch`), committed at its end, before each
order is sent or canceled and once the broker's answer is booked (:meth:`Journal.commit`, called by
:class:`live.orders.OrderDesk`):

- an order's *intent* (its ``client_order_id``, symbol, side, quantity, target) is committed before the
  order is sent, so a restart knows every order that may have reached the broker and asks the broker
  about it by ``client_order_id`` instead of sending another;
- a fill is booked in one transaction with the sleeve's cash and units and the order's cumulative filled
  quantity, so a fill is booked exactly once whatever instant the process dies at.

The sleeve table is the loop's own ledger per symbol: cash, units and the bar the position was opened
in. A sleeve's last target (what the simulator's ``min_rebalance`` compares to) is the target of its
latest order that reached the broker and was not refused (:meth:`Journal.last_target`). Times are ISO-8601 UTC
strings (they sort as times); numbers are SQLite REALs (IEEE doubles, exact).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd

from .broker import BUY, Order

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sleeves (
    symbol TEXT PRIMARY KEY, capital REAL NOT NULL, cash REAL NOT NULL, units REAL NOT NULL,
    entry_bar TEXT, updated_at TEXT);
CREATE TABLE IF NOT EXISTS decisions (
    symbol TEXT NOT NULL, bar_time TEXT NOT NULL, decided_at TEXT NOT NULL, action TEXT NOT NULL,
    target REAL NOT NULL, risk_target REAL NOT NULL, note TEXT, observation BLOB,
    executed_at TEXT, outcome TEXT, PRIMARY KEY (symbol, bar_time));
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, bar_time TEXT NOT NULL, intent TEXT NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, target REAL NOT NULL, reference_price REAL NOT NULL,
    status TEXT NOT NULL, broker_id TEXT, trading_day TEXT NOT NULL, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL, filled_qty REAL NOT NULL DEFAULT 0, filled_notional REAL NOT NULL DEFAULT 0,
    filled_avg_price REAL, commission REAL NOT NULL DEFAULT 0, reason TEXT);
CREATE TABLE IF NOT EXISTS order_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, client_order_id TEXT NOT NULL, at TEXT NOT NULL,
    event TEXT NOT NULL, detail TEXT);
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT, client_order_id TEXT NOT NULL, symbol TEXT NOT NULL,
    units REAL NOT NULL, price REAL NOT NULL, commission REAL NOT NULL, bar_time TEXT NOT NULL,
    at TEXT NOT NULL, cash_after REAL NOT NULL, units_after REAL NOT NULL);
CREATE TABLE IF NOT EXISTS equity (
    symbol TEXT NOT NULL, bar_time TEXT NOT NULL, close REAL NOT NULL, cash REAL NOT NULL,
    units REAL NOT NULL, equity REAL NOT NULL, position REAL NOT NULL, PRIMARY KEY (symbol, bar_time));
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, kind TEXT NOT NULL, symbol TEXT,
    message TEXT NOT NULL, key TEXT UNIQUE);
CREATE TABLE IF NOT EXISTS reconciliations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, symbol TEXT, field TEXT NOT NULL,
    journal REAL, broker REAL, action TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cycles (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, is_open INTEGER NOT NULL, status TEXT NOT NULL,
    detail TEXT);
CREATE INDEX IF NOT EXISTS decisions_open ON decisions (symbol, bar_time) WHERE executed_at IS NULL;
CREATE INDEX IF NOT EXISTS orders_status ON orders (status);
CREATE INDEX IF NOT EXISTS orders_day ON orders (trading_day);
CREATE INDEX IF NOT EXISTS orders_symbol ON orders (symbol, created_at);
CREATE INDEX IF NOT EXISTS reconciliations_field ON reconciliations (symbol, field, at);
"""

_UTC = pd.Timestamp(0, tz="UTC").tz

#: The table a write statement changes.
_META_READ = "SELECT value FROM meta WHERE key = ?"
_TABLE_WRITTEN = re.compile(r"^\s*(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)


@functools.lru_cache(maxsize=256)
def _tables_written(sql: str) -> frozenset[str]:
    """The table a write statement writes (none for any other statement); the journal's statements are a few fixed
    texts, so each is parsed once.

    :param sql: an SQL statement.
    """
    return frozenset(match.group(1) for match in _TABLE_WRITTEN.finditer(sql))

#: Orders whose status may still change at the broker (the journal's own states included).
PENDING_STATUSES = ("intent", "submitting", "new", "accepted", "pending_new", "partially_filled", "pending_cancel",
                    "accepted_for_bidding", "calculated", "held", "pending_replace", "pending_review")


def iso(moment: pd.Timestamp | None) -> str | None:
    """A UTC timestamp as the journal writes it."""
    if moment is None:
        return None
    if type(moment) is pd.Timestamp and moment.tz is _UTC:  # the common case: one text per instant, kept
        return _iso_utc(moment.value)
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.isoformat()


@functools.lru_cache(maxsize=1 << 16)
def _iso_utc(nanoseconds: int) -> str:
    """:func:`iso` of the UTC instant ``nanoseconds`` after the epoch (a replay writes each bar's many times)."""
    return pd.Timestamp(nanoseconds, tz="UTC").isoformat()


def stamp(text: str | None) -> pd.Timestamp | None:
    """The instant of a journal's iso text (None: None)."""
    return None if text is None else _stamp_text(text)


@functools.lru_cache(maxsize=4096)
def _stamp_text(text: str) -> pd.Timestamp:
    """:func:`stamp` of a text (a Timestamp is immutable: the same text's instant is shared)."""
    return pd.Timestamp(text)


@functools.lru_cache(maxsize=4096)
def client_order_id(run: str, symbol: str, bar_time: pd.Timestamp, intent: str) -> str:
    """The idempotency key of an order: the same (run, symbol, bar, intent) always gives the same id, so a
    retry or a restart finds the order it already sent. Readable, at most 48 characters (Alpaca allows 128).

    :param run: the run's name.
    :param symbol: the symbol.
    :param bar_time: the bar the decision was made on.
    :param intent: why (``"rebalance"``, ``"flatten"``, ``"kill"``).
    """
    when = pd.Timestamp(bar_time).tz_convert("UTC").strftime("%Y%m%dT%H%M")
    digest = hashlib.sha256(f"{run}|{symbol}|{iso(bar_time)}|{intent}".encode()).hexdigest()[:8]
    head = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{run[:12]}-{symbol[:8]}-{when}-{intent[:4]}")
    return f"{head}-{digest}"


@dataclass
class Sleeve:
    """One symbol's ledger."""

    symbol: str
    capital: float
    cash: float
    units: float
    entry_bar: pd.Timestamp | None


@dataclass
class BookedFill:
    """A fill as booked (signed units)."""

    client_order_id: str
    symbol: str
    units: float
    price: float
    commission: float
    bar_time: pd.Timestamp


class Journal:
    """The SQLite journal of one run (one file; safe to reopen after a crash).

    :param path: the database file (created with its tables when missing).
    :param durable: fsync every commit (SQLite ``synchronous=FULL``): a commit survives a power cut, not
        only a killed process. Off (``synchronous=OFF``: a commit is handed to the operating system and not synced,
        which in WAL mode is still safe against a killed process, not against a power cut) for a replay, which
        commits thousands of times and can be rerun; it halves the cost of a commit.
    """

    def __init__(self, path: str | Path, durable: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self._batched = False
        self._cache: dict[Any, Any] = {}  # reads of tables only this journal writes, dropped when one is written
        self._marked: dict[str, str] = {}  # each symbol's bar this journal wrote (or found) an equity mark of last
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
        self.conn.executescript(_SCHEMA)
        version = self.meta("schema_version")
        if version is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif int(version) != SCHEMA_VERSION:
            raise ValueError(f"{self.path}: journal schema {version} is not supported (expected {SCHEMA_VERSION})")

    def close(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")
        self._batched = False
        self.conn.close()

    # ----- transactions -----------------------------------------------------------------------
    @contextmanager
    def batch(self) -> Iterator[None]:
        """Write everything inside in one transaction, committed at the end (also when an exception leaves it, as
        each write was committed before: the rows written so far stay) and at each :meth:`commit`. A process
        killed inside loses the writes since the last commit, and nothing else; each write stays all or nothing.
        Nested: the outer batch commits."""
        if self._batched:
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._batched = True
        try:
            yield
        finally:
            self._batched = False
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    def commit(self) -> None:
        """Inside :meth:`batch`: commit what is written so far and go on in a new transaction (before a broker call
        that acts outside the process, such as sending an order). Outside a batch every write is committed already."""
        if self._batched and self.conn.in_transaction:
            self.conn.execute("COMMIT")
            self.conn.execute("BEGIN IMMEDIATE")

    def _write(self, statements: Iterable[tuple[str, tuple]]) -> None:
        """Run ``statements`` all or nothing: in one committed transaction, or a savepoint of the open batch."""
        statements = list(statements)
        written = set().union(*(_tables_written(sql) for sql, _ in statements))
        if self._cache:
            self._forget(written)
        if len(statements) == 1:  # one statement is all or nothing by itself (SQLite's statement journal)
            self.conn.execute(*statements[0])
            return
        cur = self.conn.cursor()
        begin, end, undo = (("SAVEPOINT write", "RELEASE write", ("ROLLBACK TO write", "RELEASE write"))
                            if self._batched else ("BEGIN IMMEDIATE", "COMMIT", ("ROLLBACK",)))
        cur.execute(begin)
        try:
            for sql, params in statements:
                cur.execute(sql, params)
        except BaseException:
            for sql in undo:
                cur.execute(sql)
            raise
        cur.execute(end)

    def _forget(self, written: set[str]) -> None:
        """Drop the cached reads of the tables ``written`` (a read of several tables: when any of them is written).

        :param written: table names.
        """
        for key in [key for key in self._cache
                    if (key[0] in written if isinstance(key[0], str) else not written.isdisjoint(key[0]))]:
            del self._cache[key]

    def _rows(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def _cached_rows(self, table: str | tuple[str, ...], sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        """:meth:`_rows` of a read of ``table`` alone (or of the tables of a tuple), kept until this journal writes it
        (one of them) (the run's process is its only writer: the run folder is locked)."""
        key = (table, sql, params)
        rows = self._cache.get(key)
        if rows is None:
            rows = self._cache[key] = self._rows(sql, params)
        return list(rows)

    # ----- meta -------------------------------------------------------------------------------
    def meta(self, key: str, default: Any = None) -> Any:
        rows = self._cached_rows("meta", _META_READ, (key,))
        return json.loads(rows[0]["value"]) if rows else default

    def set_meta(self, key: str, value: Any) -> None:
        """Write meta ``key`` (JSON); the cached reads of the other keys stay valid, this key's read is the value
        written."""
        text = json.dumps(value)
        # one statement (all or nothing by itself); the only cached read of the meta table is one key's (meta())
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, text))
        self._cache[("meta", _META_READ, (key,))] = [{"value": text}]

    # ----- sleeves ----------------------------------------------------------------------------
    def open_sleeves(self, capital: dict[str, float], at: pd.Timestamp) -> None:
        """Create the sleeves of a new run (existing ones are kept: a restart resumes them)."""
        self._write([
            ("INSERT OR IGNORE INTO sleeves (symbol, capital, cash, units, updated_at) VALUES (?, ?, ?, 0, ?)",
             (symbol, float(amount), float(amount), iso(at)))
            for symbol, amount in capital.items()
        ])

    def sleeves(self) -> dict[str, Sleeve]:
        return {row["symbol"]: Sleeve(row["symbol"], row["capital"], row["cash"], row["units"], stamp(row["entry_bar"]))
                for row in self._cached_rows("sleeves", "SELECT * FROM sleeves ORDER BY symbol")}

    def last_target(self, symbol: str) -> float:
        """The target of the sleeve's latest order that reached the broker and was not refused (0 before any):
        the simulator's last sent target. An order refused, never sent, or canceled unfilled does not count,
        so the next decision asks for that target again. A position adopted after a change outside the run
        (:meth:`adopt_position`) counts as a target of the exposure it left, so the next decision is sized
        against what the sleeve really holds."""
        rows = self._rows(
            "SELECT target, created_at AS at FROM orders WHERE symbol = ? "
            "AND status NOT IN ('intent', 'not_sent', 'rejected', 'lost') "
            "AND NOT (status IN ('canceled', 'expired') AND filled_qty = 0) ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (symbol,))
        adopted = self._cached_rows("reconciliations",
            "SELECT broker AS target, at FROM reconciliations WHERE symbol = ? AND field = 'last_target' "
            "ORDER BY at DESC, rowid DESC LIMIT 1", (symbol,))
        latest = max(rows + adopted, key=lambda row: row["at"], default=None)
        return float(latest["target"]) if latest is not None else 0.0

    def adopt_position(self, symbol: str, units: float, cash: float, at: pd.Timestamp, reason: str,
                       exposure: float) -> None:
        """Set a sleeve's units to the broker's and add ``cash`` to its cash, in one transaction, with a
        reconciliation row for each (after a difference no order of the run explains: a change outside the run),
        and one for the sleeve's last target, which becomes the exposure the change left (see :meth:`last_target`).

        :param symbol: the sleeve.
        :param units: the broker's position (signed shares).
        :param cash: the broker's cash that came with the change (e.g. a position's proceeds), added to the sleeve.
        :param at: now.
        :param reason: the reconciliation rows' action.
        :param exposure: the sleeve's signed exposure after the change (value held / the sleeve's equity).
        """
        self._write([
            ("INSERT INTO reconciliations (at, symbol, field, journal, broker, action) VALUES (?, ?, 'last_target', ?, ?, ?)",
             (iso(at), symbol, self.last_target(symbol), float(exposure), reason)),
            ("INSERT INTO reconciliations (at, symbol, field, journal, broker, action) "
             "SELECT ?, symbol, 'units', units, ?, ? FROM sleeves WHERE symbol = ?", (iso(at), float(units), reason, symbol)),
            ("INSERT INTO reconciliations (at, symbol, field, journal, broker, action) "
             "SELECT ?, symbol, 'sleeve_cash', cash, cash + ?, ? FROM sleeves WHERE symbol = ?",
             (iso(at), float(cash), reason, symbol)),
            ("UPDATE sleeves SET units = ?, cash = cash + ?, "
             "entry_bar = CASE WHEN ? = 0 THEN NULL ELSE COALESCE(entry_bar, ?) END, updated_at = ? WHERE symbol = ?",
             (float(units), float(cash), float(units), iso(at), iso(at), symbol)),
        ])

    # ----- decisions --------------------------------------------------------------------------
    def decision(self, symbol: str, bar_time: pd.Timestamp) -> sqlite3.Row | None:
        rows = self._rows("SELECT * FROM decisions WHERE symbol = ? AND bar_time = ?", (symbol, iso(bar_time)))
        return rows[0] if rows else None

    def record_decision(self, symbol: str, bar_time: pd.Timestamp, at: pd.Timestamp, action: Any, target: float,
                        risk_target: float, note: str | None, observation: np.ndarray | None) -> None:
        blob = None if observation is None else np.asarray(observation, dtype=np.float32).tobytes()
        self._write([(
            "INSERT OR IGNORE INTO decisions (symbol, bar_time, decided_at, action, target, risk_target, note, observation) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (symbol, iso(bar_time), iso(at), json.dumps(_plain(action)), float(target), float(risk_target), note, blob),
        )])

    def mark_executed(self, symbol: str, bar_time: pd.Timestamp, at: pd.Timestamp, outcome: str) -> None:
        self._write([("UPDATE decisions SET executed_at = ?, outcome = ? WHERE symbol = ? AND bar_time = ? AND executed_at IS NULL",
                      (iso(at), outcome, symbol, iso(bar_time)))])

    def supersede(self, symbol: str, bar_time: pd.Timestamp, at: pd.Timestamp) -> None:
        """Close older decisions of ``symbol`` never executed: a newer bar replaced them."""
        self._write([("UPDATE decisions SET executed_at = ?, outcome = 'superseded by a newer bar' "
                      "WHERE symbol = ? AND bar_time < ? AND executed_at IS NULL", (iso(at), symbol, iso(bar_time)))])

    def unexecuted_decisions(self) -> list[sqlite3.Row]:
        return self._rows("SELECT symbol, bar_time FROM decisions WHERE executed_at IS NULL")

    def decisions(self, symbol: str | None = None) -> list[sqlite3.Row]:
        if symbol is None:
            return self._rows("SELECT * FROM decisions ORDER BY bar_time, symbol")
        return self._rows("SELECT * FROM decisions WHERE symbol = ? ORDER BY bar_time", (symbol,))

    # ----- orders -----------------------------------------------------------------------------
    def order(self, client_order_id: str) -> sqlite3.Row | None:
        rows = self._rows("SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,))
        return rows[0] if rows else None

    def orders(self, *, pending_only: bool = False, trading_day: str | None = None) -> list[sqlite3.Row]:
        sql, params = "SELECT * FROM orders", []
        where = []
        if pending_only:
            where.append(f"status IN ({','.join('?' * len(PENDING_STATUSES))})")
            params.extend(PENDING_STATUSES)
        if trading_day is not None:
            where.append("trading_day = ?")
            params.append(trading_day)
        if where:
            sql += " WHERE " + " AND ".join(where)
        if pending_only and trading_day is None:  # every cycle asks, several times
            return self._cached_rows("orders", sql + " ORDER BY created_at, client_order_id", tuple(params))
        return self._rows(sql + " ORDER BY created_at, client_order_id", tuple(params))

    def count_orders(self, trading_day: str) -> int:
        """Orders of ``trading_day`` that reached the broker or may have (every status but ``not_sent``)."""
        rows = self._rows("SELECT COUNT(*) AS n FROM orders WHERE trading_day = ? AND status != 'not_sent'",
                          (trading_day,))
        return int(rows[0]["n"])

    def record_intent(self, cid: str, symbol: str, bar_time: pd.Timestamp, intent: str, side: str, qty: float,
                      target: float, reference_price: float, trading_day: str, at: pd.Timestamp) -> None:
        """Commit an order before it is sent (status ``intent``); an earlier intent of the same id that never
        reached the broker (``not_sent``) is replaced."""
        self._write([
            ("DELETE FROM orders WHERE client_order_id = ? AND status = 'not_sent'", (cid,)),
            ("INSERT INTO orders (client_order_id, symbol, bar_time, intent, side, qty, target, reference_price, status, "
             "trading_day, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'intent', ?, ?, ?)",
             (cid, symbol, iso(bar_time), intent, side, float(qty), float(target), float(reference_price), trading_day,
              iso(at), iso(at))),
            ("INSERT INTO order_events (client_order_id, at, event, detail) VALUES (?, ?, 'intent', ?)",
             (cid, iso(at), f"{side} {qty:.9g} {symbol} to target {target:g} at ~{reference_price:.6g}")),
        ])

    def record_event(self, cid: str, at: pd.Timestamp, event: str, detail: str | None = None,
                     status: str | None = None, reason: str | None = None) -> None:
        statements = [("INSERT INTO order_events (client_order_id, at, event, detail) VALUES (?, ?, ?, ?)",
                       (cid, iso(at), event, detail))]
        if status is not None:
            statements.append(("UPDATE orders SET status = ?, reason = COALESCE(?, reason), updated_at = ? "
                               "WHERE client_order_id = ?", (status, reason, iso(at), cid)))
        self._write(statements)

    def apply_order(self, order: Order, at: pd.Timestamp, fill_bar: pd.Timestamp | None) -> BookedFill | None:
        """Book what the broker says about an order: its status, and any fill not booked yet.

        The new fill is the difference between the broker's cumulative filled quantity and the journal's;
        its price is the one that makes the cumulative notional agree (the order's average price when it
        is the first fill). The fill, the sleeve's cash and units and the order's cumulative figures are one
        transaction.

        :param order: the broker's view of the order.
        :param at: now.
        :param fill_bar: the bar the fill happened in (for bars held).
        :return: the fill booked, or None.
        """
        row = self.order(order.client_order_id)
        if row is None:
            raise KeyError(f"order {order.client_order_id} is not in the journal")
        statements: list[tuple[str, tuple]] = []
        booked = None
        increment = float(order.filled_qty) - float(row["filled_qty"])
        if increment > 0 and order.filled_avg_price is not None:
            if row["filled_qty"] == 0:
                price = float(order.filled_avg_price)
                notional = float(order.filled_qty) * price
            else:
                notional = float(order.filled_qty) * float(order.filled_avg_price)
                price = (notional - float(row["filled_notional"])) / increment
            commission = float(order.commission) - float(row["commission"])
            sleeve = self._rows("SELECT * FROM sleeves WHERE symbol = ?", (row["symbol"],))[0]
            delta = increment if row["side"] == BUY else -increment
            units = float(sleeve["units"])
            # the simulator's bookkeeping: cash pays units * fill price plus commission
            cash = float(sleeve["cash"]) - (delta * price + commission)
            new_units = units + delta
            opened = units == 0.0 or np.sign(new_units) != np.sign(new_units - delta)
            if new_units == 0.0:
                entry = None
            elif opened:
                entry = iso(fill_bar)
            else:
                entry = sleeve["entry_bar"]
            statements += [
                ("INSERT INTO fills (client_order_id, symbol, units, price, commission, bar_time, at, cash_after, units_after) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (order.client_order_id, row["symbol"], delta, price, commission, iso(fill_bar), iso(at), cash, new_units)),
                ("UPDATE sleeves SET cash = ?, units = ?, entry_bar = ?, updated_at = ? WHERE symbol = ?",
                 (cash, new_units, entry, iso(at), row["symbol"])),
                ("UPDATE orders SET filled_qty = ?, filled_notional = ?, filled_avg_price = ?, commission = ? "
                 "WHERE client_order_id = ?",
                 (float(order.filled_qty), notional, float(order.filled_avg_price), float(order.commission),
                  order.client_order_id)),
            ]
            booked = BookedFill(order.client_order_id, row["symbol"], delta, price, commission, pd.Timestamp(fill_bar))
        if order.status != row["status"] or order.id != row["broker_id"] or booked is not None:
            statements += [
                ("UPDATE orders SET status = ?, broker_id = ?, reason = COALESCE(?, reason), updated_at = ? "
                 "WHERE client_order_id = ?", (order.status, order.id, order.reason, iso(at), order.client_order_id)),
                ("INSERT INTO order_events (client_order_id, at, event, detail) VALUES (?, ?, ?, ?)",
                 (order.client_order_id, iso(at), order.status,
                  f"filled {order.filled_qty:.9g} of {order.qty:.9g}"
                  + (f" at {order.filled_avg_price:.6g}" if order.filled_avg_price else "")
                  + (f" ({order.reason})" if order.reason else ""))),
            ]
        if statements:
            self._write(statements)
        return booked

    def fills(self, symbol: str | None = None) -> list[sqlite3.Row]:
        if symbol is None:
            return self._rows("SELECT * FROM fills ORDER BY id")
        return self._rows("SELECT * FROM fills WHERE symbol = ? ORDER BY id", (symbol,))

    # ----- equity, alerts, reconciliation, cycles ---------------------------------------------
    def record_equity(self, symbol: str, bar_time: pd.Timestamp, close: float, cash: float, units: float,
                      equity: float, position: float) -> bool:
        """Mark a sleeve at a bar's close, once (the first mark of a bar is kept). Returns whether it was new.

        The bar this journal marked last for ``symbol`` is remembered: marking it again writes nothing (the row is
        there; rows of the table are never deleted), as the statement itself would have."""
        at = iso(bar_time)
        if self._marked.get(symbol) == at:
            return False
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO equity (symbol, bar_time, close, cash, units, equity, position) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (symbol, at, float(close), float(cash), float(units), float(equity), float(position)))
        self._marked[symbol] = at
        if cur.rowcount > 0:
            self._forget({"equity"})
        return cur.rowcount > 0

    def equity(self, symbol: str | None = None) -> list[sqlite3.Row]:
        if symbol is None:
            return self._rows("SELECT * FROM equity ORDER BY bar_time, symbol")
        return self._rows("SELECT * FROM equity WHERE symbol = ? ORDER BY bar_time", (symbol,))

    def latest_marks(self) -> dict[str, sqlite3.Row]:
        """The latest equity mark of each sleeve."""
        rows = self._cached_rows(("sleeves", "equity"),
                                 "SELECT e.* FROM sleeves s CROSS JOIN equity e WHERE e.symbol = s.symbol AND e.bar_time = "
                                 "(SELECT MAX(bar_time) FROM equity WHERE symbol = s.symbol) ORDER BY s.symbol")
        return {row["symbol"]: row for row in rows}

    def record_alert(self, at: pd.Timestamp, kind: str, message: str, symbol: str | None = None,
                     key: str | None = None) -> bool:
        """Record an alert; one with a ``key`` already recorded is skipped (one alert per condition). Returns
        whether it was new."""
        cur = self.conn.execute("INSERT OR IGNORE INTO alerts (at, kind, symbol, message, key) VALUES (?, ?, ?, ?, ?)",
                                (iso(at), kind, symbol, message, key))
        return cur.rowcount > 0

    def alerts(self, since: pd.Timestamp | None = None) -> list[sqlite3.Row]:
        if since is None:
            return self._rows("SELECT * FROM alerts ORDER BY id")
        return self._rows("SELECT * FROM alerts WHERE at >= ? ORDER BY id", (iso(since),))

    def record_reconciliation(self, at: pd.Timestamp, symbol: str | None, field: str, journal: float | None,
                              broker: float | None, action: str) -> None:
        self._write([("INSERT INTO reconciliations (at, symbol, field, journal, broker, action) VALUES (?, ?, ?, ?, ?, ?)",
                      (iso(at), symbol, field, journal, broker, action))])

    def reconciliations(self) -> list[sqlite3.Row]:
        return self._rows("SELECT * FROM reconciliations ORDER BY id")

    def record_cycle(self, at: pd.Timestamp, is_open: bool, status: str, detail: dict | None = None) -> None:
        self.conn.execute("INSERT INTO cycles (at, is_open, status, detail) VALUES (?, ?, ?, ?)",
                          (iso(at), int(is_open), status, json.dumps(detail or {}, default=str)))

    def last_moment(self) -> pd.Timestamp | None:
        """The latest broker-clock moment anything was journalled at (a cycle, a decision, an order, a fill, an
        alert, a reconciliation): where a run stopped, to the instant. None for a new journal."""
        rows = self._rows(
            "SELECT MAX(at) AS at FROM (SELECT MAX(at) AS at FROM cycles UNION ALL SELECT MAX(decided_at) FROM decisions "
            "UNION ALL SELECT MAX(executed_at) FROM decisions UNION ALL SELECT MAX(updated_at) FROM orders "
            "UNION ALL SELECT MAX(at) FROM order_events UNION ALL SELECT MAX(at) FROM fills "
            "UNION ALL SELECT MAX(at) FROM alerts UNION ALL SELECT MAX(at) FROM reconciliations)")
        return stamp(rows[0]["at"]) if rows and rows[0]["at"] is not None else None

    def last_cycle(self) -> sqlite3.Row | None:
        rows = self._rows("SELECT * FROM cycles ORDER BY id DESC LIMIT 1")
        return rows[0] if rows else None


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
