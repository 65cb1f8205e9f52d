"""The paper-trading config (``configs/paper.yaml``): broker, loop, costs, risk, alerts, monitor, sim.

Keys come from the environment only (``APCA_API_KEY_ID``, ``APCA_API_SECRET_KEY``); the config has no
place for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from configs.loader import dataclass_from_dict, read_yaml_mapping
from sim.engine import Costs

from .alerts import AlertConfig
from .risk import RiskConfig

BROKERS = ("alpaca", "sim")


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

    def costs(self) -> Costs:
        return Costs(commission=self.commission, fixed_fee=self.fixed_fee, slippage=self.slippage)


@dataclass
class MonitorConfig:
    """The monitor page.

    :param serve_port: serve the run folder on 127.0.0.1:PORT (``--serve`` overrides); None: file only.
    :param chart_bars: bars shown in the equity chart (the latest).
    :param refresh_seconds: the page reloads itself this often when opened in a browser (0: never).
    """

    serve_port: int | None = None
    chart_bars: int = 500
    refresh_seconds: int = 30


@dataclass
class SimConfig:
    """The historical replay of ``--broker sim``.

    :param dataset: a saved dataset folder; None: the embedded default data (or ``--dataset``).
    :param split: the split replayed (``--split`` overrides).
    """

    dataset: str | None = None
    split: str = "test"


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

    @classmethod
    def from_yaml(cls, path: str | Path | None) -> "PaperConfig":
        """Read ``path`` (None: the defaults); unknown sections and keys are errors naming them."""
        if path is None:
            return cls()
        sections = [name for name in cls.__dataclass_fields__]
        data = read_yaml_mapping(path, sections)
        return dataclass_from_dict(cls, {k: (v if v is not None else {}) for k, v in data.items()}, str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "PaperConfig":
        return dataclass_from_dict(cls, data or {}, "paper config")
