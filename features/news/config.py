"""The news settings of a dataset (:class:`NewsConfig`) and the feature columns they add."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from configs.loader import config_to_dict, dataclass_from_dict

from .frame import check_time_format

#: The sentiment columns appended after the price features, in this order (see :mod:`features.news.merge`).
NEWS_FEATURES: tuple[str, ...] = ("news_score", "news_count", "news_score_decayed", "news_bars_since")

NEWS_SOURCES: tuple[str, ...] = ("alpaca", "parquet", "csv")
SCORERS: tuple[str, ...] = ("lexicon", "finbert")
TEXTS: tuple[str, ...] = ("headline", "headline_summary")
DEFAULT_MODELS: dict[str, str] = {"lexicon": "loughran-mcdonald", "finbert": "ProsusAI/finbert"}
DEFAULT_NEWS_CACHE_DIR = "data/news"

# Settings that change the values of the news columns; the others say where articles come from or how
# fast they are scored. A model trained with news refuses data whose identity differs.
_IDENTITY_KEYS: tuple[str, ...] = (
    "scorer", "model", "text", "half_life", "bars_since_cap", "session_close", "session_timezone",
)
_CLOCK_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


@dataclass(frozen=True)
class NewsConfig:
    """Where news comes from, how it is scored and how it is merged into bars.

    :param source: ``"alpaca"`` (downloaded with alpaca-py into ``cache_dir``; only missing ranges are
        fetched, so a filled cache works offline), ``"parquet"`` (``path``, or the cache when ``path`` is
        None) or ``"csv"`` (``path``).
    :param path: a CSV/Parquet file of your own headlines (see :func:`features.news.read_news_file`).
    :param cache_dir: root of the article cache (``articles/``) and of the score cache (``scores/``).
    :param scorer: ``"lexicon"`` (Loughran-McDonald, offline) or ``"finbert"`` (a transformers model).
    :param model: finbert: a Hugging Face hub name or a local directory (None: ``ProsusAI/finbert``);
        lexicon: ``"loughran-mcdonald"`` (the only dictionary; None means it).
    :param text: what is scored: ``"headline"`` or ``"headline_summary"`` (headline, then summary).
    :param half_life: bars after which an article's weight in ``news_score_decayed`` halves.
    :param bars_since_cap: ``news_bars_since`` stops counting here (also its value before any article).
    :param session_close: None (the default): a us_equity daily bar closes at its exchange session's
        close from :mod:`features.calendars` (16:00 New York, 13:00 on early closes); ``"HH:MM"``: an
        explicit local close time that overrides the calendar on every date, early closes included.
        Crypto bars close at their end either way (see :mod:`features.news.merge`).
    :param session_timezone: the time zone of an explicit ``session_close`` (IANA name).
    :param device: finbert only: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    :param batch_size: finbert only: headlines per forward pass.
    :param time_format: the strptime format of the times in ``path`` (e.g. ``"%d/%m/%Y %H:%M"``; every row
        must match it; without ``%z`` the times are UTC). None (the default): ISO 8601 only, and any other
        spelling is refused rather than guessed (``03/04/2020`` may be 3 April or 4 March). Unset, it is
        left out of :meth:`to_dict` (so the hashes of configs written before it existed do not change).
    """

    source: str = "alpaca"
    path: str | None = None
    cache_dir: str = DEFAULT_NEWS_CACHE_DIR
    scorer: str = "lexicon"
    model: str | None = None
    text: str = "headline"
    half_life: float = 5.0
    bars_since_cap: int = 50
    session_close: str | None = None
    session_timezone: str = "America/New_York"
    device: str = "auto"
    batch_size: int = 32
    time_format: str | None = None

    def __post_init__(self) -> None:
        if self.source not in NEWS_SOURCES:
            raise ValueError(f"news.source={self.source!r} is not known; expected one of {list(NEWS_SOURCES)}")
        if self.source == "csv" and not self.path:
            raise ValueError("news.source='csv' needs news.path: the CSV file of your headlines")
        if self.scorer not in SCORERS:
            raise ValueError(f"news.scorer={self.scorer!r} is not known; expected one of {list(SCORERS)}")
        model = self.model if self.model is not None else DEFAULT_MODELS[self.scorer]
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"news.model={self.model!r} must be a non-empty string or None")
        if self.scorer == "lexicon" and model != DEFAULT_MODELS["lexicon"]:
            raise ValueError(
                f"news.model={model!r}: the lexicon scorer has one dictionary, 'loughran-mcdonald'; "
                f"for a transformers model use scorer='finbert'"
            )
        object.__setattr__(self, "model", model)
        if self.text not in TEXTS:
            raise ValueError(f"news.text={self.text!r} is not known; expected one of {list(TEXTS)}")
        if not isinstance(self.half_life, (int, float)) or isinstance(self.half_life, bool) or not self.half_life > 0:
            raise ValueError(f"news.half_life={self.half_life!r} must be a positive number of bars")
        object.__setattr__(self, "half_life", float(self.half_life))
        if isinstance(self.bars_since_cap, bool) or int(self.bars_since_cap) != self.bars_since_cap or self.bars_since_cap < 1:
            raise ValueError(f"news.bars_since_cap={self.bars_since_cap!r} must be a whole number >= 1")
        object.__setattr__(self, "bars_since_cap", int(self.bars_since_cap))
        if self.session_close is not None:
            session_clock(self.session_close)
        try:
            ZoneInfo(self.session_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"news.session_timezone={self.session_timezone!r} is not an IANA time zone (e.g. 'America/New_York')"
            ) from None
        if isinstance(self.batch_size, bool) or int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"news.batch_size={self.batch_size!r} must be a whole number >= 1")
        check_time_format(self.time_format)
        if self.time_format is not None and (self.source == "alpaca" or not self.path):
            raise ValueError(
                f"news.time_format={self.time_format!r} applies to your own file of headlines (news.path with "
                f"source 'csv' or 'parquet'); source={self.source!r} reads times that carry their own format"
            )

    @classmethod
    def coerce(cls, value: "NewsConfig | Mapping[str, Any]") -> "NewsConfig":
        """A :class:`NewsConfig` from itself or a mapping of its fields (unknown keys are errors)."""
        if isinstance(value, NewsConfig):
            return value
        return dataclass_from_dict(cls, dict(value), "news config")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict; an unset ``time_format`` is left out, so configs that do not set it
        (and the hashes of datasets built with them) are what they were before the field existed."""
        values = config_to_dict(self)
        if values["time_format"] is None:
            del values["time_format"]
        return values


def session_clock(text: str) -> tuple[int, int, int]:
    """``"HH:MM[:SS]"`` as (hour, minute, second); anything else is a ``ValueError``."""
    match = _CLOCK_RE.match(str(text))
    if not match:
        raise ValueError(f"news.session_close={text!r} is not a time of day 'HH:MM' (e.g. '16:00')")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def news_identity(settings: "NewsConfig | Mapping[str, Any] | None") -> dict[str, Any] | None:
    """The settings that define the news columns' values (None when news is off).

    Two datasets whose identities are equal have news columns that mean the same; where the articles
    came from (source, path, cache) and scoring speed (device, batch size) are left out.

    :param settings: a :class:`NewsConfig`, its ``to_dict()``, or None.
    """
    if settings is None:
        return None
    config = NewsConfig.coerce(settings)
    values = config.to_dict()
    return {key: values[key] for key in _IDENTITY_KEYS}


__all__ = ["DEFAULT_MODELS", "NEWS_FEATURES", "NEWS_SOURCES", "NewsConfig", "SCORERS", "news_identity"]
