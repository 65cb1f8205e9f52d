"""Alerts: a journal row, a log line, the monitor page's banner and, optionally, a webhook POST.

Kinds: ``trades_per_day`` (orders sent today above a limit), ``daily_loss`` (the day's loss beyond a
threshold; the risk limit that halts is separate), ``reconciliation`` (the broker and the journal differ),
``stale_data`` (no decision: bars late or missing), ``broker_errors`` (several cycles in a row failed on
broker calls), ``order_rejected``, ``kill_switch``, ``halted``. An alert with a key is raised once per key
(one per condition and bar or day), so a condition that lasts does not flood the webhook.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from .journal import Journal, iso

logger = logging.getLogger("live.alerts")


@dataclass
class AlertConfig:
    """When to alert, and where besides the log and the page.

    :param webhook_url: POST each alert as JSON here (e.g. a Slack-compatible incoming webhook); None: off.
    :param webhook_timeout: seconds for the webhook request.
    :param max_trades_per_day: alert when more orders than this are sent in one trading day.
    :param daily_loss: alert when the day's loss exceeds this fraction of the day's starting equity.
    :param broker_errors: alert after this many cycles in a row with broker errors.
    """

    webhook_url: str | None = None
    webhook_timeout: float = 5.0
    max_trades_per_day: int = 10
    daily_loss: float = 0.02
    broker_errors: int = 3


class Alerter:
    """Raises alerts for one run.

    :param journal: where alerts are recorded.
    :param config: thresholds and the webhook.
    :param run: the run's name (sent with each alert).
    :param post: ``post(url, json=..., timeout=...)`` for the webhook; None uses ``requests.post``.
    """

    def __init__(self, journal: Journal, config: AlertConfig, run: str,
                 post: Callable[..., Any] | None = None) -> None:
        self.journal = journal
        self.config = config
        self.run = run
        self._post = post
        self.raised: list[dict[str, Any]] = []  # new alerts of the current cycle

    def __call__(self, at: pd.Timestamp, kind: str, message: str, symbol: str | None = None,
                 key: str | None = None) -> bool:
        """Raise an alert unless one with the same ``key`` was raised before. Returns whether it was new."""
        if not self.journal.record_alert(at, kind, message, symbol, key):
            return False
        payload = {"run": self.run, "at": iso(at), "kind": kind, "symbol": symbol, "message": message}
        self.raised.append(payload)
        logger.warning("ALERT %s%s: %s", kind, f" [{symbol}]" if symbol else "", message)
        if self.config.webhook_url:
            self._webhook(payload)
        return True

    def _webhook(self, payload: dict[str, Any]) -> None:
        post = self._post
        if post is None:
            import requests

            post = requests.post
        try:
            response = post(self.config.webhook_url, json=payload, timeout=self.config.webhook_timeout)
            status = getattr(response, "status_code", 200)
            if status >= 400:
                logger.warning("alert webhook answered HTTP %s; the alert is in the journal and on the page", status)
        except Exception as error:  # a webhook outage must never stop trading
            logger.warning("alert webhook failed (%s); the alert is in the journal and on the page",
                           type(error).__name__)

    def take(self) -> list[dict[str, Any]]:
        """The alerts raised since the last call."""
        raised, self.raised = self.raised, []
        return raised


def json_line(record: dict[str, Any]) -> str:
    """One JSON line (NaN and infinities written as null, which JSON has no other spelling for)."""
    try:  # a record without NaN or infinities is written as it is (what _finite would give it back)
        return json.dumps(record, default=str, allow_nan=False, sort_keys=True)
    except ValueError:
        return json.dumps(_finite(record), default=str, allow_nan=False, sort_keys=True)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
