"""Best-of-N at inference (racq.bestof, GenConfig.best_of): the pick on hand-written questions, the app's
path (racq.service.Asker on the joint engine, a tiny random model, a real index, the lexical scorer) and
`racq eval --set best_of=N`, which must keep exactly what the app's rule keeps.

    .venv/bin/pytest -q tests/test_bestof.py
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from apphelpers import one_torch_thread
from racq.bestof import pick, sample_replies, signals
from racq.config import GenConfig
from racq.data import Passage
from racq.prompts import extract_question
from racq.scoring.faithfulness import FaithfulnessConfig, Scorer

QUERY = "who won the world cup"
CUP = [Passage("Cup", "France beat Croatia in the 2018 men's final. The United States won the 2019 women's final.")]


@pytest.fixture(scope="module")
def lexical():
    return Scorer(FaithfulnessConfig(use_semantic=False))


class CoinScorer:
    """The lexical scorer, except that a question whose sha1 starts with an even byte counts as grounded with
    two distinct supported options. A tiny random model's questions are never grounded, so with the real
    scorer alone greedy would always be kept and a pick that is never applied would pass unnoticed."""

    def __init__(self, inner):
        self.inner = inner

    def score(self, query, passages, question):
        out = self.inner.score(query, passages, question)
        if question and hashlib.sha1(question.encode()).digest()[0] % 2 == 0:
            opts = [{"text": f"coin {c}", "core": [f"coin{c}"], "supported": True, "how": "coin"} for c in "ab"]
            out = {**out, "options": opts, "n_options": 2, "hallucinated": 0, "option_support": 1.0}
        return out


def test_pick_prefers_grounded_distinct_options_and_keeps_greedy_on_ties(lexical):
    faith = lambda q: lexical.score(QUERY, CUP, q)  # noqa: E731
    vague = "Which one: the final, or the final?"
    useful = "Which one: the 2018 men's final, or the 2019 women's final?"
    invented = "Which one: the 2018 men's final, or the 1966 final?"
    kept, cands = pick(QUERY, [vague, invented, useful], faith)
    assert kept == 2 and cands[2]["signals"]["grounded"] == 1 and cands[2]["signals"]["distinct_options"] == 1
    assert cands[0]["signals"]["repeats"] == 1 and cands[1]["faith"]["hallucinated"]
    assert pick(QUERY, [vague, invented], faith)[0] == 0  # nothing better than greedy: greedy stays
    assert pick(QUERY, [vague, vague], faith)[0] == 0  # a sample equal to greedy does not replace it
    # an empty candidate is never scored and never beats a grounded one
    kept, cands = pick(QUERY, ["", useful], faith)
    assert kept == 1 and cands[0]["faith"] is None and cands[0]["signals"] == signals("", QUERY, None)


@pytest.fixture(scope="module")
def asker(tiny_lm, tiny_adapters, passage_index, tmp_path_factory, lexical):
    """The app's Asker (joint engine) with the coin scorer, so the pick has something to choose."""
    from racq.generate import StageModel
    from racq.retrieval import Index
    from racq.service import Asker

    root = tmp_path_factory.mktemp("bestof-adapters")
    for name in ("sft", "aligned"):
        shutil.copytree(tiny_adapters / name, root / name)
    rc, _ = passage_index
    with one_torch_thread():
        a = Asker(StageModel.load(tiny_lm, root), Index.load(rc.index_dir, cfg=rc), CoinScorer(lexical))
        a.refresh()
        yield a


def test_asker_keeps_the_scorers_favourite_of_greedy_and_seeded_samples(asker):
    gen = GenConfig(max_new_tokens=8, best_of=4)
    greedy = asker.ask("who won the world cup in 2018", k=2, stages=["sft", "aligned"],
                       gen=GenConfig(max_new_tokens=8))["questions"]
    events = list(asker.ask_stream("who won the world cup in 2018", k=2, stages=["sft", "aligned"], gen=gen,
                                   score=True))
    query = events[0]["query"]
    passages = [h.passage for h in asker.retrieve(query, 2)]
    assert [p.pid for p in passages] == [p["pid"] for p in events[0]["passages"]]
    shown, prompt = passages[:asker.prompt.top_k], asker.stage_model.passage_prompt(query, passages)
    for stage in ("sft", "aligned"):
        mine = [e["event"] for e in events if e.get("stage") == stage]
        assert mine[0] == "start" and mine[-2:] == ["picking", "stage"]
        final = [e for e in events if e.get("stage") == stage and e["event"] == "stage"][0]
        best = final["best_of"]
        assert best["n"] == 4 and len(best["candidates"]) == 4
        assert best["candidates"][0] == greedy[stage]  # candidate 0 is the greedy question the app asks
        # the samples are the seeded rows racq.bestof draws on the app's (joint) engine, every time, and the
        # same whether this stage is sampled alone or beside the other
        samples = [extract_question(r) for r in sample_replies(asker.together, [(stage, prompt)], gen)[0]]
        assert best["candidates"][1:] == samples
        assert samples == [extract_question(r) for r in sample_replies(asker.together, [(stage, prompt)], gen)[0]]
        kept, _ = pick(query, best["candidates"], lambda q: asker.scorer.score(query, shown, q))
        assert best["kept"] == kept and final["question"] == best["candidates"][kept]
        if final["question"]:
            assert final["scores"] == asker.scorer.score(query, shown, final["question"]) and "useful" in final
    assert any(e["best_of"]["kept"] for e in events if e["event"] == "stage")  # a sample did replace greedy
    again = asker.ask("who won the world cup in 2018", k=2, stages=["sft", "aligned"], gen=gen)
    assert again["best_of"] == {s: e["best_of"] for e in events if e["event"] == "stage" for s in [e["stage"]]}


def test_joint_samples_are_seeded_per_row_whatever_the_batch_or_the_guesses(asker):
    from racq.multilora import JointStages

    sm = asker.stage_model
    prompt = sm.passage_prompt("who won the world cup", CUP)
    hot = GenConfig(max_new_tokens=8, do_sample=True, temperature=1.5, top_k=0, top_p=1.0)
    both = asker.together.sample([("sft", prompt), ("aligned", prompt), ("base", prompt)], 4, hot, seed=0)
    assert [len(x) for x in both] == [4, 4, 4] and len({t for x in both for t in x}) > 3  # rows differ
    assert all(t.startswith(sm.opener(prompt, "base")) for t in both[2])  # base is primed, as on the PEFT path
    # a row's draws depend on (seed, stage, row) only: alone, or one token per step, it writes the same
    assert [asker.together.sample([(s, prompt)], 4, hot, seed=0)[0] for s in ("sft", "aligned", "base")] == both
    assert JointStages(sm, draft_tokens=0).sample([("sft", prompt), ("aligned", prompt), ("base", prompt)], 4, hot,
                                                  seed=0) == both
    assert asker.together.sample([("sft", prompt)], 4, hot, seed=1)[0] != both[0]
    # top-k 1 leaves one token to draw: every sample is the greedy reply
    greedy = {s: t for s, t, done in asker.together.stream([("sft", prompt)], GenConfig(max_new_tokens=8)) if done}
    assert asker.together.sample([("sft", prompt)], 3, GenConfig(max_new_tokens=8, do_sample=True, top_k=1), seed=0) \
        == [[greedy["sft"]] * 3]


def test_the_sample_guard_changes_the_samples_only(asker):
    """GenConfig.sample_no_repeat_ngram_size: best-of's samples are drawn under the decoding guard, the
    greedy candidate (what the app asks without best-of) is not."""
    from dataclasses import replace

    query = "who won the world cup in 2018"
    hot = GenConfig(max_new_tokens=24, best_of=5, top_k=3, stop_at_question=False,  # few choices: tokens recur
                    sample_no_repeat_ngram_size=0)  # the samples unguarded
    guarded = replace(hot, sample_no_repeat_ngram_size=1)  # size 1: no token twice in a sample
    events = list(asker.ask_stream(query, k=2, stages=["sft"], gen=guarded, score=True))
    prompt = asker.stage_model.passage_prompt(events[0]["query"], [h.passage for h in asker.retrieve(
        events[0]["query"], 2)])
    free = sample_replies(asker.together, [("sft", prompt)], hot)[0]
    drawn = sample_replies(asker.together, [("sft", prompt)], guarded)[0]
    assert drawn == sample_replies(asker.together, [("sft", prompt)], replace(hot, no_repeat_ngram_size=1))[0]
    assert drawn != free  # the guard did act on the samples
    [final] = [e for e in events if e["event"] == "stage"]
    greedy = asker.ask(query, k=2, stages=["sft"], gen=replace(hot, best_of=1))["questions"]["sft"]
    assert final["best_of"]["candidates"] == [greedy, *map(extract_question, drawn)]


def test_joint_samples_follow_the_peft_paths_distribution(asker):
    """Same temperature, top-k and top-p as StageModel.generate: the first tokens of 400 seeded samples
    from each engine are one distribution (chi-squared test of homogeneity; the draws are seeded)."""
    from collections import Counter

    from scipy.stats import chi2_contingency

    sm = asker.stage_model
    prompt = sm.passage_prompt("who won the world cup", CUP)
    gen = GenConfig(max_new_tokens=1, do_sample=True, stop_at_question=False, batch_size=400)
    joint = Counter(asker.together.sample([("sft", prompt)], 400, gen, seed=0)[0])
    peft = Counter(sm.generate([prompt] * 400, "sft", gen, seed=0))
    assert len(joint) > 5  # really sampled, over many tokens
    common = [t for t in set(joint) | set(peft) if joint[t] + peft[t] >= 10]  # pooled rare tokens stay out
    table = [[c[t] for t in common] + [sum(c.values()) - sum(c[t] for t in common)] for c in (joint, peft)]
    if not table[0][-1] + table[1][-1]:
        table = [row[:-1] for row in table]  # no rare token at all
    assert chi2_contingency(table).pvalue > 0.001, table


def test_best_of_without_a_scorer_or_with_sampling_is_refused_before_any_event(asker):
    from dataclasses import replace

    with pytest.raises(ValueError, match="scorer"):
        next(replace(asker, scorer=None).ask_stream("who played wolverine", gen=GenConfig(best_of=3)))
    with pytest.raises(ValueError, match="do_sample"):
        next(asker.ask_stream("who played wolverine", gen=GenConfig(best_of=3, do_sample=True)))
    with pytest.raises(ValueError, match="best_of must be"):
        next(asker.ask_stream("who played wolverine", gen=GenConfig(best_of=0)))


@pytest.mark.parametrize("engine", ["peft", "joint"])
def test_eval_best_of_keeps_what_the_app_rule_keeps(tmp_path, tiny_lm, tiny_adapters, lexical, engine):
    from racq.eval.run import EvalConfig, EvalError, evaluate, pick_examples
    from racq.generate import StageModel
    from racq.multilora import JointStages

    examples, coin = pick_examples(["paqa", "cambignq"], "test", 3), CoinScorer(lexical)
    base = dict(stages=["sft", "aligned"], limit=3, results_dir=str(tmp_path / "results"),
                cache_dir=str(tmp_path / "cache"), base_model=str(tiny_lm), adapters_dir=str(tiny_adapters),
                max_new_tokens=6, n_boot=200, calibration=False, engine=engine)
    evaluate(EvalConfig(run="greedy", **base), examples=examples, scorer=coin)
    m = evaluate(EvalConfig(run="best", best_of=4, best_of_stages=["aligned"], **base), examples=examples,
                 scorer=coin)

    def rows(run):
        lines = (tmp_path / "results" / run / "per_example.jsonl").read_text().splitlines()
        return {(r["example"], r["stage"]): r for r in map(json.loads, lines)}

    greedy, best = rows("greedy"), rows("best")
    info = m["generation"]["best_of"]
    assert info["stages"] == ["aligned"] and info["of"] == {"aligned": 6} and info["sampled"] == 6
    sm = StageModel.load(tiny_lm, tiny_adapters, stages=["aligned"])
    sampler = JointStages(sm) if engine == "joint" else sm  # joint: the app's default engine draws them
    kept_sample = 0
    for (i, stage), r in best.items():
        if stage != "aligned":  # sft and gold are the greedy run's, untouched
            assert r["prediction"] == greedy[i, stage]["prediction"] and "best_of" not in r
            continue
        e, picked = examples[i], r["best_of"]
        by_pid = {p.pid: p for p in e.passages}
        passages = [by_pid[pid] for pid in r["passage_ids"]]
        # the candidates are the greedy question and the samples the app would draw for this prompt
        prompt = sm.passage_prompt(e.query, passages)
        gen = GenConfig(max_new_tokens=6, best_of=4)
        [samples] = sample_replies(sampler, [("aligned", prompt)], gen)
        assert picked["candidates"] == [greedy[i, "aligned"]["prediction"], *map(extract_question, samples)]
        kept, _ = pick(e.query, picked["candidates"], lambda q: coin.score(e.query, passages, q))
        assert picked["kept"] == kept and r["prediction"] == picked["candidates"][kept]
        kept_sample += kept > 0
    assert info["kept_sample"] == {"aligned": kept_sample} and kept_sample > 0  # a sample did replace greedy
    report = (tmp_path / "results" / "best" / "report.md").read_text()
    assert info["sample_guard"] == GenConfig().sample_no_repeat_ngram_size  # the app's default guard
    assert "best of 4" in report and f"no {info['sample_guard']}-gram twice" in report
    with pytest.raises(EvalError, match="best_of_stages"):
        evaluate(EvalConfig(run="bad", best_of=3, best_of_stages=["base"], **base), examples=examples, scorer=coin)


def test_explore_card_says_it_is_picking_and_which_candidate_was_kept():
    from racq.ui.explore import card_html

    picking = card_html("aligned", {"partial": "Which one: the", "picking": 5}, [])
    assert "data-state='generating'" in picking and "picking the best of 5" in picking
    assert "picking" not in card_html("aligned", {"partial": "Which one: the", "picking": 0}, [])
    done = {"question": "Which one: <b>A</b> or B?", "best_of": {"n": 5, "kept": 2,
                                                            "candidates": ["Greedy <i>one</i>?", "x", "y", "z", "w"]}}
    html = card_html("aligned", done, [])
    assert "best of 5: sample 2 of 4 was kept" in html and "Greedy &lt;i&gt;one&lt;/i&gt;?" in html
    kept_greedy = card_html("aligned", {**done, "best_of": {**done["best_of"], "kept": 0}}, [])
    assert "the greedy question was kept" in kept_greedy
