"""Build the dataset: bars -> features -> labels -> splits -> scaler -> :class:`MarketData`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from configs.loader import config_to_dict, dataclass_from_dict, load_yaml_config

from .asset_map import AssetMap
from .bars import Timeframe, resolve_timeframe, validate_bars
from .embedded import DEFAULT_SYMBOLS
from .feature_builder import FeatureConfig, build_features, warmup_bars
from .labels import LabelConfig
from .loading import load_bars
from .market_data import MarketData, source_sha256
from .news.config import NewsConfig
from .scaling import FeatureScaler
from .splits import SPLITS, SplitConfig, split_boundaries, split_rows


@dataclass(frozen=True)
class DatasetConfig:
    """Everything that defines a dataset; its hash is recorded in the manifest.

    :param symbols: symbols to load.
    :param timeframe: bar length (``"1Day"``, ``"1Hour"``, ...); None infers it from the bars' median
        spacing (and loads ``"1Day"`` from a source). A declared timeframe that contradicts the bars'
        spacing is an error.
    :param source: ``"embedded"``, ``"skfolio"`` (the 20-stock universe, close only), ``"parquet"`` or ``"alpaca"`` (see :func:`features.load_bars`).
    :param start: first date kept, or None.
    :param end: last date kept, or None.
    :param cache_dir: Parquet cache root for the parquet/alpaca sources.
    :param window: observation lookback in bars.
    :param features: indicator settings.
    :param labels: label definition.
    :param split: split fractions/dates and purge gap.
    :param scaler: ``"standard"`` or ``"robust"``.
    :param clip: bound on scaled features (None: no clipping).
    :param asset_map_path: persisted symbol -> id map to read and extend; None: ids by symbol order.
    :param output_dir: where :func:`build_dataset` saves the dataset; None: not saved.
    :param news: news sentiment settings (:class:`features.news.NewsConfig`, or a mapping of its fields);
        its columns are appended after the price features. None (the default): no news.
    """

    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    timeframe: str | None = None
    source: str = "embedded"
    start: str | None = None
    end: str | None = None
    cache_dir: str = "data/historical"
    window: int = 24
    features: FeatureConfig = field(default_factory=FeatureConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    scaler: str = "standard"
    clip: float | None = 10.0
    asset_map_path: str | None = None
    output_dir: str | None = None
    news: NewsConfig | None = None

    def __post_init__(self) -> None:
        for name, kind in (("features", FeatureConfig), ("labels", LabelConfig), ("split", SplitConfig),
                           ("news", NewsConfig)):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, dataclass_from_dict(kind, dict(value), f"dataset config.{name}"))
        if isinstance(self.symbols, str):
            object.__setattr__(self, "symbols", (self.symbols,))
        object.__setattr__(self, "symbols", tuple(self.symbols))
        if int(self.window) != self.window or self.window < 1:
            raise ValueError(f"window={self.window} must be a positive integer number of bars")
        if self.timeframe is not None:
            object.__setattr__(self, "timeframe", str(Timeframe.parse(self.timeframe)))
        gap = self.split.purge_gap
        if gap is not None and gap < self.labels.horizon:
            raise ValueError(
                f"split.purge_gap={gap} must be at least the label horizon ({self.labels.horizon} bars)"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "DatasetConfig":
        """Build from a mapping; unknown keys raise ``ValueError`` naming them."""
        return dataclass_from_dict(cls, dict(data or {}), "dataset config")

    @classmethod
    def from_yaml(cls, path: str | Path, section: str | None = "dataset") -> "DatasetConfig":
        """Load the ``dataset:`` section of a YAML file."""
        return load_yaml_config(cls, path, section)

    def to_dict(self) -> dict[str, Any]:
        values = config_to_dict(self)
        if self.news is not None:
            values["news"] = self.news.to_dict()
        return values

    def hash(self) -> str:
        """sha256 of the settings that change the data (not where it is written)."""
        settings = self.to_dict()
        settings.pop("output_dir")
        if settings.get("news") is None:
            settings.pop("news", None)  # datasets without news keep the hash they had before the field
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def build_dataset(config: DatasetConfig | Mapping[str, Any] | None = None) -> MarketData:
    """Load bars for ``config.symbols`` and build the dataset (saved to ``config.output_dir`` if set).

    :param config: a :class:`DatasetConfig`, a mapping of its fields, or None for the defaults.
    """
    config = config if isinstance(config, DatasetConfig) else DatasetConfig.from_dict(config)
    bars = load_bars(
        list(config.symbols), source_timeframe(config), config.start, config.end, config.source, config.cache_dir
    )
    data = build_market_data(bars, config)
    if config.output_dir is not None:
        data.save(config.output_dir)
    return data


def scale_block(scaler: FeatureScaler, raw_features: np.ndarray, warmup: int) -> np.ndarray:
    """One symbol's scaled features (float32); its first ``warmup`` rows, which may hold NaN, become 0
    (they never enter a usable window). Later rows are finite (checked when the features were built).

    :param scaler: the fitted scaler.
    :param raw_features: the symbol's unscaled features (n, F).
    :param warmup: the feature warm-up rows (:func:`features.warmup_bars`).
    """
    scaled = scaler.transform(raw_features)
    scaled[:warmup][np.isnan(scaled[:warmup])] = 0.0
    return scaled


def _common_timeframe(frames: Mapping[str, pd.DataFrame], declared: str | None) -> Timeframe:
    """The one timeframe of all symbols' bars (declared and checked, or inferred); mixed ones are an error."""
    found = {symbol: resolve_timeframe(frame.index, declared, symbol) for symbol, frame in frames.items()}
    if len({tf.seconds for tf in found.values()}) > 1:
        detail = ", ".join(f"{symbol}: {tf}" for symbol, tf in found.items())
        raise ValueError(f"symbols have different timeframes ({detail}); build one dataset per timeframe")
    return next(iter(found.values()))


def source_timeframe(config: DatasetConfig) -> str:
    """The timeframe to load from ``config.source``: the declared one, else the embedded symbols' native
    one (EURUSD is hourly), else ``"1Day"``."""
    if config.timeframe is not None:
        return config.timeframe
    if config.source == "embedded":
        from .embedded import embedded_symbols

        native = {embedded_symbols().get(s, "1Day") for s in config.symbols}
        if len(native) == 1:
            return native.pop()
    return "1Day"


def load_dataset(path: str | Path, *, mmap: bool = False) -> MarketData:
    """Load a dataset directory written by :func:`build_dataset` (nothing is recomputed).

    :param path: the dataset directory.
    :param mmap: map the arrays read-only instead of reading them (see :meth:`MarketData.load`).
    """
    return MarketData.load(path, mmap=mmap)


def build_market_data(
    bars: Mapping[str, pd.DataFrame],
    config: DatasetConfig | None = None,
    *,
    scaler: FeatureScaler | None = None,
    asset_map: Mapping[str, int] | None = None,
    news: pd.DataFrame | None = None,
) -> MarketData:
    """Build a :class:`MarketData` from bars already in memory (the path for users' own data).

    :param bars: ``{symbol: bars frame}``; each is validated.
    :param config: dataset settings (its symbols/source are ignored here).
    :param scaler: a scaler already fitted (a trained model's); None fits one on the train rows.
    :param asset_map: symbol -> id to use as given (a trained model's); None reads/extends
        ``config.asset_map_path`` or numbers the symbols in order.
    :param news: articles to use for ``config.news`` instead of loading them from its source (a news frame,
        see :func:`features.news.load_news`; a ``score`` column, if present, is used as is).
    """
    config = config or DatasetConfig()
    if not bars:
        raise ValueError("bars is empty: pass at least one {symbol: DataFrame}")
    symbols = list(bars)
    frames = {symbol: validate_bars(bars[symbol], symbol) for symbol in symbols}
    tf = _common_timeframe(frames, config.timeframe)
    if asset_map is not None:
        asset_map = AssetMap(dict(asset_map))
        unknown = [s for s in symbols if s not in asset_map]
        if unknown:
            raise ValueError(f"symbols {unknown} are not in the given asset map {sorted(asset_map.to_dict())}")
    else:
        asset_map = AssetMap.load(config.asset_map_path) if config.asset_map_path else AssetMap()
        asset_map.add(symbols)
        if config.asset_map_path:
            asset_map.save(config.asset_map_path)

    news_tables: dict[str, pd.DataFrame] = {}
    news_digest = None
    if config.news is not None:
        from .news import news_feature_tables

        news_tables, news_digest = news_feature_tables(frames, tf, config.news, articles=news)
    elif news is not None:
        raise ValueError("news= was given but config.news is None; set DatasetConfig(news={...}) to add news columns")

    warmup = warmup_bars(config.features)
    first_usable = warmup + config.window - 1
    label = config.labels
    gap = config.split.purge_gap if config.split.purge_gap is not None else label.horizon

    blocks: list[dict[str, np.ndarray]] = []
    feature_names: list[str] | None = None
    for symbol in symbols:
        frame = frames[symbol]
        if len(frame) <= first_usable + 1:
            raise ValueError(
                f"{symbol}: {len(frame)} bars is too few; the features' warm-up ({warmup}) and window "
                f"({config.window}) need more than {first_usable + 1}"
            )
        table = build_features(frame, config.features, timeframe=str(tf), symbol=symbol)
        if news_tables:
            table = pd.concat([table, news_tables[symbol]], axis=1)  # news columns after the price features
        if feature_names is None:
            feature_names = list(table.columns)
        elif list(table.columns) != feature_names:
            raise ValueError(f"{symbol}: feature columns differ from {symbols[0]}'s (mixed intraday/daily bars?)")
        prices = frame[["open", "high", "low", "close", "volume"]].to_numpy(np.float64)
        stamps = frame.index.asi8.astype(np.int64)
        vwap = frame["vwap"].to_numpy(np.float64) if "vwap" in frame.columns else np.full(len(frame), np.nan)
        blocks.append(
            {
                "timestamps": stamps,
                "prices": prices,
                "vwap": vwap,
                "raw_features": table.to_numpy(np.float64),
                "labels": label.labels(prices[:, 3], prices[:, 1], prices[:, 2]),
            }
        )

    validation_start, test_start = split_boundaries([b["timestamps"] for b in blocks], config.split)
    ranges = {name: np.zeros((len(symbols), 2), dtype=np.int64) for name in SPLITS}
    for i, block in enumerate(blocks):
        for name, bounds in split_rows(block["timestamps"], first_usable, validation_start, test_start, gap).items():
            ranges[name][i] = bounds
    # The unclipped train end: a symbol starting near or after validation_start has an empty train
    # range clipped up to first_usable, and those clipped rows may lie in validation or test.
    train_ends = [
        int(np.searchsorted(b["timestamps"], validation_start, side="left")) - gap for b in blocks
    ]
    train_rows = np.concatenate(
        [b["raw_features"][warmup : max(warmup, end)] for b, end in zip(blocks, train_ends)]
    )
    if scaler is None:
        if len(train_rows) < 2:
            raise ValueError(
                f"the train split has {len(train_rows)} rows after warm-up; widen the date range or the train fraction"
            )
        scaler = FeatureScaler.fit(train_rows, config.scaler, config.clip, feature_names)
    elif scaler.n_features != len(feature_names or []):
        raise ValueError(f"the given scaler has {scaler.n_features} columns for {len(feature_names or [])} features")

    del train_rows  # a copy of the train rows' raw features: freed before the dataset's arrays are assembled
    lengths = [len(b["timestamps"]) for b in blocks]
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    raw_features = np.concatenate([b.pop("raw_features") for b in blocks])  # the blocks' copies are freed
    features = np.concatenate([scale_block(scaler, raw_features[lo:hi], warmup)
                               for lo, hi in zip(bounds[:-1], bounds[1:])])
    ids = [asset_map.id_of(s) for s in symbols]
    return MarketData(
        symbols=symbols,
        asset_ids=ids,
        feature_names=feature_names or [],
        window=int(config.window),
        timeframe=str(tf),
        offsets=bounds,
        timestamps=np.concatenate([b["timestamps"] for b in blocks]),
        prices=np.concatenate([b["prices"] for b in blocks]),
        vwap=np.concatenate([b["vwap"] for b in blocks]),
        raw_features=raw_features,
        features=np.ascontiguousarray(features, dtype=np.float32),
        labels=np.concatenate([b["labels"] for b in blocks]).astype(np.float32),
        row_asset_ids=np.repeat(np.asarray(ids, dtype=np.int64), lengths),
        split_ranges=ranges,
        scaler=scaler,
        label=label.to_dict(),
        config=config.to_dict(),
        hashes={"config": config.hash(),
                "source": source_sha256((s, b["timestamps"], b["prices"]) for s, b in zip(symbols, blocks)),
                **({"news": news_digest} if news_digest is not None else {})},
    )
