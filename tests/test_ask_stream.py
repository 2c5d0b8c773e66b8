"""One query path (racq.service.Asker.ask_stream) on a tiny random model and a small real index: the event
order and content, the merged engine's greedy text against the PEFT path's, and the answer cache (the
joint engine, the default: tests/test_joint.py).

    .venv/bin/pytest -q tests/test_ask_stream.py
"""

from __future__ import annotations

import shutil

import pytest

from apphelpers import one_torch_thread
from racq.config import GenConfig

GEN = GenConfig(max_new_tokens=6)
QUERIES = ["who played wolverine", "who won the world cup in 2018", "where do red foxes live",
           "wer spielte wolverine", "когда франция выиграла"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_adapters):
    """sft and aligned (a private copy: one test retrains a stage in place)."""
    root = tmp_path_factory.mktemp("stream-adapters")
    for name in ("sft", "aligned"):
        shutil.copytree(tiny_adapters / name, root / name)
    return root


@pytest.fixture(scope="module")
def asker(tiny_lm, adapters, passage_index):
    from racq.generate import StageModel
    from racq.retrieval import Index
    from racq.service import Asker

    rc, _ = passage_index
    with one_torch_thread():
        a = Asker(StageModel.load(tiny_lm, adapters), Index.load(rc.index_dir, cfg=rc), engine="merged")
        a.refresh()
        yield a


def test_events_come_in_order_with_growing_text(asker):
    events = list(asker.ask_stream("who played wolverine", k=2, gen=GEN))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "passages" and kinds[-1] == "done"
    assert events[0]["stages"] == ["base", "sft", "aligned"] and len(events[0]["passages"]) == 2
    assert events[0]["passages"][0]["title"].startswith("Wolverine")
    order = [e["stage"] for e in events if e["event"] == "start"]
    assert order == ["base", "sft", "aligned"]  # display order, one stage after the other
    for stage in order:
        mine = [e for e in events if e.get("stage") == stage]
        assert mine[0]["event"] == "start" and mine[-1]["event"] == "stage"
        texts = [e["text"] for e in mine if e["event"] == "token"]
        assert texts, stage
        assert all(b.startswith(a) or "\ufffd" in a for a, b in zip(texts, texts[1:])), texts  # it grows
        assert mine[-1]["raw"] == texts[-1] and mine[-1]["cached"] is False
        assert mine[-1]["adapter_hash"] == asker.stage_model.adapter_hashes[stage]
    # a stage's events are contiguous: the next stage starts after this one's final event
    first_done = kinds.index("stage")
    assert kinds[first_done + 1] == "start"


@pytest.mark.parametrize("guard", [0, 2], ids=["plain", "no-repeat-2"])
def test_merged_greedy_text_equals_the_peft_path(asker, guard):
    """The fast path asks what the reference asks, with the decoding guard off and on."""
    from dataclasses import replace

    from racq.prompts import extract_question

    gen = replace(GEN, no_repeat_ngram_size=guard, max_new_tokens=12 if guard else GEN.max_new_tokens)

    sm, same, n = asker.stage_model, 0, 0
    for q in QUERIES:
        prompt = sm.passage_prompt(q, [h.passage for h in asker.retrieve(q, 3)])
        for stage in sm.stages:
            ref = extract_question(sm.generate([prompt], stage, gen)[0])
            fast = extract_question(asker.fast.generate([prompt], stage, gen)[0])
            same += ref == fast
            n += 1
    assert same == n, f"{same}/{n} identical"


def test_ask_is_the_stream_drained_and_a_bad_query_raises_first(asker):
    from racq.service import BadQuery

    out = asker.ask("  who won the world cup\x00 in 2018 ", k=2, gen=GEN)
    assert out["query"] == "who won the world cup in 2018" and out["notes"]
    assert set(out["questions"]) == {"base", "sft", "aligned"} and out["errors"] == {}
    assert set(out["seconds"]) == {"retrieve", "total"}
    stream = asker.ask_stream("   ", gen=GEN)
    with pytest.raises(BadQuery):
        next(stream)


def test_a_stage_that_fails_says_so_and_the_others_answer(asker, monkeypatch):
    real = asker.fast.stream

    def flaky(prompt, stage, gen=None):
        if stage == "sft":
            raise RuntimeError("boom")
        return real(prompt, stage, gen)

    monkeypatch.setattr(asker.fast, "stream", flaky)
    final = {e["stage"]: e for e in asker.ask_stream("where do red foxes live", k=2, stages=["sft", "aligned", "nope"],
                                                     gen=GenConfig(max_new_tokens=5)) if e["event"] == "stage"}
    assert final["sft"]["error"] == "RuntimeError: boom"
    assert final["nope"]["error"] == "not loaded"
    assert "question" in final["aligned"]


def test_cache_answers_again_without_generating_and_forgets_a_retrained_stage(asker, adapters, tiny_lm,
                                                                            monkeypatch):
    from racq.tiny import make_random_adapter

    gen = GenConfig(max_new_tokens=4)
    first = asker.ask("who played wolverine", k=3, gen=gen)
    calls = []
    real = asker.fast.stream
    monkeypatch.setattr(asker.fast, "stream", lambda *a, **kw: (calls.append(a[1]), real(*a, **kw))[1])
    again = list(asker.ask_stream("who played wolverine", k=3, gen=gen))
    assert calls == [] and not [e for e in again if e["event"] in ("start", "token")]
    assert all(e["cached"] for e in again if e["event"] == "stage")
    assert {e["stage"]: e["question"] for e in again if e["event"] == "stage"} == first["questions"]
    # other settings, k or query: a miss
    asker.ask("who played wolverine", k=2, gen=gen)
    asker.ask("who played wolverine", k=3, gen=GenConfig(max_new_tokens=3))
    assert calls == ["base", "sft", "aligned"] * 2

    # retrained in place under the same name (what a feedback round's reload does): its answers are
    # regenerated from the new adapter, the other stages still come from the cache
    calls.clear()
    shutil.rmtree(adapters / "aligned")
    make_random_adapter(tiny_lm, adapters / "aligned", seed=99)
    assert asker.stage_model.add_stage("aligned", adapters / "aligned")
    asker.refresh("aligned")
    old_hash = first["adapter_hashes"]["aligned"]
    assert asker.fast.hashes["aligned"] == asker.stage_model.adapter_hashes["aligned"] != old_hash
    redone = asker.ask("who played wolverine", k=3, gen=gen)
    assert calls == ["aligned"] and redone["adapter_hashes"]["aligned"] != old_hash


def test_cache_is_bounded(tiny_lm, adapters, passage_index):
    from racq.service import AnswerCache

    c = AnswerCache(2)
    for i in range(3):
        c.put(("stage", "sft", i), i)
    assert c.get(("stage", "sft", 0)) is None and c.get(("stage", "sft", 2)) == 2
    c.put(("stage", "base", 9), 9)  # 1 was the least recently used (2 was just read)
    assert c.get(("stage", "sft", 1)) is None and len(c.data) == 2
    assert c.drop("sft") == 1 and list(c.data) == [("stage", "base", 9)]
