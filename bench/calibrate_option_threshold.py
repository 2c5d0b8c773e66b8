"""Calibrate FaithfulnessConfig.semantic_threshold on real questions (training splits only, never test).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/calibrate_option_threshold.py --limit 120

Positives: options of gold clarifying questions (PaQa + CAmbigNQ, splits t1/t2) that are lexically
supported by the example's first `--top-k` passages (what a prompt shows; every core token in one
unit). Negatives: options of the gold questions of the *nearest other queries* (by embedding;
plausible but foreign facets) that are not lexically supported by this example's passages, put in
this example's frame. For each, the best cosine
between the embedded option (alone, and in its frame = what racq.scoring.faithfulness uses) and the passage
units. Prints the ROC AUC and, for a few false-support rates, the threshold and the true-support rate.

Limit: positives are lexically present, so they are easier than real paraphrases; the threshold is
therefore chosen from the negatives (a false-support rate), not by maximising accuracy.

Run on 2026-11-29 (--limit 120, top-3 passages; 115 positives, 1639 negatives, 36% of them stopped by
the number rule before any similarity):
    option alone:            ROC AUC 0.841; 5% false support at 0.386 -> 42.6% true support
    option in frame (used):  ROC AUC 0.864; 5% false support at 0.759 -> 47.0% true support
                             (1%: 0.813 -> 19.1%; 10%: 0.723 -> 58.3%; 20%: 0.672 -> 73.9%)
FaithfulnessConfig.semantic_threshold = 0.76 comes from the 5% line.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from racq.data import load_examples  # noqa: E402
from racq.scoring.faithfulness import FaithfulnessConfig, Scorer, option_in_frame  # noqa: E402
from racq.scoring.options import extract_options, is_number  # noqa: E402


def auc(pos: list[float], neg: list[float]) -> float:
    pos_a, neg_a = np.asarray(pos), np.asarray(neg)
    wins = (pos_a[:, None] > neg_a[None, :]).sum() + 0.5 * (pos_a[:, None] == neg_a[None, :]).sum()
    return float(wins / (len(pos_a) * len(neg_a)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=120, help="examples used (random, seed 0)")
    ap.add_argument("--neighbours", type=int, default=5)
    ap.add_argument("--top-k", type=int, default=3, help="passages per example (the prompt's top_k)")
    args = ap.parse_args(argv)

    exs = [e for e in load_examples(["paqa", "cambignq"]) if e.split != "test" and e.passages]
    random.Random(0).shuffle(exs)
    exs = exs[:args.limit]
    scorer = Scorer(FaithfulnessConfig(use_semantic=False))
    opts = [extract_options(e.gold_question, e.query) for e in exs]
    qvec = scorer._embed([e.query for e in exs])
    # (The option's whole conjunct is no fair variant here: a foreign conjunct brings its own frame.)
    variants = {"option alone": lambda o, q: o.text, "option in frame (used)": option_in_frame}
    sims: dict[str, dict[str, list[float]]] = {v: {"pos": [], "neg": []} for v in variants}
    for i, e in enumerate(exs):
        if i % 10 == 0:
            print(f"[{i}/{len(exs)}]", file=sys.stderr, flush=True)
        passages = e.passages[:args.top_k]
        rows = scorer.check_options(e.query, passages, opts[i])
        pos = [o for o, r in zip(opts[i], rows) if r["how"] == "lexical"]
        near = [j for j in np.argsort(-(qvec @ qvec[i])) if exs[j].query.lower() != e.query.lower()]
        foreign = [o for j in near[:args.neighbours] for o in opts[j]]
        neg_rows = scorer.check_options(e.query, passages, foreign)
        neg = [o for o, r in zip(foreign, neg_rows) if not r["supported"]]
        if not pos and not neg:
            continue
        unit_vecs = np.concatenate([scorer.units(p, embed=True)[1] for p in passages])
        unit_toks = [u.tokens for p in passages for u in scorer.units(p)[0]]
        for name, fn in variants.items():
            for label, group in (("pos", pos), ("neg", neg)):
                if not group:
                    continue
                sim = scorer._embed([fn(o, e.query) for o in group]) @ unit_vecs.T
                for o, row in zip(group, sim):
                    # As in the scorer: only units holding every number of the option may support it.
                    nums = {t for t in o.core if is_number(t)}
                    ok = [k for k, toks in enumerate(unit_toks) if nums <= toks]
                    sims[name][label].append(float(row[ok].max()) if ok else -1.0)
    for name, d in sims.items():
        pos, neg = np.asarray(d["pos"]), np.asarray(d["neg"])
        print(f"{name}: {len(pos)} positives, {len(neg)} negatives ({np.mean(neg < 0):.0%} stopped by the "
              f"number rule), ROC AUC {auc(pos, neg):.3f}")
        for fpr in (0.01, 0.05, 0.10, 0.20):
            thr = float(np.quantile(neg, 1 - fpr))
            print(f"  false-support {fpr:4.0%}: threshold {thr:.3f}, true-support {np.mean(pos >= thr):.1%}")


if __name__ == "__main__":
    main()
