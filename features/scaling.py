"""Feature scalers fit on training rows only and saved with the dataset (numpy, no sklearn state)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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
    def fit(cls, rows: np.ndarray, kind: str = "standard", clip: float | None = None,
            feature_names: Sequence[str] | None = None) -> "FeatureScaler":
        """Fit on ``rows`` (n, F) — the caller passes training rows only; NaN rows are ignored.

        :param rows: feature matrix of the training split.
        :param kind: ``"standard"`` or ``"robust"``.
        :param clip: absolute bound applied after scaling; None disables clipping.
        :param feature_names: column names, for error messages.
        :raises ValueError: when a center or scale is not finite (absurd inputs), naming the feature.
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
        bad = ~(np.isfinite(center) & np.isfinite(scale))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            name = feature_names[k] if feature_names is not None else f"column {k}"
            raise ValueError(
                f"cannot fit the {kind} scaler: feature {name!r} has center {center[k]} and scale {scale[k]} on the "
                f"train rows (values too large for float64); check the bars for absurd prices or volumes"
            )
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

    @property
    def n_features(self) -> int:
        return int(len(self.center))

    def equals(self, other: "FeatureScaler") -> bool:
        """Same kind, clip and (bit-identical) center and scale."""
        return (
            self.kind == other.kind
            and self.clip == other.clip
            and self.center.shape == other.center.shape
            and bool(np.array_equal(self.center, other.center))
            and bool(np.array_equal(self.scale, other.scale))
        )

    @classmethod
    def from_dict(cls, data: dict, where: str = "scaler") -> "FeatureScaler":
        """Rebuild from :meth:`to_dict`; a malformed entry is a ``ValueError`` naming ``where``.

        :param data: the saved mapping.
        :param where: the file (and key) it came from, for messages.
        """
        try:
            kind, center, scale, clip = data["kind"], data["center"], data["scale"], data.get("clip")
            center, scale = np.asarray(center, dtype=np.float64), np.asarray(scale, dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{where}: not a saved scaler ({type(error).__name__}: {error})") from None
        if kind not in SCALERS:
            raise ValueError(f"{where}: kind={kind!r} is not one of {list(SCALERS)}")
        if center.ndim != 1 or center.shape != scale.shape:
            raise ValueError(f"{where}: center {center.shape} and scale {scale.shape} must be equal-length lists")
        if not (np.isfinite(center).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError(f"{where}: center and scale must be finite with scale > 0")
        return cls(kind, center, scale, clip)
