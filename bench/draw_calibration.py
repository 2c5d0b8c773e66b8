"""Draw the (query, passages, question) items of the faithfulness calibration set from real outputs.

    HF_HUB_OFFLINE=1 nice -n 15 .venv/bin/python bench/draw_calibration.py --n 30 --stages gold,base
    HF_HUB_OFFLINE=1 nice -n 15 .venv/bin/python bench/draw_calibration.py --n 30 --stages sft,aligned

Examples: the first `n` / 2 test-split examples of PaQa and of CAmbigNQ, as `racq eval` picks them
(racq.eval.run.pick_examples). Passages: each example's own passages ranked by the embedder, top 3 -- exactly what
`racq eval --passages own` puts in the prompt (racq.train.common.rank_own_passages). Questions: the gold
question, and each given stage's greedy question (<= 32 new tokens, cut after the first "?"), generated
once from the real SmolLM2 (+ adapters) and appended to data/calibration/candidates.jsonl, unlabelled (a
scratch file, not committed). Items already there or in faithfulness.jsonl (same example and source)
are skipped. The `base` stage's reply is primed as racq.generate does (PromptConfig.base_openers). Labels are added by hand in
faithfulness.jsonl (criteria: data/calibration/README.md); this script never labels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from racq.config import ADAPTERS_DIR, DEFAULT_BASE_MODEL, DEFAULT_EMBEDDER, GenConfig, PromptConfig  # noqa: E402
from racq.eval.run import pick_examples  # noqa: E402
from racq.prompts import extract_question  # noqa: E402
from racq.train.common import rank_own_passages  # noqa: E402

FOLDER = Path(__file__).resolve().parent.parent / "data" / "calibration"
OUT = FOLDER / "candidates.jsonl"
LABELLED = FOLDER / "faithfulness.jsonl"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--stages", default="gold,base", help="gold and/or stage names")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    exs = pick_examples(["paqa", "cambignq"], "test", args.n // 2)  # racq eval's examples, in its order
    ranked = rank_own_passages(exs, DEFAULT_EMBEDDER, 3)
    have = set()
    for f in (args.out, LABELLED):
        if f.exists():
            have |= {(r["topic_id"], r["dataset"], r["source"]) for r in map(json.loads, f.read_text().splitlines())}
    rows = []
    sources = args.stages.split(",")
    if "gold" in sources:
        rows += [(e, r, "gold", e.gold_question) for e, r in zip(exs, ranked)
                 if (e.topic_id, e.dataset, "gold") not in have]
    stages = [s for s in sources if s != "gold"]
    if stages:
        from racq.generate import StageModel

        sm = StageModel.load(DEFAULT_BASE_MODEL, ADAPTERS_DIR, stages=stages, prompt=PromptConfig(top_k=3))
        for s in stages:
            if s not in sm.stages:
                sys.exit(f"stage {s} not loaded: {sm.errors.get(s)}")
        jobs = [(e, r, s) for s in stages for e, r in zip(exs, ranked) if (e.topic_id, e.dataset, s) not in have]
        for b in range(0, len(jobs), 8):
            batch = jobs[b:b + 8]
            texts = sm.generate([sm.passage_prompt(e.query, r) for e, r, _ in batch], [s for *_, s in batch],
                                GenConfig(max_new_tokens=32, batch_size=8))
            rows += [(e, r, s, extract_question(t)) for (e, r, s), t in zip(batch, texts)]
            print(f"{b + len(batch)}/{len(jobs)} generated", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as fh:
        for e, r, s, q in rows:
            fh.write(json.dumps({"dataset": e.dataset, "topic_id": e.topic_id, "query": e.query, "source": s,
                                 "passages": [{"title": p.title, "text": p.text} for p in r],
                                 "question": q}, ensure_ascii=False) + "\n")
    print(f"{len(rows)} items appended to {args.out}")


if __name__ == "__main__":
    main()
