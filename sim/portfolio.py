"""The N-asset account: cash plus a units vector, stepped to target weights (numpy + a compiled kernel).

This is the simulator's rule of :mod:`sim.engine` for an account that holds several assets; with one asset
it gives the single-asset :class:`sim.Simulator`'s numbers (tested to 1e-9 on every cost model, both fill
times, shorts and fixed fees). One step of an account, ``r`` being the last closed row of the timeline:

1. **Prices.** An asset trades at the step's fill row (``r + 1`` at its open, the default, or ``r`` at its
   close with ``fill_at="close"``) if it has a bar there; its reference price ``ref`` is that open or close.
   An asset with no bar there cannot trade and is valued at its last known close. ``E = cash + sum(u * p)``
   is the equity at those prices.
2. **Which assets are sent.** Asset ``i`` is sent when it can trade, ``E > 0`` and its target ``w_i``
   (fraction of equity, negative = short; clipped at 0 without shorts) differs by more than
   ``min_rebalance`` from its last sent target - or, on a *rebalance* step, from its current weight
   ``u_i * p_i / E`` (the way a schedule brings drifted weights back). An asset not sent keeps its units.
3. **Sells first.** Every sent order that is not a buy toward a positive target (sells, shorts, covers) trades
   the naive ``w_i * E / ref_i - u_i`` units, as in the single-asset engine.
4. **Then buys, sized so that fills and costs fit in equity.** Buys toward positive targets share what is
   left: with ``E'`` the equity after the sells (``E`` less their costs), ``k_i = s_i (1 + c) + c`` each buy's
   cost per unit of notional (slippage fraction ``s_i`` at its naive notional, commission rate ``c``) and
   ``fee`` the fixed fee per order, each buy ends worth ``w_i * X`` at ``ref_i`` where::

       X = (E' + sum_B u_i ref_i k_i - n_B fee) / (1 + sum_B w_i k_i)

   is the equity left after every cost of the step: the single-asset rule with the buys' costs summed. A buy
   that this leaves at or under its units (a fixed fee larger than the order) is not sent and the others are
   sized again. Long-only (``allow_short=False``), cash never ends below 0: if it would after the buys - assets
   not sent keep weights above their targets, or sells were sized on the equity before the buys' costs -
   every buy is scaled by one factor so that cash ends at 0. With shorts, negative cash is margin (the env
   bounds the gross exposure by ``max_leverage``).
5. **Costs** per order, per asset, with the same cost models as a single asset: the fill price moves ``s``
   against the order (``s`` at the order's notional, so the square-root impact model ``volume`` charges
   more for a larger share of the asset's dollar volume), commission ``c * |units| * fill price + fee``.
6. **Marking.** The account moves to ``r + 1``, pays borrow on shorts (``borrow_rate`` x short notional at
   the close) and, with ``cash_rate``, earns interest on positive cash; then
   ``equity = cash + sum(u * close)`` with each asset's last known close.

State lives in a few matrices (one call to the compiled step unboxes a handful of arrays): ``ints`` and
``floats`` indexed ``[FIELD, account]``, ``assets`` indexed ``[FIELD, account, asset]``, the market
``[FIELD, row, asset]``. Without numba (or with ``TRADING_RL_NO_NUMBA=1``) the same function runs as Python.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from .compiled import NUMBA, njit_cached
from .costs import FixedBpsSlippage, SpreadSlippage, VolatilityScaledSlippage, VolumeScaledSlippage
from .engine import FILL_AT, FIT, Costs
from .settings import check_setting

INT_FIELDS: tuple[str, ...] = ("row", "n_orders", "step_orders")
FLOAT_FIELDS: tuple[str, ...] = (
    "cash", "equity", "prev_equity", "peak", "costs_paid", "traded_notional", "step_cost", "step_notional",
    "step_commission", "step_slippage", "step_borrow", "step_interest", "equity_at_fill")
ASSET_FIELDS: tuple[str, ...] = (
    "units", "target", "fill_delta", "fill_price", "fill_commission", "fill_slippage", "reference", "borrow",
    # scratch of the step: the price each asset is valued at, its naive units and its buy cost factor
    "price", "naive", "k", "send")
MARKET_FIELDS: tuple[str, ...] = ("open", "close", "has_bar", "slip_base", "adv")
PARAMS: tuple[str, ...] = ("next_open", "allow_short", "min_rebalance", "commission", "fixed_fee", "borrow_rate",
                           "cash_rate", "impact")
ROW, N_ORDERS, STEP_ORDERS = range(len(INT_FIELDS))
(CASH, EQUITY, PREV_EQUITY, PEAK, COSTS_PAID, NOTIONAL, STEP_COST, STEP_NOTIONAL, STEP_COMMISSION, STEP_SLIPPAGE,
 STEP_BORROW, STEP_INTEREST, EQUITY_AT_FILL) = range(len(FLOAT_FIELDS))
(UNITS, TARGET, FILL_DELTA, FILL_PRICE, FILL_COMMISSION, FILL_SLIPPAGE, REFERENCE, BORROW, PRICE, NAIVE, K,
 SEND) = range(len(ASSET_FIELDS))
OPEN, CLOSE, HAS_BAR, SLIP_BASE, ADV = range(len(MARKET_FIELDS))
P_NEXT_OPEN, P_ALLOW_SHORT, P_MIN_REBALANCE, P_COMMISSION, P_FIXED_FEE, P_BORROW_RATE, P_CASH_RATE, P_IMPACT = range(
    len(PARAMS))
OK = -1  # what the step returns when every fill was possible; else account * N + asset of a slippage >= 100%


def _fill(a, i, delta, reference, s, rate, fee, cash, ints, floats, assets):  # pragma: no cover - compiled
    """Book one order of ``delta`` units of asset ``i`` at ``reference`` with slippage fraction ``s``: the
    single-asset engine's expressions. Returns the cash after it (unchanged when the order is not sent)."""
    notional = abs(delta) * reference
    fill_price = reference * (1.0 + (1.0 if delta > 0 else -1.0) * s)
    slippage = notional * s
    commission = rate * abs(delta) * fill_price
    if fee > 0.0:
        commission += fee
    after = cash - (delta * fill_price + commission)
    u = assets[UNITS, a, i]
    if fee > 0.0 and delta < 0.0 and u + delta >= 0.0 and after < 0.0 and after < cash:
        assets[SEND, a, i] = 0.0  # a sell whose fee exceeds what it frees: not sent
        return cash
    assets[UNITS, a, i] = u + delta
    assets[FILL_DELTA, a, i] = delta
    assets[FILL_PRICE, a, i] = fill_price
    assets[FILL_COMMISSION, a, i] = commission
    assets[FILL_SLIPPAGE, a, i] = slippage
    ints[N_ORDERS, a] += 1
    ints[STEP_ORDERS, a] += 1
    floats[NOTIONAL, a] += notional
    floats[STEP_NOTIONAL, a] += notional
    floats[STEP_COMMISSION, a] += commission
    floats[STEP_SLIPPAGE, a] += slippage
    return after


def _step(targets, rebalance, ints, floats, assets, market, params):  # pragma: no cover - compiled
    """Step every account (column) to its target weights; see the module docstring for the rule.

    :return: :data:`OK`, or ``account * N + asset`` of the first order whose slippage fraction would be >= 1 (that
        account's step books nothing and does not advance; the accounts before it have stepped: the caller raises).
    """
    n_assets = assets.shape[2]
    next_open = params[P_NEXT_OPEN] != 0.0
    allow_short = params[P_ALLOW_SHORT] != 0.0
    min_rebalance = params[P_MIN_REBALANCE]
    rate = params[P_COMMISSION]
    fee = params[P_FIXED_FEE]
    borrow_rate = params[P_BORROW_RATE]
    cash_rate = params[P_CASH_RATE]
    impact = params[P_IMPACT]
    for a in range(ints.shape[1]):
        r = ints[ROW, a]
        f = r + 1 if next_open else r
        c = floats[CASH, a]
        e = c
        for i in range(n_assets):
            assets[FILL_DELTA, a, i] = 0.0
            assets[FILL_PRICE, a, i] = np.nan
            assets[FILL_COMMISSION, a, i] = 0.0
            assets[FILL_SLIPPAGE, a, i] = 0.0
            assets[BORROW, a, i] = 0.0
            tradable = market[HAS_BAR, f, i] != 0.0
            if tradable:
                p = market[OPEN, f, i] if next_open else market[CLOSE, r, i]
            else:
                p = market[CLOSE, r, i]
            assets[REFERENCE, a, i] = p
            assets[PRICE, a, i] = p
            assets[SEND, a, i] = 1.0 if tradable else 0.0
            e += assets[UNITS, a, i] * p
        floats[EQUITY_AT_FILL, a] = e
        ints[STEP_ORDERS, a] = 0
        floats[STEP_NOTIONAL, a] = 0.0
        floats[STEP_COMMISSION, a] = 0.0
        floats[STEP_SLIPPAGE, a] = 0.0
        # which assets are sent: buys toward a positive target (SEND 2) and every other order (SEND 3)
        n_buys = 0
        for i in range(n_assets):
            t = targets[a, i]
            if not allow_short and t < 0.0:
                t = 0.0
            u = assets[UNITS, a, i]
            p = assets[PRICE, a, i]
            if rebalance[a]:
                current = u * p / e if e > 0.0 else 0.0
                moved = abs(t - current) > min_rebalance
            else:
                moved = abs(t - assets[TARGET, a, i]) > min_rebalance
            send = assets[SEND, a, i] != 0.0 and moved and e > 0.0
            if not send:
                assets[SEND, a, i] = 0.0
                continue
            naive = t * e / p
            assets[NAIVE, a, i] = naive
            if naive > u and t > 0.0:
                assets[SEND, a, i] = 2.0  # a buy, sized below
                n_buys += 1
            else:
                assets[SEND, a, i] = 3.0
        # nothing is booked if an order would slip 100% or more: its naive notional bounds every fill's (a buy is
        # sized at or under it, and the fraction does not fall as the notional grows)
        for i in range(n_assets):
            if assets[SEND, a, i] >= 2.0:
                s = market[SLIP_BASE, f, i] + impact * np.sqrt(
                    abs(assets[NAIVE, a, i] - assets[UNITS, a, i]) * assets[PRICE, a, i] / market[ADV, f, i])
                if s >= 1.0:
                    return a * n_assets + i
        # sells first (every order but a buy toward a positive target): the naive units
        for i in range(n_assets):
            if assets[SEND, a, i] == 3.0:
                t = targets[a, i]
                if not allow_short and t < 0.0:
                    t = 0.0
                p = assets[PRICE, a, i]
                delta = assets[NAIVE, a, i] - assets[UNITS, a, i]
                if delta != 0.0:
                    s = market[SLIP_BASE, f, i] + impact * np.sqrt(abs(delta) * p / market[ADV, f, i])
                    c = _fill(a, i, delta, p, s, rate, fee, c, ints, floats, assets)
                if assets[SEND, a, i] != 0.0:
                    assets[TARGET, a, i] = t
                    assets[SEND, a, i] = 1.0
        # buys: sized together on the equity left after every cost of the step
        if n_buys > 0:
            e_after = c
            for i in range(n_assets):
                e_after += assets[UNITS, a, i] * assets[PRICE, a, i]
            for i in range(n_assets):
                if assets[SEND, a, i] == 2.0:
                    t = targets[a, i]
                    p = assets[PRICE, a, i]
                    s = market[SLIP_BASE, f, i] + impact * np.sqrt(
                        (assets[NAIVE, a, i] - assets[UNITS, a, i]) * p / market[ADV, f, i])
                    assets[K, a, i] = s * (1.0 + rate) + rate
            for _ in range(n_assets):  # a buy left at or under its units drops out; size the rest again
                numerator = e_after
                denominator = FIT
                for i in range(n_assets):
                    if assets[SEND, a, i] == 2.0:
                        t = targets[a, i]
                        numerator += assets[UNITS, a, i] * assets[PRICE, a, i] * assets[K, a, i]
                        if fee > 0.0:
                            numerator -= fee
                        denominator += t * assets[K, a, i]
                dropped = False
                for i in range(n_assets):
                    if assets[SEND, a, i] == 2.0:
                        t = targets[a, i]
                        sized = t * numerator / (assets[PRICE, a, i] * denominator)
                        if sized > assets[UNITS, a, i]:
                            assets[NAIVE, a, i] = sized
                        else:
                            assets[SEND, a, i] = 0.0
                            dropped = True
                if not dropped:
                    break
            # long-only: cash may not end below 0; scale every buy by one factor if it would
            scale = 1.0
            if not allow_short:
                spend = 0.0
                count = 0
                for i in range(n_assets):
                    if assets[SEND, a, i] == 2.0:
                        spend += ((assets[NAIVE, a, i] - assets[UNITS, a, i]) * assets[PRICE, a, i]
                                  * (1.0 + assets[K, a, i]))
                        count += 1
                budget = c - (fee * count if fee > 0.0 else 0.0)
                if count > 0 and spend * FIT > budget:
                    scale = max(budget, 0.0) / (spend * FIT)
            for i in range(n_assets):
                if assets[SEND, a, i] == 2.0:
                    u = assets[UNITS, a, i]
                    delta = (assets[NAIVE, a, i] - u) * scale if scale != 1.0 else assets[NAIVE, a, i] - u
                    p = assets[PRICE, a, i]
                    if delta > 0.0:
                        s = market[SLIP_BASE, f, i] + impact * np.sqrt(delta * p / market[ADV, f, i])
                        c = _fill(a, i, delta, p, s, rate, fee, c, ints, floats, assets)
                        assets[TARGET, a, i] = targets[a, i]
                    assets[SEND, a, i] = 1.0
        # advance, borrow, interest, mark
        r += 1
        ints[ROW, a] = r
        borrow = 0.0
        if borrow_rate > 0.0:
            for i in range(n_assets):
                u = assets[UNITS, a, i]
                if u < 0.0:
                    b = borrow_rate * -u * market[CLOSE, r, i]
                    assets[BORROW, a, i] = b
                    borrow += b
                    c -= b
        interest = 0.0
        if cash_rate > 0.0 and c > 0.0:
            interest = cash_rate * c
            c += interest
        equity = c
        for i in range(n_assets):
            equity += assets[UNITS, a, i] * market[CLOSE, r, i]
        floats[CASH, a] = c
        floats[PREV_EQUITY, a] = floats[EQUITY, a]
        floats[EQUITY, a] = equity
        if equity > floats[PEAK, a]:
            floats[PEAK, a] = equity
        step_cost = floats[STEP_COMMISSION, a] + floats[STEP_SLIPPAGE, a] + borrow
        floats[STEP_BORROW, a] = borrow
        floats[STEP_INTEREST, a] = interest
        floats[STEP_COST, a] = step_cost
        if step_cost != 0.0:
            floats[COSTS_PAID, a] += step_cost
    return OK


portfolio_step = _step
if NUMBA is not None:  # else the Python path serves (slowly, the same numbers)
    _fill = njit_cached(_fill, inline="always")
    portfolio_step = njit_cached(_step)


@dataclass
class PortfolioStep:
    """Per-account outputs of the last :meth:`PortfolioSimulator.step` (views of the state)."""

    prev_equity: np.ndarray
    equity: np.ndarray
    cost: np.ndarray
    notional: np.ndarray
    orders: np.ndarray


class PortfolioSimulator:
    """Cash and units of ``n_accounts`` accounts over ``N`` assets on one timeline.

    :param open_: float64 (T, N) opens, NaN where the asset has no bar.
    :param high: float64 (T, N) highs (the slippage models' inputs), NaN where no bar.
    :param low: float64 (T, N) lows, NaN where no bar.
    :param close: float64 (T, N) the latest known close of each asset (0 before its first bar).
    :param volume: float64 (T, N) volumes, 0 where no bar.
    :param has_bar: bool (T, N) whether the asset traded a bar at that time.
    :param costs: the cost models, applied to every asset (each asset's slippage model is prepared on its
        own bars).
    :param n_accounts: independent accounts stepped together.
    :param initial_cash: starting equity of each account.
    :param fill_at: ``"next_open"`` (default) or ``"close"``.
    :param allow_short: negative targets are shorts; without it they are clipped to 0.
    :param min_rebalance: an asset's order is sent only when its target moved by more than this.
    :param cash_rate: interest per bar on positive cash (0: none).
    :param record_fills: keep every fill (row, account, asset, units, prices, costs) for the backtester.
    """

    def __init__(self, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                 volume: np.ndarray, has_bar: np.ndarray, costs: Costs | None = None, *, n_accounts: int = 1,
                 initial_cash: float = 100_000.0, fill_at: str = "next_open", allow_short: bool = False,
                 min_rebalance: float = 0.0, cash_rate: float = 0.0, record_fills: bool = False) -> None:
        if fill_at not in FILL_AT:
            raise ValueError(f"fill_at={fill_at!r} is not known; expected one of {list(FILL_AT)}")
        self.initial_cash = check_setting("initial_cash", initial_cash)
        self.min_rebalance = check_setting("min_rebalance", min_rebalance)
        self.allow_short = check_setting("allow_short", allow_short)
        self.cash_rate = check_setting("cash_rate", cash_rate)
        self.costs = costs or Costs()
        self.next_open = fill_at == "next_open"
        has_bar = np.asarray(has_bar, dtype=bool)
        t_len, n = has_bar.shape
        self.n_assets, self.n_times, self.n = n, t_len, check_setting("n_accounts", n_accounts)
        self.market = np.zeros((len(MARKET_FIELDS), t_len, n))
        self.market[OPEN] = np.where(has_bar, open_, 0.0)
        self.market[CLOSE] = close
        self.market[HAS_BAR] = has_bar
        impact = self._prepare_slippage(np.asarray(open_, float), np.asarray(high, float), np.asarray(low, float),
                                        np.asarray(close, float), np.asarray(volume, float), has_bar)
        self.params = np.array([float(self.next_open), float(self.allow_short), float(self.min_rebalance),
                                float(self.costs.commission), float(self.costs.fixed_fee),
                                float(self.costs.borrow_rate), float(self.cash_rate), impact])
        self.ints = np.zeros((len(INT_FIELDS), self.n), dtype=np.int64)
        self.floats = np.zeros((len(FLOAT_FIELDS), self.n))
        self.assets = np.zeros((len(ASSET_FIELDS), self.n, n))
        self.rebalance = np.zeros(self.n, dtype=bool)
        self._targets = np.zeros((self.n, n))
        self.result = PortfolioStep(prev_equity=self.floats[PREV_EQUITY], equity=self.floats[EQUITY],
                                    cost=self.floats[STEP_COST], notional=self.floats[STEP_NOTIONAL],
                                    orders=self.ints[STEP_ORDERS])
        self.fills: list[np.ndarray] | None = [] if record_fills else None
        self.reset(0)

    def _prepare_slippage(self, open_, high, low, close, volume, has_bar) -> float:
        """Per-asset slippage arrays: ``slip_base`` (the fraction at zero notional) and ``adv`` (the dollar
        volume the impact term divides by; inf when the model has none). Returns the impact coefficient."""
        model = self.costs.slippage
        known = (FixedBpsSlippage, SpreadSlippage, VolatilityScaledSlippage, VolumeScaledSlippage)
        if type(model) not in known:
            raise ValueError(f"slippage model {model.describe()!r} ({type(model).__name__}) is not supported by the "
                             f"portfolio simulator; use one of fixed, spread, volatility or volume")
        self.market[SLIP_BASE] = 0.0
        self.market[ADV] = np.inf
        self.slippage_models = []
        for i in range(self.n_assets):
            rows = np.flatnonzero(has_bar[:, i])
            asset_model = copy.deepcopy(model)
            asset_model.prepare(open_[rows, i], high[rows, i], low[rows, i], close[rows, i], volume[rows, i])
            local = np.arange(len(rows))
            self.market[SLIP_BASE, rows, i] = asset_model.fraction(local, np.zeros(len(rows)))
            if isinstance(asset_model, VolumeScaledSlippage):
                self.market[ADV, rows, i] = asset_model._adv
            self.slippage_models.append(asset_model)
        return float(model.impact) if isinstance(model, VolumeScaledSlippage) else 0.0

    # ----- state views ---------------------------------------------------------------------------
    @property
    def row(self) -> np.ndarray:
        return self.ints[ROW]

    @property
    def cash(self) -> np.ndarray:
        return self.floats[CASH]

    @property
    def equity(self) -> np.ndarray:
        return self.floats[EQUITY]

    @property
    def peak(self) -> np.ndarray:
        return self.floats[PEAK]

    @property
    def units(self) -> np.ndarray:
        """(n_accounts, N) units held."""
        return self.assets[UNITS]

    @property
    def target(self) -> np.ndarray:
        """(n_accounts, N) last sent targets."""
        return self.assets[TARGET]

    @property
    def costs_paid(self) -> np.ndarray:
        return self.floats[COSTS_PAID]

    @property
    def n_orders(self) -> np.ndarray:
        return self.ints[N_ORDERS]

    @property
    def traded_notional(self) -> np.ndarray:
        return self.floats[NOTIONAL]

    def weights(self, out: np.ndarray | None = None) -> np.ndarray:
        """(n_accounts, N + 1) weights at the last close: each asset's value / equity, then cash / equity."""
        out = np.empty((self.n, self.n_assets + 1)) if out is None else out
        rows = self.ints[ROW]
        equity = self.floats[EQUITY]
        positive = equity > 0
        values = self.assets[UNITS] * self.market[CLOSE][rows]
        np.divide(values, equity[:, None], out=out[:, :-1], where=positive[:, None])
        out[~positive, :-1] = 0.0
        np.divide(self.floats[CASH], equity, out=out[:, -1], where=positive)
        out[~positive, -1] = 1.0
        return out

    def drawdown(self) -> np.ndarray:
        return 1.0 - self.equity / self.peak

    # ----- stepping ------------------------------------------------------------------------------
    def reset(self, rows: np.ndarray | int, accounts: np.ndarray | slice | None = None) -> None:
        """Start accounts in cash with ``initial_cash`` at the close of timeline row ``rows``."""
        idx = slice(None) if accounts is None else accounts
        self.ints[:, idx] = 0
        self.ints[ROW, idx] = rows
        self.floats[:, idx] = 0.0
        for field in (CASH, EQUITY, PREV_EQUITY, PEAK):
            self.floats[field, idx] = self.initial_cash
        self.assets[:, idx] = 0.0
        self.assets[FILL_PRICE, idx] = np.nan
        if self.fills is not None and accounts is None:
            self.fills.clear()

    def step(self, targets: np.ndarray, rebalance: np.ndarray | bool | None = None) -> PortfolioStep:
        """Send each account's target weights (n_accounts, N), fill, advance one row and mark to market.

        :param targets: fraction of equity per asset (the cash weight is what is left).
        :param rebalance: per account (or one bool): compare targets with the current weights instead of the
            last targets (a scheduled rebalance of drifted weights).
        """
        targets = np.asarray(targets, dtype=np.float64).reshape(self.n, self.n_assets)
        if rebalance is None:
            self.rebalance[:] = False
        else:
            self.rebalance[:] = rebalance
        if (self.ints[ROW] + 1 >= self.n_times).any():
            raise IndexError(f"an account is at the timeline's last row ({self.n_times - 1}); reset it first")
        status = portfolio_step(targets, self.rebalance, self.ints, self.floats, self.assets, self.market,
                                self.params)
        if status != OK:
            account, asset = divmod(int(status), self.n_assets)
            model = self.slippage_models[asset]
            raise FloatingPointError(
                f"slippage model '{model.describe()}' gives a slippage of 100% of the price or more for asset "
                f"{asset} at row {int(self.ints[ROW, account]) + int(self.next_open)}: a fill at that price is <= 0; "
                f"lower the model's parameters")
        if self.fills is not None:
            self._record()
        return self.result

    def _record(self) -> None:
        accounts, assets = np.nonzero(self.assets[FILL_DELTA] != 0.0)
        if len(accounts) == 0:
            return
        fill_rows = self.ints[ROW, accounts] - (0 if self.next_open else 1)
        self.fills.append(np.column_stack([
            fill_rows, accounts, assets, self.assets[FILL_DELTA, accounts, assets],
            self.assets[REFERENCE, accounts, assets], self.assets[FILL_PRICE, accounts, assets],
            self.assets[FILL_COMMISSION, accounts, assets], self.assets[FILL_SLIPPAGE, accounts, assets]]))

    def fill_log(self) -> dict[str, np.ndarray]:
        """Every fill recorded (``record_fills=True``): row, account, asset, units, reference_price, fill_price,
        commission, slippage (float64 columns)."""
        if self.fills is None:
            raise ValueError("this PortfolioSimulator was built with record_fills=False")
        names = ("row", "account", "asset", "units", "reference_price", "fill_price", "commission", "slippage")
        table = np.concatenate(self.fills) if self.fills else np.zeros((0, len(names)))
        return {name: table[:, j].copy() for j, name in enumerate(names)}


__all__ = ["PortfolioSimulator", "PortfolioStep", "ASSET_FIELDS", "FLOAT_FIELDS", "INT_FIELDS", "MARKET_FIELDS",
           "portfolio_step"]
