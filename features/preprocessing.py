"""A trained model's own preprocessing, carried with it and applied to any data it meets.

A supervised bundle or a saved RL agent records the :class:`Preprocessing` of the dataset it was trained
on: feature settings, timeframe, window, the fitted scaler and the asset map. Applied to other data -
another dataset, a walk-forward fold, raw bars, new bars arriving live - it rebuilds the observations
with *its own* settings, so a model never sees inputs scaled by another scaler or another asset's id:

- :meth:`Preprocessing.apply` re-derives a :class:`MarketData`: the features are rebuilt from the bars
  when the data's feature settings differ (else its unscaled features are reused), scaled with the
  model's scaler, asset ids taken from the model's map, and windows of the model's length.
- :meth:`Preprocessing.market_data` builds a :class:`MarketData` from raw bars the same way.
- :meth:`Preprocessing.latest_window` turns the latest bars of one symbol into the model's input window
  (the live path); :attr:`Preprocessing.min_bars` says how many bars it needs.

Unknown symbols: a symbol missing from the model's asset map is an error naming it and the symbols the
model knows; it never borrows another symbol's id. A different timeframe (a daily model on hourly bars)
is an error too: the features would mean something else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .bars import Timeframe, resolve_timeframe, validate_bars
from .feature_builder import FeatureConfig, build_features, feature_names, warmup_bars
from .market_data import MarketData
from .news.config import NEWS_FEATURES, news_identity
from .scaling import FeatureScaler

PREPROCESSING_VERSION = 1


class PreprocessingMismatch(ValueError):
    """Data that a model's preprocessing cannot be rebuilt on; the message says what differs."""


@dataclass
class Preprocessing:
    """Everything between bars and a model's input.

    :param feature_config: the feature settings (``FeatureConfig.to_dict()``).
    :param timeframe: the bar length the model was trained on (``"1Day"``, ``"1Hour"``).
    :param window: bars per input window.
    :param feature_names: the feature columns, in order.
    :param scaler: the scaler fit on the training rows.
    :param asset_map: symbol -> asset id, as in training.
    :param news: the news settings (``NewsConfig.to_dict()``) when the model saw news columns (appended
        after the price features), else None. News cannot be rebuilt from bars: data whose news settings
        differ is refused.
    """

    feature_config: dict[str, Any]
    timeframe: str
    window: int
    feature_names: list[str]
    scaler: FeatureScaler
    asset_map: dict[str, int]
    news: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        config = FeatureConfig.from_dict(self.feature_config)
        self.feature_config = config.to_dict()
        self.timeframe = str(Timeframe.parse(self.timeframe))
        self.window = int(self.window)
        self.feature_names = [str(name) for name in self.feature_names]
        self.asset_map = {str(k): int(v) for k, v in self.asset_map.items()}
        expected = feature_names(config, Timeframe.parse(self.timeframe).is_intraday)
        if self.news is not None:
            self.news = dict(self.news)
            expected = expected + list(NEWS_FEATURES)
        if self.feature_names != expected:
            raise PreprocessingMismatch(
                f"feature names {self.feature_names[:4]}... do not follow from the feature settings "
                f"({len(self.feature_names)} names, the settings give {len(expected)})"
            )
        if self.scaler.n_features != len(self.feature_names):
            raise PreprocessingMismatch(
                f"the scaler has {self.scaler.n_features} columns for {len(self.feature_names)} features"
            )
        if self.window < 1:
            raise PreprocessingMismatch(f"window={self.window} must be >= 1")

    # ----- construction and persistence ---------------------------------------------------------
    @classmethod
    def of(cls, data: MarketData) -> "Preprocessing":
        """The preprocessing ``data`` was built with (what a model trained on it records).

        :param data: a dataset built by :func:`features.build_dataset` / ``build_market_data``.
        """
        if not data.feature_config and "features" not in data.config:
            raise PreprocessingMismatch("the dataset does not record its feature settings (config['features'])")
        return cls(
            feature_config=data.feature_config,
            timeframe=data.timeframe,
            window=data.window,
            feature_names=list(data.feature_names),
            scaler=data.scaler,
            asset_map=data.asset_map,
            news=data.config.get("news"),
        )

    def to_dict(self) -> dict[str, Any]:
        record = {
            "version": PREPROCESSING_VERSION,
            "feature_config": self.feature_config,
            "timeframe": self.timeframe,
            "window": self.window,
            "feature_names": list(self.feature_names),
            "scaler": self.scaler.to_dict(),
            "asset_map": dict(self.asset_map),
        }
        if self.news is not None:  # absent without news: older records and digests stay as they were
            record["news"] = dict(self.news)
        return record

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "preprocessing") -> "Preprocessing":
        """Rebuild from :meth:`to_dict`; a malformed record is a ``ValueError`` naming ``where``.

        :param data: the saved mapping.
        :param where: the file it came from, for messages.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
        if data.get("version") != PREPROCESSING_VERSION:
            raise ValueError(f"{where}: version {data.get('version')!r} is not supported (expected {PREPROCESSING_VERSION})")
        missing = [k for k in ("feature_config", "timeframe", "window", "feature_names", "scaler", "asset_map")
                   if k not in data]
        if missing:
            raise ValueError(f"{where}: lacks {missing}")
        try:
            return cls(
                feature_config=dict(data["feature_config"]),
                timeframe=data["timeframe"],
                window=data["window"],
                feature_names=list(data["feature_names"]),
                scaler=FeatureScaler.from_dict(data["scaler"], f"{where}.scaler"),
                asset_map=dict(data["asset_map"]),
                news=data.get("news"),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: {error}") from None

    def digest(self) -> str:
        """sha256 of the record: equal digests mean identical preprocessing."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    # ----- what it needs ----------------------------------------------------------------------
    @property
    def features(self) -> FeatureConfig:
        return FeatureConfig.from_dict(self.feature_config)

    @property
    def warmup(self) -> int:
        """Leading bars whose features are undefined."""
        return warmup_bars(self.features)

    @property
    def min_bars(self) -> int:
        """Bars of history needed for one full input window: the warm-up plus the window."""
        return self.warmup + self.window

    def asset_id(self, symbol: str) -> int:
        """The model's id of ``symbol``; a symbol it never saw is an error (never another symbol's id).

        :param symbol: the symbol.
        """
        if symbol not in self.asset_map:
            raise PreprocessingMismatch(
                f"symbol {symbol!r} was not in this model's training data; it knows {sorted(self.asset_map)}. "
                f"A model gives each symbol its own learned embedding, so an unseen symbol has none: train on "
                f"data that includes {symbol!r}"
            )
        return self.asset_map[symbol]

    # ----- applying it ------------------------------------------------------------------------
    def check(self, data: MarketData) -> None:
        """Raise :class:`PreprocessingMismatch` when this preprocessing cannot be rebuilt on ``data``.

        :param data: the dataset.
        """
        ours, theirs = Timeframe.parse(self.timeframe), Timeframe.parse(data.timeframe)
        if ours.seconds != theirs.seconds:
            raise PreprocessingMismatch(
                f"the model was trained on {self.timeframe} bars; the data has {data.timeframe} bars"
            )
        for symbol in data.symbols:
            self.asset_id(symbol)
        ours, theirs = news_identity(self.news), news_identity(data.config.get("news"))
        if ours != theirs:
            if theirs is None:
                raise PreprocessingMismatch(
                    f"the model was trained with news sentiment columns ({ours}); the data has none. News cannot "
                    f"be rebuilt from bars: build the data with the same news settings (DatasetConfig(news=...))"
                )
            if ours is None:
                raise PreprocessingMismatch(
                    f"the model was trained without news columns; the data has them ({theirs}): build the data "
                    f"without news (news: null)"
                )
            changed = sorted(k for k in ours if ours[k] != theirs.get(k))
            raise PreprocessingMismatch(
                f"the data's news settings differ from the model's in {changed} "
                f"(model: {[ours[k] for k in changed]}, data: {[theirs.get(k) for k in changed]}); news columns "
                f"cannot be rebuilt from bars: build the data with the model's news settings"
            )

    def apply(self, data: MarketData) -> MarketData:
        """``data`` as this model observes it: its features, scaler, asset ids and window.

        Returns ``data`` itself when nothing differs. Split ranges keep their time boundaries; their
        first rows move later where this model's warm-up and window need more history.

        :param data: any dataset of the same timeframe whose symbols the model knows.
        """
        cached = getattr(self, "_last_applied", None)
        if cached is not None and cached[0] is data:
            return cached[1]
        result = self._apply(data)
        self._last_applied = (data, result)  # backtests call this once per symbol on the same data
        return result

    def _apply(self, data: MarketData) -> MarketData:
        self.check(data)
        ids = [self.asset_id(s) for s in data.symbols]
        same_features = data.feature_config == self.feature_config and list(data.feature_names) == self.feature_names
        if same_features and data.scaler.equals(self.scaler) and ids == list(data.asset_ids) and data.window == self.window:
            return data
        if same_features:
            raw = data.raw_features
        else:
            raw = np.concatenate([self._raw_features_of_block(data, i) for i in range(len(data.symbols))])
        from .dataset import scale_block  # dataset imports this module's neighbours; import late

        warmup = self.warmup
        lengths = np.diff(data.offsets)
        blocks = [scale_block(self.scaler, raw[data.offsets[i]:data.offsets[i + 1]], warmup)
                  for i in range(len(data.symbols))]
        first_usable = warmup + self.window - 1
        split_ranges = {}
        for split, ranges in data.split_ranges.items():
            starts = np.minimum(np.maximum(ranges[:, 0], first_usable), ranges[:, 1])
            split_ranges[split] = np.stack([starts, ranges[:, 1]], axis=1).astype(np.int64)
        config = dict(data.config)
        config.update(window=self.window, features=self.feature_config, scaler=self.scaler.kind, clip=self.scaler.clip)
        return dataclasses.replace(
            data,
            asset_ids=ids,
            feature_names=list(self.feature_names),
            window=self.window,
            raw_features=raw,
            features=np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32),
            row_asset_ids=np.repeat(np.asarray(ids, dtype=np.int64), lengths),
            split_ranges=split_ranges,
            scaler=self.scaler,
            config=config,
            hashes={**data.hashes, "preprocessing": self.digest()},
        )

    def market_data(self, bars: Mapping[str, pd.DataFrame], split: Any = None) -> MarketData:
        """A dataset of raw ``bars`` built with this preprocessing (for backtests on new bars).

        :param bars: ``{symbol: bars frame}`` of symbols the model knows.
        :param split: a :class:`features.SplitConfig` (or mapping) for the split ranges; None keeps the
            dataset default (70/15/15). Labels use the dataset default definition.
        """
        from .dataset import DatasetConfig, build_market_data

        for symbol in bars:
            self.asset_id(symbol)
        settings: dict[str, Any] = {"timeframe": self.timeframe, "window": self.window, "features": self.feature_config,
                                    "news": self.news}
        if split is not None:
            settings["split"] = split
        data = build_market_data(bars, DatasetConfig(**settings), scaler=self.scaler, asset_map=self.asset_map)
        return self.apply(data)

    def transform_bars(self, bars: pd.DataFrame, symbol: str) -> np.ndarray:
        """Scaled features of every bar of ``bars`` (float32, warm-up rows NaN).

        :param bars: one symbol's bars, oldest first.
        :param symbol: the symbol (must be one the model knows).
        """
        self.asset_id(symbol)
        frame = validate_bars(bars, symbol)
        resolve_timeframe(frame.index, self.timeframe, symbol)
        table = build_features(frame, self.features, timeframe=self.timeframe, symbol=symbol)
        if self.news is not None:  # the live path: news for these bars from the model's news source
            from .news import news_feature_tables

            tables, _ = news_feature_tables({symbol: frame}, self.timeframe, self.news)
            table = pd.concat([table, tables[symbol]], axis=1)
        return self.scaler.transform(table.to_numpy(np.float64))

    def latest_window(self, bars: pd.DataFrame, symbol: str) -> tuple[np.ndarray, int]:
        """The model's input for the last bar of ``bars``: ``(window float32 (window, F), asset id)``.

        :param bars: the latest bars of one symbol, oldest first (at least :attr:`min_bars`).
        :param symbol: the symbol.
        """
        if len(bars) < self.min_bars:
            raise PreprocessingMismatch(
                f"{symbol}: {len(bars)} bars are too few; the model needs {self.min_bars} "
                f"({self.warmup} warm-up + {self.window} window)"
            )
        scaled = self.transform_bars(bars, symbol)
        return np.ascontiguousarray(scaled[-self.window:]), self.asset_id(symbol)

    def _raw_features_of_block(self, data: MarketData, i: int) -> np.ndarray:
        """Symbol i's features rebuilt from its bars with this preprocessing's settings."""
        rows = slice(int(data.offsets[i]), int(data.offsets[i + 1]))
        prices = data.prices[rows]
        frame = pd.DataFrame(
            {"open": prices[:, 0], "high": prices[:, 1], "low": prices[:, 2], "close": prices[:, 3],
             "volume": prices[:, 4], "vwap": data.vwap[rows]},
            index=pd.DatetimeIndex(pd.to_datetime(data.timestamps[rows], utc=True), name="timestamp"),
        )
        symbol = data.symbols[i]
        table = build_features(frame, self.features, timeframe=self.timeframe, symbol=symbol)
        if self.news is not None:  # news is not rebuilt: check() made sure the data's columns are the model's
            news = [list(data.feature_names).index(name) for name in NEWS_FEATURES]
            table = pd.concat([table, pd.DataFrame(data.raw_features[rows][:, news], index=table.index,
                                                   columns=list(NEWS_FEATURES))], axis=1)
        if list(table.columns) != self.feature_names:
            raise PreprocessingMismatch(f"{symbol}: rebuilt features {list(table.columns)} differ from the model's")
        return table.to_numpy(np.float64)


__all__ = ["Preprocessing", "PreprocessingMismatch"]

