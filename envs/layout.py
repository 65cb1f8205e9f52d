"""The observation layout shared by the env, the backtester, policies and feature extractors.

An observation is one flat float32 vector::

    [ window x n_features scaled features (row-major, oldest bar first) | position state (4) | asset id (1) ]

Position state, in order: ``position`` (signed exposure, fraction of equity), ``unrealised_return``
(return of the open position since entry, 0 when flat), ``bars_held`` (bars since entry / 100),
``cash_fraction`` (cash / equity). The asset id is the symbol's integer id, stored as a float.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATE_FIELDS: tuple[str, ...] = ("position", "unrealised_return", "bars_held", "cash_fraction")
BARS_HELD_SCALE = 100.0


@dataclass(frozen=True)
class ObservationLayout:
    """Where each part of a flat observation lives.

    :param window: bars in the feature window.
    :param n_features: features per bar.
    """

    window: int
    n_features: int

    @property
    def n_window_values(self) -> int:
        return self.window * self.n_features

    @property
    def size(self) -> int:
        return self.n_window_values + len(STATE_FIELDS) + 1

    @property
    def state_slice(self) -> slice:
        return slice(self.n_window_values, self.n_window_values + len(STATE_FIELDS))

    @property
    def asset_index(self) -> int:
        return self.size - 1

    def features(self, obs: np.ndarray) -> np.ndarray:
        """The feature window, shape ``(..., window, n_features)`` (works for numpy and torch)."""
        return obs[..., : self.n_window_values].reshape(*obs.shape[:-1], self.window, self.n_features)

    def state(self, obs: np.ndarray) -> np.ndarray:
        """The position state, shape ``(..., 4)``."""
        return obs[..., self.state_slice]

    def asset_id(self, obs: np.ndarray) -> np.ndarray:
        """The asset id as stored (float); round and cast before using it as an index."""
        return obs[..., self.asset_index]

    def check(self, obs_size: int, where: str = "observation") -> None:
        """Raise a clear error if a flat observation of ``obs_size`` values does not fit this layout."""
        if obs_size != self.size:
            raise ValueError(
                f"{where} has {obs_size} values but window={self.window} x n_features={self.n_features} "
                f"+ {len(STATE_FIELDS)} state + 1 asset id needs {self.size}"
            )
