"""Usefulness of a clarifying question: does it offer the query's real interpretations, as distinct
options, and could the prompt's passages have supported them at all?

    from racq.scoring.usefulness import usefulness, interpretations_for
    interps = interpretations_for("Who won the world cup?")          # AmbigNQ's, [] when unknown
    usefulness("Who won the world cup?", "Which one: the 2018 men's or the 2019 women's?", passages, interps)
    # -> {'coverage': 0.5, 'covers_any': 1, 'n_distinct': 2, 'distinct_options': 1, 'grounded': 1,
    #     'useful_grounded': 1, 'covered': [0], 'n_interpretations': 2, ...}
    card_usefulness(query, question, faith)   # the Explore card's: usefulness + repeats_option, echoes_query
    stage_usefulness(racq.store.scores.scored_questions(db, key))   # the leaderboard's per-stage shares

Reference: AmbigNQ's human interpretations (Min et al. 2020, CC BY-SA 3.0) of every PaQa/CAmbigNQ query,
data/ambignq/interpretations.jsonl.gz (bench/build_interpretations.py; data/README.md). An interpretation
is one disambiguated question and its answers; a query's interpretations are its first `multipleQAs`
annotation (AmbigNQ's primary annotator; later ones re-phrase the same readings, so a union would count
one reading twice).

Matcher (`match_score`; agreement with hand labels in data/calibration/usefulness.jsonl, README there):
an option (racq.scoring.options: its core, the content words beyond the query and the question's frame) names an
interpretation when it holds at least `MATCH_SHARE` of the interpretation's *distinguishing words* (the
content words of its disambiguated question that the query lacks: "from 2015 to 2020", "men's") or of
one of its *answers* (minus the query's words); when both sides carry numbers, a disjoint set of
numbers is no match (the 3rd season is not the 5th). Each option names the interpretation(s) it matches
best, so one option is not counted for every reading that shares a frame word.

- coverage = share of the interpretations some option names; covers_any = coverage > 0;
- n_distinct = options whose word sets differ (racq.scoring.options already drops echoes of the query and exact
  repeats: "X, or X" is one option); distinct_options = n_distinct >= 2;
- useful_grounded = grounded (racq.eval.run's: >= 1 option, none unsupported) and distinct_options and
  covers_any -- the headline usefulness rate;
- `evidence`: which interpretations the passages hold evidence for (one passage unit, as the
  faithfulness scorer splits them, holds all words of an answer or all distinguishing words); the
  evidence ceiling is evidence_2plus = evidence for >= 2 interpretations (what the prompt makes possible).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from racq.scoring.calibration import labelled_rows
from racq.config import DATA_DIR
from racq.data import DataError, Passage, normalise_query
from racq.scoring.options import content_tokens, extract_options, is_number, norm_tokens

INTERPRETATIONS_FILE = DATA_DIR / "ambignq" / "interpretations.jsonl.gz"
# Share of an interpretation's distinguishing words (or of one answer's words) an option must hold.
# Chosen on the hand-labelled t1/t2 pairs (data/calibration/usefulness.jsonl), never on test.
MATCH_SHARE = 0.5
USEFUL_METRICS = ("useful_grounded", "covers_any", "coverage", "distinct_options")
EVIDENCE_METRICS = ("evidence_2plus", "evidence_share")


@dataclass(frozen=True)
class Interpretation:
    question: str
    answers: tuple[str, ...]


@lru_cache(maxsize=4)
def load_interpretations(path: str | Path = INTERPRETATIONS_FILE) -> dict[str, tuple[Interpretation, ...]]:
    """normalised query -> its interpretations (first multipleQAs annotation). Bad lines raise DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "interpretations file not found (bench/build_interpretations.py builds it)")
    out = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
                first = row["annotations"][0] if row["annotations"] else []
                out[row["key"]] = tuple(Interpretation(qa["question"], tuple(qa["answer"])) for qa in first)
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(path, n, f"not an interpretations record: {e!r}") from None
    return out


def interpretations_for(query: str, path: str | Path = INTERPRETATIONS_FILE) -> list[Interpretation]:
    """The query's human interpretations, [] for a query AmbigNQ does not hold."""
    return list(load_interpretations(str(path)).get(normalise_query(query), ()))


# ---------------------------------------------------------------- matching
def _keys(query: str, interp: Interpretation) -> tuple[list[list[str]], list[list[str]]]:
    """([distinguishing words per phrasing], [answer words...]) of an interpretation, the query's words
    removed. AmbigNQ joins alternative phrasings of one reading with "|"; a word the query spells with a
    space ("frying pan" / "Fryingpan") is the query's too."""
    qtok, squashed = set(norm_tokens(query)), "".join(query.lower().split())
    ours = lambda t, w: t in qtok or (len(w) > 4 and w in squashed)  # noqa: E731
    dists = []
    for phrasing in interp.question.split("|"):
        ws = [(t, w.lower()) for t, w in ((t, w) for w in phrasing.split() for t in content_tokens(w))]
        dists.append(list(dict.fromkeys(t for t, w in ws if not ours(t, w.strip("?,.:;\"'")))))
    answers = []
    for a in interp.answers:
        toks = list(dict.fromkeys(content_tokens(a)))
        rest = [t for t in toks if t not in qtok] or toks
        if rest:
            answers.append(rest)
    return [d for d in dists if d], answers


def _share(core: set[str], words: list[str]) -> float:
    if not words:
        return 0.0
    nums_w, nums_c = {t for t in words if is_number(t)}, {t for t in core if is_number(t)}
    if nums_w and nums_c and not nums_w & nums_c:
        return 0.0
    return sum(t in core for t in words) / len(words)


def match_score(core: Sequence[str], query: str, interp: Interpretation) -> float:
    """How much of the interpretation an option core names (0..1; see the module docstring)."""
    dists, answers = _keys(query, interp)
    core = set(core)
    return max([0.0] + [_share(core, words) for words in dists + answers])


def covered(cores: Sequence[Sequence[str]], query: str, interps: Sequence[Interpretation],
            share: float = MATCH_SHARE) -> list[int]:
    """Indices of the interpretations some option names (each option: its best match(es) >= share)."""
    hit = set()
    for core in cores:
        scores = [match_score(core, query, it) for it in interps]
        best = max(scores, default=0.0)
        if best >= share:
            hit |= {i for i, s in enumerate(scores) if s == best}
    return sorted(hit)


def distinct_cores(cores: Sequence[Sequence[str]]) -> int:
    """Options whose word sets differ ("X, or X" and an echo of the query are already dropped)."""
    return len({frozenset(c) for c in cores if c})


def useful_scores(query: str, question: str, interps: Sequence[Interpretation], grounded: int | None,
                  cores: Sequence[Sequence[str]] | None = None) -> dict:
    """The usefulness numbers from option cores (racq.scoring.options; extracted here when not given)."""
    if cores is None:
        cores = [o.core for o in extract_options(question, query)]
    n_distinct = distinct_cores(cores)
    out = {"n_interpretations": len(interps), "n_distinct": n_distinct, "distinct_options": int(n_distinct >= 2)}
    if not interps:  # no reference: coverage is unknown, not zero
        return {**out, "covered": [], "coverage": None, "covers_any": None, "useful_grounded": None}
    hit = covered(cores, query, interps)
    out.update(covered=hit, coverage=len(hit) / len(interps), covers_any=int(bool(hit)))
    out["useful_grounded"] = None if grounded is None else int(bool(grounded and out["distinct_options"] and hit))
    return out


def usefulness(query: str, question: str, passages: Sequence[Passage], interpretations: Sequence[Interpretation],
               scorer=None, faith: dict | None = None) -> dict:
    """Usefulness of `question` for `query` (module docstring), grounded against `passages` by the
    faithfulness scorer (`faith`, its result, when already computed). For the Explore card and the
    leaderboard as much as for `racq eval`."""
    if faith is None:
        from racq.scoring.faithfulness import Scorer

        faith = (scorer or Scorer()).score(query, passages, question)
    grounded = int(faith["n_options"] > 0 and not faith["hallucinated"])
    return {"grounded": grounded, **useful_scores(query, question, interpretations, grounded,
                                                   [o["core"] for o in faith["options"]])}


def card_usefulness(query: str, question: str, faith: dict) -> dict:
    """What the Explore card shows beside faithfulness (racq.service scores it): `usefulness` against the
    query's human interpretations (none: coverage None), plus whether the question offers one option
    twice or offers the query itself (both dropped from the options, so the card says why they count less)."""
    from racq.scoring.options import echoes_query, repeats_option

    out = usefulness(query, question, (), interpretations_for(query), faith=faith)
    return {**out, "repeats_option": int(repeats_option(question, query)),
            "echoes_query": int(echoes_query(question, query))}


def stage_usefulness(rows: Sequence[dict]) -> dict[str, dict]:
    """Per stage, over scored pool candidates ({stage, query, question, details}: racq.store.scores.
    scored_questions): n and the share with >= 2 distinct options over all; n_interp and the shares
    useful & grounded and covers >= 1 over those whose query has human interpretations (None when none
    has). Grounded from the stored faithfulness details (n_options, hallucinated), as `racq eval` does."""
    acc: dict[str, dict] = {}
    for r in rows:
        d, query, question = r.get("details") or {}, r["query"], r["question"]
        grounded = (int(d["n_options"] > 0 and not d["hallucinated"])
                    if d.get("n_options") is not None and d.get("hallucinated") is not None else None)
        cores = [o["core"] for o in d["options"]] if isinstance(d.get("options"), list) else None
        u = useful_scores(query, question, interpretations_for(query), grounded, cores)
        a = acc.setdefault(r["stage"], {"n": 0, "distinct": 0, "n_interp": 0, "useful": 0, "n_useful": 0,
                                        "covers": 0})
        a["n"] += 1
        a["distinct"] += u["distinct_options"]
        if u["covers_any"] is not None:
            a["n_interp"] += 1
            a["covers"] += u["covers_any"]
            if u["useful_grounded"] is not None:  # a row stored without n_options/hallucinated
                a["n_useful"] += 1
                a["useful"] += u["useful_grounded"]
    share = lambda k, n: k / n if n else None  # noqa: E731
    return {s: {"n": a["n"], "distinct_options": share(a["distinct"], a["n"]), "n_interp": a["n_interp"],
                "covers_any": share(a["covers"], a["n_interp"]), "useful_grounded": share(a["useful"], a["n_useful"])}
            for s, a in sorted(acc.items())}


# ---------------------------------------------------------------- evidence
def evidence(query: str, passages: Sequence[Passage], interps: Sequence[Interpretation]) -> dict:
    """Which interpretations the passages hold evidence for: one unit (sentence or window, as the
    faithfulness scorer splits passages) with all words of an answer or all distinguishing words."""
    from racq.scoring.faithfulness import split_units

    units = [u.tokens for p in passages for u in split_units(p)]
    found = []
    for i, it in enumerate(interps):
        dists, answers = _keys(query, it)
        if any(all(t in u for t in words) for words in dists + answers for u in units):
            found.append(i)
    if not interps:
        return {"evidenced": [], "evidence_share": None, "evidence_2plus": None}
    return {"evidenced": found, "evidence_share": len(found) / len(interps), "evidence_2plus": int(len(found) >= 2)}


# ---------------------------------------------------------------- agreement with people
CALIBRATION_FILE = DATA_DIR / "calibration" / "usefulness.jsonl"
_FIELDS = ("id", "source", "query", "question", "interpretation", "answers", "label")


def load_labels(path: str | Path = CALIBRATION_FILE) -> list[dict]:
    """Hand-labelled question x interpretation pairs (label `names` or `misses`); bad lines raise."""
    return list(labelled_rows(path, _FIELDS, ("names", "misses"), "usefulness calibration"))


def matcher_agreement(items: Sequence[dict] | None = None, share: float = MATCH_SHARE) -> dict:
    """Accuracy and Cohen's kappa of the matcher ("this question names this interpretation") against
    the hand labels, overall, without the borderline items, and per source; disagreements listed."""
    from racq.scoring.agreement import agreement

    items = load_labels() if items is None else items
    flags = []
    for it in items:
        interps = [Interpretation(it["interpretation"], tuple(it["answers"]))]
        # the other readings of the query compete for each option, as in the real metric
        others = [x for x in interpretations_for(it["query"]) if x.question != it["interpretation"]]
        cores = [o.core for o in extract_options(it["question"], it["query"])]
        flags.append(int(0 in covered(cores, it["query"], interps + others, share)))
    labels = [int(it["label"] == "names") for it in items]
    out = agreement(labels, flags)
    clear = [k for k, it in enumerate(items) if not it.get("borderline")]
    out["clear"] = agreement([labels[k] for k in clear], [flags[k] for k in clear]) if clear else None
    out["by_source"] = {s: agreement([labels[k] for k, it in enumerate(items) if it["source"] == s],
                                     [flags[k] for k, it in enumerate(items) if it["source"] == s])
                        for s in dict.fromkeys(it["source"] for it in items)}
    out["disagreements"] = [{"id": it["id"], "label": it["label"], "matcher": "names" if f else "misses"}
                            for it, y, f in zip(items, labels, flags) if y != f]
    return out
