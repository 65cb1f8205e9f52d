"""The paper-trading config (``configs/paper.yaml``): broker, loop, costs, risk, alerts, monitor, sim, retrain.

Keys come from the environment only (``APCA_API_KEY_ID``, ``APCA_API_SECRET_KEY``); the config has no
place for them.

Every section is checked when it is built (each dataclass's ``__post_init__``; the costs by building
:class:`sim.engine.Costs`, the one validator of commission, slippage and fees), so a bad value fails when
the config is loaded, before anything runs. :meth:`PaperConfig.from_yaml` / :meth:`PaperConfig.from_dict`
turn such an error into one :class:`configs.loader.ConfigError` line naming the file and the key
(``configs/paper.yaml: costs.commission=5 must be ...``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from configs.loader import ConfigError, dataclass_from_dict, read_yaml_mapping
from features.bars import Timeframe
from sim.engine import Costs
from sim.settings import check_integer, check_range, check_setting

from .alerts import AlertConfig
from .retrain import RetrainConfig
from .risk import RiskConfig

BROKERS = ("alpaca", "sim")
SPLITS = ("train", "validation", "test")
MAX_PORT = 65535
MAX_QTY_DECIMALS = 9  # Alpaca accepts quantities to 9 decimals


# ----- checks of one setting (each raises ValueError naming ``key`` and the value) ------------------------
def check_number(key: str, value: Any, low: float, *, low_open: bool = False, high: float | None = None) -> float:
    """``value`` as a finite float >= ``low`` (> ``low`` when ``low_open``) and < ``high`` (None: no bound),
    by :func:`sim.settings.check_range`.

    :param key: the setting as the user writes it (``loop.poll_seconds``), shown in the error.
    :param value: the value.
    :param low: the lower bound.
    :param low_open: exclude ``low`` itself.
    :param high: the (excluded) upper bound; None: none.
    """
    return check_range(key, value, low, high, low_open=low_open)


def check_port(key: str, value: Any) -> int:
    """A TCP port in [0, 65535] (0: any free port), else ValueError naming ``key``.

    :param key: where the port came from (``--serve``, ``monitor.serve_port``).
    :param value: the port.
    """
    try:
        return check_integer(key, value, 0, MAX_PORT)
    except ValueError:
        raise ValueError(f"{key}={value!r} is not a TCP port: it must be a whole number in [0, {MAX_PORT}] "
                         f"(0: any free port)") from None


def check_url(key: str, value: Any) -> str | None:
    """None, or an ``http(s)://host[:port][/path]`` URL, else ValueError naming ``key``.

    :param key: the setting, shown in the error.
    :param value: the URL.
    """
    if value is None:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    try:
        port_ok = parts is not None and (parts.port is None or 0 < parts.port <= MAX_PORT)
    except ValueError:  # urlsplit's port out of range or not a number
        port_ok = False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ValueError(f"{key}={value!r} must be an http(s):// URL with a host (e.g. https://paper-api.alpaca.markets), "
                         f"or null for Alpaca's own")
    return value


@dataclass
class BrokerConfig:
    """Where orders and bars go.

    :param kind: ``"alpaca"`` (paper) or ``"sim"`` (historical replay through the simulator).
    :param trading_url: Alpaca trading API base URL; None: Alpaca's paper endpoint.
    :param data_url: Alpaca market data base URL; None: Alpaca's.
    :param feed: bars feed (``"iex"`` on free plans, ``"sip"`` with a subscription).
    :param fractional: trade fractional shares (else whole shares).
    :param qty_decimals: decimals of a fractional quantity (rounded toward zero).
    :param connect_timeout: seconds to open a connection.
    :param read_timeout: seconds of silence allowed while waiting for an answer.
    :param max_retries: retries of a failed request (429, 5xx, timeouts, dropped connections).
    :param backoff_base: first retry wait in seconds, doubling after (a Retry-After is honoured instead).
    :param backoff_max: longest backoff wait.
    """

    kind: str = "alpaca"
    trading_url: str | None = None
    data_url: str | None = None
    feed: str | None = "iex"
    fractional: bool = True
    qty_decimals: int = 6
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_retries: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in BROKERS:
            raise ValueError(f"broker.kind={self.kind!r} is not known; expected one of {list(BROKERS)}")
        check_url("broker.trading_url", self.trading_url)
        check_url("broker.data_url", self.data_url)
        if self.feed is not None and not (isinstance(self.feed, str) and self.feed.strip()):
            raise ValueError(f"broker.feed={self.feed!r} must be a feed name (iex, sip) or null")
        check_integer("broker.qty_decimals", self.qty_decimals, 0, MAX_QTY_DECIMALS)
        check_number("broker.connect_timeout", self.connect_timeout, 0.0, low_open=True)
        check_number("broker.read_timeout", self.read_timeout, 0.0, low_open=True)
        check_integer("broker.max_retries", self.max_retries, 0)
        check_number("broker.backoff_base", self.backoff_base, 0.0)
        check_number("broker.backoff_max", self.backoff_max, 0.0)


@dataclass
class LoopConfig:
    """The loop's schedule and sizing.

    :param timeframe: bar length; None: the policy's own (another one is an error).
    :param history_bars: bars fetched per decision; None: enough for the features to settle to 1e-12 of
        the full-history values (never fewer than the policy's warm-up + window).
    :param capital: money traded, split equally over the symbols; None: the account's equity at the first start.
    :param poll_seconds: how often open orders and late bars are polled.
    :param bar_delay_seconds: wait after a bar closes before asking for it (data arrives a little late).
    :param min_rebalance: the simulator's no-trade band (orders smaller than this change of target are not sent).
    :param record_observations: store each decision's observation in the journal (restores a stateful
        policy after a restart by replaying them).
    """

    timeframe: str | None = None
    history_bars: int | None = None
    capital: float | None = None
    poll_seconds: float = 10.0
    bar_delay_seconds: float = 5.0
    min_rebalance: float = 0.0
    record_observations: bool = True

    def __post_init__(self) -> None:
        if self.timeframe is not None:
            try:
                Timeframe.parse(self.timeframe)
            except ValueError as error:
                raise ValueError(f"loop.{error}") from None
        if self.history_bars is not None:
            check_integer("loop.history_bars", self.history_bars, 1)
        if self.capital is not None:
            check_number("loop.capital", self.capital, 0.0, low_open=True)
        check_number("loop.poll_seconds", self.poll_seconds, 0.0, low_open=True)
        check_number("loop.bar_delay_seconds", self.bar_delay_seconds, 0.0)
        check_setting("loop.min_rebalance", self.min_rebalance, rule="min_rebalance")  # as the simulator's


@dataclass
class CostConfig:
    """The simulator's cost model: the sim broker's fills, and the sizing of every order (as in the backtest).

    :param commission: fraction of traded notional (0.001 = 0.10%).
    :param slippage: bps, or ``{"model": ..., ...}`` (see ``sim.costs``).
    :param fixed_fee: currency per order.
    """

    commission: float = 0.001
    slippage: Any = 5.0
    fixed_fee: float = 0.0

    def __post_init__(self) -> None:
        try:
            self.costs()  # sim.engine.Costs is the one validator of the cost settings
        except ValueError as error:
            text = str(error)
            named = any(text.startswith(name) for name in ("commission", "fixed_fee", "slippage"))
            raise ValueError(f"costs.{text}" if named else f"costs: {text}") from None

    def costs(self) -> Costs:
        """The simulator's :class:`sim.engine.Costs` of these settings."""
        return Costs(commission=self.commission, fixed_fee=self.fixed_fee, slippage=self.slippage)


@dataclass
class MonitorConfig:
    """The monitor page.

    :param serve_port: serve the run folder on 127.0.0.1:PORT (``--serve`` overrides); None: file only.
    :param chart_bars: bars shown in the equity chart (the latest).
    :param refresh_seconds: the page reloads itself this often when opened in a browser (0: never).
    :param drift_bps: the page's slippage-drift banner shows when a symbol's mean fill slippage exceeds the
        simulator model's by more than this many bps (:func:`live.parity.drift_alerts`).
    """

    serve_port: int | None = None
    chart_bars: int = 500
    refresh_seconds: int = 30
    drift_bps: float = 10.0

    def __post_init__(self) -> None:
        if self.serve_port is not None:
            check_port("monitor.serve_port", self.serve_port)
        check_integer("monitor.chart_bars", self.chart_bars, 1)
        check_integer("monitor.refresh_seconds", self.refresh_seconds, 0)
        self.drift_bps = check_number("monitor.drift_bps", self.drift_bps, 0.0)


@dataclass
class SimConfig:
    """The historical replay of ``--broker sim``.

    :param dataset: a saved dataset folder; None: the embedded default data (or ``--dataset``).
    :param split: the split replayed (``--split`` overrides).
    """

    dataset: str | None = None
    split: str = "test"

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"sim.split={self.split!r} is not a split; expected one of {list(SPLITS)}")


@dataclass
class PaperConfig:
    """Everything ``experiments.paper_trade`` reads from its YAML config."""

    broker: BrokerConfig = field(default_factory=BrokerConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    costs: CostConfig = field(default_factory=CostConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)

    def __post_init__(self) -> None:
        _check_alerts(self.alerts)
        _check_risk(self.risk)
        if self.loop.timeframe is not None:  # else the policy's timeframe: checked when the loop is built
            self.retrain.check_schedule(self.loop.timeframe)

    @classmethod
    def from_yaml(cls, path: str | Path | None) -> "PaperConfig":
        """Read ``path`` (None: the defaults); unknown sections and keys, and bad values, are one-line
        :class:`ConfigError` s naming the file and the key.

        :param path: the YAML file.
        """
        if path is None:
            return cls()
        sections = [name for name in cls.__dataclass_fields__]
        data = read_yaml_mapping(path, sections)
        return _build(cls, {k: (v if v is not None else {}) for k, v in data.items()}, str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "paper config") -> "PaperConfig":
        """Build from a mapping of sections, checked as :meth:`from_yaml` checks a file.

        :param data: ``{"loop": {...}, "costs": {...}, ...}``; None: the defaults.
        :param where: the name errors start with.
        """
        return _build(cls, data or {}, where)


def _build(cls: type[PaperConfig], data: dict[str, Any], where: str) -> PaperConfig:
    """``cls`` from ``data``; a value a section refuses becomes ``ConfigError("<where>: <section.key>=...")``."""
    try:
        return dataclass_from_dict(cls, data, where)
    except ConfigError:
        raise  # already names where and the key
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def _check_alerts(alerts: AlertConfig) -> None:
    """The alert thresholds (``live.alerts`` leaves them unchecked)."""
    check_url("alerts.webhook_url", alerts.webhook_url)
    check_number("alerts.webhook_timeout", alerts.webhook_timeout, 0.0, low_open=True)
    check_integer("alerts.max_trades_per_day", alerts.max_trades_per_day, 0)
    check_number("alerts.daily_loss", alerts.daily_loss, 0.0, low_open=True)
    check_integer("alerts.broker_errors", alerts.broker_errors, 1)


def _check_risk(risk: RiskConfig) -> None:
    """What :class:`live.risk.RiskConfig` leaves open: finite limits and whole counts."""
    for name in ("max_position", "max_gross_exposure", "max_daily_loss"):
        check_number(f"risk.{name}", getattr(risk, name), 0.0, low_open=True)
    if risk.max_position_value is not None:
        check_number("risk.max_position_value", risk.max_position_value, 0.0, low_open=True)
    check_integer("risk.max_orders_per_day", risk.max_orders_per_day, 0)
    check_integer("risk.stale_bars", risk.stale_bars, 1)
