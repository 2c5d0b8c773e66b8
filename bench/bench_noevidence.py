"""Invented options on queries the corpus does not cover: every stage's question for the no-evidence eval
set (data/ambignq/noevidence.jsonl.gz, split "eval"; bench/build_noevidence.py), through Explore's path
(racq.service.Asker.ask_stream, retrieval from the shipped index, greedy, scored by racq.scoring.faithfulness).

    .venv/bin/python bench/bench_noevidence.py --threads 2 --out results/noevidence     # ~120 queries
    .venv/bin/python bench/bench_noevidence.py --limit 5                                  # a smoke run
    .venv/bin/python bench/bench_noevidence.py --resume      # after an interruption: asks only the rest

Per stage it reports, over the queries:
- invented_raw: share of the model's own questions with >= 1 option the passages do not support
  (faithfulness `hallucinated`), i.e. without racq.coverage's guard;
- invented_guarded: the same for the question shown after the guard (Explore's);
- options_raw / options_guarded: share of questions that offer any option at all (an option-less
  question invents nothing, so read the two rates together);
- generic: share replaced by the generic question; pruned: share whose unsupported options were dropped.
And over the queries: how often the coverage signal fired (`not covered`) and the best passage's score.
Writes OUT/per_query.jsonl (every event's question, raw question, scores summary) and OUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("base", "sft", "aligned")


def summarise(rows: list[dict], stages=STAGES) -> dict:
    n = len(rows)
    out = {"queries": n, "not_covered": sum(not r["coverage"]["covered"] for r in rows) / n if n else 0.0,
           "top_score_median": statistics.median(r["coverage"]["score"] for r in rows) if n else None,
           "stages": {}}
    for s in stages:
        got = [r["stages"][s] for r in rows if s in r["stages"] and "error" not in r["stages"][s]]
        m = len(got) or 1
        out["stages"][s] = {
            "n": len(got),
            "invented_raw": sum(g["raw_invented"] for g in got) / m,
            "invented_guarded": sum(g["invented"] for g in got) / m,
            "options_raw": sum(g["raw_options"] > 0 for g in got) / m,
            "options_guarded": sum(g["options"] > 0 for g in got) / m,
            "generic": sum(g["guard"].startswith("no option") for g in got) / m,
            "pruned": sum(g["guard"].startswith("pruned") for g in got) / m,
        }
    return out


def table(summary: dict) -> str:
    lines = ["| stage | n | invented (raw) | invented (guarded) | with options raw / guarded | generic | pruned |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s, v in summary["stages"].items():
        lines.append(f"| {s} | {v['n']} | {v['invented_raw']:.1%} | {v['invented_guarded']:.1%} | "
                     f"{v['options_raw']:.1%} / {v['options_guarded']:.1%} | {v['generic']:.1%} | {v['pruned']:.1%} |")
    return "\n".join(lines)


def one(asker, query: str, gen) -> dict:
    row = {"query": query, "stages": {}}
    for ev in asker.ask_stream(query, score=True, gen=gen):
        if ev["event"] == "passages":
            row["coverage"] = ev["coverage"]
            row["top_titles"] = [p["title"] for p in ev["passages"][:3]]
        elif ev["event"] == "stage" and "error" in ev:
            row["stages"][ev["stage"]] = {"error": ev["error"]}
        elif ev["event"] == "stage":
            shown = ev.get("scores") or {}
            raw = (ev.get("unguarded") or {}).get("scores") or shown
            row["stages"][ev["stage"]] = {
                "question": ev["question"], "raw_question": (ev.get("unguarded") or {}).get("question", ev["question"]),
                "guard": ev.get("guard", ""), "invented": int(shown.get("hallucinated", 0)),
                "options": shown.get("n_options", 0), "raw_invented": int(raw.get("hallucinated", 0)),
                "raw_options": raw.get("n_options", 0),
                "unsupported": [o["text"] for o in raw.get("options", []) if not o["supported"]]}
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="default: data/ambignq/noevidence.jsonl.gz")
    ap.add_argument("--split", default="eval")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("results/noevidence"))
    ap.add_argument("--resume", action="store_true", help="keep OUT/per_query.jsonl's queries, ask only the rest")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from build_noevidence import OUT, load
    from racq.config import GenConfig, ModelConfig
    from racq.service import Asker

    recs = load(args.data or OUT, args.split)
    if args.limit:
        recs = recs[:args.limit]
    asker = Asker.load(ModelConfig(threads=args.threads), with_scorer=True)
    gen = GenConfig()  # Explore's decoding (greedy, 32 new tokens)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, t0, path = [], time.perf_counter(), args.out / "per_query.jsonl"
    if args.resume and path.exists():  # greedy and cached by nothing else: a resumed query is the same query
        wanted = {r["question"] for r in recs}
        rows = [row for row in map(json.loads, path.read_text().splitlines()) if row["query"] in wanted]
    done = {row["query"] for row in rows}
    with open(path, "a" if args.resume else "w") as fh:
        for i, r in enumerate(recs, 1):
            if r["question"] in done:
                continue
            row = one(asker, r["question"], gen)
            rows.append(row)
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            if i % 10 == 0:
                print(f"{i}/{len(recs)} {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    summary = summarise(rows, [s for s in STAGES if s in asker.stages])
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "stages"}))
    print(table(summary))


if __name__ == "__main__":
    main()
