"""How well the faithfulness metric agrees with people: a hand-labelled set of real clarifying
questions and the accuracy / Cohen's kappa of the metric's `hallucinated` flag against the labels.

    from racq.scoring.calibration import calibration_agreement, load_calibration
    calibration_agreement()          # {'n': .., 'accuracy': .., 'kappa': .., 'by_source': {...}, ...}

The set (data/calibration/faithfulness.jsonl, criteria in data/calibration/README.md) holds
(query, passages, question) items drawn from real outputs: gold questions of the test split, and the
greedy questions of the real SmolLM2 stages (bench/draw_calibration.py). Each has a label,
`faithful` or `unfaithful`, a one-line reason, and `borderline` when the call was close. The labels
were written by reading the passages, before the metric was run on the items; the metric was not
tuned on them. `racq eval` prints the agreement in its report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

from racq.config import DATA_DIR
from racq.data import DataError, Passage, jsonl_rows
from racq.scoring.agreement import agreement

CALIBRATION_FILE = DATA_DIR / "calibration" / "faithfulness.jsonl"
LABELS = ("faithful", "unfaithful")
_FIELDS = ("id", "source", "query", "passages", "question", "label", "reason")


def labelled_rows(path: str | Path, fields: Sequence[str], labels: Sequence[str], what: str) -> Iterator[dict]:
    """The rows of a hand-labelled JSONL file (calibration sets): each has every field of `fields`, a
    label out of `labels` and a unique id; a bad line raises DataError naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, f"{what} file not found")
    seen = set()
    for n, row in jsonl_rows(path):
        missing = [f for f in fields if not isinstance(row, dict) or f not in row]
        if missing:
            raise DataError(path, n, f"missing field(s) {', '.join(missing)}")
        if row["label"] not in labels:
            raise DataError(path, n, f"label {row['label']!r} is not one of {tuple(labels)}")
        if row["id"] in seen:
            raise DataError(path, n, f"duplicate id {row['id']!r}")
        seen.add(row["id"])
        yield row


def load_calibration(path: str | Path = CALIBRATION_FILE) -> list[dict]:
    """The labelled items; each gets `passage_objs` (racq.data.Passage). Bad lines raise DataError."""
    items = list(labelled_rows(path, _FIELDS, LABELS, "calibration"))
    for row in items:
        row["passage_objs"] = [Passage(p.get("title", ""), p["text"]) for p in row["passages"]]
    return items


def calibration_agreement(scorer=None, items: Sequence[dict] | None = None,
                          score_fn: Callable[[str, list, str], dict] | None = None) -> dict:
    """Accuracy and Cohen's kappa of `hallucinated` (and `nli_hallucinated` when the scorer has NLI)
    against the hand labels, overall, on the items not marked borderline, and per source.

    score_fn(query, passages, question) -> score dict overrides `scorer.score` (e.g. a cached one)."""
    if items is None:
        items = load_calibration()
    if score_fn is None:
        if scorer is None:
            from racq.scoring.faithfulness import Scorer

            scorer = Scorer()
        score_fn = scorer.score
    scores = [score_fn(it["query"], it["passage_objs"], it["question"]) for it in items]
    labels = [int(it["label"] == "unfaithful") for it in items]

    def block(keep, flag_key="hallucinated") -> dict | None:
        idx = [i for i in range(len(items)) if keep(items[i]) and flag_key in scores[i]]
        if not idx:
            return None
        return agreement([labels[i] for i in idx], [int(scores[i][flag_key]) for i in idx])

    out = block(lambda it: True)
    out.update(clear=block(lambda it: not it.get("borderline")),
               by_source={s: block(lambda it, s=s: it["source"] == s) for s in sorted({it["source"] for it in items})},
               unfaithful=sum(labels), faithful=len(labels) - sum(labels), nli=block(lambda it: True, "nli_hallucinated"),
               disagreements=[{"id": it["id"], "label": it["label"], "hallucinated": int(s["hallucinated"]),
                               "question": it["question"], "reason": it["reason"]}
                              for it, s, y in zip(items, scores, labels) if int(s["hallucinated"]) != y])
    return out
