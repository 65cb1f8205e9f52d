"""Paper trading: a saved policy traded live through a broker, journalled, limited and monitored.

Public surface::

    LiveLoop(policy, broker, journal, symbols, config, run_name=..., run_dir=...).run()
    load_live_policy(path) -> LivePolicy
    SimBroker(data, symbols, split, costs, min_bars=...)       # the simulator replaying history
    AlpacaBroker(trading_url=None, data_url=None, feed="iex")  # Alpaca paper, keys from the environment
    Journal(path)                                              # the SQLite journal
    PaperConfig.from_yaml("configs/paper.yaml")
    PortfolioLiveLoop(...), PortfolioSimBroker(...)            # one account across the symbols (--portfolio)

The entry point is ``python -m experiments.paper_trade``.
"""

from .broker import Broker, BrokerError, Clock, Order, OrderRejected, OrderRequest, Position
from .config import PaperConfig
from .journal import Journal, client_order_id
from .loop import LiveLoop
from .policy import LivePolicy, load_live_policy, settled_history_bars
from .portfolio import PortfolioLiveLoop, PortfolioSimBroker
from .sim_broker import SimBroker

__all__ = ["Broker", "BrokerError", "Clock", "Journal", "LiveLoop", "LivePolicy", "Order", "OrderRejected",
           "OrderRequest", "PaperConfig", "PortfolioLiveLoop", "PortfolioSimBroker", "Position", "SimBroker", "client_order_id", "load_live_policy",
           "settled_history_bars"]
