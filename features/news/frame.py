"""The validated news frame every news source returns, and reading a user's own CSV/Parquet of headlines.

A news frame has one row per (article, symbol it names), sorted by publication time, with columns:

- ``published_at``: UTC ``datetime64[ns, UTC]``, when the article was published;
- ``id``: the article id (a string; Alpaca's integer ids become their decimal text);
- ``symbol``: one symbol the article names;
- ``headline``: non-empty text;
- ``summary``: text, ``""`` when there is none;
- ``source``: who published it (``"benzinga"``), ``""`` when unknown.

An article that names three symbols is three rows with the same id; each (id, symbol) pair appears once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

NEWS_COLUMNS: tuple[str, ...] = ("published_at", "id", "symbol", "headline", "summary", "source")

# Column names accepted in a user's file, first match wins.
_TIME_ALIASES: tuple[str, ...] = ("published_at", "created_at", "timestamp", "time", "datetime", "date")
_SYMBOL_ALIASES: tuple[str, ...] = ("symbol", "symbols", "ticker", "tickers")
_HEADLINE_ALIASES: tuple[str, ...] = ("headline", "title")


class NewsValidationError(ValueError):
    """News that breaks the frame's contract; the message names the file (or source) and the row."""


def empty_news() -> pd.DataFrame:
    """A news frame with no rows (the right columns and dtypes)."""
    frame = pd.DataFrame({name: pd.Series([], dtype=object) for name in NEWS_COLUMNS})
    frame["published_at"] = pd.DatetimeIndex([], tz="UTC").as_unit("ns")
    return _typed(frame)


def validate_news(news: pd.DataFrame, where: str = "news", *, line_offset: int | None = None) -> pd.DataFrame:
    """Check a news frame and return a clean copy: typed, sorted, one row per (id, symbol).

    Naive times are taken as UTC. Rejected, naming ``where`` and the first bad row: a missing column,
    a missing or unparseable publication time, an empty headline, a missing id or symbol. Rows that
    repeat an (id, symbol) pair keep the last one (a re-download of an updated article).

    :param news: frame with the :data:`NEWS_COLUMNS` (``summary`` and ``source`` may be absent).
    :param where: the file or source, for messages.
    :param line_offset: when ``news`` was read from a CSV, the file line of row 0 (2 with a header), so
        messages also give the line; None for other sources.
    :return: the validated frame (RangeIndex, sorted by ``published_at``, ``id``, ``symbol``).
    """
    if not isinstance(news, pd.DataFrame):
        raise NewsValidationError(f"{where}: news must be a pandas DataFrame, got {type(news).__name__}")
    frame = news.copy()
    frame.columns = [str(c) for c in frame.columns]
    missing = [c for c in ("published_at", "id", "symbol", "headline") if c not in frame.columns]
    if missing:
        raise NewsValidationError(
            f"{where}: missing column(s) {missing}; expected {list(NEWS_COLUMNS)} (summary and source optional), "
            f"got {list(frame.columns)}"
        )
    for column in ("summary", "source"):
        if column not in frame.columns:
            frame[column] = ""
    frame = frame[list(NEWS_COLUMNS)].reset_index(drop=True)

    def row_name(row: int) -> str:
        return f"row {row}" + (f" (line {row + line_offset})" if line_offset is not None else "")

    def first_bad(bad: np.ndarray, what: str, column: str) -> None:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = frame[column].iloc[row]
            raise NewsValidationError(
                f"{where}: {what} at {row_name(row)}, column '{column}' (value {value!r}; "
                f"{int(bad.sum())} bad row(s) in all)"
            )

    raw_times = frame["published_at"]
    first_bad(_blank(raw_times), "missing publication time", "published_at")
    times = _parse_times(raw_times)
    first_bad(times.isna().to_numpy(), "unparseable publication time", "published_at")
    frame["published_at"] = times
    for column, what in (("headline", "empty headline"), ("id", "missing article id"), ("symbol", "missing symbol")):
        first_bad(_blank(frame[column]), what, column)
    frame = _typed(frame)
    frame = frame.drop_duplicates(subset=["id", "symbol"], keep="last")
    return frame.sort_values(["published_at", "id", "symbol"], kind="stable").reset_index(drop=True)


def read_news_file(path: str | Path, symbols: Iterable[str] | None = None) -> pd.DataFrame:
    """Read a user's CSV or Parquet file of headlines into a validated news frame.

    Columns: a time (``published_at``, or ``created_at``/``timestamp``/``time``/``datetime``/``date``;
    naive times are UTC), a symbol (``symbol``/``ticker``, or ``symbols``/``tickers`` holding several
    separated by commas, spaces or semicolons, one row each), ``headline`` (or ``title``), and optionally
    ``id``, ``summary``, ``source``. Without an ``id`` column an article's id is a digest of its time and
    headline (stable across reads, so scores stay cached).

    :param path: a ``.csv`` (``.csv.gz``) or ``.parquet`` file.
    :param symbols: keep only these symbols (case-insensitive match, stored as given here); None keeps all.
    :raises FileNotFoundError: no such file.
    :raises NewsValidationError: a bad row, naming the file, the row and (for CSV) the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"news file {path} does not exist; pass the CSV/Parquet file of your headlines")
    is_csv = path.name.lower().endswith((".csv", ".csv.gz", ".txt"))
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False) if is_csv else pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many unrelated types for a bad file
        kind = "CSV" if is_csv else "Parquet"
        raise NewsValidationError(f"{path}: cannot be read as {kind} ({type(exc).__name__}: {exc})") from exc
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    where = str(path)
    renames = {}
    for target, aliases in (("published_at", _TIME_ALIASES), ("headline", _HEADLINE_ALIASES)):
        found = next((a for a in aliases if a in raw.columns), None)
        if found is None:
            raise NewsValidationError(
                f"{where}: no {target} column; expected one of {list(aliases)}, got {list(raw.columns)}"
            )
        renames[found] = target
    symbol_column = next((a for a in _SYMBOL_ALIASES if a in raw.columns), None)
    if symbol_column is None:
        raise NewsValidationError(
            f"{where}: no symbol column; expected one of {list(_SYMBOL_ALIASES)}, got {list(raw.columns)}"
        )
    frame = raw.rename(columns=renames)
    if "id" not in frame.columns:
        frame["id"] = [
            _derived_id(t, h) for t, h in zip(frame["published_at"].astype(str), frame["headline"].astype(str))
        ]
    frame["id"] = frame["id"].astype(object).map(lambda v: "" if _is_missing(v) else str(v))
    frame["symbol"] = frame[symbol_column]
    # Validated as the file's own rows (so messages give its row and line), then split per symbol.
    validated = validate_news(frame, where, line_offset=2 if is_csv else None)
    if symbol_column in ("symbols", "tickers"):
        validated["symbol"] = [_split_symbols(v) for v in validated["symbol"]]
        validated = validate_news(validated.explode("symbol", ignore_index=True).dropna(subset=["symbol"]), where)
    if symbols is not None:
        validated = select_symbols(validated, symbols)
    return validated


def select_symbols(news: pd.DataFrame, symbols: Iterable[str]) -> pd.DataFrame:
    """Rows of ``news`` whose symbol is one of ``symbols`` (case-insensitive), spelled as in ``symbols``."""
    wanted = {str(s).upper(): str(s) for s in symbols}
    upper = news["symbol"].str.upper()
    kept = news[upper.isin(list(wanted))].copy()
    kept["symbol"] = upper[upper.isin(list(wanted))].map(wanted).astype(object)
    return kept.reset_index(drop=True)


def select_time(news: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """Rows published in ``[start, end]`` (either bound may be None)."""
    keep = np.ones(len(news), dtype=bool)
    if start is not None:
        keep &= (news["published_at"] >= start).to_numpy()
    if end is not None:
        keep &= (news["published_at"] <= end).to_numpy()
    return news[keep].reset_index(drop=True)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["published_at"] = pd.DatetimeIndex(frame["published_at"]).tz_convert("UTC").as_unit("ns")
    for column in ("id", "symbol", "headline", "summary", "source"):
        values = frame[column].astype(object)
        values = values.where(~pd.isna(values), "")
        frame[column] = values.map(lambda v: str(v).strip()).astype(object)
    return frame


def _blank(values: pd.Series) -> np.ndarray:
    text = values.astype(object)
    return (pd.isna(text) | text.map(lambda v: isinstance(v, str) and not v.strip())).to_numpy(bool)


def _parse_times(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    text = values.astype(object).map(lambda v: str(v).strip())
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")  # fast; Alpaca's form
    retry = parsed.isna().to_numpy() & (text != "").to_numpy()
    if retry.any():  # other spellings ("01/02/2024 10:00", "2024-01-02 10:00 -0500"), one by one
        parsed[retry] = pd.to_datetime(text[retry], utc=True, errors="coerce", format="mixed")
    return parsed


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT


def _split_symbols(value: object) -> list[str]:
    if _is_missing(value):
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part for part in str(value).replace(";", ",").replace(" ", ",").split(",") if part.strip()]


def _derived_id(time_text: str, headline: str) -> str:
    return "h" + hashlib.sha256(f"{time_text.strip()}\n{headline.strip()}".encode()).hexdigest()[:16]


__all__ = ["NEWS_COLUMNS", "NewsValidationError", "empty_news", "read_news_file", "validate_news"]
