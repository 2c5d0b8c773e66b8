"""Calibrate racq.coverage's signal (CoverageConfig.min_top_score) on data that is neither the test split
nor the no-evidence eval set.

    .venv/bin/python bench/calibrate_coverage.py            # the shipped index (racq index build)

Covered: the distinct PaQa + CAmbigNQ queries of splits t1/t2 (their own passages are in the corpus).
Not covered: split "calibration" of data/ambignq/noevidence.jsonl.gz (AmbigNQ train queries that share no
topic with the corpus by bench/build_noevidence.py's lexical rule; disjoint from its "eval" split).
For each candidate signal over the top-3 retrieved passages -- the best passage's score (`top`), the share
of the query's content words found in them (`overlap`), the first-minus-third score gap (`gap`) -- it
prints the ROC AUC, then for thresholds on `top`: precision and recall of "covered" and the share of
uncovered queries flagged.

Run on 2026-12-02 (617 covered, 150 not covered): AUC top 0.988, overlap 0.949, gap 0.565;
    top >= 0.55: covered precision 0.987, recall 0.963; 94.7% of uncovered flagged   <- CoverageConfig
    top >= 0.50: 0.970 / 0.987 / 87.3%;  top >= 0.60: 0.996 / 0.901 / 98.7%
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def auc(pos, neg) -> float:
    """P(a covered query scores above an uncovered one), ties counted half."""
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def features(index, queries, k: int = 3) -> np.ndarray:
    from racq.scoring.options import content_tokens

    rows = []
    for q, hits in zip(queries, index.search_many(queries, k)):
        seen = set().union(*(content_tokens(f"{h.passage.title} {h.passage.text}") for h in hits))
        ct = list(dict.fromkeys(content_tokens(q)))
        rows.append((hits[0].score, sum(t in seen for t in ct) / len(ct) if ct else 0.0,
                     hits[0].score - hits[-1].score))
    return np.array(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--thresholds", default="0.45,0.50,0.52,0.54,0.55,0.56,0.58,0.60,0.65")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from build_noevidence import load
    from racq.data import PASSAGE_DATASETS, load_examples, normalise_query, query_topic, split_of
    from racq.retrieval import load_or_build

    covered = {}
    for e in load_examples(PASSAGE_DATASETS):
        if split_of(query_topic(e.query)) in ("t1", "t2"):
            covered.setdefault(normalise_query(e.query), e.query)
    uncovered = [r["question"] for r in load(split="calibration")]
    index = load_or_build()
    C, U = features(index, list(covered.values())), features(index, uncovered)
    print(f"covered {len(C)}, not covered {len(U)}")
    for j, name in enumerate(("top", "overlap", "gap")):
        print(f"AUC {name}: {auc(C[:, j], U[:, j]):.3f}")
    print("threshold  precision(covered)  recall(covered)  uncovered flagged")
    for t in map(float, args.thresholds.split(",")):
        tp, fp = int((C[:, 0] >= t).sum()), int((U[:, 0] >= t).sum())
        print(f"{t:9.2f}  {tp / max(tp + fp, 1):18.3f}  {tp / len(C):15.3f}  {1 - fp / len(U):17.1%}")


if __name__ == "__main__":
    main()
