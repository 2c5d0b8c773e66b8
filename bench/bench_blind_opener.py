"""Can a blind pair give the base stage away by its first words? Base's reply is primed with an opener
(PromptConfig.base_openers); one constant opener ("Do you mean") made every base question start alike.
This bench regenerates base's questions for the queries of an annotation pool twice, with the old
constant opener (the baseline) and with the configured openers, and asks two detectors to tell base
from the trained stages' questions in the same pool:

- first-word rule: for each first word, guess the class most questions with that word belong to;
- classifier: logistic regression on the first one, two and three words (scikit-learn);
both scored by 5-fold stratified cross-validation, as balanced accuracy (chance = 50 %) and plain
accuracy (chance = the majority class). Target: balanced accuracy <= chance + 10 points.

    .venv/bin/racq pool build --n 100 --db /tmp/pool100.db      # a pool of test-split queries
    .venv/bin/python bench/bench_blind_opener.py --db /tmp/pool100.db
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from racq.config import GenConfig, PromptConfig  # noqa: E402
from racq.prompts import extract_question  # noqa: E402

OLD_OPENER = ["Do you mean"]


def prefixes(text: str, n: int = 3) -> str:
    """The question's first 1..n words as single tokens ('w1', 'w1_w2', ...), lower-cased."""
    words = text.lower().replace(":", " :").split()[:n]
    return " ".join("_".join(words[:i]) for i in range(1, len(words) + 1))


def first_word_rule(texts, labels, folds) -> np.ndarray:
    pred = np.zeros(len(texts), dtype=int)
    first = [t.split()[0].lower() if t.split() else "" for t in texts]
    for train, test in folds:
        votes: dict[str, list[int]] = {}
        for i in train:
            votes.setdefault(first[i], []).append(labels[i])
        prior = round(float(np.mean([labels[i] for i in train])))
        for i in test:
            seen = votes.get(first[i])
            pred[i] = round(float(np.mean(seen))) if seen else prior
    return pred


def detect(texts: list[str], labels: list[int], seed: int = 0) -> dict:
    """Balanced and plain accuracy of both detectors (5-fold CV); labels: 1 = base."""
    y = np.array(labels)
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    folds = list(cv.split(np.zeros(len(y)), y))
    rule = first_word_rule(texts, y, folds)
    X = CountVectorizer(token_pattern=r"\S+", binary=True).fit_transform([prefixes(t) for t in texts])
    clf = cross_val_predict(LogisticRegression(max_iter=1000, class_weight="balanced"), X, y, cv=folds)
    return {"first_word_rule": {"balanced": balanced_accuracy_score(y, rule), "accuracy": float(np.mean(rule == y))},
            "classifier": {"balanced": balanced_accuracy_score(y, clf), "accuracy": float(np.mean(clf == y))},
            "majority": float(max(np.mean(y), 1 - np.mean(y))), "n_base": int(y.sum()), "n_other": int((1 - y).sum())}


def pool_rows(db_path: str) -> tuple[list[dict], dict[int, list[str]]]:
    """Queries of the pool (text, passages) and the trained stages' questions per query."""
    from racq.store import get_query, open_db
    from racq.store.candidates import pool_candidates

    db = open_db(db_path)
    by_query = pool_candidates(db)
    queries = [get_query(db, qid) for qid in sorted(by_query)]
    others = {qid: [c["text"] for c in cands if c["stage"] != "base"] for qid, cands in by_query.items()}
    return queries, others


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", required=True, help="annotation pool (racq pool build --db ...)")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args(argv)

    from racq.generate import StageModel

    queries, others = pool_rows(args.db)
    queries = [q for q in queries if others.get(q["id"])]
    if len(queries) < 10:
        print(f"only {len(queries)} pool queries with trained-stage questions: build a bigger pool", file=sys.stderr)
        return 2
    sm = StageModel.load(stages=["base"])
    prompts = [sm.passage_prompt(q["text"], q["passages"]) for q in queries]
    other_texts = [t for q in queries for t in others[q["id"]]]
    results = {}
    for name, openers in (("constant opener (baseline)", OLD_OPENER),
                          ("base_openers (default)", PromptConfig().base_openers)):
        sm.prompt = PromptConfig(base_openers=list(openers))
        base = [extract_question(t) for t in sm.generate(prompts, "base", GenConfig(batch_size=8))]
        texts = base + other_texts
        results[name] = detect(texts, [1] * len(base) + [0] * len(other_texts))
        results[name]["openers"] = list(openers)
    print(f"{len(queries)} pool queries: {len(queries)} base questions vs {len(other_texts)} of trained stages")
    print(f"{'base opener':30} {'rule bal.':>10} {'clf bal.':>10} {'rule acc':>9} {'clf acc':>9} {'majority':>9}")
    for name, r in results.items():
        print(f"{name:30} {r['first_word_rule']['balanced']:10.1%} {r['classifier']['balanced']:10.1%} "
              f"{r['first_word_rule']['accuracy']:9.1%} {r['classifier']['accuracy']:9.1%} {r['majority']:9.1%}")
    print("chance: balanced accuracy 50 %, plain accuracy = majority; target balanced <= 60 %")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
