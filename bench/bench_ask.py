"""Explore's work for one query (retrieve 3 passages, one greedy question for each of base, sft, aligned):
the path before the speed work (the PEFT model, one mixed-adapter batch of the three stages, no
streaming) against Asker.ask_stream with engine=merged (one merged plain model per stage, stage after
stage), engine=joint (the default: every stage decoded in one batch over one copy of the base,
racq.multilora; `joint-1tok` the same without guessed tokens) and joint with quantize=int8 (opt-in), all
streamed token by token. Prints p50/p90 per query, time to the first token, the answer cache's repeat time and peak memory (RSS).

    .venv/bin/python bench/bench_ask.py --threads 2                # SmolLM2 + the shipped adapters, 8 queries
    .venv/bin/python bench/bench_ask.py --queries 3 --tiny         # tiny random model (smoke run, CI)
    .venv/bin/python bench/bench_ask.py --tiny --json ask.json     # also the figures as JSON

Each variant runs in its own subprocess so its peak RSS is its own; it hands its figures back in a
JSON file (--json), never through its stdout. Scoring is left out of all (it is the same work), except
joint-best5 (opt-in GenConfig.best_of=5), whose pick needs every candidate scored; its text differs from
the greedy variants' by design.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUERIES = ["who won the world rapid chess championship in 2017", "who played wolverine",
           "when was the last time the eagles won the super bowl", "who sings the song you are my sunshine",
           "what is the population of new york", "When did the kim family come to power?",
           "Who died in the movie fast and furious 7?", "How many seats in rajya sabha in assam?",
           "When did the song angel first come out?", "where did ireland finish in the eurovision song contest 2018"]
VARIANTS = {"peft-batched": ("peft", "none", 0, "before: PEFT, one mixed-adapter batch, no streaming"),
            "merged-stream": ("merged", "none", 0, "one merged model per stage, stage after stage, streamed"),
            "joint-1tok": ("joint", "none", 0, "every stage in one batch over one base, one token per step"),
            "joint-stream": ("joint", "none", 3, "default: the same, checking 3 guessed tokens per step"),
            "joint-int8": ("joint", "int8", 3, "opt-in: the default with dynamic int8 base linears"),
            "joint-best5": ("joint", "none", 3, "opt-in: the default with best_of=5 (racq.bestof), scored")}
DEFAULT = "joint-stream"
BEST_OF = {"joint-best5": 5}  # greedy + 4 samples per stage, each scored, the scorer's favourite kept


def _asker(args, engine: str, quantize: str = "none", draft_tokens: int = 0, with_scorer: bool = False):
    from racq import retrieval
    from racq.config import ADAPTERS_DIR, DEFAULT_BASE_MODEL, ModelConfig, PromptConfig
    from racq.service import Asker

    if args.tiny:
        from racq.tiny import BagOfWords, tiny_stages

        base, adapters = tiny_stages(args.workdir)
        rc = retrieval.RetrievalConfig(index_dir=str(Path(args.workdir) / "index"))
        from racq.data import Passage

        index = retrieval.Index.build([Passage(f"T{i}", q) for i, q in enumerate(QUERIES)], cfg=rc,
                                      embedder=BagOfWords(), log=lambda *_: None)
    else:
        base, adapters = DEFAULT_BASE_MODEL, ADAPTERS_DIR
        index = retrieval.load_or_build(log=lambda *_: None)
    mc = ModelConfig(base_model=str(base), adapters_dir=str(adapters), engine=engine, threads=args.threads,
                     quantize=quantize, draft_tokens=draft_tokens)
    return Asker.load(mc, PromptConfig(), index=index, cache_size=0 if engine == "peft" else 256,
                      with_scorer=with_scorer)


def run_variant(args) -> dict:
    from racq.config import GenConfig
    from racq.prompts import extract_question

    t0 = time.perf_counter()
    best_of = BEST_OF.get(args.variant, 1)
    asker = _asker(args, *VARIANTS[args.variant][:3], with_scorer=best_of > 1)
    load_s = time.perf_counter() - t0
    stages = asker.stages
    gen = GenConfig(max_new_tokens=args.tokens, batch_size=len(stages), best_of=best_of)

    def ask(q):
        """(seconds, seconds to the first token, questions) of one query, retrieval included."""
        t = time.perf_counter()
        if args.variant == "peft-batched":  # what Explore cost before: no streaming, one batch
            sm = asker.stage_model
            prompt = sm.passage_prompt(q, [h.passage for h in asker.retrieve(q, 3)])
            texts = [extract_question(x) for x in sm.generate([prompt] * len(stages), stages, gen)]
            secs = time.perf_counter() - t
            return secs, secs, texts
        first, texts = None, {}
        for ev in asker.ask_stream(q, k=3, gen=gen):
            if ev["event"] == "token" and first is None:
                first = time.perf_counter() - t
            elif ev["event"] == "stage":
                texts[ev["stage"]] = ev.get("question", ev.get("error"))  # joint: in the order stages stop
        return time.perf_counter() - t, first, [texts.get(s) for s in stages]

    ask(QUERIES[-1])  # warm-up (not timed, and not one of the timed queries)
    rows = [ask(q) for q in QUERIES[: args.queries]]
    times, firsts = [r[0] for r in rows], [r[1] for r in rows if r[1] is not None]
    out = {"variant": args.variant, "stages": len(stages), "load_s": round(load_s, 2),
           "p50_s": round(statistics.median(times), 2), "p90_s": round(_p90(times), 2),
           "first_token_p50_s": round(statistics.median(firsts), 2) if firsts else None,
           "first_token_max_s": round(max(firsts), 2) if firsts else None,
           "texts": [r[2] for r in rows]}
    if args.variant == DEFAULT:  # the same queries again: every answer from the cache
        again = [ask(q)[0] for q in QUERIES[: args.queries]]
        out["cached_p50_s"] = round(statistics.median(again), 4)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def _p90(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--queries", type=int, default=8, help=f"timed queries (at most {len(QUERIES) - 1})")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--tiny", action="store_true", help="tiny random model instead of SmolLM2")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", help="write the figures to this file (a variant: its row; the run: all rows)")
    args = ap.parse_args()
    args.queries = min(args.queries, len(QUERIES) - 1)
    if args.variant:
        Path(args.json).write_text(json.dumps(run_variant(args)))
        return
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-ask-")
    rows = []
    load = [os.getloadavg()[0]]
    for variant in VARIANTS:
        # each variant writes its row to a file of its own: its stdout (library logs, progress bars, a
        # stray print) is never parsed
        result = Path(workdir) / f"result-{variant}.json"
        result.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--variant", variant, "--queries", str(args.queries), "--tokens",
               str(args.tokens), "--threads", str(args.threads), "--workdir", workdir, "--json", str(result)]
        cmd += ["--tiny"] if args.tiny else []
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0 or not result.exists():
            sys.exit(f"{variant} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
        rows.append(json.loads(result.read_text()))
        load.append(os.getloadavg()[0])
    today = rows[0]

    def same_as_today(r):
        return sum(a == b for qa, qb in zip(today["texts"], r["texts"]) for a, b in zip(qa, qb))

    total = sum(len(q) for q in today["texts"])
    print(f"{'variant':<14} {'stages':>6} {'load s':>7} {'p50 s':>6} {'p90 s':>6} {'1st token p50/max s':>20} "
          f"{'cached s':>9} {'peak MB':>8} {'speed-up':>8} {'same text':>9}")
    for r in rows:
        first = f"{r['first_token_p50_s']}/{r['first_token_max_s']}"
        print(f"{r['variant']:<14} {r['stages']:>6} {r['load_s']:>7} {r['p50_s']:>6} {r['p90_s']:>6} {first:>20} "
              f"{r.get('cached_p50_s', '-')!s:>9} {r['peak_rss_mb']:>8} {today['p50_s'] / r['p50_s']:>7.2f}x "
              f"{same_as_today(r):>5}/{total}")
    print(f"{args.queries} queries after a warm-up; same text = questions identical to {today['variant']}'s; "
          f"1-min load average before/between/after: {', '.join(f'{x:.1f}' for x in load)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "identical": {r["variant"]: [same_as_today(r), total] for r in rows},
                                              "loadavg": load}, indent=2))


if __name__ == "__main__":
    main()
