"""Does the decoding guard help? Two `racq eval` runs of the same examples, guard off and on, compared per
dataset x stage, plus the "retry" policy (keep the guard-free question unless it repeats an option, then
take the guarded one), which the two runs give exactly: decoding is greedy, so a retry would generate
the guarded run's question. Choose on a training split, never on test (issue #11).

    .venv/bin/racq eval --split t2 --stages base,sft,aligned --limit 0 --engine joint --run t2-guard0
    .venv/bin/racq eval --split t2 --stages base,sft,aligned --limit 0 --engine joint \
        --set no_repeat_ngram_size=3 --run t2-guard3
    .venv/bin/python bench/compare_guard.py results/t2-guard0 results/t2-guard3

Prints % per column and, for retry and always-on against off, the exact sign test of `racq eval`'s
paired tests (racq.eval.significance.paired_test; on 0/1 columns it is McNemar's exact test) for useful &
grounded and hallucinated.
Measured on t2 on 2026-12-04: docs/eval/test-usefulness-report.md, part 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from racq.eval.significance import paired_test  # noqa: E402

COLUMNS = ("rougeL", "grounded", "hallucinated", "repeats_option", "useful_grounded", "covers_any",
           "distinct_options")
TESTED = ("useful_grounded", "hallucinated")


def load(folder: Path) -> dict:
    rows = [json.loads(line) for line in open(folder / "per_example.jsonl", encoding="utf-8")]
    return {(r["example"], r["stage"]): r for r in rows if r["stage"] != "gold"}


def mean(rows: list[dict], col: str) -> float:
    vals = [r["scores"][col] for r in rows if r["scores"].get(col) is not None]
    return 100 * sum(vals) / len(vals) if vals else float("nan")


def sign_p(a: list[dict], b: list[dict], col: str) -> float:
    """Exact two-sided p of 'b differs from a' on the same examples (1.0 when none changed)."""
    p = paired_test([y["scores"].get(col) for y in b], [x["scores"].get(col) for x in a])["p_sign"]
    return 1.0 if p is None else p  # None: no example has the column in both runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("off", type=Path, help="results folder of the guard-free run")
    ap.add_argument("on", type=Path, help="results folder of the same examples with the guard on")
    args = ap.parse_args()
    off, on = load(args.off), load(args.on)
    if set(off) != set(on):
        raise SystemExit("the two runs do not hold the same (example, stage) rows: rerun with the same settings")
    groups: dict = defaultdict(lambda: defaultdict(list))
    for key in sorted(off):
        a, b = off[key], on[key]
        if a["query"] != b["query"]:
            raise SystemExit(f"example {key[0]} is a different query in the two runs")
        g = groups[a["dataset"], a["stage"]]
        g["off"].append(a)
        g["on"].append(b)
        g["retry"].append(b if a["scores"].get("repeats_option") else a)
    print("| dataset | stage | policy | n | " + " | ".join(COLUMNS) + " | p (" + ", ".join(TESTED) + ") vs off |")
    print("|---|---|---|---:|" + "---:|" * len(COLUMNS) + "---|")
    for (dataset, stage), g in sorted(groups.items()):
        for policy in ("off", "on", "retry"):
            rows = g[policy]
            ps = "" if policy == "off" else ", ".join(f"{sign_p(g['off'], rows, c):.3f}" for c in TESTED)
            cells = " | ".join(f"{mean(rows, c):.1f}" for c in COLUMNS)
            print(f"| {dataset} | {stage} | {policy} | {len(rows)} | {cells} | {ps} |")


if __name__ == "__main__":
    main()
