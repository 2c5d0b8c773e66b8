"""What the training steps share: example selection, own-passage ranking, TRL records, LoRA settings,
and atomic adapter writes with a manifest."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from racq.config import REPO_ROOT, TrainConfig
from racq.data import Example, Passage, load_examples
from racq.prompts import has_chat_template, passage_prompt_messages, query_prompt_messages
from racq.retrieval.named import named_loader
from racq.train import dist


class RunDataError(ValueError):
    """The training data cannot be used as asked (no rows in a split, a run folder from other data)."""


def select_examples(cfg: TrainConfig, split: str, limit: int = 0) -> list[Example]:
    """Examples of `split` (of `cfg.data` when set, else of `cfg.datasets`) that have passages and a gold
    question, in a seeded shuffled order."""
    import random

    exs = [e for e in load_examples(cfg.datasets, split=split, data_file=cfg.data or None,
                                    index=named_loader(cfg.index))
           if e.passages and e.gold_question]
    if not exs and cfg.data:
        raise RunDataError(f"{cfg.data} has no {split} rows to train on (`racq data stats --data {cfg.data}` counts "
                         f"them per split; set a row's `topic` to choose its split)")
    random.Random(cfg.seed).shuffle(exs)
    return exs[:limit] if limit else exs


DATA_SOURCE_FILE = "data-source.json"


def check_run_data(cfg: TrainConfig) -> None:
    """Refuse a run folder made from other data: its finished steps, checkpoints and pairs would be
    resumed on top of this data's. The first step of a run records the source; a folder from before
    this record existed was made from the shipped datasets (the only data there was).

    Under a launcher rank 0 checks (and records) first; the other ranks then check against its record."""
    with dist.main_first():
        _check_run_data(cfg)


def _check_run_data(cfg: TrainConfig) -> None:
    if cfg.data:  # a bad row fails here, before anything is recorded
        load_examples(data_file=cfg.data, index=named_loader(cfg.index))
    run = Path(cfg.run_dir)
    path = run / DATA_SOURCE_FILE
    now = {"data": str(Path(cfg.data).resolve()) if cfg.data else "", "index": cfg.index if cfg.data else ""}
    if path.exists():
        before = json.loads(path.read_text())
    elif any((run / f).exists() for f in ("state.json", "pairs.jsonl", "sft", "uncond")):
        before = {"data": "", "index": ""}
    else:
        run.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(now, indent=2))
        return
    if {k: before.get(k, "") for k in now} != now:
        def what(s: dict) -> str:
            return (f"data {s['data']}" + (f" (index {s['index']})" if s.get("index") else "")) if s.get("data") \
                else "the shipped datasets"
        raise RunDataError(f"run folder {run} holds a run on {what(before)}, not on {what(now)}: give this run its "
                         f"own folder (--set run_dir=runs/NAME)")


def rank_own_passages(examples: Sequence[Example], embedder: str, k: int,
                      cache: Path | None = None) -> list[list[Passage]]:
    """Each example's own passages ranked against its query (top-k), as the RAC authors did.

    One batched encode for all queries and passages; the result is cached in the run folder. Under a
    launcher rank 0 encodes and writes the cache first; the other ranks read it (no embedder, no write).
    """
    with dist.main_first():
        return _rank_own_passages(examples, embedder, k, cache)


def _rank_own_passages(examples: Sequence[Example], embedder: str, k: int, cache: Path | None) -> list[list[Passage]]:
    key = hashlib.sha1(json.dumps([[e.query, [p.pid for p in e.passages]] for e in examples]
                                  + [embedder, k]).encode()).hexdigest()[:12]
    if cache is not None and cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            by_pid = {p.pid: p for e in examples for p in e.passages}
            return [[by_pid[pid] for pid in row] for row in stored["ranked"]]
    import numpy as np

    from racq.models import load_embedder

    model = load_embedder(embedder)
    q = model.encode([e.query for e in examples], normalize_embeddings=True, batch_size=64)
    flat = [p for e in examples for p in e.passages]
    pv = model.encode([f"{p.title} {p.text}".strip() for p in flat], normalize_embeddings=True, batch_size=64)
    ranked, start = [], 0
    for i, e in enumerate(examples):
        n = len(e.passages)
        scores = pv[start:start + n] @ q[i]
        ranked.append([e.passages[j] for j in np.argsort(-scores, kind="stable")[:k]])
        start += n
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "ranked": [[p.pid for p in r] for r in ranked]}))
    return ranked


def prompt_for(tokenizer, query: str, passages: Sequence[Passage] | None, cfg: TrainConfig):
    """The TRL prompt: chat messages when the model has a template, else the plain text prompt.

    `passages=None` gives the query-only prompt."""
    msgs = (query_prompt_messages(query) if passages is None else
            passage_prompt_messages(query, passages, tokenizer, cfg.top_k, cfg.passage_tokens))
    if has_chat_template(tokenizer):
        return msgs
    from racq.prompts import render

    return render(msgs, tokenizer, use_chat_template=False)


def answer_for(tokenizer, text: str):
    """The TRL completion matching `prompt_for`'s format."""
    if has_chat_template(tokenizer):
        return [{"role": "assistant", "content": text}]
    return text + (tokenizer.eos_token or "")


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    targets = cfg.target_modules if cfg.target_modules == "all-linear" else cfg.target_modules.split(",")
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


def trainer_args(cfg: TrainConfig, output_dir: Path, lr: float, epochs: float, on_cpu: bool | None = None) -> dict:
    """Arguments shared by SFTConfig and DPOConfig (CPU-safe: use_cpu, no bf16, no checkpointing).

    `on_cpu=None` decides from cfg.use_cpu and this machine; `racq train --dry-run` passes False to build
    the arguments a GPU box would get (racq.train.plan)."""
    import torch

    if on_cpu is None:
        on_cpu = cfg.use_cpu or not torch.cuda.is_available()
    return dict(output_dir=str(output_dir), per_device_train_batch_size=cfg.batch_size,
                per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
                learning_rate=lr, num_train_epochs=epochs, max_steps=cfg.max_steps,
                use_cpu=on_cpu, bf16=cfg.bf16 and not on_cpu,
                gradient_checkpointing=cfg.gradient_checkpointing,
                train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
                save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=1,
                logging_steps=cfg.logging_steps, report_to=[], seed=cfg.seed, dataloader_num_workers=0,
                disable_tqdm=not os.isatty(2), lr_scheduler_type="cosine", warmup_steps=cfg.warmup_steps)


def last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def data_hash(examples: Sequence[Example]) -> str:
    return hashlib.sha256("\n".join(f"{e.topic_id}\t{e.query}\t{e.gold_question}"
                                    for e in examples).encode()).hexdigest()[:16]


def save_adapter(model, tokenizer, target: Path, manifest: dict, adapter: str | None = None) -> Path:
    """Write the adapter to a temp folder beside `target`, then rename: a killed run never leaves a
    half-written stage that the registry would pick up. Under a launcher rank 0 alone writes; every
    rank returns once it is written."""
    target = Path(target)
    if dist.is_main():
        _write_adapter(model, tokenizer, target, manifest, adapter)
    dist.barrier()
    return target


def _write_adapter(model, tokenizer, target: Path, manifest: dict, adapter: str | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    if adapter is not None:  # a DPO model also holds the frozen "ref" copy: save only the policy
        model.save_pretrained(tmp, selected_adapters=[adapter])
    else:
        model.save_pretrained(tmp)
    if tokenizer is not None and manifest.get("full_finetune"):
        tokenizer.save_pretrained(tmp)
    # adapter_config.json stores the base model's absolute path; the registry always passes the base
    # model explicitly, so record where it came from in the manifest instead of trusting that path.
    manifest = {**manifest, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "git_commit": git_commit()}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    if target.exists():
        old = target.parent / f".old-{target.name}-{os.getpid()}"
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old)
    else:
        tmp.rename(target)


def config_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def losses(trainer) -> dict:
    """Last logged train loss, eval loss when evaluated, and the step count, from a finished Trainer."""
    hist = trainer.state.log_history
    train = [h["loss"] for h in hist if "loss" in h]
    ev = [h["eval_loss"] for h in hist if "eval_loss" in h]
    final = [h["train_loss"] for h in hist if "train_loss" in h]
    return {"train_loss_first": train[0] if train else None, "train_loss_last": train[-1] if train else None,
            "train_loss_mean": final[-1] if final else None, "eval_loss": ev[-1] if ev else None,
            "steps": trainer.state.global_step}
