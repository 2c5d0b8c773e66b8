"""Training throughput (tokens/s) of the SFT and DPO steps, with and without the speed-ups we use:
length-grouped batches for SFT (less padding) and precomputed reference log-probs for DPO.

    .venv/bin/python bench/bench_train.py            # tiny random model (seconds)
    .venv/bin/python bench/bench_train.py --real     # SmolLM2-135M (~10 min on 2 cores)

Each variant trains one epoch over the same examples; tokens = the real (unpadded) tokens of the
examples, so padding saved shows up as speed. Seconds include loading the model and preparing the
data (the same for both variants of a step), so small runs understate the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _tokens(tok, rows, keys) -> int:
    total = 0
    for r in rows:
        for k in keys:
            msgs = r["prompt"] + r[k]
            text = tok.apply_chat_template(msgs, tokenize=False)
            total += len(tok(text, add_special_tokens=False)["input_ids"])
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", action="store_true", help="SmolLM2-135M instead of a tiny random model")
    ap.add_argument("--examples", type=int, default=24, help="training examples per variant")
    args = ap.parse_args()

    from racq.config import DEFAULT_BASE_MODEL, TrainConfig, load_config
    from racq.models import load_base
    from racq.tiny import make_random_adapter, make_tiny_lm
    from racq.train.dpo import train_dpo, write_pairs_jsonl
    from racq.train.sft import build_sft_records, train_sft

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    base = Path(DEFAULT_BASE_MODEL) if args.real else make_tiny_lm(work / "lm", hidden=64)
    common = dict(base_model=str(base), t1_limit=args.examples, eval_examples=0, batch_size=4, save_steps=10_000,
                  logging_steps=10_000, warmup_steps=0)
    _, tok = load_base(base)
    rows = []
    results = []
    for name, grouped in (("sft, random batches", False), ("sft, length-grouped", True)):
        cfg = load_config(TrainConfig, None, {**common, "group_by_length": grouped, "run_dir": str(work / name),
                                              "adapters_dir": str(work / "ad" / name.replace(" ", "_"))})
        records, _ = build_sft_records(cfg, tok, query_only=False)
        n_tok = _tokens(tok, records, ["completion"])
        t = time.perf_counter()
        train_sft(cfg)
        secs = time.perf_counter() - t
        results.append((name, n_tok, secs))
        rows = records
    # DPO: the gold question as chosen, another example's gold question as rejected (timing only)
    rng = random.Random(0)
    pairs = [{"prompt": r["prompt"], "chosen": r["completion"],
              "rejected": rows[rng.randrange(len(rows))]["completion"]} for r in rows]
    pairs = [p for p in pairs if p["chosen"] != p["rejected"]]
    pairs_file = write_pairs_jsonl(pairs, work / "pairs.jsonl")
    ad = work / "dpo-adapters"
    make_random_adapter(base, ad / "sft", seed=1, r=16) if not args.real else None
    if args.real:  # a real SFT adapter of the right shape: reuse the shipped one
        import shutil

        from racq.config import ADAPTERS_DIR

        shutil.copytree(Path(ADAPTERS_DIR) / "sft", ad / "sft")
    n_tok = _tokens(tok, pairs, ["chosen", "rejected"])
    for name, pre in (("dpo, reference on the fly", False), ("dpo, precomputed reference", True)):
        cfg = load_config(TrainConfig, None, {**common, "precompute_ref": pre, "run_dir": str(work / name),
                                              "adapters_dir": str(ad)})
        t = time.perf_counter()
        train_dpo(cfg, [pairs_file], name="bench-" + ("pre" if pre else "fly"))
        results.append((name, n_tok, time.perf_counter() - t))
    print(f"{'variant':<30} {'tokens':>8} {'seconds':>8} {'tokens/s':>9} {'vs baseline':>11}")
    for i, (name, n, s) in enumerate(results):
        baseline = results[0 if i < 2 else 2]
        ratio = (n / s) / (baseline[1] / baseline[2])
        print(f"{name:<30} {n:>8} {s:>8.1f} {n / s:>9.0f} {ratio:>10.2f}x")
    print("baselines: random batches (SFT), reference on the fly (DPO); "
          f"model: {'SmolLM2-135M' if args.real else 'tiny random Llama'}, {len(rows)} examples, batch 4")
    print(json.dumps({"results": results}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
