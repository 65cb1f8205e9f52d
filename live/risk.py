"""Risk limits and the kill switch.

Limits (all in the ``risk:`` section of ``configs/paper.yaml``):

- ``max_position``: the largest |target exposure| of one symbol, as a fraction of its sleeve's equity;
  ``max_position_value`` the same in currency (None: no such limit);
- ``max_gross_exposure``: the largest sum of |exposure| x sleeve equity over all sleeves, as a fraction of
  their total equity; new targets are scaled down together to fit;
- ``max_orders_per_day``: orders sent per trading day; further decisions are journalled, not sent;
- ``max_daily_loss``: a loss of this fraction of the day's starting equity flattens every position and
  halts the run (a restart stays halted until ``--clear-halt``);
- ``stale_bars``: no decision when this many newer bars should already have closed than the newest bar
  the data has (the data is late or missing).

The kill switch is a file (``kill_file``, relative to the run folder) or SIGTERM / SIGINT: open orders
are canceled, positions flattened when ``flatten_on_kill``, and the loop exits cleanly.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class RiskConfig:
    """The risk limits (see the module docstring).

    :param max_position: largest |target exposure| per symbol, fraction of the sleeve's equity.
    :param max_position_value: largest position per symbol in currency; None: no limit.
    :param max_gross_exposure: largest total |exposure| over sleeves, fraction of their equity.
    :param max_orders_per_day: orders sent per trading day at most.
    :param max_daily_loss: fraction of the day's starting equity lost that flattens and halts.
    :param stale_bars: newer bars that should have closed before a decision is refused.
    :param kill_file: the kill switch file, relative to the run folder.
    :param flatten_on_kill: flatten positions when the kill switch fires (else only cancel open orders).
    :param adopt_broker_positions: when the broker's position differs from the journal's and no order
        explains it, take the broker's (and alert); else only alert.
    """

    max_position: float = 1.0
    max_position_value: float | None = None
    max_gross_exposure: float = 1.0
    max_orders_per_day: int = 20
    max_daily_loss: float = 0.05
    stale_bars: int = 1
    kill_file: str = "KILL"
    flatten_on_kill: bool = False
    adopt_broker_positions: bool = True

    def __post_init__(self) -> None:
        for name in ("max_position", "max_gross_exposure", "max_daily_loss"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"risk.{name}={value} must be > 0")
        if self.max_position_value is not None and not self.max_position_value > 0:
            raise ValueError(f"risk.max_position_value={self.max_position_value} must be > 0 or null")
        if self.max_orders_per_day < 0:
            raise ValueError(f"risk.max_orders_per_day={self.max_orders_per_day} must be >= 0")
        if self.stale_bars < 1:
            raise ValueError(f"risk.stale_bars={self.stale_bars} must be >= 1 (1: only the newest bar is acted on)")


def limit_targets(targets: dict[str, float], sleeve_equity: dict[str, float], held: dict[str, float],
                  config: RiskConfig) -> dict[str, tuple[float, str | None]]:
    """New targets within the position and gross limits, with a note where one was cut.

    :param targets: symbol -> the policy's target exposure (new decisions only).
    :param sleeve_equity: symbol -> the sleeve's equity (every sleeve).
    :param held: symbol -> current exposure of the sleeves without a new decision.
    :param config: the limits.
    """
    out: dict[str, tuple[float, str | None]] = {}
    for symbol, target in targets.items():
        cap = config.max_position
        if config.max_position_value is not None and sleeve_equity[symbol] > 0:
            cap = min(cap, config.max_position_value / sleeve_equity[symbol])
        limited = max(-cap, min(cap, target))
        out[symbol] = (limited, f"max position {cap:.4g}" if limited != target else None)
    total = sum(max(e, 0.0) for e in sleeve_equity.values())
    if total > 0:
        gross = sum(abs(t) * sleeve_equity[s] for s, (t, _) in out.items())
        gross += sum(abs(x) * sleeve_equity[s] for s, x in held.items() if s not in out)
        if gross / total > config.max_gross_exposure * (1.0 + 1e-9):  # not on rounding noise: 4 x 1.0 is 1.0
            new = sum(abs(t) * sleeve_equity[s] for s, (t, _) in out.items())
            room = max(config.max_gross_exposure * total - (gross - new), 0.0)
            scale = room / new if new > 0 else 0.0
            for symbol, (target, note) in out.items():
                if target != 0.0:
                    out[symbol] = (target * scale, f"max gross exposure {config.max_gross_exposure:g}")
    return out


class KillSwitch:
    """The kill file, and SIGTERM/SIGINT while :meth:`install` is active.

    :param path: the kill file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Catch SIGTERM and SIGINT (main thread only; elsewhere the file is the only switch)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name

    def triggered(self) -> str | None:
        """Why the switch is on (``"SIGTERM"``, ``"kill file runs/x/KILL"``), or None."""
        if self.signal_name is not None:
            return self.signal_name
        if self.path.exists():
            return f"kill file {self.path}"
        return None
