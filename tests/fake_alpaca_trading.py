"""A local fake of Alpaca's paper trading and market data APIs, speaking alpaca-py's wire format.

The real alpaca-py clients are pointed at it with ``url_override``; nothing inside alpaca-py is mocked, so
every answer passes through alpaca-py's own models (``Order``, ``Position``, ``TradeAccount``, ``Clock``,
``Calendar``). Endpoints: ``/v2/account``, ``/v2/clock``, ``/v2/calendar``, ``/v2/positions``,
``/v2/orders`` (POST; GET with ``status``/``limit``; DELETE), ``/v2/orders/{id}`` (GET, DELETE),
``/v2/orders:by_client_order_id``, ``/v2/stocks/bars`` (paged) and ``/v2/stocks/trades/latest``.

The market is a clock the test moves (:meth:`FakeAlpaca.advance`), a calendar of weekdays (09:30-16:00
New York), and bars per symbol; only bars that have closed by the clock are served. Market orders
fill at the current price (the open of the bar under way) when the market is open, asynchronously: the
POST answers ``accepted`` and the fill happens before the next request is served. Like Alpaca it refuses
a second order with the same ``client_order_id`` (422) and orders beyond buying power (403).

Faults (:class:`Rule`), each used up ``times`` times on requests matching a method and path prefix:
an error status (with headers such as ``Retry-After``), a request that hangs, an order accepted and then
the connection dropped (or a 500, or a hang) before the reply. Fill behaviour per symbol: full, partial
(a fraction now, the rest later or never), rejected; ``fill_prices`` fills a symbol's buys or sells at a chosen
price instead of the current one (slippage the test sets). ``lag_bars`` hides the newest closed bars (stale
data). :meth:`FakeAlpaca.trade_outside` trades as a user in the dashboard would (outside the run).

Crypto pairs (a symbol with ``/``: ``BTC/USD``) trade 24/7 as on Alpaca: their orders fill at any hour, in
fractional quantities, and an order with ``time_in_force`` ``"day"`` is refused with HTTP 400 (Alpaca accepts
``gtc``/``ioc`` for crypto); a ``gtc`` order never expires at the close. Their bars close at start + bar length
whatever the weekday, and are served on Alpaca's crypto data paths (``/v1beta3/crypto/us/bars``,
``/v1beta3/crypto/us/latest/trades``); positions list them without the slash (``BTCUSD``), as Alpaca does.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd

API_KEY = "PKFAKETRADING42"
SECRET_KEY = "fake-secret-9d8c7b6a"
MARKET_TZ = "America/New_York"
PAGE_SIZE = 10_000
CRYPTO_BARS_PATH = "/v1beta3/crypto/us/bars"
CRYPTO_TRADES_PATH = "/v1beta3/crypto/us/latest/trades"


def is_crypto(symbol: str) -> bool:
    """A crypto pair in Alpaca's spelling has a slash (``BTC/USD``)."""
    return "/" in symbol


@dataclass
class Rule:
    """A fault for requests matching ``method`` and a path starting with ``path``.

    :param kind: ``"status"`` (answer ``status`` with ``payload`` and ``headers``), ``"hang"`` (never answer),
        ``"drop_after_accept"`` / ``"500_after_accept"`` / ``"hang_after_accept"`` (POST /v2/orders: the order is
        accepted, then the connection is dropped, a 500 is sent, or nothing is sent).
    :param times: how many matching requests it affects.
    """

    method: str
    path: str
    kind: str = "status"
    status: int = 500
    payload: dict = field(default_factory=lambda: {"message": "internal server error"})
    headers: dict = field(default_factory=dict)
    times: int = 1


@dataclass
class FillMode:
    """How a symbol's orders fill: ``"full"``, ``"partial"`` (``fraction`` first, then the rest after
    ``complete_after`` more requests, or never when it is None), ``"hold"`` (never), or ``"reject"``."""

    kind: str = "full"
    fraction: float = 0.5
    complete_after: int | None = None


def session_days(start: str, n: int, holidays: tuple[str, ...] = ()) -> list[dt.date]:
    """``n`` weekdays from ``start`` (holidays skipped)."""
    skip = {pd.Timestamp(h).date() for h in holidays}
    days, day = [], pd.Timestamp(start).date()
    while len(days) < n:
        if day.weekday() < 5 and day not in skip:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def market_open(day: dt.date) -> pd.Timestamp:
    return pd.Timestamp(day).tz_localize(MARKET_TZ).replace(hour=9, minute=30).tz_convert("UTC")


def market_close(day: dt.date) -> pd.Timestamp:
    return pd.Timestamp(day).tz_localize(MARKET_TZ).replace(hour=16).tz_convert("UTC")


def crypto_hourly_bars(start: str, n: int, seed: int = 0, start_price: float = 40_000.0,
                       sigma: float = 0.005) -> pd.DataFrame:
    """Synthetic hourly bars of a 24/7 pair: ``n`` bars from ``start`` (UTC), nights and weekends included."""
    from features import synthetic_bars

    frame = synthetic_bars(n, sigma=sigma, seed=seed, start_price=start_price, freq="h")
    frame.index = pd.date_range(pd.Timestamp(start, tz="UTC"), periods=n, freq="h", name="timestamp").as_unit("ns")
    return frame


def daily_bars(days: list[dt.date], seed: int = 0, start_price: float = 100.0, sigma: float = 0.02) -> pd.DataFrame:
    """Synthetic daily bars stamped as Alpaca stamps them (midnight New York of each date, in UTC)."""
    from features import synthetic_bars

    frame = synthetic_bars(len(days), sigma=sigma, seed=seed, start_price=start_price)
    frame.index = pd.DatetimeIndex([pd.Timestamp(d).tz_localize(MARKET_TZ).tz_convert("UTC") for d in days],
                                   name="timestamp")
    return frame


def hourly_bars(days: list[dt.date], seed: int = 0, start_price: float = 100.0, sigma: float = 0.005) -> pd.DataFrame:
    """Synthetic hourly bars of the regular session, stamped at the hour (9:00 covers 9:30-10:00)."""
    from features import synthetic_bars

    stamps = []
    for day in days:
        hour = market_open(day).floor("h")
        while hour < market_close(day):
            stamps.append(hour)
            hour += pd.Timedelta(hours=1)
    frame = synthetic_bars(len(stamps), sigma=sigma, seed=seed, start_price=start_price, freq="h")
    frame.index = pd.DatetimeIndex(stamps, name="timestamp")
    return frame


class FakeAlpaca:
    """The fake's state: clock, calendar, bars, account, orders, faults, and every request it saw.

    :param bars: ``{symbol: bars frame}`` (UTC index of bar starts).
    :param timeframe: ``"1Day"`` or ``"1Hour"``: the bars' length.
    :param now: the starting time.
    :param cash: the account's starting cash.
    """

    def __init__(self, bars: dict[str, pd.DataFrame], timeframe: str, now: pd.Timestamp, cash: float = 100_000.0) -> None:
        self.bars = {s: f.set_axis(f.index.as_unit("ns")) for s, f in bars.items()}
        self.timeframe = timeframe
        self.bar = pd.Timedelta(days=1) if timeframe == "1Day" else pd.Timedelta(hours=1)
        first = min(f.index[0] for f in bars.values())
        last = max(f.index[-1] for f in bars.values())
        self.days = [d for d in pd.date_range(first.tz_convert(MARKET_TZ).date() - dt.timedelta(days=10),
                                              last.tz_convert(MARKET_TZ).date() + dt.timedelta(days=30)).date
                     if d.weekday() < 5]
        self.closes = {s: pd.DatetimeIndex([self.bar_close(t, s) for t in f.index]).as_unit("ns")
                       for s, f in self.bars.items()}
        self.expire_day_orders = True  # like Alpaca: a day order still open at the close expires
        self.now = pd.Timestamp(now).tz_convert("UTC")
        self.cash = float(cash)
        self.positions: dict[str, dict[str, float]] = {}
        self.orders: list[dict[str, Any]] = []
        self.by_cid: dict[str, dict[str, Any]] = {}
        self.by_id: dict[str, dict[str, Any]] = {}
        self.asset_ids = {s: str(uuid.uuid5(uuid.NAMESPACE_DNS, s)) for s in bars}
        self.account_id = str(uuid.uuid4())
        self.requests: list[dict[str, Any]] = []
        self.rules: list[Rule] = []
        self.fill_modes: dict[str, FillMode] = {}
        self.price_overrides: dict[str, float] = {}
        self.fill_prices: dict[str, dict[str, float]] = {}  # symbol -> {side: price}: fills at a chosen price
        self.lag_bars: dict[str, int] = {}
        self.release = threading.Event()
        self.lock = threading.RLock()
        self.url = ""

    # ----- the test's controls -------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Move the clock (what the loop's ``sleep`` does in tests)."""
        with self.lock:
            self.now = self.now + pd.Timedelta(seconds=float(seconds))

    def set_now(self, moment: pd.Timestamp) -> None:
        with self.lock:
            self.now = pd.Timestamp(moment).tz_convert("UTC")

    def add_rule(self, rule: Rule) -> None:
        with self.lock:
            self.rules.append(rule)

    def trade_outside(self, symbol: str, qty: float | None = None) -> dict[str, Any]:
        """A trade made outside the run, as a user in Alpaca's dashboard makes it: a market order of ``qty`` signed
        shares (None: close the whole position) with the dashboard's own id, filled at once when the market is
        open. Returns the order."""
        with self.lock:
            held = self.positions.get(symbol, {}).get("qty", 0.0)
            qty = -held if qty is None else float(qty)
            if qty == 0.0:
                raise ValueError(f"nothing to trade: {symbol} position is {held}")
            status, order = self.accept({"symbol": symbol, "qty": _num(abs(qty)), "side": "buy" if qty > 0 else "sell",
                                         "time_in_force": "gtc" if is_crypto(symbol) else "day",
                                         "client_order_id": f"dashboard-{uuid.uuid4().hex[:12]}"})
            if status != 200:
                raise ValueError(f"the outside trade was refused: {order}")
            self.process()
            return dict(order)

    def order_list(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(o) for o in self.orders]

    # ----- the market -------------------------------------------------------------------------------
    def session(self, day: dt.date) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        return (market_open(day), market_close(day)) if day.weekday() < 5 and day in set(self.days) else None

    def is_open(self, moment: pd.Timestamp | None = None) -> bool:
        moment = self.now if moment is None else moment
        hours = self.session(moment.tz_convert(MARKET_TZ).date())
        return hours is not None and hours[0] <= moment < hours[1]

    def next_open_close(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        day = self.now.tz_convert(MARKET_TZ).date()
        opens, closes = None, None
        for d in self.days:
            if d < day:
                continue
            o, c = market_open(d), market_close(d)
            if opens is None and o > self.now:
                opens = o
            if closes is None and c > self.now:
                closes = c
            if opens is not None and closes is not None:
                break
        return opens, closes

    def bar_close(self, start: pd.Timestamp, symbol: str = "") -> pd.Timestamp:
        """When the bar starting at ``start`` closes: its session's close for a stock's daily bar, else its end."""
        if self.timeframe == "1Day" and not is_crypto(symbol):
            return market_close(start.tz_convert(MARKET_TZ).date())
        return start + self.bar

    def closed_bars(self, symbol: str) -> pd.DataFrame:
        frame = self.bars.get(symbol)
        if frame is None:
            return pd.DataFrame()
        done = frame.iloc[: int(self.closes[symbol].searchsorted(self.now, side="right"))]
        lag = self.lag_bars.get(symbol, 0)
        return done.iloc[: len(done) - lag] if lag else done

    def price(self, symbol: str) -> float:
        """The current trade price: the open of the bar under way, else the last close."""
        if symbol in self.price_overrides:
            return self.price_overrides[symbol]
        frame = self.bars[symbol]
        k = int(frame.index.searchsorted(self.now, side="right")) - 1
        if k < 0:
            return float(frame["open"].iloc[0])
        if self.closes[symbol][k] > self.now:
            return float(frame["open"].iloc[k])
        return float(frame["close"].iloc[k])

    # ----- orders ---------------------------------------------------------------------------------
    def accept(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        symbol = body.get("symbol")
        cid = body.get("client_order_id") or str(uuid.uuid4())
        if cid in self.by_cid:
            return 422, {"code": 40010001, "message": "client_order_id must be unique"}
        if symbol not in self.bars:
            return 422, {"code": 40010001, "message": f"asset {symbol} not found"}
        if is_crypto(symbol) and body.get("time_in_force", "day") not in ("gtc", "ioc"):
            return 400, {"code": 40010001, "message": "invalid crypto time_in_force"}
        qty = float(body["qty"])
        side = body["side"]
        price = self.price(symbol)
        if side == "buy" and qty * price > self._buying_power():
            return 403, {"code": 40310000, "message": "insufficient buying power"}
        held = self.positions.get(symbol, {}).get("qty", 0.0)
        reserved = sum(float(o["qty"]) - float(o["filled_qty"]) for o in self.orders
                       if o["symbol"] == symbol and o["side"] == "sell" and o["status"] in ("accepted", "new", "partially_filled"))
        if side == "sell" and qty > held - reserved + 1e-9:
            return 403, {"code": 40310000,
                         "message": f"insufficient qty available for order (requested: {qty:g}, available: {held - reserved:g})"}
        stamp = _wire_time(self.now)
        order = {
            "id": str(uuid.uuid4()), "client_order_id": cid, "created_at": stamp, "updated_at": stamp,
            "submitted_at": stamp, "filled_at": None, "expired_at": None, "canceled_at": None, "failed_at": None,
            "replaced_at": None, "replaced_by": None, "replaces": None, "asset_id": self.asset_ids[symbol],
            "symbol": symbol, "asset_class": "crypto" if is_crypto(symbol) else "us_equity", "notional": None, "qty": _num(qty), "filled_qty": "0",
            "filled_avg_price": None, "order_class": "", "order_type": "market", "type": "market", "side": side,
            "time_in_force": body.get("time_in_force", "day"), "limit_price": None, "stop_price": None,
            "status": "accepted", "extended_hours": False, "legs": None, "trail_percent": None, "trail_price": None,
            "hwm": None, "position_intent": "buy_to_open" if side == "buy" else "sell_to_close",
            "_requests_seen": 0, "_mode": self.fill_modes.get(symbol, FillMode()),
        }
        self.orders.append(order)
        self.by_cid[cid] = order
        self.by_id[order["id"]] = order
        return 200, order

    def _buying_power(self) -> float:
        pending = sum((float(o["qty"]) - float(o["filled_qty"])) * self.price(o["symbol"]) for o in self.orders
                      if o["side"] == "buy" and o["status"] in ("accepted", "new", "partially_filled"))
        return self.cash - pending

    def process(self) -> None:
        """Expire day orders past their session's close; fill what the market can fill now (called before
        every request is served)."""
        if self.expire_day_orders:
            for order in self.orders:
                if order["status"] in ("accepted", "new", "partially_filled") and order["time_in_force"] == "day":
                    day = pd.Timestamp(order["submitted_at"]).tz_convert(MARKET_TZ).date()
                    if self.now >= market_close(day):
                        order.update(status="expired", expired_at=_wire_time(self.now), updated_at=_wire_time(self.now))
        market_open_now = self.is_open()
        for order in self.orders:
            if order["status"] not in ("accepted", "new", "partially_filled"):
                continue
            if not (market_open_now or is_crypto(order["symbol"])):  # crypto trades 24/7
                continue
            mode = order["_mode"]  # as it was when the order was accepted
            order["_requests_seen"] += 1
            qty, filled = float(order["qty"]), float(order["filled_qty"])
            if mode.kind == "hold":  # never fills (an order resting away from the market)
                continue
            if mode.kind == "reject":
                order.update(status="rejected", failed_at=_wire_time(self.now), updated_at=_wire_time(self.now))
                continue
            if mode.kind == "partial":
                if filled == 0.0:
                    self._fill(order, round(qty * mode.fraction, 9))
                elif mode.complete_after is not None and order["_requests_seen"] > mode.complete_after:
                    self._fill(order, qty - filled)
                continue
            self._fill(order, qty - filled)

    def _fill(self, order: dict[str, Any], qty: float) -> None:
        if qty <= 0:
            return
        price = self.fill_prices.get(order["symbol"], {}).get(order["side"], self.price(order["symbol"]))
        filled = float(order["filled_qty"])
        avg = float(order["filled_avg_price"]) if order["filled_avg_price"] else 0.0
        total = filled + qty
        order["filled_avg_price"] = _num((avg * filled + price * qty) / total)
        order["filled_qty"] = _num(total)
        done = abs(total - float(order["qty"])) < 1e-9
        order["status"] = "filled" if done else "partially_filled"
        order["updated_at"] = _wire_time(self.now)
        if done:
            order["filled_at"] = _wire_time(self.now)
        sign = 1.0 if order["side"] == "buy" else -1.0
        position = self.positions.setdefault(order["symbol"], {"qty": 0.0, "cost": 0.0})
        before = position["qty"]
        after = before + sign * qty
        if after == 0.0 or abs(after) < 1e-12:
            position.update(qty=0.0, cost=0.0)
        elif before == 0.0 or np.sign(after) != np.sign(before):
            position.update(qty=after, cost=after * price)
        elif np.sign(sign) == np.sign(after):
            position.update(qty=after, cost=position["cost"] + sign * qty * price)
        else:
            position.update(qty=after, cost=position["cost"] * after / before)
        if position["qty"] == 0.0:
            del self.positions[order["symbol"]]
        self.cash -= sign * qty * price

    def cancel(self, order: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        if order["status"] not in ("accepted", "new", "partially_filled"):
            return 422, {"code": 42210000, "message": f"order is not cancelable (status {order['status']})"}
        order.update(status="canceled", canceled_at=_wire_time(self.now), updated_at=_wire_time(self.now))
        return 204, None

    # ----- wire views --------------------------------------------------------------------------------
    def wire_order(self, order: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in order.items() if not k.startswith("_")}

    def wire_positions(self) -> list[dict[str, Any]]:
        out = []
        for symbol, p in sorted(self.positions.items()):
            qty, price = p["qty"], self.price(symbol)
            value = qty * price
            crypto = is_crypto(symbol)
            out.append({
                "asset_id": self.asset_ids[symbol], "symbol": symbol.replace("/", ""),
                "exchange": "CRYPTO" if crypto else "NASDAQ", "asset_class": "crypto" if crypto else "us_equity",
                "asset_marginable": True, "qty": _num(qty), "avg_entry_price": _num(p["cost"] / qty),
                "side": "long" if qty > 0 else "short", "market_value": _num(value), "cost_basis": _num(p["cost"]),
                "unrealized_pl": _num(value - p["cost"]), "unrealized_plpc": _num((value - p["cost"]) / abs(p["cost"])),
                "unrealized_intraday_pl": "0", "unrealized_intraday_plpc": "0", "current_price": _num(price),
                "lastday_price": _num(price), "change_today": "0", "qty_available": _num(qty),
            })
        return out

    def wire_account(self) -> dict[str, Any]:
        long_value = sum(p["qty"] * self.price(s) for s, p in self.positions.items() if p["qty"] > 0)
        short_value = sum(p["qty"] * self.price(s) for s, p in self.positions.items() if p["qty"] < 0)
        equity = self.cash + long_value + short_value
        return {
            "id": self.account_id, "account_number": "PA3FAKE0001", "status": "ACTIVE", "crypto_status": "ACTIVE",
            "currency": "USD", "buying_power": _num(self._buying_power()), "regt_buying_power": _num(self._buying_power()),
            "daytrading_buying_power": "0", "non_marginable_buying_power": _num(self._buying_power()),
            "cash": _num(self.cash), "accrued_fees": "0", "pending_transfer_in": "0", "portfolio_value": _num(equity),
            "pattern_day_trader": False, "trading_blocked": False, "transfers_blocked": False, "account_blocked": False,
            "created_at": "2024-01-02T14:30:00Z", "trade_suspended_by_user": False, "multiplier": "1",
            "shorting_enabled": False, "equity": _num(equity), "last_equity": _num(equity),
            "long_market_value": _num(long_value), "short_market_value": _num(short_value), "initial_margin": "0",
            "maintenance_margin": "0", "last_maintenance_margin": "0", "sma": "0", "daytrade_count": 0,
        }

    def wire_clock(self) -> dict[str, Any]:
        next_open, next_close = self.next_open_close()
        return {"timestamp": self.now.tz_convert(MARKET_TZ).isoformat(), "is_open": self.is_open(),
                "next_open": next_open.tz_convert(MARKET_TZ).isoformat(),
                "next_close": next_close.tz_convert(MARKET_TZ).isoformat()}

    def wire_calendar(self, start: str | None, end: str | None) -> list[dict[str, Any]]:
        lo = pd.Timestamp(start).date() if start else self.days[0]
        hi = pd.Timestamp(end).date() if end else self.days[-1]
        return [{"date": d.isoformat(), "open": "09:30", "close": "16:00", "session_open": "0400",
                 "session_close": "2000", "settlement_date": (d + dt.timedelta(days=1)).isoformat()}
                for d in self.days if lo <= d <= hi]

    def wire_bars(self, query: dict[str, str]) -> dict[str, Any]:
        symbol = query.get("symbols", "")
        frame = self.closed_bars(symbol)
        if len(frame) and query.get("start"):
            frame = frame[frame.index >= pd.Timestamp(query["start"])]
        if len(frame) and query.get("end"):
            frame = frame[frame.index <= pd.Timestamp(query["end"])]
        offset = int(query.get("page_token") or 0)
        limit = min(int(query.get("limit") or PAGE_SIZE), PAGE_SIZE)
        page = frame.iloc[offset: offset + limit]
        rows = [{"t": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "o": r.open, "h": r.high, "l": r.low, "c": r.close,
                 "v": float(r.volume), "n": 100, "vw": (r.high + r.low + r.close) / 3}
                for t, r in zip(page.index, page.itertuples())]
        token = str(offset + limit) if offset + limit < len(frame) else None
        return {"bars": {symbol: rows} if rows else {}, "next_page_token": token}


def make_handler(fake: FakeAlpaca) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms per request
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:  # noqa: N802
            self.handle_request("GET")

        def do_POST(self) -> None:  # noqa: N802
            self.handle_request("POST")

        def do_DELETE(self) -> None:  # noqa: N802
            self.handle_request("DELETE")

        def handle_request(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            if parts.path == "/_test/advance":  # the clock, for a loop running in another process
                fake.advance(float(body["seconds"]))
                return self.reply(200, {"now": _wire_time(fake.now)})
            with fake.lock:
                fake.requests.append({"method": method, "path": parts.path, "query": query, "body": body,
                                      "at": fake.now})
                rule = self._rule(method, parts.path)
            if rule is not None and rule.kind in ("status", "hang"):
                return self.misbehave(rule)
            if (self.headers.get("APCA-API-KEY-ID"), self.headers.get("APCA-API-SECRET-KEY")) != (API_KEY, SECRET_KEY):
                return self.reply(401, {"message": "unauthorized."})
            with fake.lock:
                fake.process()
                status, payload = self.route(method, parts.path, query, body)
            if rule is not None and method == "POST" and status == 200:
                if rule.kind == "drop_after_accept":
                    self.close_connection = True
                    self.connection.shutdown(2)  # the order is in; the client never hears it
                    return
                if rule.kind == "500_after_accept":
                    return self.reply(500, {"message": "internal server error"})
                if rule.kind == "hang_after_accept":
                    fake.release.wait(timeout=30)
                    self.close_connection = True
                    return
            self.reply(status, payload)

        def _rule(self, method: str, path: str) -> Rule | None:
            for rule in fake.rules:
                if rule.times > 0 and rule.method == method and path.startswith(rule.path):
                    rule.times -= 1
                    return rule
            return None

        def route(self, method: str, path: str, query: dict[str, str], body: dict) -> tuple[int, Any]:
            if method == "GET" and path == "/v2/account":
                return 200, fake.wire_account()
            if method == "GET" and path == "/v2/clock":
                return 200, fake.wire_clock()
            if method == "GET" and path == "/v2/calendar":
                return 200, fake.wire_calendar(query.get("start"), query.get("end"))
            if method == "GET" and path == "/v2/positions":
                return 200, fake.wire_positions()
            if path == "/v2/orders" and method == "POST":
                status, order = fake.accept(body)
                return status, fake.wire_order(order) if status == 200 else order
            if path == "/v2/orders" and method == "GET":
                wanted = query.get("status", "open")
                open_states = ("accepted", "new", "partially_filled", "pending_new")
                orders = [o for o in fake.orders if wanted == "all" or (o["status"] in open_states) == (wanted == "open")]
                orders = sorted(orders, key=lambda o: o["submitted_at"], reverse=query.get("direction", "desc") == "desc")
                return 200, [fake.wire_order(o) for o in orders[: int(query.get("limit", 50))]]
            if path == "/v2/orders" and method == "DELETE":
                out = []
                for order in fake.orders:
                    if order["status"] in ("accepted", "new", "partially_filled"):
                        fake.cancel(order)
                        out.append({"id": order["id"], "status": 200})
                return 207, out
            if path == "/v2/orders:by_client_order_id" and method == "GET":
                order = fake.by_cid.get(query.get("client_order_id", ""))
                if order is None:
                    return 404, {"code": 40410000, "message": "order not found"}
                return 200, fake.wire_order(order)
            if path.startswith("/v2/orders/"):
                order = fake.by_id.get(path.rsplit("/", 1)[-1])
                if order is None:
                    return 404, {"code": 40410000, "message": "order not found"}
                if method == "DELETE":
                    return fake.cancel(order)
                return 200, fake.wire_order(order)
            if method == "GET" and path == "/v2/stocks/bars":
                return 200, fake.wire_bars(query)
            if method == "GET" and path == CRYPTO_BARS_PATH:
                return 200, fake.wire_bars(query)
            if method == "GET" and path == CRYPTO_TRADES_PATH:
                trades = {s: {"t": _wire_time(fake.now), "p": fake.price(s), "s": 0.5, "tks": "B", "i": 1}
                          for s in query.get("symbols", "").split(",") if s in fake.bars and is_crypto(s)}
                return 200, {"trades": trades}
            if method == "GET" and path == "/v2/stocks/trades/latest":
                trades = {s: {"t": _wire_time(fake.now), "x": "V", "p": fake.price(s), "s": 100, "c": ["@"], "i": 1,
                              "z": "C"} for s in query.get("symbols", "").split(",") if s in fake.bars}
                return 200, {"trades": trades}
            return 404, {"message": "Not Found"}

        def misbehave(self, rule: Rule) -> None:
            if rule.kind == "hang":
                fake.release.wait(timeout=30)
                self.close_connection = True
                return
            self.reply(rule.status, rule.payload, rule.headers)

        def reply(self, status: int, payload: Any, headers: dict | None = None) -> None:
            body = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class FakeServer:
    """Run a :class:`FakeAlpaca` on 127.0.0.1 (a free port) in a thread; ``close()`` stops it."""

    def __init__(self, fake: FakeAlpaca) -> None:
        self.fake = fake
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()
        fake.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.fake.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _num(value: float) -> str:
    return repr(float(value))


def _wire_time(moment: pd.Timestamp) -> str:
    return moment.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
