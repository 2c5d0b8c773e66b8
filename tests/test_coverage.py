"""No evidence, no options: the no-evidence set's rule (bench/build_noevidence.py), the coverage signal and
the guard (racq.coverage), their wiring in Asker.ask_stream, and Explore's notice on the real app.

    .venv/bin/pytest -q tests/test_coverage.py
"""

from __future__ import annotations

import gzip
import json
import sys

import pytest

from apphelpers import REPO, AppServer, Rest, one_torch_thread, synthetic_pool, write_config
from racq.config import GenConfig
from racq.coverage import GENERIC, NOTICE, CoverageConfig, assess, guard
from racq.data import Passage

sys.path.insert(0, str(REPO / "bench"))
import build_noevidence as bn  # noqa: E402

CORPUS = [Passage("Wolverine", "Hugh Jackman played Wolverine in the X-Men films from 2000 to 2017."),
          Passage("World Cup 2018", "France won the 2018 FIFA World Cup in Russia, beating Croatia."),
          Passage("Zanzibar (archipelago)", "An archipelago off the coast of East Africa."),
          Passage("", "the red fox lives across the northern hemisphere")]
UNCOVERED = "how many moons does neptune have"


def _item(i, question, answers, kind="multipleQAs"):
    if kind != "multipleQAs":
        return {"id": str(i), "question": question, "annotations": [{"type": kind, "answer": answers}]}
    return {"id": str(i), "question": question,
            "annotations": [{"type": kind, "qaPairs": [{"question": f"{question} ({a})", "answer": [a]}
                                                       for a in answers]}]}


# ------------------------------------------------------------------ the set's rule
def test_builder_rule_excludes_a_query_whose_answer_is_in_the_corpus():
    vocab = bn.CorpusVocab(CORPUS)
    assert "answer 'Croatia'" in bn.topic_overlap("who lost the final", ["Spain", "Croatia"], vocab)
    assert bn.topic_overlap("who lost the final", ["Spain", "Italy"], vocab) is None
    # the answer is matched as normalised tokens: case, plurals, punctuation do not hide it
    assert bn.topic_overlap("what do they hunt", ["Red Foxes!"], vocab)
    # a bare number names no topic: 2018 is in the corpus, yet the query stays
    assert bn.topic_overlap("when was the first moon landing", ["2018", "1969"], vocab) is None
    assert "bigram" in bn.topic_overlap("who played wolverine last", ["Someone Else"], vocab)
    assert "title" in bn.topic_overlap("what is the capital of zanzibar", ["Stone Town"], vocab)


def test_build_writes_disjoint_seeded_splits(tmp_path):
    items = [_item(1, "Who lost the final?", ["Croatia", "Spain"]),               # answer in the corpus
             _item(2, "Who played wolverine last?", ["Nobody Known"]),            # bigram in the corpus
             _item(3, "When did neptune get its rings?", ["1989"], "singleAnswer"),  # not ambiguous
             _item(4, "Who won the world cup?", ["Uruguay", "Italy"]),            # a shipped query
             *[_item(10 + i, f"Who painted mural number {i} in lisbon?", [f"Painter{i}a", f"Painter{i}b"])
               for i in range(6)]]
    src = tmp_path / "train_light.json"
    src.write_text(json.dumps(items))
    out = tmp_path / "noev.jsonl.gz"
    stats = bn.build(src, out, n=3, n_calib=2, seed=5, passages=CORPUS, shipped={"who won the world cup"})
    assert stats["passed"] == 6 and stats["dropped"] == {"not ambiguous": 1, "shipped query": 1, "answer": 1,
                                                         "bigram": 1, "title": 0}
    ev, cal = bn.load(out, "eval"), bn.load(out, "calibration")
    assert len(ev) == 3 and len(cal) == 2 and not {r["id"] for r in ev} & {r["id"] for r in cal}
    assert all("mural" in r["question"] for r in ev + cal)
    first = out.read_bytes()
    items.reverse()  # file order does not matter, only the seed
    src.write_text(json.dumps(items))
    bn.build(src, out, n=3, n_calib=2, seed=5, passages=CORPUS, shipped={"who won the world cup"})
    assert out.read_bytes() == first
    from racq.scoring.usefulness import load_interpretations

    interps = load_interpretations(str(out))
    assert {len(v) for v in interps.values()} == {2}  # racq.scoring.usefulness reads it as an interpretations file


def test_shipped_set_is_the_documented_size():
    with gzip.open(bn.OUT, "rt") as fh:
        rows = [json.loads(line) for line in fh]
    assert [r["split"] for r in rows].count("eval") == 120 and len(rows) == 270
    assert len({r["key"] for r in rows}) == 270 and all(r["annotations"] for r in rows)


# ------------------------------------------------------------------ the signal
def test_assess_compares_the_best_score_with_the_threshold():
    cfg = CoverageConfig(min_top_score=0.5)
    assert assess([{"score": 0.7}, {"score": 0.1}], cfg)["covered"] is True
    low = assess([{"score": 0.42}], cfg)
    assert low["covered"] is False and low["score"] == 0.42 and "0.42 < 0.50" in low["why"]
    assert assess([], cfg)["covered"] is False


def test_signal_on_a_real_index(passage_index):
    from racq.retrieval import Index

    rc, _ = passage_index
    with one_torch_thread():
        index = Index.load(rc.index_dir, cfg=rc)
        for q in ("who played wolverine", "who won the world cup in 2018", "where do red foxes live"):
            assert assess(index.search(q, 3))["covered"], q
        for q in (UNCOVERED, "who did the voice of mumble in happy feet"):
            assert not assess(index.search(q, 3))["covered"], q


# ------------------------------------------------------------------ the guard
NOT = {"covered": False, "why": "test"}


def test_guard_keeps_only_supported_options_or_asks_a_generic_question():
    ps = CORPUS[:2]
    done = {"question": "Do you mean France or Brazil?", "raw": "Do you mean France or Brazil?"}
    out = guard(done, NOT, "who won the cup", ps)
    assert out["question"] == "Do you mean France, or something else?" and out["guard"].startswith("pruned")
    assert out["unguarded"]["question"] == done["question"] and out["raw"] == done["raw"]
    out = guard({"question": "Do you mean Spain or Brazil?"}, NOT, "who won the cup?", ps)
    assert out["question"] == 'Could you say more about what you mean by "who won the cup"?'
    assert out["unguarded"]["scores"]["hallucinated"] == 1
    # a query with "or" quoted back would read as options: the generic question then leaves it out
    out = guard({"question": "Do you mean Spain?"}, NOT, "the immunity from a vaccination or infection", ps)
    assert out["question"] == GENERIC and "Spain" in out["unguarded"]["question"]
    kept = guard({"question": "Do you mean Croatia or France?"}, NOT, "who won the cup", ps)
    assert kept["question"] == "Do you mean Croatia or France?" and kept["unguarded"] is None
    assert guard({"question": "Which year?"}, NOT, "who won the cup", ps)["question"] == "Which year?"
    same = {"question": "Do you mean Spain or Brazil?"}
    assert guard(same, {"covered": True}, "q", ps) is same  # covered: untouched, invented or not
    assert guard(same, NOT, "q", ps, config=CoverageConfig(guard=False)) is same


def test_guarded_questions_offer_no_unsupported_option():
    from racq.scoring.faithfulness import FaithfulnessConfig, Scorer

    scorer = Scorer(FaithfulnessConfig(use_semantic=False))
    for q in ["Do you mean France, Brazil or Croatia?", "Which one: Russia, or Peru?", "Mars or Venus?"]:
        out = guard({"question": q, "scores": scorer.score("who won", CORPUS, q)}, NOT, "who won", CORPUS, scorer)
        assert out["scores"]["hallucinated"] == 0, out  # re-scored: what is shown is supported
        assert out["unguarded"]["scores"]["hallucinated"] == 1


# ------------------------------------------------------------------ the query path
class FixedStages:
    """A stage model that always asks `question` (what an over-confident model does)."""

    def __init__(self, question):
        from racq.config import PromptConfig

        self.question, self.stages, self.errors, self.prompt = question, ["base", "aligned"], {}, PromptConfig()
        self.adapter_hashes = {"base": "", "aligned": "a1"}

    def passage_prompt(self, query, passages):
        return query

    def generate(self, prompts, stage, gen):
        return [self.question for _ in prompts]


def test_ask_stream_carries_coverage_and_guards_uncovered_queries(passage_index):
    from racq.retrieval import Index
    from racq.service import Asker

    rc, _ = passage_index
    with one_torch_thread():
        asker = Asker(FixedStages("Do you mean Triton or Nereid?"), Index.load(rc.index_dir, cfg=rc))
        events = list(asker.ask_stream(UNCOVERED, k=3))
        assert events[0]["coverage"]["covered"] is False
        finals = [e for e in events if e["event"] == "stage"]
        assert [e["stage"] for e in finals] == ["base", "aligned"]
        for e in finals:
            assert e["question"].startswith("Could you say more") and UNCOVERED in e["question"]
            assert e["unguarded"]["question"] == "Do you mean Triton or Nereid?"
        again = list(asker.ask_stream(UNCOVERED, k=3))  # from the answer cache: guarded the same way
        assert [e["question"] for e in again if e["event"] == "stage"] == [e["question"] for e in finals]
        covered = asker.ask("who played wolverine", k=3)
        assert covered["coverage"]["covered"] and covered["questions"]["aligned"] == "Do you mean Triton or Nereid?"


def test_tiny_model_stages_never_show_an_unsupported_option_when_not_covered(tiny_lm, tiny_adapters,
                                                                              passage_index):
    from racq.scoring.faithfulness import FaithfulnessConfig, Scorer
    from racq.generate import StageModel
    from racq.retrieval import Index
    from racq.service import Asker

    rc, _ = passage_index
    with one_torch_thread():
        asker = Asker(StageModel.load(tiny_lm, tiny_adapters), Index.load(rc.index_dir, cfg=rc),
                      Scorer(FaithfulnessConfig(use_semantic=False)))
        for q in (UNCOVERED, "who did the voice of mumble in happy feet"):
            events = list(asker.ask_stream(q, k=3, stages=["base", "sft", "aligned"], score=True,
                                           gen=GenConfig(max_new_tokens=12)))
            assert events[0]["coverage"]["covered"] is False
            for e in (e for e in events if e["event"] == "stage" and e.get("question")):
                assert e["scores"]["hallucinated"] == 0 and "guard" in e, e


# ------------------------------------------------------------------ the real app
def test_explore_on_the_real_app_says_the_corpus_does_not_cover_the_query(tmp_path, tiny_lm, tiny_adapters,
                                                                          passage_index):
    from racq.store import open_db

    rc, _ = passage_index
    db = tmp_path / "racq.db"
    synthetic_pool(open_db(db), 1)
    config = write_config(tmp_path / "app.yaml", db=db, base_model=tiny_lm, adapters_dir=tiny_adapters,
                          index_dir=rc.index_dir, check_index=False, preload=False, max_new_tokens=6, k=3)
    with AppServer(config, tmp_path / "app.log") as app:
        rest = Rest(app.url)
        status, passages, cards = rest.call("explore_ask", [UNCOVERED, 3])
        assert NOTICE in status and NOTICE in passages and "3 stages" in status, status
        assert "racq-nocoverage" in passages and "data-stage='aligned'" in cards
        status, passages, _ = rest.call("explore_ask", ["who played wolverine", 3])
        assert NOTICE not in status + passages and "3 stages" in status
        rest.close()


def test_racq_ask_prints_the_notice(capsys):
    from racq.cli.ask import _print_stream

    hit = {"rank": 1, "score": 0.3, "title": "Fox", "text": "The red fox."}
    _print_stream([{"event": "passages", "passages": [hit], "coverage": {"covered": False, "why": "0.30 < 0.55"}},
                   {"event": "stage", "stage": "aligned", "question": "Could you say more?"}], live=False)
    out = capsys.readouterr().out
    assert NOTICE in out and "0.30 < 0.55" in out and "aligned: Could you say more?" in out
    _print_stream([{"event": "passages", "passages": [hit], "coverage": {"covered": True}}], live=False)
    assert NOTICE not in capsys.readouterr().out
