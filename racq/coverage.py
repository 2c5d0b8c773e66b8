"""Does the corpus cover a query at all? And if not, what may a stage still ask?

    from racq.coverage import assess, guard
    cov = assess(index.search(query, 5))     # {"covered": bool, "score": 0.43, "threshold": 0.55, "why": "..."}
    done = guard(done, cov, query, passages, scorer)   # a stage's final dict, options checked when not covered

`Asker.ask_stream` (racq.service) puts `assess`'s dict in its "passages" event as "coverage" and passes
every stage's final dict through `guard`; Explore shows a notice when the corpus does not cover the query.

The signal: the retrieval score of the best passage (the index embedder's cosine; the shipped index's
MiniLM). Calibrated with bench/calibrate_coverage.py on data that is neither the test split nor the
no-evidence eval set: the PaQa + CAmbigNQ t1/t2 queries (their passages are in the corpus: covered, 617)
against the calibration split of data/ambignq/noevidence.jsonl.gz (150 AmbigNQ *train* queries sharing no
topic with the corpus, bench/build_noevidence.py). Top score separates them with ROC AUC 0.988; the share
of query content words found in the top-3 passages does worse (0.949) and is close to the lexical rule
that built the uncovered set, so it would measure the rule rather than retrieval; the gap between the
first and third score carries nothing (0.565). At 0.55: "covered" has precision 0.987 and recall 0.963
(3.7% of covered training queries are flagged), and 94.7% of uncovered queries are flagged. A different
embedder has another cosine scale: re-run the calibration and set CoverageConfig.min_top_score.

The guard, and why this one. A query the corpus does not cover has passages about something else; any
option a stage names is then either lifted from those unrelated passages or made up. Refusing to ask
would leave the user with nothing, and a question about the unrelated passages would mislead, so when
the signal fires every stage's question goes through the faithfulness scorer (racq.scoring.faithfulness, the one
Explore and `racq eval` use; a lexical-only one when the caller has none, which accepts fewer options and
so errs on the safe side):
- no option offered -> kept (nothing to invent: "Which year are you interested in?");
- every option supported -> kept;
- some supported -> rebuilt to offer only those ("Do you mean A or B?"; one left: "Do you mean A, or
  something else?");
- none supported (or the check failed) -> replaced by a generic question built from the query
  ("Could you say more about what you mean by "..."?", or a query-free one when the quoted query would
  itself read as a list of options), which offers no option at all.
The model's own question stays in the dict as `unguarded` ({question, scores}) and `guard` says what was
done, so a screen or a report can show both. Covered queries pass through unchanged: the signal is
imperfect (precision 0.987), and a false alarm then only drops options the scorer cannot find.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from racq.config import helpfield


@dataclass
class CoverageConfig:
    min_top_score: float = helpfield(
        0.55, "Best passage's retrieval score (cosine) below which the corpus does not cover the query. "
              "0.55 for the shipped MiniLM index: covered precision 0.987, recall 0.963 on t1/t2 vs 94.7% of "
              "uncovered AmbigNQ train queries flagged (bench/calibrate_coverage.py).")
    guard: bool = helpfield(True, "When not covered, keep only options the passages support (else ask a "
                                  "generic question).")


NOTICE = "The corpus does not cover this query"


def _score(hit) -> float:
    return float(hit["score"] if isinstance(hit, dict) else hit.score)


def assess(hits: Sequence, config: CoverageConfig | None = None) -> dict:
    """{covered, score, threshold, why} from the retrieved hits (racq.retrieval.Hit or the passages
    event's dicts), best first."""
    c = config or CoverageConfig()
    if not hits:
        return {"covered": False, "score": None, "threshold": c.min_top_score, "why": "no passage was retrieved"}
    top = _score(hits[0])
    covered = top >= c.min_top_score
    rel = ">=" if covered else "<"
    return {"covered": covered, "score": round(top, 4), "threshold": c.min_top_score,
            "why": f"best passage similarity {top:.2f} {rel} {c.min_top_score:.2f}"}


GENERIC = "Could you tell me more about what you are looking for?"


def generic_question(query: str) -> str:
    """A question that offers nothing: the query quoted back, or GENERIC when the quoted query would read
    as options itself (a query holding "or": "... a vaccination or infection")."""
    from racq.scoring.options import extract_options

    q = re.sub(r"[\s?.!]+$", "", query.strip()) or query.strip()
    out = f'Could you say more about what you mean by "{q}"?'
    return GENERIC if extract_options(out, query) else out


def options_question(texts: Sequence[str]) -> str:
    if len(texts) == 1:
        return f"Do you mean {texts[0]}, or something else?"
    return f"Do you mean {', '.join(texts[:-1])} or {texts[-1]}?"


_LEXICAL = None


def _lexical_scorer():
    global _LEXICAL
    if _LEXICAL is None:
        from racq.scoring.faithfulness import FaithfulnessConfig, Scorer

        _LEXICAL = Scorer(FaithfulnessConfig(use_semantic=False))
    return _LEXICAL


def guard(done: dict, cov: dict | None, query: str, passages: Sequence, scorer=None,
          config: CoverageConfig | None = None) -> dict:
    """A stage's final dict ({question, raw, scores?, ...}) as it may be shown for this coverage: the same
    dict when covered (or guard off or no question), else a new one (see the module docstring)."""
    c = config or CoverageConfig()
    if not c.guard or not cov or cov.get("covered", True) or not done.get("question"):
        return done
    scorer = scorer or _lexical_scorer()
    question = done["question"]
    try:
        scores = done.get("scores") or scorer.score(query, passages, question)
    except Exception as e:  # noqa: BLE001 - what cannot be checked is not offered
        scores, why = None, f"options not checked ({type(e).__name__}: {e}): generic question"
    if scores is not None:
        opts = scores.get("options") or []
        kept = list(dict.fromkeys(o["text"] for o in opts if o.get("supported")))
        if not opts or len(kept) == len(opts):
            return {**done, "guard": "kept: " + ("every option is supported" if opts else "no option offered"),
                    "unguarded": None}
        why = (f"pruned: kept {len(kept)} of {len(opts)} options (the others are not in the passages)" if kept
               else "no option is in the passages: generic question")
        new = options_question(kept) if kept else generic_question(query)
    else:
        new = generic_question(query)
    out = {k: v for k, v in done.items() if k not in ("scores", "score_error")}
    out.update(question=new, guard=why, unguarded={"question": question, "scores": scores})
    if "scores" in done:  # the caller scores: score what is shown now
        try:
            out["scores"] = scorer.score(query, passages, new)
        except Exception as e:  # noqa: BLE001
            out["score_error"] = f"{type(e).__name__}: {e}"
    return out
