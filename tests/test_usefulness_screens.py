"""Usefulness on the screens (issue #11): the Explore card's usefulness line through a real Gradio server
(tiny random models; base and sft scripted with known questions), and the leaderboard's automatic
usefulness columns on a real SQLite pool whose questions are known.

    HF_HUB_OFFLINE=1 .venv/bin/pytest tests/test_usefulness_screens.py -q
"""

from __future__ import annotations

import html
import re

import pytest

from apphelpers import Rest, one_torch_thread, serve
from racq.data import Passage
from racq.scoring.faithfulness import FaithfulnessConfig, Scorer
from racq.annotation.standings import USEFUL_HEADERS, format_text, leaderboard, stage_table
from racq.store import add_candidate, add_query_with_passages, open_db
from racq.store.scores import add_scores, scorer_key
from racq.scoring.usefulness import card_usefulness, interpretations_for

# Two CAmbigNQ queries with AmbigNQ interpretations (used here as fixtures, nothing is tuned on them)
FLAG = "how many stars are on the chicago flag"        # 1917 / 1933 / present day since 1939
PACMAN = "how many levels are there in pac man"        # original / ms. pac man / pac man world 2
PLAIN = "which colour is the car"                      # no human interpretations
PASSAGES = {
    FLAG: [Passage("Flag of Chicago", "The flag of Chicago had two stars when it was adopted in 1917. A third "
                                      "star was added in 1933, and a fourth star in 1939.")],
    PACMAN: [Passage("Pac-Man", "The original Pac-Man arcade game has 256 levels. Ms. Pac-Man has 32 levels.")],
    PLAIN: [Passage("Car", "The car is red on one side and blue on the other.")],
}


@pytest.fixture(scope="module")
def lexical():
    return Scorer(FaithfulnessConfig(use_semantic=False))  # deterministic, no embedder needed


def test_the_fixture_queries_have_interpretations():
    assert len(interpretations_for(FLAG)) == 3 and len(interpretations_for(PACMAN)) == 3
    assert interpretations_for(PLAIN) == []


# ------------------------------------------------------------------ Explore card, real server
class _Scripted:
    """The real tiny StageModel, except that the scripted stages reply with a known question."""

    def __init__(self, real, replies: dict[str, str]):
        self._real, self._replies = real, replies

    def __getattr__(self, name):
        return getattr(self._real, name)

    def generate(self, prompts, stage, gen=None, **kw):
        if stage in self._replies:
            return [self._replies[stage]] * len(prompts)
        return self._real.generate(prompts, stage, gen, **kw)


def _card_of(cards_html: str, stage: str) -> str:
    m = re.search(rf"<div class='racq-card' data-stage='{stage}'>(.*?)</div></div>", cards_html, re.S)
    assert m, cards_html
    return m.group(1)


def _useful_text(card: str) -> str:
    m = re.search(r"<div class='racq-metrics racq-useful'>(.*?)</div>", card, re.S)
    assert m, card
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", m.group(1))).split())


def test_explore_cards_show_usefulness(tmp_path, tiny_lm, tiny_adapters, lexical):
    from racq.generate import StageModel
    from racq.retrieval import Index, RetrievalConfig
    from racq.service import Asker
    from racq.ui import AppConfig, build_app

    rc = RetrievalConfig(index_dir=str(tmp_path / "index"))
    Index.build([p for ps in PASSAGES.values() for p in ps], cfg=rc, log=lambda m: None).save(rc.index_dir)
    replies = {"sft": "Do you mean the 1917 flag, the 1933 flag, or the 1917 flag?",
               "base": "Do you mean how many stars are on the chicago flag?"}
    with one_torch_thread():
        sm = _Scripted(StageModel.load(tiny_lm, tiny_adapters), replies)
        asker = Asker(sm, Index.load(rc.index_dir), lexical, engine="peft")
        demo = build_app(AppConfig(db=str(tmp_path / "r.db"), adapters_dir=str(tiny_adapters), prompt_k=1),
                         asker=asker)
        with serve(demo) as url:
            rest = Rest(url)
            try:
                status, _, cards = rest.call("explore_ask", [FLAG, 1])
                _, _, plain_cards = rest.call("explore_ask", [PLAIN, 1])
            finally:
                rest.close()
    assert "3 stages" in status  # base, sft, aligned (uncond is a hidden stage)
    # sft: two distinct options (one offered twice), both human readings, every option in the passage
    assert _useful_text(_card_of(cards, "sft")) == (
        "usefulness distinct options: 2 (repeats an option) names 2 of 3 interpretations useful & grounded: yes")
    # base: its only "option" is the query itself
    assert _useful_text(_card_of(cards, "base")) == (
        "usefulness distinct options: 0 (echoes the query) names 0 of 3 interpretations useful & grounded: no")
    # the tiny random stage: whatever it asked, the card says what the scorer says of that question
    for stage in ("aligned",):
        card = _card_of(cards, stage)
        question = html.unescape(re.search(r"<div class='racq-question'>(.*?)</div>", card, re.S).group(1))
        use = card_usefulness(FLAG, question, lexical.score(FLAG, PASSAGES[FLAG], question))
        text = _useful_text(card)
        assert text.startswith(f"usefulness distinct options: {use['n_distinct']}")
        assert f"names {len(use['covered'])} of 3 interpretations" in text
        assert text.endswith("useful & grounded: " + ("yes" if use["useful_grounded"] else "no"))
    # a query AmbigNQ does not hold: distinct options only, coverage not claimed
    text = _useful_text(_card_of(plain_cards, "sft"))
    assert text == "usefulness distinct options: 2 (repeats an option) no human interpretations of this query to compare with"


@pytest.mark.parametrize("question,echo", [
    ("Do you mean how many stars are on the chicago flag?", True),
    ("Which one: the chicago flag, or the 1917 flag?", True),       # one conjunct is the query's own words
    ("Do you mean the 1917 flag or the 1933 flag?", False),
    ("Which year are you interested in?", False),                    # no options at all
])
def test_echoes_query(question, echo):
    from racq.scoring.options import echoes_query

    assert echoes_query(question, FLAG) is echo


def test_ask_carries_usefulness_and_the_cache_keeps_it(tmp_path, lexical):
    """The service scores usefulness where it scores faithfulness; a cached answer still has it."""
    import types

    from racq.service import Asker

    class Index:
        def search(self, query, k):
            return [types.SimpleNamespace(rank=1, score=1.0, passage=PASSAGES[FLAG][0])]

    class Model:
        stages, errors, adapter_hashes, prompt = ["sft"], {}, {"sft": "h"}, None
        calls = 0

        def passage_prompt(self, query, passages):
            return query

        def generate(self, prompts, stage, gen=None):
            Model.calls += 1
            return ["Which one: the 1917 flag or the 2001 flag?"]

    asker = Asker(Model(), Index(), lexical, engine="peft")
    for _ in range(2):
        use = asker.ask(FLAG, score=True)["useful"]["sft"]
        # names the 1917 reading, two distinct options, but 2001 is not in the passage: not useful & grounded
        assert (use["n_distinct"], use["covered"], use["grounded"], use["useful_grounded"]) == (2, [0], 0, 0)
    assert Model.calls == 1  # the second answer came from the cache
    fresh = Asker(Model(), Index(), lexical, engine="peft")
    assert "useful" not in fresh.ask(FLAG, score=False)  # not scored, no usefulness either


# ------------------------------------------------------------------ leaderboard, real SQLite pool
# stage -> query -> question; the expected per-question values are in the comments
QUESTIONS = {
    "sft": {FLAG: "Do you mean the flag of 1917 or 1933?",             # grounded, 2 distinct, names 2: useful
            PACMAN: "Do you mean the original or Pac-Man World 2?",     # names 2, but World 2 is not in the passage
            PLAIN: "Is it red?"},                                      # one option
    "base": {FLAG: "Do you mean how many stars are on the chicago flag?",  # echo: nothing
             PACMAN: "Do you mean the Ms. Pac-Man game or the 2001 version?",  # names 1, 2001 not supported
             PLAIN: "Do you mean the red car or the blue car?"},        # 2 distinct, grounded
}


@pytest.fixture
def pool(tmp_path, lexical):
    db = open_db(tmp_path / "racq.db")
    key = scorer_key(lexical)
    for query, passages in PASSAGES.items():
        qid = add_query_with_passages(db, query, passages, dataset="cambignq", topic_id=query[:10])
        for stage, qs in QUESTIONS.items():
            cid = add_candidate(db, qid, stage, qs[query])
            add_scores(db, [(cid, key, lexical.score(query, passages, qs[query]))])
    return db


def test_leaderboard_usefulness_columns(pool):
    data = leaderboard(pool, n_boot=20)
    u = data["useful"]
    assert u["sft"] == {"n": 3, "n_interp": 2, "useful_grounded": pytest.approx(0.5), "covers_any": pytest.approx(1.0),
                        "distinct_options": pytest.approx(2 / 3)}
    assert u["base"] == {"n": 3, "n_interp": 2, "useful_grounded": pytest.approx(0.0), "covers_any": pytest.approx(0.5),
                         "distinct_options": pytest.approx(2 / 3)}
    headers, rows = stage_table(data)  # no votes yet: both stages come from the automatic scores
    assert headers[-len(USEFUL_HEADERS):] == USEFUL_HEADERS
    by = {r[1]: dict(zip(headers, r)) for r in rows}
    assert [by["sft"][h] for h in USEFUL_HEADERS] == ["0.50", "1.00", 2, "0.67"]
    assert [by["base"][h] for h in USEFUL_HEADERS] == ["0.00", "0.50", 2, "0.67"]
    assert "useful & grounded" in format_text(data)


def test_leaderboard_screen_shows_the_usefulness_columns(pool, tmp_path):
    from racq.ui import AppConfig, make_context
    from racq.ui.leaderboard import refresh

    ctx = make_context(AppConfig(db=str(pool.path), adapters_dir=str(tmp_path)))
    out = refresh(ctx, None, n_boot=20)
    frame = out[2]["value"]
    assert list(frame.columns[-len(USEFUL_HEADERS):]) == USEFUL_HEADERS
    assert frame.set_index("stage").loc["sft", "useful & grounded"] == "0.50"
