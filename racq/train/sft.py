"""LoRA SFT on split t1: p(question | query, passages) -> adapter `sft`, or the query-only model
p(question | query) -> adapter `uncond`. The loss covers the question tokens only.

    racq train sft                   # the passage model
    racq train uncond                # the query-only model (same recipe, same t1)
    accelerate launch -m racq.cli train sft --config recipes/llama8b-lora.yaml   # on GPUs
    accelerate launch --config_file recipes/accelerate/cpu-2proc.yaml -m racq.cli train sft   # 2 CPU processes

Under a launcher every rank trains on its share of each batch (the Trainer shards the data); rank 0
alone writes the adapter and its manifest, which records world_size and the effective batch
(batch_size x grad_accum x world_size): see racq.train.dist.
"""

from __future__ import annotations

from pathlib import Path

from racq.config import TrainConfig
from racq.train.dist import run_shape
from racq.train.common import (answer_for, check_run_data, config_dict, data_hash, last_checkpoint, lora_config,
                               losses, prompt_for, rank_own_passages, save_adapter, select_examples, trainer_args)


def build_sft_records(cfg: TrainConfig, tokenizer, query_only: bool) -> tuple[list[dict], list]:
    """(records, examples) of split t1 in TRL's prompt/completion format."""
    examples = select_examples(cfg, "t1", cfg.t1_limit)
    ranked = [None] * len(examples) if query_only else rank_own_passages(
        examples, cfg.embedder, cfg.top_k, Path(cfg.run_dir) / "ranked-t1.json")
    records = [{"prompt": prompt_for(tokenizer, e.query, r, cfg), "completion": answer_for(tokenizer, e.gold_question)}
               for e, r in zip(examples, ranked)]
    return records, examples


def sft_args(cfg: TrainConfig, out: Path, on_cpu: bool | None = None):
    """The SFTConfig of a run (also what `racq train sft --dry-run` checks, racq.train.plan)."""
    from trl import SFTConfig

    return SFTConfig(**trainer_args(cfg, out, cfg.sft_lr, cfg.sft_epochs, on_cpu=on_cpu), max_length=None,
                     completion_only_loss=True, eval_strategy="no", packing=False)


def train_sft(cfg: TrainConfig, query_only: bool = False, name: str | None = None) -> Path:
    """Train and write the adapter; resumes from the last checkpoint in the run folder."""
    from datasets import Dataset
    from trl import SFTTrainer

    from racq.models import load_base, resolve_model

    name = name or ("uncond" if query_only else "sft")
    check_run_data(cfg)
    model, tok = load_base(cfg.base_model)
    tok.padding_side = "right"  # training pads on the right; generation sets left
    records, examples = build_sft_records(cfg, tok, query_only)
    n_eval = min(cfg.eval_examples, len(records) // 5)
    train, evals = records[n_eval:], records[:n_eval]
    out = Path(cfg.run_dir) / name
    args = sft_args(cfg, out)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train),
                         eval_dataset=Dataset.from_list(evals) if evals else None, processing_class=tok,
                         peft_config=None if cfg.full_finetune else lora_config(cfg))
    trainer.train(resume_from_checkpoint=last_checkpoint(out))
    metrics = losses(trainer)
    if evals:
        metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
    manifest = {"stage": name, "kind": "query-only SFT" if query_only else "passage SFT",
                "base_model": str(resolve_model(cfg.base_model)),  # a registered name: its folder
                "split": "t1", "data": cfg.data or list(cfg.datasets), "examples": len(train),
                "eval_examples": n_eval,
                "data_hash": data_hash(examples), "config": config_dict(cfg), "metrics": metrics,
                "full_finetune": cfg.full_finetune, **run_shape(cfg.batch_size, cfg.grad_accum)}
    return save_adapter(trainer.model, tok, Path(cfg.adapters_dir) / name, manifest)
