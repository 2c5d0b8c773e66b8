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


@pytest.mark.parametrize("guess", ["right", "wrong", "half right"])
def test_a_guessed_token_is_kept_only_when_it_is_the_models_own_choice(asker, monkeypatch, guess):
    """Guesses are checked in the same forward pass and kept only where the greedy choice agrees: the
    text is always what one token per step gives; right guesses save passes, wrong ones cost none.
    (The tiny random model never repeats itself, so the guesses come from an oracle here; the real
    lookup is tested below and measured in bench/bench_ask.py.)"""
    import racq.multilora as ml

    sm, joint = asker.stage_model, asker.joint
    prompts = [sm.passage_prompt(q, [h.passage for h in asker.retrieve(q, 3)]) for q in QUERIES]
    gen = replace(GEN, max_new_tokens=12)
    passes, tokens = [], {}
    real_forward, real_step = joint._forward, ml.JointStages._step

    def counting(slots, **kw):
        passes.append(kw["input_ids"].shape[1])
        return real_forward(slots, **kw)

    def recording(row, logits, tok_, gen_):
        real_step(row, logits, tok_, gen_)
        tokens[tuple(row["ids"]), row["stage"]] = list(row["new"])

    monkeypatch.setattr(joint, "_forward", counting)
    monkeypatch.setattr(ml.JointStages, "_step", staticmethod(recording))
    monkeypatch.setattr(joint, "draft_tokens", 0)
    plain = [_joint(asker, p, gen)[0] for p in prompts]
    plain_passes, truth = len(passes), dict(tokens)

    vocab = len(sm.tokenizer)

    def oracle(row, rows, k, history=()):
        true = truth[tuple(row["ids"]), row["stage"]][len(row["new"]):][:k]
        if guess == "wrong":
            return [(t + 1) % vocab for t in true]
        return true[:1] + [(t + 1) % vocab for t in true[1:]] if guess == "half right" else true

    monkeypatch.setattr(ml, "_draft", oracle)
    monkeypatch.setattr(joint, "draft_tokens", 4)
    passes.clear()
    assert [_joint(asker, p, gen)[0] for p in prompts] == plain
    if guess == "wrong":
        assert len(passes) == plain_passes
    else:
        assert len(passes) < plain_passes, (len(passes), plain_passes)
        assert 5 in passes  # a decode pass: the last token and 4 guesses


def test_draft_looks_in_the_other_replies_first_then_its_own_text_then_earlier_replies():
    from racq.multilora import _draft

    me = {"ids": [1, 2, 3, 4, 9, 7], "new": [5, 3, 4]}
    other = {"ids": [1, 2], "new": [8, 3, 4, 6, 6, 6, 6]}
    assert _draft(me, [me, other], 2) == [6, 6]      # "3 4" follows in the other reply: its next tokens
    assert _draft(me, [me], 3) == [9, 7, 5]           # alone: what followed "3 4" in its own prompt
    assert _draft(me, [me, other], 0) == []
    assert _draft({"ids": [1], "new": [2]}, [], 4) == []  # nothing seen twice: no guess
    fresh = {"ids": [1, 2], "new": [3, 4]}
    history = [[3, 4, 8, 8], [9, 3, 4, 5, 5]]  # earlier queries' replies, newest last
    assert _draft(fresh, [fresh], 2) == []
    assert _draft(fresh, [fresh], 2, history) == [5, 5]  # newest earlier reply first
    assert _draft(me, [me, other], 2, history) == [6, 6]  # this query's own material still comes first


def test_earlier_replies_save_passes_and_never_change_the_text(asker, monkeypatch):
    """The same prompts asked again straight through the engine (no answer cache): the first run's
    replies are now guessing material, so the second takes fewer decode passes for the same text."""
    sm, joint = asker.stage_model, asker.joint
    prompts = [sm.passage_prompt(q, [h.passage for h in asker.retrieve(q, 3)]) for q in QUERIES[:2]]
    gen = replace(GEN, max_new_tokens=12)
    passes = []
    real_forward = joint._forward

    def counting(slots, **kw):
        passes.append(kw["input_ids"].shape[1])
        return real_forward(slots, **kw)

    monkeypatch.setattr(joint, "_forward", counting)
    joint._history.clear()

    def run():
        passes.clear()
        texts = [_joint(asker, p, gen)[0] for p in prompts]
        return texts, len(passes)

    first, first_passes = run()
    again, again_passes = run()
    assert again == first
    assert again_passes < first_passes, (again_passes, first_passes)
    joint._history.clear()
    assert run() == (first, first_passes)  # no history: as the first time


def test_the_prompt_prefix_is_prefilled_once_per_stage(asker, monkeypatch):
    """Every passage prompt starts with the same template and instruction: each stage computes its keys
    and values once, and a prompt prefills only what follows (the text stays the PEFT path's, above)."""
    sm, joint = asker.stage_model, asker.joint
    joint.sync()
    prefix = joint._prompt_prefix()
    assert len(prefix) >= 8
    widths, lengths = [], []
    real, real_prefill = joint._forward, joint._prefill

    def recording(slots, **kw):
        widths.append(kw["input_ids"].shape[1])
        return real(slots, **kw)

    def prefill(stage, ids):
        lengths.append(ids.shape[1])
        widths.clear()
        out = real_prefill(stage, ids)
        lengths.append(list(widths))
        return out

    monkeypatch.setattr(joint, "_forward", recording)
    monkeypatch.setattr(joint, "_prefill", prefill)
    monkeypatch.setattr(joint, "_prefix_kv", {})
    gen = replace(GEN, max_new_tokens=1)
    for q in QUERIES[:2]:
        _joint(asker, sm.passage_prompt(q, [h.passage for h in asker.retrieve(q, 3)]), gen)
    runs = list(zip(lengths[::2], lengths[1::2]))  # (prompt tokens, widths fed) per prefill
    n = len(sm.stages)
    assert [fed for _, fed in runs[:n]] == [[len(prefix), total - len(prefix)] for total, _ in runs[:n]]
    assert [fed for _, fed in runs[n:]] == [[total - len(prefix)] for total, _ in runs[n:]]


def test_tall_head_gives_the_linear_heads_logits():
    import torch

    from racq.multilora import TallHead

    w, h = torch.randn(50, 8), torch.randn(2, 5, 8)
    assert torch.allclose(TallHead(w)(h), torch.nn.functional.linear(h, w), atol=1e-5)


@pytest.mark.parametrize("tokens", [1, 3])
def test_packed_attention_equals_transformers_sdpa(tokens):
    """Query heads folded into positions of their key/value head give SDPA's own attention."""
    import types

    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from racq.attention import packed_sdpa

    torch.manual_seed(0)
    module = types.SimpleNamespace(num_key_value_groups=3, is_causal=True)
    q, k, v = torch.randn(2, 6, tokens, 8), torch.randn(2, 2, 11, 8), torch.randn(2, 2, 11, 8)
    mask = torch.rand(2, 1, tokens, 11) > 0.3
    mask[..., -1] = True  # every query sees at least one key
    want, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.3)
    got, _ = packed_sdpa(module, q, k, v, mask, scaling=0.3)
    assert got.shape == want.shape == (2, tokens, 6, 8)
    assert torch.allclose(got, want, atol=1e-6)


def test_only_the_joint_copy_uses_packed_attention(asker):
    from racq.attention import ATTENTION

    asker.joint.sync()
    assert asker.joint.model.config._attn_implementation == ATTENTION
    assert asker.stage_model.model.config._attn_implementation == "sdpa"  # training and sampling: untouched


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
