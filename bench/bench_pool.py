"""Candidate-pool generation: batched (racq.annotation.pool.build_pool, batch_size 8: prompts of several queries and
stages in one PEFT mixed-adapter `generate` call) against one prompt per call (batch_size 1), same
queries, same stages, same greedy decoding, each into its own fresh database, in one run.

    .venv/bin/python bench/bench_pool.py                  # tiny random model + 2 random adapters (~1 min)
    .venv/bin/python bench/bench_pool.py --real           # SmolLM2-135M + the adapters in models/adapters
    .venv/bin/python bench/bench_pool.py --queries 32 --threads 1 --json /tmp/pool.json

--real needs the converted base model (`racq models setup`); do not run it while a training run uses
the CPU (the figures would measure the contention). Queries are real test-split PaQa/CAmbigNQ ones;
retrieval uses a hashing bag-of-words index over their own passages (cheap, no embedder to load), and
scoring is off: the bench measures generation. Prints questions/s of the generate calls alone and of the
whole build_pool (with its SQLite writes), the ratio batched / one-by-one, and how many questions came
out identical in both runs (padding in a batch may flip a near-tie in greedy decoding).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402


class HashingEmbedder:
    """Bag of hashed words, 256 dims: a deterministic stand-in for the dense embedder."""

    identity = "bench-hashing-256"

    def encode(self, texts, normalize_embeddings=True, **kw):
        out = np.zeros((len(texts), 256), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest()[:8], 16) % 256] += 1
        return out


def models(args) -> tuple[Path, Path]:
    """(base model folder, adapters folder)."""
    from racq.config import ADAPTERS_DIR, DEFAULT_BASE_MODEL

    if args.real:
        if not (Path(DEFAULT_BASE_MODEL) / "config.json").exists():
            sys.exit(f"--real: no base model at {DEFAULT_BASE_MODEL}; run `racq models setup` first")
        return Path(DEFAULT_BASE_MODEL), Path(ADAPTERS_DIR)
    from racq.tiny import tiny_stages

    return tiny_stages(args.workdir)


class Timed:
    """Wraps StageModel.generate: total seconds and prompts of the generate calls."""

    def __init__(self, sm):
        self.inner, self.seconds, self.prompts, self.calls = sm.generate, 0.0, 0, 0
        sm.generate = self

    def __call__(self, prompts, stages, gen=None, **kw):
        t0 = time.perf_counter()
        out = self.inner(prompts, stages, gen, **kw)
        self.seconds += time.perf_counter() - t0
        self.prompts += len(prompts)
        self.calls += 1
        return out


def run(sm, index, examples, batch_size: int, tokens: int, db_path: Path, adapters: Path) -> dict:
    from racq.config import GenConfig
    from racq.annotation.pool import build_pool
    from racq.store import open_db

    db = open_db(db_path)
    timed = Timed(sm)
    t0 = time.perf_counter()
    try:
        stats = build_pool(db, n=len(examples), stage_model=sm, index=index, examples=examples, score=False,
                           batch_size=batch_size, gen=GenConfig(max_new_tokens=tokens), adapters_dir=adapters)
    finally:
        sm.generate = timed.inner
    total = time.perf_counter() - t0
    with db.read() as conn:
        texts = {(r["query"], r["stage"]): r["text"] for r in conn.query(
            "SELECT q.text AS query, c.stage, c.text FROM candidates c JOIN queries q ON q.id = c.query_id")}
    return {"batch_size": batch_size, "questions": timed.prompts, "generate_calls": timed.calls,
            "generate_s": round(timed.seconds, 2), "total_s": round(total, 2),
            "gen_q_per_s": round(timed.prompts / timed.seconds, 2), "total_q_per_s": round(timed.prompts / total, 2),
            "empty": stats["empty"], "texts": texts}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", action="store_true", help="SmolLM2-135M and models/adapters instead of a tiny model")
    p.add_argument("--queries", type=int, default=None, help="test-split queries (default 16 tiny, 8 real)")
    p.add_argument("--tokens", type=int, default=32, help="max new tokens per question")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--workdir", help="keep the tiny model and the databases here (default: a temp dir)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="racq-bench-pool-")
    n = args.queries or (8 if args.real else 16)

    import torch

    from racq.data import load_examples
    from racq.generate import StageModel
    from racq.annotation.pool import pick_queries
    from racq.retrieval import Index

    if args.threads:
        torch.set_num_threads(args.threads)
    base, adapters = models(args)
    examples = pick_queries(load_examples(["paqa", "cambignq"], split="test"), n)
    index = Index.build([ps for e in examples for ps in e.passages], HashingEmbedder(), log=lambda m: None)
    sm = StageModel.load(base, adapters)
    from racq.config import GenConfig

    prompt = sm.passage_prompt(examples[0].query, examples[0].passages[:3])  # warm-up, both shapes
    sm.generate([prompt] * 8, [sm.stages[i % len(sm.stages)] for i in range(8)], GenConfig(max_new_tokens=4))
    sm.generate([prompt], sm.stages[-1], GenConfig(max_new_tokens=4))

    work = Path(args.workdir)
    for f in work.glob("pool-bs*.db*"):
        f.unlink()
    one = run(sm, index, examples, 1, args.tokens, work / "pool-bs1.db", adapters)
    eight = run(sm, index, examples, 8, args.tokens, work / "pool-bs8.db", adapters)
    same = sum(one["texts"].get(k) == v for k, v in eight["texts"].items())
    ratio_gen = eight["gen_q_per_s"] / one["gen_q_per_s"]
    ratio_total = eight["total_q_per_s"] / one["total_q_per_s"]
    print(f"{'real SmolLM2-135M' if args.real else 'tiny random model'}, stages {', '.join(sm.stages)}, "
          f"{n} queries, {args.tokens} new tokens, torch threads {torch.get_num_threads()}")
    print(f"{'batch_size':>10}{'questions':>10}{'calls':>7}{'gen s':>8}{'gen q/s':>9}{'total s':>9}{'total q/s':>10}")
    for r in (one, eight):
        print(f"{r['batch_size']:>10}{r['questions']:>10}{r['generate_calls']:>7}{r['generate_s']:>8}"
              f"{r['gen_q_per_s']:>9}{r['total_s']:>9}{r['total_q_per_s']:>10}")
    print(f"batched / one-by-one: {ratio_gen:.2f}x (generate calls), {ratio_total:.2f}x (whole build_pool); "
          f"identical questions {same}/{len(eight['texts'])}")
    if args.json:
        keep = lambda r: {k: v for k, v in r.items() if k != "texts"}  # noqa: E731
        Path(args.json).write_text(json.dumps({"real": args.real, "queries": n, "stages": sm.stages,
                                               "one": keep(one), "eight": keep(eight), "ratio_generate":
                                               round(ratio_gen, 3), "ratio_total": round(ratio_total, 3),
                                               "identical": same}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
