"""The joint engine (racq.multilora, Asker's default): every stage decoded in one batch over one copy of
the base. Its greedy text equals the PEFT path's (guard off and on, rows stopping at different steps),
its events interleave, it shares the PEFT model's weights, and a stage retrained in place is rebuilt.

    .venv/bin/pytest -q tests/test_joint.py
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from apphelpers import one_torch_thread
from racq.config import GenConfig

GEN = GenConfig(max_new_tokens=8)
QUERIES = ["who played wolverine", "who won the world cup in 2018", "where do red foxes live",
           "wer spielte wolverine", "когда франция выиграла"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_adapters):
    root = tmp_path_factory.mktemp("joint-adapters")
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
        a = Asker(StageModel.load(tiny_lm, adapters), Index.load(rc.index_dir, cfg=rc))
        assert a.engine == "joint"
        a.refresh()
        yield a


def _joint(asker, prompt, gen):
    final, steps = {}, {}
    for stage, text, done in asker.joint.stream([(s, prompt) for s in asker.stage_model.stages], gen):
        steps[stage] = steps.get(stage, 0) + 1
        if done:
            assert stage not in final, "a stage finishes once"
            final[stage] = text
    return final, steps


@pytest.mark.parametrize("guard", [0, 2], ids=["plain", "no-repeat-2"])
def test_joint_greedy_text_equals_the_peft_path(asker, guard):
    from racq.prompts import extract_question

    gen = replace(GEN, no_repeat_ngram_size=guard)
    sm, same, n = asker.stage_model, 0, 0
    for q in QUERIES:
        prompt = sm.passage_prompt(q, [h.passage for h in asker.retrieve(q, 3)])
        final, _ = _joint(asker, prompt, gen)
        assert set(final) == set(sm.stages)
        for stage in sm.stages:
            same += extract_question(sm.generate([prompt], stage, gen)[0]) == extract_question(final[stage])
            n += 1
    assert same == n, f"{same}/{n} identical"


def test_rows_that_stop_early_leave_the_batch_and_the_others_go_on(asker, monkeypatch):
    """Make a token one stage produces early the end-of-text token: that row stops there, the batch
    shrinks, and the other stages still ask exactly what they asked in the full batch."""
    from racq.multilora import JointStages

    sm, tok = asker.stage_model, asker.stage_model.tokenizer
    prompt = sm.passage_prompt(QUERIES[0], [h.passage for h in asker.retrieve(QUERIES[0], 3)])
    seen: dict[str, list[int]] = {}
    real_step = JointStages._step

    def recording(row, logits, tok_, gen):
        real_step(row, logits, tok_, gen)
        seen[row["stage"]] = list(row["new"])

    monkeypatch.setattr(JointStages, "_step", staticmethod(recording))
    plain, _ = _joint(asker, prompt, GEN)
    ids = dict(seen)  # the full batch's tokens per stage
    stop_id = ids["sft"][1]  # sft's second token
    monkeypatch.setattr(type(tok), "eos_token_id", property(lambda self: stop_id), raising=False)
    final, steps = _joint(asker, prompt, GEN)
    expected = {}
    for stage, new in ids.items():
        cut = new[:new.index(stop_id)] if stop_id in new else new
        expected[stage] = (plain[stage][:len(plain[stage]) - len(tok.decode(new, skip_special_tokens=True))]
                           + tok.decode(cut, skip_special_tokens=True))  # the base stage's opener kept
    assert final == expected
    assert steps["sft"] == 2 < max(steps.values()), steps  # sft stopped at its 2nd step, another went on


def test_events_start_together_and_interleave(asker):
    events = list(asker.ask_stream("who played wolverine", k=2, gen=replace(GEN, max_new_tokens=5)))
    kinds = [(e["event"], e.get("stage")) for e in events]
    assert kinds[0][0] == "passages" and kinds[-1][0] == "done"
    assert kinds[1:4] == [("start", "base"), ("start", "sft"), ("start", "aligned")]
    tokens = [s for k, s in kinds if k == "token"]
    assert tokens[:3] == ["base", "sft", "aligned"]  # each stage's first words after its own prefill
    assert len(set(tokens[3:6])) == 3  # then one step of the batch gives every stage a token
    for stage in ("base", "sft", "aligned"):
        mine = [e for e in events if e.get("stage") == stage]
        texts = [e["text"] for e in mine if e["event"] == "token"]
        assert mine[-1]["event"] == "stage" and mine[-1]["raw"] == texts[-1] and not mine[-1]["cached"]
        assert all(b.startswith(a) or "\ufffd" in a for a, b in zip(texts, texts[1:])), texts


def test_cache_answers_first_then_the_joint_batch(asker):
    gen = GenConfig(max_new_tokens=4)
    first = asker.ask("where do red foxes live", k=3, gen=gen)
    again = list(asker.ask_stream("where do red foxes live", k=3, gen=gen))
    assert not [e for e in again if e["event"] in ("start", "token")]
    assert {e["stage"]: e["question"] for e in again if e["event"] == "stage"} == first["questions"]


def test_shares_the_base_weights_and_rebuilds_a_retrained_stage(asker, adapters, tiny_lm):
    from racq.tiny import make_random_adapter

    joint, sm = asker.joint, asker.stage_model
    base_ids = {id(p) for p in sm.model.parameters()}
    assert all(id(p) in base_ids for p in joint.model.parameters()), "the joint copy holds its own weights"
    prompt = sm.passage_prompt(QUERIES[2], [h.passage for h in asker.retrieve(QUERIES[2], 3)])
    before, _ = _joint(asker, prompt, GEN)
    shutil.rmtree(adapters / "aligned")
    make_random_adapter(tiny_lm, adapters / "aligned", seed=77)
    assert sm.add_stage("aligned", adapters / "aligned")
    asker.refresh("aligned")
    assert joint.hashes["aligned"] == sm.adapter_hashes["aligned"]
    after, _ = _joint(asker, prompt, GEN)
    assert after["aligned"] == sm.generate([prompt], "aligned", GEN)[0]
    assert after["sft"] == before["sft"]


def test_a_failing_batch_says_so_on_every_card(asker, monkeypatch):
    def boom(*a, **kw):
        raise RuntimeError("boom")
        yield

    monkeypatch.setattr(asker.joint, "stream", boom)
    final = {e["stage"]: e for e in asker.ask_stream("who sings you are my sunshine", k=2, gen=GEN)
             if e["event"] == "stage"}
    assert {s: e.get("error") for s, e in final.items()} == {s: "RuntimeError: boom" for s in ("base", "sft", "aligned")}


def test_int8_is_opt_in_quantizes_the_base_linears_only_and_keeps_its_own_cache(asker):
    from racq.service import Asker

    with pytest.raises(ValueError, match="quantize must be none or int8"):
        Asker(asker.stage_model, asker.index, quantize="int4")
    before = {n: p.detach().clone() for n, p in asker.stage_model.model.named_parameters()}
    q8 = Asker(asker.stage_model, asker.index, quantize="int8")
    q8.warm()
    kinds = {type(m.base).__module__ for m in q8.joint.model.modules() if hasattr(m, "rows")}
    assert kinds and all("quantized" in k for k in kinds), kinds
    out = q8.ask("who played wolverine", k=2, gen=GEN)
    assert set(out["questions"]) == {"base", "sft", "aligned"} and out["errors"] == {}
    assert q8._key("q", 2, "sft", GEN) != asker._key("q", 2, "sft", GEN)  # never served fp32's answers
    after = dict(asker.stage_model.model.named_parameters())
    assert all(torch_equal(before[n], after[n]) for n in before), "quantizing must not touch the shared weights"


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
