"""Usefulness (racq.scoring.usefulness), evidence selection (racq.evidence), the decoding guard (racq.decoding)
and the faithful-and-useful pair ranking (racq.train.pairs.ranking_key).

    HF_HUB_OFFLINE=1 .venv/bin/pytest tests/test_usefulness.py -q
"""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from racq.data import DataError, Passage, load_examples
from racq.decoding import NewTextNoRepeatNGram, guard_processors
from racq.config import GenConfig
from racq.evidence import block, lead, prompt_passages, _ntok
from racq.scoring.options import extract_options
from racq.prompts import format_passages, trim
from racq.scoring.usefulness import (Interpretation, covered, distinct_cores, evidence, interpretations_for,
                             load_interpretations, load_labels, matcher_agreement, useful_scores, usefulness)

QUERY = "Who won the world cup?"
INTERPS = [Interpretation("Who won the 2018 men's world cup?", ("France",)),
           Interpretation("Who won the 2019 women's world cup?", ("United States", "USA")),
           Interpretation("Who won the first world cup?", ("Uruguay",))]
# The matcher's kappa on data/calibration/usefulness.jsonl when the set was labelled: 0.806 (290 pairs,
# accuracy 0.907; data/calibration/README.md). The floor fails if the matcher drifts towards chance.
KAPPA_FLOOR = 0.6


def test_options_naming_interpretations_are_counted_once_each():
    u = useful_scores(QUERY, "Which one: the 2018 men's, or the 2019 women's?", INTERPS, grounded=1)
    assert u["covered"] == [0, 1] and u["coverage"] == pytest.approx(2 / 3) and u["covers_any"] == 1
    assert u["n_distinct"] == 2 and u["distinct_options"] == 1 and u["useful_grounded"] == 1
    # an answer names its interpretation too
    assert useful_scores(QUERY, "Do you mean France or Uruguay?", INTERPS, 1)["covered"] == [0, 2]


def test_echo_and_repeat_are_not_distinct_options_and_vague_questions_cover_nothing():
    echo = useful_scores(QUERY, "Which one: the one who won the world cup, or the 2018 one?", INTERPS, 1)
    assert echo["n_distinct"] == 1 and echo["distinct_options"] == 0 and echo["useful_grounded"] == 0
    twice = useful_scores(QUERY, "Which one: the 2018 men's, or the 2018 men's?", INTERPS, 1)
    assert twice["n_distinct"] == 1 and twice["covered"] == [0]
    vague = useful_scores(QUERY, "Which world cup are you interested in?", INTERPS, 0)
    assert vague["covers_any"] == 0 and vague["coverage"] == 0 and vague["useful_grounded"] == 0
    assert distinct_cores([["a", "b"], ["b", "a"], []]) == 1  # same words in another order: one option


def test_a_different_number_is_no_match_and_no_reference_is_unknown():
    seasons = [Interpretation("What happened in season 5?", ("x",)), Interpretation("What happened in season 3?", ("y",))]
    assert covered([["7"]], "What happened?", seasons) == []
    assert covered([["3"]], "What happened?", seasons) == [1]
    none = useful_scores(QUERY, "Which one: the 2018 men's, or the 2019 women's?", [], 1)
    assert none["coverage"] is None and none["useful_grounded"] is None and none["distinct_options"] == 1


def test_usefulness_grounds_with_the_scorer_and_evidence_finds_answers_in_units():
    from racq.scoring.faithfulness import FaithfulnessConfig, Scorer

    ps = [Passage("2018 FIFA World Cup", "France won the 2018 men's World Cup in Russia."),
          Passage("2019 FIFA Women's World Cup", "The United States won the 2019 women's World Cup.")]
    scorer = Scorer(FaithfulnessConfig(use_semantic=False))
    u = usefulness(QUERY, "Which one: the 2018 men's, or the 2019 women's?", ps, INTERPS, scorer=scorer)
    assert u["grounded"] == 1 and u["useful_grounded"] == 1
    bad = usefulness(QUERY, "Which one: the 2018 men's, or the 1930 one?", ps, INTERPS, scorer=scorer)
    assert bad["grounded"] == 0 and bad["useful_grounded"] == 0 and bad["covers_any"] == 1
    ev = evidence(QUERY, ps, INTERPS)
    assert ev["evidenced"] == [0, 1] and ev["evidence_2plus"] == 1
    assert evidence(QUERY, ps[:1], INTERPS)["evidence_2plus"] == 0


def test_every_paqa_and_cambignq_query_has_interpretations():
    exs = load_examples(["paqa", "cambignq"])
    assert len(exs) == 988
    assert all(len(interpretations_for(e.query)) >= 2 for e in exs)
    assert interpretations_for("a query AmbigNQ never saw") == []


def test_bad_interpretations_file_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps({"key": "q", "annotations": [[{"question": "q?", "answer": ["a"]}]]}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"bad.jsonl.gz:2: "):
        load_interpretations(path)


def test_hand_labels_are_on_training_splits_and_the_matcher_agrees_above_the_floor():
    items = load_labels()
    assert len(items) >= 100 and {it["split"] for it in items} <= {"t1", "t2"}  # never the test split
    assert {it["label"] for it in items} == {"names", "misses"}
    a = matcher_agreement(items)
    assert a["n"] == len(items) and a["kappa"] > KAPPA_FLOOR, a


# ---------------------------------------------------------------- evidence selection
def _passages():
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()
    return [Passage(f"Title {i}", ". ".join(f"The cup {w} {i} was won in {1990 + k}" for k, w in enumerate(words)) + ".")
            for i in range(6)]


def test_lead_evidence_is_the_old_prompt_block(real_tokenizer):
    ps = _passages()
    old = "\n".join(f"[{i}] {p.title}: " + trim(p.text, 64, real_tokenizer) for i, p in enumerate(ps[:3], 1))
    assert format_passages(ps, 3, 64, real_tokenizer) == old
    assert prompt_passages("cup", ps, real_tokenizer) == lead(ps, 3, 64, real_tokenizer)


def test_mmr_evidence_stays_within_leads_budget_and_reaches_lower_passages(real_tokenizer):
    ps = _passages()
    shown = prompt_passages("who won the cup in 1995", ps, real_tokenizer, 3, 64, "mmr")
    budget = _ntok(block(lead(ps, 3, 64, real_tokenizer)), real_tokenizer)
    assert 0 < _ntok(block(shown), real_tokenizer) <= budget
    assert all(p.title in {q.title for q in ps} for p in shown)
    assert any("1995" in p.text for p in shown)  # the query's own year is chosen, not just each head
    with pytest.raises(ValueError, match="evidence must be one of"):
        prompt_passages("q", ps, real_tokenizer, evidence="best")


def _bench(name: str = "bench_evidence"):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_evidence_oracle_finds_the_readings_lead_misses_within_leads_budget(real_tokenizer):
    # The readings sit in late sentences of lower-ranked passages, behind filler lead's heads show.
    filler = ". ".join(f"The tournament draws crowds in season {w}" for w in "one two three four five six seven eight nine ten".split())
    ps = [Passage("Cup A", filler + ". France beat Croatia in the 2018 men's final."),
          Passage("Cup B", filler + "."),
          Passage("Cup C", filler + "."),
          Passage("Cup D", filler + ". The United States won the 2019 women's final."),
          Passage("Cup E", filler + ". Uruguay won the first world cup in 1930.")]
    oracle = _bench().oracle_passages
    head = lead(ps, 3, 64, real_tokenizer)
    budget = _ntok(block(head), real_tokenizer)
    shown = oracle(QUERY, ps, INTERPS, budget, real_tokenizer)
    assert 0 < _ntok(block(shown), real_tokenizer) <= budget
    assert evidence(QUERY, head, INTERPS)["evidenced"] == []
    assert evidence(QUERY, shown, INTERPS)["evidenced"] == [0, 1, 2]
    assert [p.title for p in shown] == ["Cup A", "Cup D", "Cup E"]  # rank order, only units that add a reading
    assert all("crowds" not in p.text for p in shown)
    one = _ntok(block([Passage("Cup A", "France beat Croatia in the 2018 men's final.")]), real_tokenizer) + 2  # + the newline the cost estimate counts
    tight = oracle(QUERY, ps, INTERPS, one, real_tokenizer)  # room for one unit only: the budget binds
    assert _ntok(block(tight), real_tokenizer) <= one and len(evidence(QUERY, tight, INTERPS)["evidenced"]) == 1
    assert oracle(QUERY, ps, [], budget, real_tokenizer) == []  # no interpretations, nothing to pick


def test_best_of_n_picks_a_grounded_two_option_sample_over_a_vague_greedy_question():
    from racq.scoring.faithfulness import FaithfulnessConfig, Scorer

    bench, scorer = _bench("bench_rerank"), Scorer(FaithfulnessConfig(use_semantic=False))
    ps = [Passage("Cup", "France beat Croatia in the 2018 men's final. The United States won the 2019 women's final.")]
    m = lambda q, greedy=False: bench.measure(QUERY, q, ps, INTERPS, scorer, greedy)  # noqa: E731
    vague = m("Which one: the final, or the final?", greedy=True)
    useful = m("Which one: the 2018 men's final, or the 2019 women's final?")
    invented = m("Which one: the 2018 men's final, or the 1966 final?")
    assert (vague["repeats"], vague["distinct_options"]) == (1, 0)
    assert (useful["grounded"], useful["distinct_options"], useful["covers_any"], useful["useful_grounded"]) == (1, 1, 1, 1)
    assert invented["hallucinated"] == 1
    # the pick reads run-time signals only; no candidate better than greedy leaves greedy
    assert max([vague, invented, useful], key=bench.pick_key)["question"] == useful["question"]
    assert max([vague, invented], key=bench.pick_key)["question"] == vague["question"]
    twin = dict(vague, greedy=0)
    assert max([twin, vague], key=bench.pick_key) is vague


# ---------------------------------------------------------------- decoding guard
def test_guard_bans_repeats_of_the_reply_but_not_of_the_prompt():
    assert guard_processors(GenConfig(), 5) == []
    (proc,) = guard_processors(GenConfig(no_repeat_ngram_size=2), prompt_len=3)
    assert isinstance(proc, NewTextNoRepeatNGram)
    # prompt 7 8 9, reply 4 5 4: the reply's 2-gram (4, 5) may not come again, the prompt's (8, 9) may
    ids = torch.tensor([[7, 8, 9, 4, 5, 4]])
    out = proc(ids, torch.zeros(1, 12))
    assert out[0, 5] == -float("inf") and out[0, 9] == 0 and out[0, 4] == 0
    prompt_only = proc(torch.tensor([[8, 9, 8]]), torch.zeros(1, 12))  # nothing generated yet
    assert torch.isfinite(prompt_only).all()


# ---------------------------------------------------------------- pair ranking
def test_ranking_prefers_faithful_and_useful_over_faithful_and_vague():
    from racq.train.pairs import _pick, _with_usefulness, faithfulness_key, ranking_key

    def s(question, n, hall):
        opts = [{"core": o.core} for o in extract_options(question, QUERY)]
        return {"n_options": n, "hallucinated": hall, "option_support": 1.0 - hall, "novel_content": 0.0,
                "options": opts}

    texts = ["Do you mean the final?", "Which one: the 2018 men's, or the 2019 women's?", "Which one: the 1930 or 1950?"]
    raw = [s(texts[0], 1, 0), s(texts[1], 2, 0), s(texts[2], 2, 1)]
    scored = [_with_usefulness(r, QUERY, t, INTERPS) for r, t in zip(raw, texts)]
    assert faithfulness_key(raw[0]) == faithfulness_key(raw[1])  # faithfulness alone cannot tell them apart
    assert ranking_key(scored[1]) > ranking_key(scored[0]) > ranking_key(scored[2])
    assert _pick(texts, 3, scored, best=True) == [(1, scored[1])]
    assert _pick(texts, 3, scored, best=False) == [(2, scored[2])]
    assert ranking_key(raw[1]) == faithfulness_key(raw[1])  # without usefulness: the old ranking
