"""`ask` for every stage: ONE base model + LoRA adapters (batched across stages, and switched per stage)
against the baseline of a separate merged model per stage. Prints latency and peak memory of each.

    .venv/bin/python bench/bench_ask.py                 # real SmolLM2 + the shipped adapters
    .venv/bin/python bench/bench_ask.py --queries 3 --tiny   # tiny random model (smoke run, CI)
    .venv/bin/python bench/bench_ask.py --tiny --json ask.json   # also the figures as JSON

Each variant runs in its own subprocess so its peak RSS is its own; it hands its figures back in a
JSON file (--json), never through its stdout.
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
           "what is the population of new york"]


def _setup(args):
    """(base folder, adapters folder) for the run: real by default, tiny random with --tiny."""
    from racq.config import ADAPTERS_DIR, DEFAULT_BASE_MODEL

    if not args.tiny:
        return Path(DEFAULT_BASE_MODEL), Path(ADAPTERS_DIR)
    from racq.tiny import tiny_stages

    return tiny_stages(args.workdir)


def run_variant(args) -> dict:
    import torch

    from racq import retrieval
    from racq.config import GenConfig
    from racq.generate import StageModel, _with_stage
    from racq.models import list_stages, load_base

    base, adapters = _setup(args)
    index = retrieval.load_or_build(log=lambda *_: None) if not args.tiny else None
    passages_for = (lambda q: [h.passage for h in index.search(q, 3)]) if index else (lambda q: [])
    gen = GenConfig(max_new_tokens=args.tokens)
    stages = [s.name for s in list_stages(adapters)]
    t0 = time.perf_counter()
    if args.variant in ("shared-batched", "shared-switch"):
        sm = StageModel.load(base, adapters)
        load_s = time.perf_counter() - t0

        def ask(q):
            prompt = sm.passage_prompt(q, passages_for(q))
            if args.variant == "shared-batched":
                return sm.generate([prompt] * len(stages), stages, GenConfig(max_new_tokens=args.tokens,
                                                                              batch_size=len(stages)))
            return [_with_stage(sm.model, s, lambda: sm.generate([prompt], s, gen)[0])
                    if hasattr(sm.model, "peft_config") else sm.generate([prompt], s, gen)[0] for s in stages]
    else:  # baseline: one merged model per stage, as a naive server would hold them
        from peft import PeftModel

        models = []
        for st in list_stages(adapters):
            m, tok = load_base(base)
            if st.path is not None:
                m = PeftModel.from_pretrained(m, str(st.path)).merge_and_unload()
            models.append(StageModel(m, tok, ["base"]))
        load_s = time.perf_counter() - t0

        def ask(q):
            prompt = models[0].passage_prompt(q, passages_for(q))
            return [sm_.generate([prompt], "base", gen)[0] for sm_ in models]
    torch.set_num_threads(args.threads) if args.threads else None
    ask(QUERIES[0])  # warm-up
    times = []
    for q in QUERIES[: args.queries]:
        t = time.perf_counter()
        ask(q)
        times.append(time.perf_counter() - t)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": args.variant, "stages": len(stages), "load_s": round(load_s, 2),
            "ask_median_s": round(statistics.median(times), 2), "ask_max_s": round(max(times), 2),
            "peak_rss_mb": round(peak_mb)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="tiny random model instead of SmolLM2")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", help="write the figures to this file (a variant: its row; the run: all rows)")
    args = ap.parse_args()
    if args.variant:
        row = run_variant(args)
        if args.json:
            Path(args.json).write_text(json.dumps(row))
        else:
            print(json.dumps(row))
        return
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-ask-")
    rows = []
    for variant in ("separate-models", "shared-switch", "shared-batched"):
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
    base = rows[0]
    print(f"{'variant':<16} {'stages':>6} {'load s':>7} {'ask p50 s':>9} {'ask max s':>9} {'peak MB':>8} "
          f"{'speed-up':>8} {'memory':>7}")
    for r in rows:
        print(f"{r['variant']:<16} {r['stages']:>6} {r['load_s']:>7} {r['ask_median_s']:>9} {r['ask_max_s']:>9} "
              f"{r['peak_rss_mb']:>8} {base['ask_median_s'] / r['ask_median_s']:>7.2f}x "
              f"{r['peak_rss_mb'] / base['peak_rss_mb']:>6.2f}x")
    print("baseline = separate-models (one merged model per stage); ratios are against it.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
