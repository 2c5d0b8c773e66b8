"""Best-of-N at inference (GenConfig.best_of): a stage's greedy reply plus best_of - 1 seeded samples of
the same prompt, and the question kept that the faithfulness scorer prefers on run-time signals alone:
grounded with >= 2 distinct options, then grounded, then not offering an option twice, then option
support; the greedy question wins ties. Never the query's human interpretations: an app does not have
them, and they are what usefulness is measured against.

    from racq.bestof import pick, sample_replies
    [samples] = sample_replies(joint, [("aligned", prompt)], GenConfig(best_of=5))   # joint engine or StageModel
    raws = [greedy_raw, *samples]
    kept, cands = pick(query, [extract_question(r) for r in raws], lambda q: scorer.score(query, passages, q))

Explore and `racq ask` (racq.service.Asker) and `racq eval --set best_of=5` (racq.eval.gen) call these
two functions, so the eval measures exactly what the app asks: the samples are seeded with SEED and
drawn by the engine the app runs (the joint engine samples every stage's rows in one batch; a row's
draws do not depend on the batch, so one prompt alone gets the same samples as with other stages).
Why this rule and what it buys (measured on t2 first, then on test; bench/bench_rerank.py,
docs/eval/test-usefulness-report.md): aligned useful & grounded 11.4 -> 17.1 % (PaQa) / 14.4 -> 18.9 %
(CAmbigNQ), hallucinated 10.5 -> 2.9 / 14.4 -> 1.1 %, repeats ~1 %; coverage of interpretations barely
moves (the scorer cannot see it). It costs best_of - 1 extra generations per stage, so it is off by default.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from racq.scoring.options import repeats_option
from racq.scoring.usefulness import usefulness

SEED = 0  # the samples of one (prompt, stage, settings) are the same every time: cached, evaluated, shown


def sample_replies(engine, jobs: Sequence[tuple[str, str]], gen) -> list[list[str]]:
    """best_of - 1 sampled raw replies per job (stage, prompt), seeded by SEED. `engine` is the joint
    engine (racq.multilora.JointStages.sample: every job's samples as rows of one batch, the app's
    default) or a StageModel-like `generate` (the PEFT path or the vLLM stages: one seeded batch per job).
    The two draw from the same distribution but not the same draws, so the eval samples with the engine
    the app runs (`racq eval --set engine=joint`)."""
    n = gen.best_of - 1
    if n <= 0:
        return [[] for _ in jobs]
    sampling = dataclasses.replace(gen, do_sample=True, best_of=1, batch_size=n,
                                   no_repeat_ngram_size=gen.sample_guard)
    if hasattr(engine, "sample"):
        return engine.sample(jobs, n, sampling, seed=SEED)
    return [engine.generate([prompt] * n, stage, sampling, seed=SEED) for stage, prompt in jobs]


def signals(question: str, query: str, faith: dict | None) -> dict:
    """What the pick reads from one candidate's faithfulness scores (None: an empty question, not scored)."""
    if not question or faith is None:
        return {"grounded": 0, "distinct_options": 0, "repeats": 0, "option_support": 0.0}
    use = usefulness(query, question, (), (), faith=faith)  # grounded and distinct options, as racq eval counts them
    return {"grounded": use["grounded"], "distinct_options": use["distinct_options"],
            "repeats": int(repeats_option(question, query)),
            "option_support": float(faith.get("option_support") or 0.0)}


def pick_key(sig: dict, greedy: bool) -> tuple:
    """What the pick maximises (the greedy candidate wins ties)."""
    return (bool(sig["grounded"] and sig["distinct_options"]), bool(sig["grounded"]), not sig["repeats"],
            sig["option_support"], greedy)


def pick(query: str, questions: Sequence[str], faith_of: Callable[[str], dict]) -> tuple[int, list[dict]]:
    """(index of the kept question, one {question, faith, signals} per candidate); questions[0] is the
    greedy one. `faith_of(question)` is the scorer against the passages the card and the eval score with."""
    cands = []
    for q in questions:
        faith = faith_of(q) if q else None
        cands.append({"question": q, "faith": faith, "signals": signals(q, query, faith)})
    kept = max(range(len(cands)), key=lambda i: pick_key(cands[i]["signals"], i == 0))
    return kept, cands
