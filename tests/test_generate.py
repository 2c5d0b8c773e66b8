"""One base model with stage adapters, the '?' cut, the RAC mixture, clear errors for missing models."""

from __future__ import annotations

import pytest
import torch

from racq.config import GenConfig
from racq.data import Passage
from racq.generate import StageModel
from racq.models import ModelMissing, check_model_dir, list_stages, load_base
from racq.prompts import extract_question, passage_prompt_messages, render

PASSAGES = [Passage("Wolverine (film)", "Hugh Jackman played Wolverine in the X-Men films from 2000 to 2017."),
            Passage("Wolverine (animated)", "Steve Blum voiced Wolverine in several animated series.")]


@pytest.fixture(scope="module")
def sm(tiny_lm, tiny_adapters):
    return StageModel.load(tiny_lm, tiny_adapters, include_hidden=True)


@pytest.mark.parametrize("raw, want", [
    ("Do you mean the film or the comic? And more?", "Do you mean the film or the comic?"),
    ("Clarifying Question: Which year: 2017 or 2018?", "Which year: 2017 or 2018?"),
    ('  "Are you asking about the men\'s event?"  trailing', "Are you asking about the men's event?"),
    ("No question mark here\nsecond line", "No question mark here"),
    ("", ""),
    ("?", "?"),
])
def test_extract_question_cuts_after_first_question_mark(raw, want):
    assert extract_question(raw) == want


def test_registry_lists_base_then_adapters_and_hides_uncond(tiny_adapters):
    assert [s.name for s in list_stages(tiny_adapters)] == ["base", "sft", "aligned"]
    assert [s.name for s in list_stages(tiny_adapters, include_hidden=True)][-1] == "uncond"


def test_one_base_model_in_memory(sm):
    # every stage is an adapter on the same module: one set of base weights
    assert set(sm.stages) == {"base", "sft", "aligned", "uncond"}
    assert len({id(m) for m in [sm.model.get_base_model()]}) == 1
    names = set(sm.model.peft_config)
    assert names == {"sft", "aligned", "uncond"}


def test_adapter_switching_changes_outputs(sm):
    prompt = sm.passage_prompt("who played wolverine", PASSAGES)
    gen = GenConfig(max_new_tokens=6)
    outs = {s: sm.generate([prompt], s, gen)[0] for s in ("base", "sft", "aligned")}
    assert len(set(outs.values())) == 3, outs
    # the mixed-adapter batch gives the same text as one stage at a time
    batched = sm.generate([prompt] * 3, ["base", "sft", "aligned"], GenConfig(max_new_tokens=6, batch_size=3))
    assert batched == [outs["base"], outs["sft"], outs["aligned"]]


def test_base_stage_equals_plain_model_without_adapters(sm, tiny_lm):
    model, tok = load_base(tiny_lm)
    plain = StageModel.load(tiny_lm, tiny_lm / "no-adapters-here", model=model, tokenizer=tok)
    prompt = sm.passage_prompt("who played wolverine", PASSAGES)
    gen = GenConfig(max_new_tokens=6)
    assert plain.stages == ["base"]
    assert plain.generate([prompt], "base", gen) == sm.generate([prompt], "base", gen)


def test_ask_returns_one_cleaned_question_per_stage(sm):
    out = sm.ask("who played wolverine", PASSAGES, gen=GenConfig(max_new_tokens=5, batch_size=4))
    assert list(out) == sm.stages
    assert all(isinstance(q, str) and "\n" not in q for q in out.values())


def test_mixture_alpha_0_is_sft_sampling_and_alpha_1_is_query_only_sampling(sm):
    queries = ["who played wolverine", "when was the eiffel tower built", "who won the 2017 rapid chess"]
    prompts = [sm.passage_prompt(q, PASSAGES) for q in queries]
    qprompts = [sm.query_prompt(q) for q in queries]
    gen = GenConfig(do_sample=True, max_new_tokens=8, batch_size=3)
    sft = sm.generate(prompts, "sft", gen, seed=11)
    mix0 = sm.generate(prompts, "sft", gen, seed=11, mixture={"alpha": 0.0, "query_prompts": qprompts})
    assert mix0 == sft
    uncond = sm.generate(qprompts, "uncond", gen, seed=11)
    m1 = {"alpha": 1.0, "query_prompts": qprompts}
    assert sm.generate(prompts, "sft", gen, seed=11, mixture=m1) == uncond
    assert m1["uncond_share"] == [1.0, 1.0, 1.0]
    # in between, tokens come from both models, and the shares scatter around alpha
    m = {"alpha": 0.7, "query_prompts": qprompts * 4}
    mixed = sm.generate(prompts * 4, "sft", GenConfig(do_sample=True, max_new_tokens=8, batch_size=12), seed=11,
                        mixture=m)
    assert mixed != sft * 4 and mixed != uncond * 4
    assert 0.45 < sum(m["uncond_share"]) / len(m["uncond_share"]) < 0.95


def test_same_seed_same_sample_and_greedy_is_deterministic(sm):
    prompt = sm.passage_prompt("who played wolverine", PASSAGES)
    gen = GenConfig(do_sample=True, max_new_tokens=8)
    assert sm.generate([prompt], "sft", gen, seed=3) == sm.generate([prompt], "sft", gen, seed=3)
    assert sm.generate([prompt], "sft", GenConfig(max_new_tokens=8)) == sm.generate([prompt], "sft", GenConfig(max_new_tokens=8))


def test_a_seeded_call_leaves_the_callers_rng_alone(sm):
    """A seed seeds that call only: the process-wide torch RNG is where the caller left it, so tests
    (and app threads) do not couple through it."""
    prompt = sm.passage_prompt("who played wolverine", PASSAGES)
    gen = GenConfig(do_sample=True, max_new_tokens=8)
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    first = sm.generate([prompt], "sft", gen, seed=3)
    assert torch.equal(torch.rand(4), expected)
    torch.rand(7)  # whatever state the caller is in, the same seed gives the same sample
    assert sm.generate([prompt], "sft", gen, seed=3) == first


def test_unknown_stage_is_a_clear_error(sm):
    with pytest.raises(ValueError, match="not loaded"):
        sm.generate(["x"], "aligned-r9")


def test_missing_model_names_the_fixing_command(tmp_path, monkeypatch):
    import racq.models as m

    monkeypatch.setattr(m, "DEFAULT_BASE_MODEL", tmp_path / "cache" / "SmolLM2")
    with pytest.raises(ModelMissing, match="racq models setup"):
        m.check_model_dir(m.DEFAULT_BASE_MODEL)
    with pytest.raises(ModelMissing, match="config.json"):
        load_base(tmp_path / "not-a-model")


def test_corrupt_adapter_marks_stage_unavailable_not_fatal(tiny_lm, tiny_adapters, tmp_path):
    import shutil

    root = tmp_path / "adapters"
    shutil.copytree(tiny_adapters / "sft", root / "sft")
    (root / "aligned").mkdir()
    (root / "aligned" / "adapter_config.json").write_text("{not json")
    sm2 = StageModel.load(tiny_lm, root)
    assert sm2.stages == ["base", "sft"]
    assert "aligned" in sm2.errors and sm2.errors["aligned"]


def test_prompt_trims_passages_to_budget(real_tokenizer):
    long = Passage("Long", " ".join(["word"] * 2000))
    text = render(passage_prompt_messages("q?", [long] * 3, real_tokenizer, top_k=3, passage_tokens=20),
                  real_tokenizer)
    assert len(real_tokenizer(text)["input_ids"]) < 200
    assert text.count("[") >= 3 and "User Query: q?" in text and "Clarifying Question:" in text


def test_generation_uses_no_grad_and_leaves_weights(sm):
    before = {k: v.clone() for k, v in sm.model.state_dict().items() if "lora_A" in k}
    sm.generate([sm.query_prompt("x")], "sft", GenConfig(max_new_tokens=3))
    after = sm.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_base_reply_is_primed_as_a_question_and_trained_stages_are_not(sm):
    from racq.prompts import base_opener

    openers = sm.prompt.base_openers
    assert len(openers) >= 3  # one constant opener would fingerprint base in a blind pair
    queries = ["who played wolverine", "who won the world cup", "what is a fox", "when was x-men released",
               "who created wolverine", "where is russia", "who sings angel", "how tall is hugh jackman"]
    prompts = [sm.passage_prompt(q, PASSAGES) for q in queries]
    out = sm.generate(prompts + prompts[:1], ["base"] * len(prompts) + ["sft"],
                      GenConfig(max_new_tokens=4, batch_size=9))
    picked = [base_opener(p, openers) for p in prompts]
    assert all(o.startswith(op) for o, op in zip(out, picked))  # each prompt gets its own opener...
    assert len(set(picked)) >= 2  # ...and they vary over queries
    assert [base_opener(p, openers) for p in prompts] == picked  # stable: a hash, not a random draw
    assert not any(out[-1].startswith(op) for op in openers)
    assert base_opener(prompts[0], []) == ""


def test_generation_stops_at_the_first_question_mark(tiny_lm):
    """A row stops once it has produced '?': an adapter biased towards '?' ends early."""
    from racq.config import PromptConfig
    from racq.models import load_base

    model, tok = load_base(tiny_lm)
    qid = tok("?", add_special_tokens=False)["input_ids"][-1]
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():  # an output bias that makes '?' the argmax at every step
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[qid] = 100.0
    model.lm_head = head
    plain = StageModel.load(tiny_lm, tiny_lm / "none", model=model, tokenizer=tok, prompt=PromptConfig(base_openers=[]))
    prompt = plain.passage_prompt("who played wolverine", PASSAGES)
    stopped = plain.generate([prompt], "base", GenConfig(max_new_tokens=12))[0]
    full = plain.generate([prompt], "base", GenConfig(max_new_tokens=12, stop_at_question=False))[0]
    assert stopped.count("?") == 1 and stopped.endswith("?")
    assert len(full) > len(stopped) and full.startswith(stopped)
