"""racq.annotation.pool on a tiny random model, a bag-of-words index over a small corpus and a real SQLite file.

    HF_HUB_OFFLINE=1 .venv/bin/pytest tests/test_pool.py -q
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest

from racq.config import GenConfig, PromptConfig
from racq.data import Example, Passage
from racq.scoring.faithfulness import FaithfulnessConfig, Scorer
from racq.models import list_stages
from racq.annotation.pool import PoolError, build_pool, pick_queries
from racq.retrieval import Index
from racq.store import finish_round, open_db, record_round
from racq.store.scores import stage_scores


from racq.tiny import BagOfWords  # noqa: E402  (toy embedder shared with the benches)


CORPUS = [Passage("Chess", "Ju Wenjun won the rapid chess championship in Riyadh in 2017."),
          Passage("Chess", "Magnus Carlsen won the open rapid chess title in 2019."),
          Passage("Football", "The world cup final of 2018 was played in Moscow."),
          Passage("Spider-Man", "Gwen Stacy is played by Emma Stone in The Amazing Spider-Man."),
          Passage("Spider-Man", "Kirsten Dunst played Mary Jane Watson in Spider-Man (2002)."),
          Passage("Rivers", "The Nile flows north through Egypt into the Mediterranean.")]
EXAMPLES = [Example(q, "", (), "paqa", f"t{i}") for i, q in enumerate(
    ["who won the rapid chess championship", "where was the world cup final", "who played in spider-man",
     "which way does the nile flow", "who won the rapid chess championship"])]  # the last one repeats
GEN = GenConfig(max_new_tokens=6)


class Spy:
    """Wraps StageModel.generate and records each call's stages."""

    def __init__(self, sm):
        self.sm, self.calls, self.inner = sm, [], sm.generate
        sm.generate = self

    def __call__(self, prompts, stages, gen=None, **kw):
        self.calls.append(list(stages))
        return self.inner(prompts, stages, gen, **kw)


@pytest.fixture(scope="module")
def index():
    return Index.build(CORPUS, BagOfWords(), log=lambda m: None)


@pytest.fixture
def adapters(tmp_path, tiny_adapters):
    root = tmp_path / "adapters"
    shutil.copytree(tiny_adapters, root)
    return root


def _stage_model(tiny_lm, adapters):
    from racq.generate import StageModel

    return StageModel.load(tiny_lm, adapters)


def _build(db, sm, index, **kw):
    scorer = Scorer(FaithfulnessConfig(use_semantic=False))  # lexical only: no embedder to load
    return build_pool(db, stage_model=sm, index=index, scorer=scorer, examples=EXAMPLES, gen=GEN, **kw)


def _candidates(db):
    with db.read() as c:
        return list(c.query("SELECT * FROM candidates ORDER BY id"))


def test_pick_queries_is_deterministic_deduplicated_and_prefix_stable():
    four = pick_queries(EXAMPLES, 10)
    assert len(four) == 4 and len({e.query for e in four}) == 4
    assert pick_queries(list(reversed(EXAMPLES)), 10) == four
    assert pick_queries(EXAMPLES, 2) == four[:2]


def test_pool_build_batches_stages_stores_lineage_scores_and_items(tmp_path, tiny_lm, adapters, index):
    db = open_db(tmp_path / "racq.db")
    sm = _stage_model(tiny_lm, adapters)
    spy = Spy(sm)
    stats = _build(db, sm, index, n=3, batch_size=4, adapters_dir=adapters)
    stages = ["base", "sft", "aligned"]
    assert sm.stages == stages and stats["queries"] == stats["new_queries"] == 3
    jobs = 3 * len(stages)
    # batched: 9 (query, stage) prompts in ceil(9 / 4) = 3 generate calls, stages mixed within a call
    assert [len(c) for c in spy.calls] == [4, 4, 1] and stats["generate_calls"] == 3
    assert any(len(set(c)) > 1 for c in spy.calls)
    assert sorted(s for c in spy.calls for s in c) == sorted(stages * 3)
    cands = _candidates(db)
    assert len(cands) == stats["candidates_new"] == jobs - stats["empty"]
    hashes = {st.name: st.adapter_hash for st in list_stages(adapters)}
    for c in cands:
        assert c["adapter_hash"] == hashes[c["stage"]] and c["text"].strip()
        # base also records its reply openers: they shape its text as an adapter shapes the others'
        openers = {"base_openers": PromptConfig().base_openers} if c["stage"] == "base" else {}
        assert json.loads(c["decoding"]) == {"do_sample": False, "max_new_tokens": 6, "prompt_top_k": 3,
                                             "passage_tokens": 64, "chat_template": True, **openers}
        assert c["round_id"] is None  # no training round made these stages
    with db.read() as c:
        passages = list(c.query("SELECT query_id, COUNT(*) AS n FROM query_passages GROUP BY query_id"))
        scored = {r["candidate_id"] for r in c.query("SELECT candidate_id FROM candidate_scores")}
        items = list(c.query("SELECT ca.stage AS sa, cb.stage AS sb, ca.text AS ta, cb.text AS tb, "
                             "ca.query_id AS qa, cb.query_id AS qb FROM items i "
                             "JOIN candidates ca ON ca.id = i.cand_a JOIN candidates cb ON cb.id = i.cand_b"))
    assert [p["n"] for p in passages] == [3, 3, 3]  # top-k from the corpus index, k = prompt.top_k
    assert scored == {c["id"] for c in cands} and stats["scored"] == len(cands)
    assert set(stage_scores(db)) == {c["stage"] for c in cands}
    assert items and len(items) == stats["items_new"]
    assert all(i["sa"] != i["sb"] and i["ta"] != i["tb"] and i["qa"] == i["qb"] for i in items)

    # a second run has nothing to do
    spy.calls.clear()
    again = _build(db, sm, index, n=3, batch_size=4, adapters_dir=adapters)
    assert sum(map(len, spy.calls)) == stats["empty"]  # only empty questions (if any) are tried again
    assert again["new_queries"] == 0 and again["items_new"] == 0 and again["scored"] == 0
    assert len(_candidates(db)) == len(cands) + again["candidates_new"]


def test_rerun_after_a_round_adds_only_the_new_stage_with_its_round(tmp_path, tiny_lm, adapters, index):
    from racq.tiny import make_random_adapter

    db = open_db(tmp_path / "racq.db")
    first = _build(db, _stage_model(tiny_lm, adapters), index, n=3, batch_size=8, adapters_dir=adapters)
    before = _candidates(db)
    rid = record_round(db, "aligned-r1", "aligned")
    finish_round(db, rid)
    make_random_adapter(tiny_lm, adapters / "aligned-r1", seed=11)
    (adapters / "aligned-r1" / "manifest.json").write_text(json.dumps({"round_id": rid}))
    sm = _stage_model(tiny_lm, adapters)
    spy = Spy(sm)
    stats = _build(db, sm, index, n=3, batch_size=8, adapters_dir=adapters, existing=True)
    assert "aligned-r1" in sm.stages and stats["queries"] == 3 and stats["new_queries"] == 0
    generated = [s for c in spy.calls for s in c]
    assert generated.count("aligned-r1") == 3 and len(generated) == 3 + first["empty"]
    new = [c for c in _candidates(db) if c["id"] not in {b["id"] for b in before}]
    r1 = [c for c in new if c["stage"] == "aligned-r1"]
    assert r1 and all(c["round_id"] == rid for c in r1)
    assert {c["query_id"] for c in r1} <= {b["query_id"] for b in before}  # same queries, same passages
    with db.read() as c:
        pairs = {tuple(sorted((r["sa"], r["sb"]))) for r in c.query(
            "SELECT ca.stage AS sa, cb.stage AS sb FROM items i JOIN candidates ca ON ca.id = i.cand_a "
            "JOIN candidates cb ON cb.id = i.cand_b")}
    assert any("aligned-r1" in p for p in pairs) and stats["items_new"] > 0


def test_an_unknown_stage_is_refused_before_anything_is_written(tmp_path, tiny_lm, adapters, index):
    db = open_db(tmp_path / "racq.db")
    with pytest.raises(PoolError, match="aligned-r7"):
        _build(db, _stage_model(tiny_lm, adapters), index, n=2, stages=["sft", "aligned-r7"])
    with db.read() as c:
        assert c["queries"].count == 0 and c["candidates"].count == 0


def test_a_stage_that_cannot_be_used_is_refused_with_its_real_cause(tmp_path, tiny_lm, adapters, index):
    """Three causes, three messages: on disk but trained after this process loaded the model, not on
    disk at all, and on disk but broken. Attaching the new adapter in place (add_stage) fixes the first."""
    db = open_db(tmp_path / "racq.db")
    sm = _stage_model(tiny_lm, adapters)  # loaded before the new stage exists
    shutil.copytree(adapters / "aligned", adapters / "aligned-r1")  # a round finishes meanwhile
    (adapters / "aligned-r2").mkdir()
    (adapters / "aligned-r2" / "adapter_config.json").write_text("{not json")
    broken = _stage_model(tiny_lm, adapters)  # loads aligned-r2 and records why it failed
    with pytest.raises(PoolError) as e:
        _build(db, sm, index, n=2, stages=["aligned-r1", "aligned-r9"])
    msg = str(e.value)
    assert f"aligned-r1: its adapter is on disk at {adapters / 'aligned-r1'} but not loaded in this process" in msg
    assert f"aligned-r9: no adapter on disk at {adapters / 'aligned-r9'}" in msg and "Loaded: base, sft, aligned" in msg
    with pytest.raises(PoolError, match=r"aligned-r2: the adapter at .*aligned-r2 is broken \(\w+"):
        _build(db, broken, index, n=2, stages=["aligned-r2"])
    with db.read() as c:
        assert c["candidates"].count == 0

    assert sm.add_stage("aligned-r1", adapters / "aligned-r1") and not sm.add_stage("aligned-r1", adapters / "aligned-r1")
    assert sm.stages == ["base", "sft", "aligned", "aligned-r1"]
    stats = _build(db, sm, index, n=2, stages=["aligned-r1"])
    assert stats["candidates_new"] == 2
    with pytest.raises(Exception):
        sm.add_stage("aligned-r2", adapters / "aligned-r2")
    assert "aligned-r2" in sm.errors and "aligned-r2" not in sm.stages
