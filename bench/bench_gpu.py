"""What a GPU box gives, measured once: SFT and DPO training tokens/s (a few optimizer steps of the recipe on
its base model), the 3-stage ask latency in-process (racq.service.Asker, bench_ask.py's table) and, with
--vllm-url, through a vLLM server, plus peak memory per section. Without CUDA it runs on the CPU and says so.

    .venv/bin/python bench/bench_gpu.py --config recipes/llama8b-lora.yaml            # on the GPU box
    .venv/bin/python bench/bench_gpu.py --config recipes/llama8b-lora.yaml --vllm-url http://127.0.0.1:8000/v1
    .venv/bin/python bench/bench_gpu.py --tiny --steps 3 --set batch_size=2 --set grad_accum=1   # CPU smoke run

Training: the trainer `racq train sft|dpo` builds (racq.train.plan.build_trainer: the recipe's arguments, LoRA,
gradient checkpointing), trained for --steps optimizer steps on the first examples of t1 (SFT) and on
stand-in pairs from t2 (DPO: gold question vs another example's, with a fresh LoRA as the policy: same
shapes and cost as the real pairs). tokens/s = non-padding input tokens (Trainer's
include_num_input_tokens_seen, summed over ranks) per second over the steps after the first (the first
holds CUDA warm-up); nothing is saved. Peak memory: torch.cuda.max_memory_allocated on a GPU, the
process's peak RSS on a CPU; each section runs in its own process so its peak is its own.

Ask: the in-process engines (racq.multilora / fastgen / generate) keep the model on the CPU, so that row is a
CPU figure even on a GPU box; the GPU's number for asking is the vLLM row (`engine: vllm`, needs a vLLM
server and a racq with that engine; skipped with a note otherwise).
"""

from __future__ import annotations

import argparse
import dataclasses
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
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_ask import QUERIES  # noqa: E402  (bench/ is on sys.path when this script runs)

SECTIONS = ("sft", "dpo", "ask", "vllm")


def device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
    return "cpu (no CUDA here: training falls back to the CPU, bf16 off)"


def peak_mb() -> int:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def tiny_base(work: Path) -> Path:
    """Llama-3.1-8B's architecture at tiny sizes (racq.tiny.LLAMA31_ARCH), made once in `work`."""
    from racq.tiny import LLAMA31_ARCH, make_tiny_lm

    base = work / "tiny-llama31"
    return base if (base / "config.json").exists() else make_tiny_lm(base, hidden=64, **LLAMA31_ARCH)


def train_section(args, step: str) -> dict:
    from transformers import TrainerCallback

    from racq.config import TrainConfig, load_config
    from racq.train.plan import build_trainer

    work = Path(tempfile.mkdtemp(prefix=f"bench-gpu-{step}-", dir=args.workdir))
    sets = list(args.set) + ([f"base_model={tiny_base(Path(args.workdir))}"] if args.tiny else [])
    cfg = load_config(TrainConfig, args.config, sets)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    need = args.steps * cfg.batch_size * cfg.grad_accum * world  # examples for exactly --steps optimizer steps
    cfg = dataclasses.replace(cfg, max_steps=args.steps, save_steps=10**9, logging_steps=10**9, eval_examples=0,
                              t1_limit=need, t2_limit=need, run_dir=str(work / "run"),
                              adapters_dir=str(work / "adapters"))  # no start adapter: DPO gets a fresh LoRA
    trainer, notes = build_trainer(cfg, step, work / "run")
    trainer.args.include_num_input_tokens_seen = "non_padding"
    clock = []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            clock.append((time.perf_counter(), state.num_input_tokens_seen))

    trainer.add_callback(Clock())
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    secs = time.perf_counter() - t0
    tokens = trainer.state.num_input_tokens_seen
    warm = (clock[-1][1] - clock[0][1]) / (clock[-1][0] - clock[0][0]) if len(clock) > 1 else None
    return {"section": step, "device": str(trainer.args.device), "steps": trainer.state.global_step,
            "tokens": tokens, "seconds": round(secs, 1), "tokens_per_s_all": round(tokens / secs),
            "tokens_per_s_after_first": round(warm) if warm else None, "peak_mb": peak_mb(),
            "batch": f"{cfg.batch_size}x{cfg.grad_accum}x{world}", "bf16": trainer.args.bf16,
            "checkpointing": trainer.args.gradient_checkpointing, "notes": notes}


def asker(args, engine: str, url: str | None):
    from racq import retrieval
    from racq.config import ModelConfig, PromptConfig, TrainConfig, load_config
    from racq.service import Asker

    cfg = load_config(TrainConfig, args.config, args.set)
    if args.tiny:
        from racq.data import Passage
        from racq.tiny import BagOfWords, tiny_stages

        base, adapters = tiny_stages(args.workdir)
        rc = retrieval.RetrievalConfig(index_dir=str(Path(args.workdir) / "index"))
        index = retrieval.Index.build([Passage(f"T{i}", q) for i, q in enumerate(QUERIES)], cfg=rc,
                                      embedder=BagOfWords(), log=lambda *_: None)
    else:  # the recipe's base and adapters, the shipped passage index
        base, adapters = cfg.base_model, cfg.adapters_dir
        index = retrieval.load_or_build(log=lambda *_: None)
    mc = ModelConfig(base_model=str(base), adapters_dir=str(adapters), engine=engine, threads=args.threads)
    if url:  # the vLLM server setting, whatever racq.service names it (a field of ModelConfig with "url")
        field = next(f.name for f in dataclasses.fields(ModelConfig) if "url" in f.name)
        mc = dataclasses.replace(mc, **{field: url})
    return Asker.load(mc, PromptConfig(), index=index)


def vllm_missing(args) -> str | None:
    """Why the vLLM row cannot run (None when it can)."""
    from racq.config import ModelConfig
    from racq.service import ENGINES

    if not args.vllm_url:
        return "no --vllm-url given"
    if "vllm" not in ENGINES or not any("url" in f.name for f in dataclasses.fields(ModelConfig)):
        return f"this racq has no engine 'vllm' with a server URL setting (engines: {', '.join(ENGINES)})"
    return None


def ask_section(args, section: str) -> dict:
    from racq.config import GenConfig

    engine, url = ("vllm", args.vllm_url) if section == "vllm" else (args.engine, None)
    t0 = time.perf_counter()
    a = asker(args, engine, url)
    load_s = time.perf_counter() - t0
    gen = GenConfig(max_new_tokens=args.tokens, batch_size=len(a.stages))

    def ask(q):
        t, first, texts = time.perf_counter(), None, {}
        for ev in a.ask_stream(q, k=3, gen=gen):
            if ev["event"] == "token" and first is None:
                first = time.perf_counter() - t
            elif ev["event"] == "stage":
                texts[ev["stage"]] = ev.get("question", ev.get("error"))
        return time.perf_counter() - t, first, [texts.get(s) for s in a.stages]

    ask(QUERIES[-1])  # warm-up, not timed
    rows = [ask(q) for q in QUERIES[: args.queries]]
    times, firsts = [r[0] for r in rows], [r[1] for r in rows if r[1] is not None]
    again = [ask(q)[0] for q in QUERIES[: args.queries]]  # every answer from the cache
    return {"variant": f"{section}-{engine}" if section == "ask" else "vllm", "stages": len(a.stages),
            "load_s": round(load_s, 2), "p50_s": round(statistics.median(times), 2),
            "p90_s": round(sorted(times)[min(len(times) - 1, round(0.9 * (len(times) - 1)))], 2),
            "first_token_p50_s": round(statistics.median(firsts), 2) if firsts else None,
            "first_token_max_s": round(max(firsts), 2) if firsts else None,
            "cached_p50_s": round(statistics.median(again), 4), "peak_mb": peak_mb(), "texts": [r[2] for r in rows]}


def run_sections(args) -> list[dict]:
    """Each section in its own process (its own peak memory); a failed section is reported, not fatal."""
    rows = []
    for section in args.sections:
        if section == "vllm" and (why := vllm_missing(args)):
            rows.append({"section": "vllm", "skipped": why})
            continue
        result = Path(args.workdir) / f"result-{section}.json"
        result.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--section", section, "--json", str(result), "--workdir", args.workdir,
               "--steps", str(args.steps), "--queries", str(args.queries), "--tokens", str(args.tokens),
               "--threads", str(args.threads), "--engine", args.engine, *[f"--set={s}" for s in args.set]]
        cmd += (["--config", args.config] if args.config else []) + (["--tiny"] if args.tiny else [])
        cmd += ["--vllm-url", args.vllm_url] if args.vllm_url else []
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0 or not result.exists():
            rows.append({"section": section, "failed": f"exit {out.returncode}: {out.stderr.strip()[-1500:]}"})
        else:
            rows.append({"section": section, **json.loads(result.read_text())})
    return rows


def print_tables(rows: list[dict], args) -> None:
    print(f"device: {device()}; config {args.config or 'TrainConfig defaults'}"
          + (" (tiny Llama-3.1-shaped base)" if args.tiny else ""))
    train = [r for r in rows if r["section"] in ("sft", "dpo")]
    if train:
        print(f"{'step':<5} {'device':<7} {'steps':>5} {'batch':>7} {'tokens':>8} {'seconds':>8} {'tok/s':>7} "
              f"{'tok/s after 1st':>15} {'peak MB':>8} {'bf16':>5} {'ckpt':>5}")
    for r in train:
        if "failed" in r:
            print(f"{r['section']:<5} FAILED {r['failed']}")
            continue
        print(f"{r['section']:<5} {r['device']:<7} {r['steps']:>5} {r['batch']:>7} {r['tokens']:>8} {r['seconds']:>8} "
              f"{r['tokens_per_s_all']:>7} {r['tokens_per_s_after_first']!s:>15} {r['peak_mb']:>8} "
              f"{r['bf16']!s:>5} {r['checkpointing']!s:>5}")
    ask = [r for r in rows if r["section"] in ("ask", "vllm")]
    done = [r for r in ask if "p50_s" in r]
    if ask:
        print(f"{'variant':<14} {'stages':>6} {'load s':>7} {'p50 s':>6} {'p90 s':>6} {'1st token p50/max s':>20} "
              f"{'cached s':>9} {'peak MB':>8} {'speed-up':>8} {'same text':>9}")
    ref = done[0] if done else None
    for r in ask:
        if "p50_s" not in r:
            print(f"{r['section']:<14} skipped: {r.get('skipped') or 'FAILED ' + r.get('failed', '')}")
            continue
        same = sum(a == b for qa, qb in zip(ref["texts"], r["texts"]) for a, b in zip(qa, qb))
        total = sum(len(q) for q in ref["texts"])
        first = f"{r['first_token_p50_s']}/{r['first_token_max_s']}"
        print(f"{r['variant']:<14} {r['stages']:>6} {r['load_s']:>7} {r['p50_s']:>6} {r['p90_s']:>6} {first:>20} "
              f"{r['cached_p50_s']!s:>9} {r['peak_mb']:>8} {ref['p50_s'] / r['p50_s']:>7.2f}x {same:>5}/{total}")
    if done:
        print(f"{args.queries} queries after a warm-up; same text = questions identical to {ref['variant']}'s; "
              "the in-process engines run on the CPU (racq places no model on a GPU for asking)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="TrainConfig recipe (its base_model, adapters_dir and training settings)")
    ap.add_argument("--set", action="append", default=[], help="override a recipe setting: --set key=value")
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per training section")
    ap.add_argument("--queries", type=int, default=8, help=f"timed queries (at most {len(QUERIES) - 1})")
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per question")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for the in-process ask (0 = default)")
    ap.add_argument("--engine", default="joint", help="in-process engine for the ask row (joint, merged, peft)")
    ap.add_argument("--vllm-url", help="a vLLM server's URL: adds the engine=vllm row")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    ap.add_argument("--tiny", action="store_true", help="tiny random Llama-3.1-shaped base and random adapters")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", help="write every row to this file")
    ap.add_argument("--section", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.queries = min(args.queries, len(QUERIES) - 1)
    args.sections = [s for s in args.sections.split(",") if s]
    if args.section:  # one section, in its own process: its figures go to --json, never through stdout
        row = train_section(args, args.section) if args.section in ("sft", "dpo") else ask_section(args, args.section)
        Path(args.json).write_text(json.dumps(row, default=str))
        return 0
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="bench-gpu-")
    rows = run_sections(args)
    print_tables(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device(), "rows": rows}, indent=2, default=str))
    return 1 if any("failed" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
