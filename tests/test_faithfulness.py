"""Option extraction and support (hand-written cases), novel content, PARENT-style and NLI scores.

    HF_HUB_OFFLINE=1 .venv/bin/pytest -q tests/test_faithfulness.py
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from racq.data import Passage
from racq.scoring.faithfulness import FaithfulnessConfig, NLIScorer, Scorer, fact_table, parent_scores, split_units
from racq.models import ModelMissing
from racq.scoring.options import extract_options, norm_tokens

CASES = yaml.safe_load((Path(__file__).parent / "data" / "option_cases.yaml").read_text())


def passages_of(case) -> list[Passage]:
    return [Passage(p["title"], p["text"]) for p in case["passages"]]


class BagEmbedder:
    """Deterministic stand-in for a sentence-transformer: hashed bag of normalised tokens. Counts texts."""

    def __init__(self, dim: int = 256):
        self.dim, self.seen = dim, []

    def encode(self, texts, **kw):
        self.seen += list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for tok in norm_tokens(text):
                out[i, int(hashlib.md5(tok.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


@pytest.fixture(scope="module")
def scorer():
    return Scorer()  # the real local MiniLM and the calibrated threshold


# ---------------------------------------------------------------- the hand-written table
def test_table_is_big_and_varied():
    assert len(CASES) >= 40
    assert len({c["id"] for c in CASES}) == len(CASES)
    assert sum(not c["options"] for c in CASES) >= 4                      # questions without options
    assert sum(False in c["supported"] for c in CASES) >= 8                # with an absent option
    assert any(c["question"].startswith("Which one:") for c in CASES)
    assert any(o in ("4th", "third", "first") for c in CASES for o in c["options"])
    assert any(str(o).isdigit() and len(str(o)) == 4 for c in CASES for o in c["options"])


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_option_extraction(case):
    got = [o.text.lower() for o in extract_options(case["question"], case["query"])]
    assert got == [str(o).lower() for o in case["options"]]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_option_support(case, scorer):
    s = scorer.score(case["query"], passages_of(case), case["question"])
    assert [r["supported"] for r in s["options"]] == case["supported"], s["options"]
    if "how" in case:
        assert [r["how"] for r in s["options"]] == case["how"]
    assert s["n_options"] == len(case["options"])
    assert s["hallucinated"] == int(False in case["supported"])
    for r in s["options"]:
        if r["supported"]:
            ps = passages_of(case)
            assert r["sentence"] and r["sentence"] in ps[r["passage_index"]].text
        else:
            assert r["passage_index"] is None and r["sentence"] == ""


# ---------------------------------------------------------------- known answers
WORLD_CUP = [Passage("FIFA Women's World Cup", "The United States won the 2015 FIFA Women's World Cup."),
             Passage("2014 FIFA World Cup", "Germany won the 2014 FIFA World Cup in Brazil.")]


@pytest.mark.parametrize("question, repeats", [
    ("Which one: the rib steak, or the rib steak?", True),
    ("Do you want to know about the final or the final?", True),
    ("Do you mean the 2017 film, the novel, or the 2017 film?", True),
    ("Which one: the original film, or the second sequel?", False),
    ("Do you mean the river or the city?", False),
    ("Which one?", False),
])
def test_a_repeated_option_is_detected_and_counted_once(question, repeats):
    from racq.scoring.options import extract_options, repeats_option

    assert repeats_option(question, "what part of cow") is repeats
    texts = [o.text for o in extract_options(question, "what part of cow")]
    assert len(texts) == len(set(texts))  # the other metrics see each option once


def test_no_option_question_is_vacuously_supported():
    s = Scorer(embedder=BagEmbedder()).score("who won the world cup", WORLD_CUP, "Which year are you interested in?")
    assert (s["n_options"], s["option_support"], s["hallucinated"]) == (0, 1.0, 0)


def test_question_whose_one_option_is_absent_is_hallucinated():
    s = Scorer(embedder=BagEmbedder()).score("who won the world cup", WORLD_CUP, "Do you mean the 1998 World Cup?")
    assert [r["text"] for r in s["options"]] == ["1998"]
    assert (s["n_options"], s["option_support"], s["hallucinated"]) == (1, 0.0, 1)
    s = Scorer(embedder=BagEmbedder()).score("who won the world cup", WORLD_CUP,
                                             "Do you mean the 2014, 2015 or 1998 World Cup?")
    assert s["option_support"] == pytest.approx(2 / 3) and s["hallucinated"] == 1


def test_semantic_support_needs_threshold_and_numbers():
    emb = BagEmbedder()
    ps = [Passage("", "Germany won the 2014 FIFA World Cup in Brazil.")]
    q = "Are you asking about the tournament held in Brazil or in Qatar?"
    loose = Scorer(FaithfulnessConfig(semantic_threshold=-1.0), embedder=emb)
    strict = Scorer(FaithfulnessConfig(semantic_threshold=1.01), embedder=emb)
    off = Scorer(FaithfulnessConfig(use_semantic=False, semantic_threshold=-1.0), embedder=emb)
    assert [r["how"] for r in loose.score("who won the world cup", ps, q)["options"]] == ["lexical", "semantic"]
    assert [r["supported"] for r in strict.score("who won the world cup", ps, q)["options"]] == [True, False]
    assert [r["supported"] for r in off.score("who won the world cup", ps, q)["options"]] == [True, False]
    # A year that is in no unit is never accepted by similarity, however low the threshold.
    s = loose.score("who won the world cup", ps, "Do you mean the 2010 World Cup?")
    assert s["hallucinated"] == 1


def test_passages_are_embedded_once_per_pid():
    emb = BagEmbedder()
    sc = Scorer(embedder=emb)
    for q in ["Do you mean the men's or the women's cup?", "Do you mean the 1930 cup?", "Do you mean Qatar?"]:
        sc.score("who won the world cup", WORLD_CUP, q)
    unit_texts = [f"{p.title}. {u.text}" for p in WORLD_CUP for u in split_units(p)]
    assert sorted(t for t in emb.seen if t in unit_texts) == sorted(unit_texts)


def test_unpunctuated_passages_are_windowed():
    words = " ".join(f"w{i}" for i in range(100))
    units = split_units(Passage("T", words), unit_words=40, window_words=24, stride=12)
    assert all(len(u.text.split()) <= 24 for u in units)
    assert units[0].text.startswith("w0 ") and units[-1].text.endswith("w99")
    assert all("t" in u.tokens for u in units)  # the title counts in every unit


def test_novel_content():
    sc = Scorer(embedder=BagEmbedder())
    assert sc.score("who won the world cup", WORLD_CUP, "Do you mean the 2014 FIFA World Cup?")["novel_content"] == 0
    s = sc.score("who won the world cup", WORLD_CUP, "Do you mean the cricket or the rugby World Cup?")
    assert s["novel_content"] == pytest.approx(2 / 4)  # cricket, rugby of cricket rugby world cup
    assert sc.score("who won", WORLD_CUP, "Are you?")["novel_content"] == 0.0


def test_parent_in_table_vs_not():
    table = fact_table("who won the world cup", WORLD_CUP)
    inside = parent_scores("Do you mean the FIFA Women's World Cup in 2015?", table)
    outside = parent_scores("Do you mean the cricket trophy in Lahore?", table)
    assert inside["parent_precision"] == pytest.approx(1.0)
    assert outside["parent_precision"] < 0.01
    assert inside["parent_recall"] > outside["parent_recall"] >= 0
    assert inside["parent_f1"] > outside["parent_f1"]
    assert parent_scores("Are you?", table) == {"parent_precision": 0.0, "parent_recall": 0.0, "parent_f1": 0.0}


def test_fact_table_holds_only_query_and_passages():
    table = fact_table("who won the world cup", WORLD_CUP)
    vocab = {t for rec in table for t in rec}
    assert {"germani", "2014", "brazil", "woman", "world", "cup"} <= vocab
    assert ("fifa", "woman", "world", "cup") in table           # a capitalised span
    assert ("2015",) in table                                     # a number
    assert "cricket" not in vocab                                 # nothing from any question
    full = parent_scores("The United States won the 2015 FIFA Women's World Cup.", [("unit", "state")])
    assert full["parent_recall"] == 1.0


def test_module_level_score_uses_one_default_scorer(scorer):
    from racq.scoring import faithfulness

    q = "Do you mean the 2014 or the 1998 World Cup?"
    first = faithfulness.score("who won the world cup", WORLD_CUP, q)
    assert first == scorer.score("who won the world cup", WORLD_CUP, q)
    assert faithfulness._DEFAULT is not None and faithfulness.score("who won", WORLD_CUP, q)["n_options"] == 2


def test_nli_skipped_without_model():
    s = Scorer(embedder=BagEmbedder()).score("who won the world cup", WORLD_CUP, "Do you mean 2014?")
    assert not [k for k in s if k.startswith("nli")]
    assert any("nli" in note for note in s["skipped"])


# ---------------------------------------------------------------- NLI with a tiny local model
def build_tiny_nli(folder: Path, labels: dict[int, str]) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    text = " ".join(p.title + " " + p.text for p in WORLD_CUP) + " do you mean the world cup 2014 women men"
    vocab = {w: i for i, w in enumerate(specials + sorted(set(norm_tokens(text)) | set(text.lower().split())))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", model_max_length=64)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_labels=len(labels),
                     id2label=labels, label2id={v: k for k, v in labels.items()})
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_nli(tmp_path_factory):
    from racq.models import seeded_torch

    with seeded_torch(0):  # the init's draws, without reseeding the RNG of the tests that run after
        return build_tiny_nli(tmp_path_factory.mktemp("nli"), {0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"})


def test_nli_scores_with_tiny_local_model(tiny_nli):
    sc = Scorer(FaithfulnessConfig(nli_model=str(tiny_nli)), embedder=BagEmbedder())
    s = sc.score("who won the world cup", WORLD_CUP, "Do you mean the men's or the women's world cup?")
    assert s["skipped"] == []
    assert len(s["nli_options"]) == s["n_options"] == 2
    for v in s["nli_options"] + [s["nli_question"], s["nli_min"]]:
        assert 0.0 <= v <= 1.0
    assert s["nli_min"] == min(s["nli_options"])
    assert s["nli_hallucinated"] == int(s["nli_min"] < 0.5)
    assert [r["nli"] for r in s["options"]] == s["nli_options"]
    again = sc.score("who won the world cup", WORLD_CUP, "Do you mean the men's or the women's world cup?")
    assert again["nli_options"] == s["nli_options"]  # deterministic (eval mode)
    none = sc.score("who won the world cup", WORLD_CUP, "Which year are you interested in?")
    assert none["nli_min"] == none["nli_question"] and none["nli_options"] == []


def test_nli_threshold_decides(tiny_nli):
    q = "Do you mean the 2014 world cup?"
    always = Scorer(FaithfulnessConfig(nli_model=str(tiny_nli), nli_threshold=1.01), embedder=BagEmbedder())
    never = Scorer(FaithfulnessConfig(nli_model=str(tiny_nli), nli_threshold=0.0), embedder=BagEmbedder())
    assert always.score("who won the world cup", WORLD_CUP, q)["nli_hallucinated"] == 1
    assert never.score("who won the world cup", WORLD_CUP, q)["nli_hallucinated"] == 0


def test_nli_chunks_long_passages(tiny_nli):
    nli = NLIScorer(str(tiny_nli), chunk_words=10)
    chunks = nli.chunks([Passage("T", " ".join(["cup"] * 25))])
    assert len(chunks) == 3 and all(c.startswith("T. ") for c in chunks)
    assert nli.max_length == 64  # capped by the model's positions
    assert nli.entailment([], ["anything"]) == [0.0]


def test_nli_model_errors(tmp_path):
    with pytest.raises(ModelMissing, match="NLI model"):
        NLIScorer(str(tmp_path / "nowhere"))
    bad = build_tiny_nli(tmp_path / "bad", {0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ValueError, match="entailment"):
        NLIScorer(str(bad))
