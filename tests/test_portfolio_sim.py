"""Reference tests of the N-asset account (:mod:`sim.portfolio`).

Three references, each independent of the compiled kernel's code:

1. the single-asset :class:`sim.Simulator` (``step_one``): one asset must give its numbers;
2. :class:`PlainPortfolio` below, the rule of ``sim/portfolio.py``'s module docstring written again as a
   plain Python loop (written from the docstring, not from the kernel);
3. vectorbt's ``Portfolio.from_orders`` with ``size_type="targetpercent"``, cash sharing and ``call_seq="auto"``.

Relative errors: equity relative to equity; cash and a position's value (units x price) relative to the
account's equity (cash may be ~0, a position may be ~0).
"""

from __future__ import annotations

import numpy as np
import pytest

from sim import Costs, Simulator, generate_ohlcv, make_slippage
from sim.portfolio import ASSET_FIELDS, FLOAT_FIELDS, PortfolioSimulator

TOL = 1e-9
SLIPPAGES = [5.0, {"model": "volume", "impact": 0.3}, {"model": "volatility"}, {"model": "spread"}]
SLIPPAGE_IDS = ["fixed", "volume", "volatility", "spread"]
STEP_BORROW = FLOAT_FIELDS.index("step_borrow")
EQUITY_AT_FILL = FLOAT_FIELDS.index("equity_at_fill")


# ----- tiny markets ---------------------------------------------------------------------------------------
def make_market(n_rows: int, n_assets: int, seed: int, gaps: bool = False) -> dict[str, np.ndarray]:
    """(T, N) open, high, low, close, volume, has_bar of ``n_assets`` synthetic assets.

    With ``gaps``: asset 1 has a holiday row, asset 2 is listed late (no bar and close 0 before its first
    bar), asset 3 is delisted early (no bar after its last bar, its last close carried).

    :param n_rows: rows of the timeline.
    :param n_assets: assets (>= 4 with gaps).
    :param seed: seed of the prices.
    :param gaps: punch the missing bars above.
    """
    fields = ("open", "high", "low", "close", "volume")
    market = {f: np.empty((n_rows, n_assets)) for f in fields}
    for i in range(n_assets):
        bars = generate_ohlcv(n_rows, seed=seed + 17 * i, start_price=40.0 + 25.0 * i, overnight_fraction=0.3)
        for f in fields:
            market[f][:, i] = bars[f]
    has_bar = np.ones((n_rows, n_assets), dtype=bool)
    if gaps:
        holiday, listed, delisted = n_rows // 3, n_rows // 4, (2 * n_rows) // 3
        has_bar[holiday, 1] = False
        has_bar[:listed, 2] = False
        has_bar[delisted + 1:, 3] = False
        for i in range(n_assets):
            for r in range(n_rows):
                if not has_bar[r, i]:
                    market["close"][r, i] = market["close"][r - 1, i] if r > 0 and has_bar[:r, i].any() else 0.0
        for f in ("open", "high", "low"):
            market[f][~has_bar] = np.nan
        market["volume"][~has_bar] = 0.0
    market["has_bar"] = has_bar
    return market


def random_weights(rng: np.random.Generator, n_assets: int, allow_short: bool,
                   totals: tuple[float, ...] = (0.6, 0.9, 1.0)) -> np.ndarray:
    """Target weights: long-only summing to one of ``totals``, or signed with that gross (some exactly 0)."""
    w = rng.dirichlet(np.ones(n_assets))
    w[rng.random(n_assets) < 0.2] = 0.0
    w *= rng.choice(totals) / w.sum() if w.sum() > 0 else 0.0
    if allow_short:
        w *= rng.choice([-1.0, 1.0], size=n_assets)
    return w


# ----- 1. one asset is the single-asset engine ---------------------------------------------------------------
@pytest.mark.parametrize("fee", [0.0, 3.0], ids=["no_fee", "fee"])
@pytest.mark.parametrize("allow_short", [False, True], ids=["long", "short"])
@pytest.mark.parametrize("fill_at", ["next_open", "close"])
@pytest.mark.parametrize("slippage", SLIPPAGES, ids=SLIPPAGE_IDS)
def test_one_asset_portfolio_equals_single_asset_simulator(slippage, fill_at, allow_short, fee):
    n_rows, start = 300, 10
    bars = generate_ohlcv(n_rows, seed=1, overnight_fraction=0.3)
    o, h, lo, c, v = (np.asarray(bars[k], float) for k in ("open", "high", "low", "close", "volume"))
    costs = Costs(commission=0.001, fixed_fee=fee, slippage=slippage, borrow_rate=0.0002)
    single = Simulator(o, h, lo, c, v, costs, fill_at=fill_at, allow_short=allow_short)
    port = PortfolioSimulator(o[:, None], h[:, None], lo[:, None], c[:, None], v[:, None],
                              np.ones((n_rows, 1), bool), costs, fill_at=fill_at, allow_short=allow_short)
    single.reset(start)
    port.reset(start)
    targets = np.random.default_rng(0).choice([0.0, 0.3, 0.7, 1.0, -0.5, 1.0, 0.3], size=n_rows - start - 1)
    worst = 0.0
    for k, target in enumerate(targets):
        single.step_one(float(target))
        port.step(np.array([[target]]))
        equity = single.equity[0]
        price = c[start + k + 1]
        worst = max(worst, abs(port.equity[0] - equity) / equity, abs(port.cash[0] - single.cash[0]) / equity,
                    abs(port.units[0, 0] - single.units[0]) * price / equity)
        assert worst <= TOL, f"step {k}: portfolio and single-asset engine differ by {worst:.3g} (relative)"
    assert port.n_orders[0] == single.n_orders[0]
    assert single.n_orders[0] > 100  # the comparison traded


# ----- 2. the plain-loop reference -----------------------------------------------------------------------------
class PlainPortfolio:
    """The rule of ``sim/portfolio.py``'s module docstring as a plain loop: one account, Python floats.

    :param market: :func:`make_market`'s arrays.
    :param costs: the cost models (each asset's slippage model is prepared on that asset's own bars).
    :param slippage: the slippage spec (a fresh model per asset).
    :param initial_cash: starting cash.
    :param fill_at: ``"next_open"`` or ``"close"``.
    :param allow_short: negative targets allowed (else clipped to 0).
    :param min_rebalance: the send threshold.
    :param cash_rate: interest per bar on positive cash.
    """

    def __init__(self, market, costs: Costs, slippage, initial_cash: float, fill_at: str, allow_short: bool,
                 min_rebalance: float, cash_rate: float) -> None:
        self.open, self.close, self.has_bar = market["open"], market["close"], market["has_bar"]
        self.n_assets = self.has_bar.shape[1]
        self.rate, self.fee, self.borrow_rate = costs.commission, costs.fixed_fee, costs.borrow_rate
        self.next_open, self.allow_short = fill_at == "next_open", allow_short
        self.min_rebalance, self.cash_rate = min_rebalance, cash_rate
        # each asset's model sees only its own bars; local[r, i] is row r's index among asset i's bars
        self.local = np.cumsum(self.has_bar, axis=0) - 1
        self.models = []
        for i in range(self.n_assets):
            rows = self.has_bar[:, i]
            model = make_slippage(slippage)
            model.prepare(*(market[f][rows, i] for f in ("open", "high", "low", "close", "volume")))
            self.models.append(model)
        self.cash = initial_cash
        self.units = [0.0] * self.n_assets
        self.last_target = [0.0] * self.n_assets
        self.costs_paid = 0.0
        self.n_orders = 0
        self.n_scaled = 0  # steps whose buys were scaled down to keep cash >= 0
        self.row = 0
        self.equity = initial_cash

    def reset(self, row: int) -> None:
        """Start (in cash) at the close of timeline row ``row``."""
        self.row = row

    def slip(self, i: int, row: int, notional: float) -> float:
        """Slippage fraction of asset ``i``'s model for an order of ``notional`` filled at timeline ``row``."""
        return self.models[i].fraction_one(int(self.local[row, i]), abs(notional))

    def fill(self, i: int, delta: float, ref: float, s: float) -> bool:
        """5. Book ``delta`` units of asset ``i`` at ``ref`` moved ``s`` against the order, commission on the
        fill price plus the fixed fee; False when it is a sell whose fixed fee exceeds what it frees (not sent,
        as in the single-asset engine)."""
        fill_price = ref * (1.0 + s) if delta > 0 else ref * (1.0 - s)
        commission = self.rate * abs(delta) * fill_price + self.fee
        cash_after = self.cash - delta * fill_price - commission
        if self.fee > 0 and delta < 0 and self.units[i] + delta >= 0 and cash_after < 0 and cash_after < self.cash:
            return False
        self.cash = cash_after
        self.units[i] += delta
        self.costs_paid += commission + abs(delta) * ref * s
        self.n_orders += 1
        return True

    def step(self, targets, rebalance: bool) -> None:
        """One step of the documented rule (its numbered points below).

        :param targets: the target weight of each asset.
        :param rebalance: compare targets with the current weights instead of the last sent targets.
        """
        r = self.row
        f = r + 1 if self.next_open else r
        n = self.n_assets
        # 1. prices: the fill row's open (or the close of r) where the asset has a bar there, else its last close
        can_trade = [bool(self.has_bar[f, i]) for i in range(n)]
        price = [(self.open[f, i] if self.next_open else self.close[r, i]) if can_trade[i] else self.close[r, i]
                 for i in range(n)]
        equity = self.cash + sum(self.units[i] * price[i] for i in range(n))
        w = [float(t) if self.allow_short else max(float(t), 0.0) for t in targets]
        # 2. which assets are sent
        sent = []
        for i in range(n):
            if not can_trade[i] or equity <= 0:
                continue
            compare = self.units[i] * price[i] / equity if rebalance else self.last_target[i]
            if abs(w[i] - compare) > self.min_rebalance:
                sent.append(i)
        naive = {i: w[i] * equity / price[i] for i in sent}
        buys = [i for i in sent if w[i] > 0 and naive[i] > self.units[i]]
        # 3. sells first (every sent order that is not a buy toward a positive target): the naive units
        for i in sent:
            if i in buys:
                continue
            delta = naive[i] - self.units[i]
            if delta == 0.0 or self.fill(i, delta, price[i], self.slip(i, f, delta * price[i])):
                self.last_target[i] = w[i]
        # 4. then buys, sized together on the equity left after every cost of the step
        if buys:
            equity_after_sells = self.cash + sum(self.units[i] * price[i] for i in range(n))
            k = {}
            for i in buys:
                s = self.slip(i, f, (naive[i] - self.units[i]) * price[i])
                k[i] = s * (1.0 + self.rate) + self.rate
            while True:
                x = ((equity_after_sells + sum(self.units[i] * price[i] * k[i] for i in buys) - len(buys) * self.fee)
                     / (1.0 + sum(w[i] * k[i] for i in buys)))
                sized = {i: w[i] * x / price[i] for i in buys}
                keep = [i for i in buys if sized[i] > self.units[i]]
                if len(keep) == len(buys):
                    break
                buys = keep
            scale = 1.0
            # long-only: cash never ends below 0 (with shorts, negative cash is margin)
            if not self.allow_short and buys:
                spend = sum((sized[i] - self.units[i]) * price[i] * (1.0 + k[i]) for i in buys)
                budget = self.cash - len(buys) * self.fee
                if spend > budget:
                    scale = max(budget, 0.0) / spend
                    self.n_scaled += 1
            for i in buys:
                delta = (sized[i] - self.units[i]) * scale
                if delta > 0:
                    self.fill(i, delta, price[i], self.slip(i, f, delta * price[i]))
                    self.last_target[i] = w[i]
        # 6. marking: borrow on shorts at the new close, interest on positive cash
        self.row = r + 1
        for i in range(n):
            if self.units[i] < 0:
                borrow = self.borrow_rate * -self.units[i] * self.close[r + 1, i]
                self.cash -= borrow
                self.costs_paid += borrow
        if self.cash_rate > 0 and self.cash > 0:
            self.cash += self.cash_rate * self.cash
        self.equity = self.cash + sum(self.units[i] * self.close[r + 1, i] for i in range(n))


def run_against_plain_loop(market, slippage, fill_at: str, allow_short: bool, totals: tuple[float, ...],
                           seed: int, redraw: float = 0.25, jitter: float = 0.3, rebalance_rate: float = 0.2,
                           move_all: bool = False):
    """Step a 2-account PortfolioSimulator and two :class:`PlainPortfolio` on the same random targets and
    assert, at every step, equity, cash, units and costs agree to :data:`TOL`, order counts are equal, an asset
    without a bar at the fill row keeps its units and (long-only) cash is never below -1e-9 x equity.

    ``redraw``, ``jitter`` and ``rebalance_rate`` are the per-step chances of new targets, of small moves of
    them and of a rebalance step; ``move_all`` redraws until every asset's target moved by more than 0.05.

    :return: ``(sim, plain accounts, worst relative differences, borrow paid per account)``.
    """
    n_rows, n_assets = market["has_bar"].shape
    n_accounts, start = 2, 3
    costs = Costs(commission=0.001, fixed_fee=2.0, slippage=slippage, borrow_rate=0.0003)
    settings = dict(initial_cash=100_000.0, fill_at=fill_at, allow_short=allow_short, min_rebalance=0.02,
                    cash_rate=0.0001)
    sim = PortfolioSimulator(market["open"], market["high"], market["low"], market["close"], market["volume"],
                             market["has_bar"], costs, n_accounts=n_accounts, record_fills=True, **settings)
    sim.reset(start)
    plain = [PlainPortfolio(market, costs, slippage, **settings) for _ in range(n_accounts)]
    for account in plain:
        account.reset(start)
    rng = np.random.default_rng(seed)
    targets = np.stack([random_weights(rng, n_assets, allow_short, totals) for _ in range(n_accounts)])
    worst = {"equity": 0.0, "cash": 0.0, "units": 0.0, "costs": 0.0}
    borrow_paid = np.zeros(n_accounts)
    for step in range(n_rows - 1 - start):
        for a in range(n_accounts):
            if rng.random() < redraw:
                fresh = random_weights(rng, n_assets, allow_short, totals)
                while move_all and np.abs(fresh - targets[a]).min() <= 0.05:
                    fresh = random_weights(rng, n_assets, allow_short, totals)
                targets[a] = fresh
            elif rng.random() < jitter:  # small moves, some under min_rebalance
                moved = np.clip(targets[a] + rng.normal(0, 0.015, n_assets), -1.0 if allow_short else 0.0, 1.0)
                targets[a] = moved * min(1.0, max(totals) / np.abs(moved).sum())
        rebalance = rng.random(n_accounts) < rebalance_rate
        units_before = sim.units.copy()
        r = int(sim.row[0])
        fill_row = r + 1 if fill_at == "next_open" else r
        sim.step(targets, rebalance)
        borrow_paid += sim.floats[STEP_BORROW]
        no_bar = ~market["has_bar"][fill_row]
        assert (sim.units[:, no_bar] == units_before[:, no_bar]).all(), f"step {step}: an asset without a bar traded"
        close = market["close"][r + 1]
        for a, account in enumerate(plain):
            account.step(targets[a], bool(rebalance[a]))
            equity = account.equity
            worst["equity"] = max(worst["equity"], abs(sim.equity[a] - equity) / equity)
            worst["cash"] = max(worst["cash"], abs(sim.cash[a] - account.cash) / equity)
            worst["units"] = max(worst["units"], float(np.max(np.abs(sim.units[a] - account.units) * close)) / equity)
            worst["costs"] = max(worst["costs"], abs(sim.costs_paid[a] - account.costs_paid) / equity)
            assert max(worst.values()) <= TOL, f"step {step} account {a}: {worst}"
            assert sim.n_orders[a] == account.n_orders, f"step {step} account {a}: order counts differ"
            if not allow_short:
                assert sim.cash[a] >= -1e-9 * sim.equity[a], f"step {step} account {a}: cash {sim.cash[a]}"
    return sim, plain, worst, borrow_paid


@pytest.mark.parametrize("allow_short", [False, True], ids=["long", "short"])
@pytest.mark.parametrize("fill_at", ["next_open", "close"])
@pytest.mark.parametrize("slippage", SLIPPAGES, ids=SLIPPAGE_IDS)
def test_portfolio_matches_plain_loop_reference_with_missing_bars(slippage, fill_at, allow_short):
    """5 assets (a holiday, a late listing, an early delisting), 2 accounts, min_rebalance 0.02, rebalance
    steps, fixed fee, borrow, cash interest; targets sum (gross) to 0.5 or 1.0."""
    market = make_market(150, 5, seed=11, gaps=True)
    sim, plain, worst, borrow_paid = run_against_plain_loop(market, slippage, fill_at, allow_short, (0.5, 1.0), 5)
    log = sim.fill_log()
    for a in range(sim.n):
        mine = log["account"] == a
        paid = log["commission"][mine].sum() + log["slippage"][mine].sum() + borrow_paid[a]
        assert paid == pytest.approx(sim.costs_paid[a], rel=1e-12), "fill log costs + borrow != costs paid"
        assert paid == pytest.approx(plain[a].costs_paid, rel=1e-9)
        held = np.bincount(log["asset"][mine].astype(int), weights=log["units"][mine], minlength=sim.n_assets)
        np.testing.assert_allclose(held, sim.units[a], rtol=1e-12, atol=1e-9)
    # what the comparison covered: trades, the late listing bought, the delisted asset held after its last bar
    assert sim.n_orders.min() > 50
    late, delisted = 2, 3
    assert (log["asset"] == late).any()
    assert (sim.units[:, delisted] != 0).any()
    if allow_short:
        assert (borrow_paid > 0).all()


@pytest.mark.parametrize("slippage", SLIPPAGES, ids=SLIPPAGE_IDS)
def test_fully_invested_buys_are_scaled_so_cash_ends_at_zero_as_the_reference(slippage):
    """Long targets summing to 1 redrawn (every asset moves) on most steps: sells are sized on the equity
    before the buys' costs, so the buys must be scaled down (step 4's last rule) - matched to the reference."""
    market = make_market(80, 4, seed=3)
    sim, plain, worst, _ = run_against_plain_loop(market, slippage, "next_open", False, (1.0,), 7, redraw=0.9,
                                                  jitter=0.0, rebalance_rate=0.0, move_all=True)
    assert min(account.n_scaled for account in plain) > 20  # the scaling rule was exercised
    assert (sim.cash >= -1e-9 * sim.equity).all()


@pytest.mark.parametrize("why_not_sent", ["within_min_rebalance", "no_bar_at_fill_row"])
def test_long_only_cash_stays_non_negative_when_an_asset_not_sent_is_above_its_target(why_not_sent):
    """Two assets, targets [0.5, 0.4] at the start; asset 0 rises 50%. Then targets [0.5, 0.5]: asset 0 is not
    sent (its target did not move / it has no bar at the fill row) and is worth ~0.6 of equity, asset 1 is
    bought to 0.5. Long-only, so the documented rule scales the buy: cash ends at 0 (the plain loop: cash 0);
    before the fix the simulator gave cash ~ -10% of equity."""
    n_rows = 6
    close = np.array([[100.0, 100.0], [100.0, 100.0], [150.0, 100.0], [150.0, 100.0], [150.0, 100.0],
                      [150.0, 100.0]])
    has_bar = np.ones((n_rows, 2), dtype=bool)
    if why_not_sent == "no_bar_at_fill_row":
        has_bar[3, 0] = False
    market = {"open": np.where(has_bar, close, np.nan), "high": np.where(has_bar, close, np.nan),
              "low": np.where(has_bar, close, np.nan), "close": close, "volume": np.where(has_bar, 1e6, 0.0),
              "has_bar": has_bar}
    costs = Costs(commission=0.0, slippage=0.0)
    settings = dict(initial_cash=100_000.0, fill_at="close", allow_short=False, min_rebalance=0.02, cash_rate=0.0)
    sim = PortfolioSimulator(market["open"], market["high"], market["low"], close, market["volume"], has_bar,
                             costs, **settings)
    plain = PlainPortfolio(market, costs, 0.0, **settings)
    first = np.array([0.5, 0.4])
    second = np.array([0.0 if why_not_sent == "no_bar_at_fill_row" else 0.5, 0.5])
    for targets in (first, first, first, second):
        sim.step(targets[None, :])
        plain.step(targets, False)
    assert plain.cash >= 0.0
    assert sim.cash[0] >= -1e-9 * sim.equity[0], f"cash {sim.cash[0]:.2f} of equity {sim.equity[0]:.2f}"


# ----- 3. vectorbt, the outside reference ---------------------------------------------------------------------
VBT_ROWS, VBT_ASSETS = 200, 4
FILL_DELTA, FILL_PRICE = ASSET_FIELDS.index("fill_delta"), ASSET_FIELDS.index("fill_price")


def stepped_weights(seed: int, allow_short: bool = False, every: int = 5) -> np.ndarray:
    """(VBT_ROWS - 1, VBT_ASSETS) targets, one row per step: new random weights (every asset > 0, long ones
    summing to 0.8 or 1.0; with shorts, random signs) every ``every`` steps, held in between."""
    rng = np.random.default_rng(seed)
    targets = np.empty((VBT_ROWS - 1, VBT_ASSETS))
    for j in range(len(targets)):
        if j % every == 0:
            w = rng.dirichlet(np.ones(VBT_ASSETS)) * rng.choice([0.8, 1.0])
            if allow_short:
                w *= rng.choice([-1.0, 1.0], size=VBT_ASSETS)
        targets[j] = w
    return targets


def step_through(market, targets: np.ndarray, costs: Costs, fill_at: str, allow_short: bool,
                 rebalance: bool) -> dict[str, np.ndarray]:
    """Run one account over ``targets`` from row 0; per step: equity, cash, units after the step, the units
    filled, the fill prices and the equity at the fill's reference prices before the step (``equity_at_fill``)."""
    sim = PortfolioSimulator(market["open"], market["high"], market["low"], market["close"], market["volume"],
                             market["has_bar"], costs, fill_at=fill_at, allow_short=allow_short)
    sim.reset(0)
    names = ("equity", "cash", "units", "delta", "fill_price", "equity_at_fill")
    out: dict[str, list] = {name: [] for name in names}
    for j in range(len(targets)):
        sim.step(targets[j][None, :], rebalance)
        for name, value in zip(names, (sim.equity[0], sim.cash[0], sim.units[0], sim.assets[FILL_DELTA, 0],
                                       sim.assets[FILL_PRICE, 0], sim.floats[EQUITY_AT_FILL, 0])):
            out[name].append(np.copy(value))
    result = {name: np.array(values) for name, values in out.items()}
    result["n_orders"] = np.array(sim.n_orders[0])
    return result


def vectorbt_run(market, fill_at: str, size: np.ndarray, fees: float, fixed_fees: float, slippage):
    """vectorbt's target-percent, cash-sharing portfolio with vectorbt row ``j`` = our step ``j``: orders at
    ``price`` = the step's reference price (the next open, or the close of the decision row), valued at
    ``close`` = the close our account is marked at after the step. So vectorbt's value at row ``j`` is our
    equity after step ``j``, for either fill time.

    How vectorbt 1.x sizes these orders (vectorbt/portfolio/nb.py, ``simulate_from_orders_nb`` and
    ``execute_order_nb``): ``val_price`` defaults to ``np.inf`` = the order price, so the group value of a
    row is ``cash + sum(position * price)`` - our pre-trade equity at reference prices; it is computed once
    per row and, with ``update_value=False`` (the default, passed explicitly), NOT updated between the
    row's orders, so every order of a row is ``pct * value / price - position`` units whatever the call
    order. ``call_seq="auto"`` sorts the row's orders by ``pct * value - position * price``: sells first, so
    buys never meet a cash shortfall that our account does not have (vectorbt would cut such a buy to the
    cash). Fills: buys at ``price * (1 + slippage)``, sells at ``price * (1 - slippage)``, fees
    ``fees * |size| * fill price + fixed_fees`` per order - our commission and fixed fee.
    """
    vbt = pytest.importorskip("vectorbt")
    ref = market["open"][1:] if fill_at == "next_open" else market["close"][:-1]
    return vbt.Portfolio.from_orders(
        close=market["close"][1:], price=ref, size=size, size_type="targetpercent", cash_sharing=True,
        group_by=True, call_seq="auto", update_value=False, fees=fees, fixed_fees=fixed_fees, slippage=slippage,
        init_cash=100_000.0)


def worst_differences(pf, ours: dict[str, np.ndarray], market) -> dict[str, float]:
    """Largest relative differences between vectorbt's value, cash, assets and our equity, cash, units."""
    equity = ours["equity"]
    mark = market["close"][1:]
    return {
        "equity": float(np.max(np.abs(pf.value().to_numpy() - equity) / equity)),
        "cash": float(np.max(np.abs(pf.cash().to_numpy() - ours["cash"]) / equity)),
        "units": float(np.max(np.abs(pf.assets().to_numpy() - ours["units"]) * mark / equity[:, None])),
    }


@pytest.mark.parametrize("mode", ["on_change", "every_row"])
@pytest.mark.parametrize("fill_at", ["next_open", "close"])
def test_zero_cost_target_weights_give_vectorbt_equity_curve(fill_at, mode):
    """Zero costs: our target weights given to vectorbt as target percents give the same curve. ``on_change``:
    our account sends an asset when its target moved (every asset, every 5 rows), vectorbt gets the weights on
    those rows and NaN (no order) elsewhere; ``every_row``: our account rebalances every step
    (``rebalance=True``), vectorbt gets the weights on every row."""
    market = make_market(VBT_ROWS, VBT_ASSETS, seed=21)
    targets = stepped_weights(seed=3)
    ours = step_through(market, targets, Costs.zero(), fill_at, allow_short=False, rebalance=mode == "every_row")
    size = targets.copy()
    if mode == "on_change":
        moved = np.vstack([np.ones((1, VBT_ASSETS), bool), targets[1:] != targets[:-1]])
        size[~moved] = np.nan
    pf = vectorbt_run(market, fill_at, size, fees=0.0, fixed_fees=0.0, slippage=0.0)
    worst = worst_differences(pf, ours, market)
    assert max(worst.values()) <= TOL, worst
    assert len(pf.orders.records) == int(ours["n_orders"]) >= 150


@pytest.mark.parametrize("allow_short", [False, True], ids=["long", "short"])
@pytest.mark.parametrize("slippage", [5.0, {"model": "volume", "impact": 0.3}], ids=["fixed", "volume"])
@pytest.mark.parametrize("fill_at", ["next_open", "close"])
def test_same_orders_with_costs_give_vectorbt_equity_curve(fill_at, slippage, allow_short):
    """Commission 0.1%, a fixed fee of 2 per order and slippage: our orders, as target percents, give
    vectorbt's curve. For each step, ``pct_i = units_after_i * ref_i / equity_at_fill`` on the assets we
    filled (NaN elsewhere): vectorbt's value of the row is our ``equity_at_fill`` (see :func:`vectorbt_run`),
    so its order is ``pct_i * value / ref_i - position_i`` = our units filled. Fixed slippage is vectorbt's
    ``slippage=0.0005``; the volume model's per-order fraction (our fill price / reference - 1) is given to
    vectorbt per row and asset."""
    market = make_market(VBT_ROWS, VBT_ASSETS, seed=21)
    targets = stepped_weights(seed=4, allow_short=allow_short)
    costs = Costs(commission=0.001, fixed_fee=2.0, slippage=slippage)
    ours = step_through(market, targets, costs, fill_at, allow_short=allow_short, rebalance=False)
    ref = market["open"][1:] if fill_at == "next_open" else market["close"][:-1]
    filled = ours["delta"] != 0.0
    pct = np.where(filled, ours["units"] * ref / ours["equity_at_fill"][:, None], np.nan)
    fraction = np.where(filled, np.abs(ours["fill_price"] / ref - 1.0), 0.0)
    pf = vectorbt_run(market, fill_at, pct, fees=0.001, fixed_fees=2.0,
                      slippage=5e-4 if slippage == 5.0 else fraction)
    worst = worst_differences(pf, ours, market)
    assert max(worst.values()) <= TOL, worst
    assert len(pf.orders.records) == int(ours["n_orders"]) >= 150
    if not allow_short:
        assert ours["cash"].min() >= 0.0
