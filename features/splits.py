"""Time-ordered train/validation/test splits with a purge gap, shared by every symbol.

Boundaries are instants in time, common to all symbols (so no symbol's test period overlaps another
symbol's training period). For each symbol, with ``a`` the first row at or after the validation start
and ``b`` the first row at or after the test start:

- train rows:      ``[first_usable, a - gap)``
- validation rows: ``[a, b - gap)``
- test rows:       ``[b, n)``

``gap`` (``purge_gap``, at least the label horizon) keeps every train label's look-forward window
strictly before the first validation bar, and likewise validation before test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitConfig:
    """Split fractions of the (union) timeline, or explicit boundary dates, and the purge gap in bars.

    :param train: fraction of the timeline in train (used when ``validation_start`` is None).
    :param validation: fraction in validation (used when ``test_start`` is None).
    :param test: fraction in test; the three fractions must sum to 1.
    :param purge_gap: bars dropped before each boundary; None means the label horizon.
    :param validation_start: explicit first instant of validation (overrides the fractions).
    :param test_start: explicit first instant of test (overrides the fractions).
    """

    train: float = 0.70
    validation: float = 0.15
    test: float = 0.15
    purge_gap: int | None = None
    validation_start: str | None = None
    test_start: str | None = None

    def __post_init__(self) -> None:
        for name in SPLITS:
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"split {name}={value} must be a fraction in [0, 1]")
        if abs(self.train + self.validation + self.test - 1.0) > 1e-9:
            raise ValueError(
                f"split fractions must sum to 1: train={self.train} + validation={self.validation} "
                f"+ test={self.test} = {self.train + self.validation + self.test}"
            )


def split_boundaries(timestamps_ns: list[np.ndarray], config: SplitConfig) -> tuple[int, int]:
    """The validation and test start instants (int64 ns) from the union of all symbols' timestamps.

    :param timestamps_ns: one sorted int64 array per symbol.
    :param config: the split configuration.
    """
    union = np.unique(np.concatenate(timestamps_ns))
    if config.validation_start is not None:
        validation_start = _instant(config.validation_start, "validation_start")
    else:
        validation_start = int(union[min(int(config.train * len(union)), len(union) - 1)])
    if config.test_start is not None:
        test_start = _instant(config.test_start, "test_start")
    else:
        position = int((config.train + config.validation) * len(union))
        test_start = int(union[min(position, len(union) - 1)])
    if test_start < validation_start:
        raise ValueError(
            f"test_start ({pd.Timestamp(test_start, tz='UTC')}) is before validation_start "
            f"({pd.Timestamp(validation_start, tz='UTC')})"
        )
    return validation_start, test_start


def split_rows(
    timestamps_ns: np.ndarray, first_usable: int, validation_start: int, test_start: int, gap: int
) -> dict[str, tuple[int, int]]:
    """Local ``[start, end)`` row ranges of one symbol for each split (possibly empty).

    :param timestamps_ns: the symbol's sorted int64 timestamps.
    :param first_usable: first row whose observation window holds no warm-up NaN.
    :param validation_start: first instant of validation.
    :param test_start: first instant of test.
    :param gap: purge gap in bars.
    """
    n = len(timestamps_ns)
    a = int(np.searchsorted(timestamps_ns, validation_start, side="left"))
    b = int(np.searchsorted(timestamps_ns, test_start, side="left"))
    ranges = {
        "train": (first_usable, a - gap),
        "validation": (max(a, first_usable), b - gap),
        "test": (max(b, first_usable), n),
    }
    return {name: (start, max(start, end)) for name, (start, end) in ranges.items()}


def _instant(value: str, name: str) -> int:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"split {name}={value!r} is not a date") from exc
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.as_unit("ns").value)
