"""Feature scalers fit on training rows only and saved with the dataset (numpy, no sklearn state)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCALERS: tuple[str, ...] = ("standard", "robust")


@dataclass
class FeatureScaler:
    """``(x - center) / scale``, then clipped to ``[-clip, clip]`` when ``clip`` is set.

    ``standard``: center = mean, scale = std. ``robust``: center = median, scale = IQR.
    A zero scale (constant feature) becomes 1 so the feature is only centred.
    """

    kind: str
    center: np.ndarray
    scale: np.ndarray
    clip: float | None = None

    @classmethod
    def fit(cls, rows: np.ndarray, kind: str = "standard", clip: float | None = None) -> "FeatureScaler":
        """Fit on ``rows`` (n, F) — the caller passes training rows only; NaN rows are ignored.

        :param rows: feature matrix of the training split.
        :param kind: ``"standard"`` or ``"robust"``.
        :param clip: absolute bound applied after scaling; None disables clipping.
        """
        if kind not in SCALERS:
            raise ValueError(f"scaler={kind!r} is not known; expected one of {list(SCALERS)}")
        if clip is not None and not clip > 0:
            raise ValueError(f"clip={clip} must be > 0 or None")
        rows = np.asarray(rows, dtype=np.float64)
        rows = rows[~np.isnan(rows).any(axis=1)]
        if len(rows) < 2:
            raise ValueError(f"cannot fit the scaler: {len(rows)} complete training row(s); need at least 2")
        if kind == "standard":
            center, scale = rows.mean(axis=0), rows.std(axis=0)
        else:
            q25, center, q75 = np.percentile(rows, [25, 50, 75], axis=0)
            scale = q75 - q25
        scale = np.where(scale > 1e-12, scale, 1.0)
        return cls(kind, center, scale, clip)

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """Scale ``rows`` (n, F); NaN stays NaN. Returns float32."""
        scaled = (np.asarray(rows, dtype=np.float64) - self.center) / self.scale
        if self.clip is not None:
            scaled = np.clip(scaled, -self.clip, self.clip)
        return scaled.astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "center": [float(v) for v in self.center],
            "scale": [float(v) for v in self.scale],
            "clip": self.clip,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureScaler":
        return cls(data["kind"], np.asarray(data["center"]), np.asarray(data["scale"]), data.get("clip"))
