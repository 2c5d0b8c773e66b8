"""`racq train sft|uncond|dpo --dry-run`: build everything the run would build, print its plan, train nothing.

    racq train sft --config recipes/llama8b-lora.yaml --dry-run --set base_model=/tmp/tiny-llama31

What is built is what the run builds: the TrainConfig, the TRL SFTConfig / DPOConfig (racq.train.sft.sft_args,
racq.train.dpo.dpo_args, both from racq.train.common.trainer_args), the LoRA config, the trainer (so the model
with PEFT applied, TRL's tokenized dataset and collator), gradient checkpointing switched on as Trainer.train
does, the first batch from the trainer's own dataloader, and one forward + backward pass on it (the loss, and
that gradients reach the LoRA weights and nothing else). No optimizer step, no checkpoint, no adapter: the
run folder is a temporary one, and the real one is only read (to say whether the run would resume).

The recipe's GPU flags are checked as given: the arguments are first built exactly as a GPU box gets them
(use_cpu and bf16 as the recipe says). Without a GPU, transformers refuses bf16 there; the plan then says
so, builds the CPU fallback that `racq train` would run on this machine, and lists every argument that
differs between the two.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
from pathlib import Path

from racq.config import TrainConfig
from racq.train.common import (answer_for, last_checkpoint, lora_config, prompt_for, rank_own_passages, select_examples,
                               trainer_args)


def _args(cfg: TrainConfig, build, lr: float, epochs: float, out: Path):
    """(the arguments this machine runs, notes): `build(on_cpu)` makes an SFTConfig/DPOConfig."""
    asked = trainer_args(cfg, out, lr, epochs, on_cpu=cfg.use_cpu)  # the recipe's flags, as on a GPU box
    here = trainer_args(cfg, out, lr, epochs)                        # what this machine would run
    notes = {}
    try:
        build(cfg.use_cpu)
        notes["recipe flags"] = (f"accepted by TrainingArguments as given (use_cpu={asked['use_cpu']}, "
                                 f"bf16={asked['bf16']}, gradient_checkpointing={asked['gradient_checkpointing']})")
    except ValueError as e:  # transformers: "Your setup doesn't support bf16/gpu ..."
        notes["recipe flags"] = f"refused on this machine: {e}"
    changed = {k: (asked[k], here[k]) for k in asked if asked[k] != here[k]}
    if changed:
        notes["CPU fallback changes"] = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
    if cfg.bf16 and not here["bf16"]:
        notes["bf16"] = ("used on a GPU (bf16 autocast; weights stay float32 as racq.models.load_base loads them); "
                         "off here: no CUDA bf16 on this machine")
    return build(None), notes


def _sft_trainer(cfg: TrainConfig, model, tok, query_only: bool, out: Path):
    from datasets import Dataset
    from trl import SFTTrainer

    from racq.train.sft import build_sft_records, sft_args

    records, _ = build_sft_records(cfg, tok, query_only)
    n_eval = min(cfg.eval_examples, len(records) // 5)
    train, evals = records[n_eval:], records[:n_eval]
    args, notes = _args(cfg, lambda on_cpu: sft_args(cfg, out, on_cpu), cfg.sft_lr, cfg.sft_epochs, out)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train),
                         eval_dataset=Dataset.from_list(evals) if evals else None, processing_class=tok,
                         peft_config=None if cfg.full_finetune else lora_config(cfg))
    return trainer, {"examples": f"{len(train)} train + {n_eval} held out (split t1)", **notes}


def stand_in_pairs(cfg: TrainConfig, tok) -> list[dict]:
    """Pairs of the right shape when none were sampled yet: t2 prompts, the gold question as chosen and
    another example's gold question as rejected (the count is the most pairs t2 can give)."""
    examples = select_examples(cfg, "t2", cfg.t2_limit)
    ranked = rank_own_passages(examples, cfg.embedder, cfg.top_k)
    rng = random.Random(cfg.seed)
    return [{"prompt": prompt_for(tok, e.query, r, cfg), "chosen": answer_for(tok, e.gold_question),
             "rejected": answer_for(tok, examples[(i + 1 + rng.randrange(max(1, len(examples) - 1))) % len(examples)]
                                    .gold_question)}
            for i, (e, r) in enumerate(zip(examples, ranked))]


def _dpo_trainer(cfg: TrainConfig, model, tok, real_run: Path, pair_files, start: str, out: Path):
    from datasets import Dataset
    from peft import PeftModel, get_peft_model
    from trl import DPOTrainer

    from racq.train.dpo import dpo_args, load_pair_rows

    files = list(pair_files or [real_run / "pairs.jsonl"])
    notes = {}
    if all(Path(f).exists() for f in files):
        rows = load_pair_rows(files)
        notes["pairs"] = f"{len(rows)} from {', '.join(map(str, files))}"
    else:
        rows = stand_in_pairs(cfg, tok)
        notes["pairs"] = (f"{len(rows)} stand-ins from split t2 ({files[0]} not sampled yet: `racq pairs` "
                          f"writes it; it gives at most this many)")
    start_dir = Path(cfg.adapters_dir) / start
    if (start_dir / "adapter_config.json").exists():
        model = PeftModel.from_pretrained(model, str(start_dir), is_trainable=True)
        notes["policy"] = f"starts from adapter {start_dir}"
    else:
        model = get_peft_model(model, lora_config(cfg))
        notes["policy"] = f"a fresh LoRA stands in for {start_dir} (not trained yet); the real run needs it"
    args, arg_notes = _args(cfg, lambda on_cpu: dpo_args(cfg, out, rows, tok, on_cpu), cfg.dpo_lr, cfg.dpo_epochs,
                            out)
    keep = ("prompt", "chosen", "rejected")
    trainer = DPOTrainer(model=model, ref_model=None, args=args, processing_class=tok,
                         train_dataset=Dataset.from_list([{k: r[k] for k in keep} for r in rows]))
    return trainer, {**notes, "max_length": args.max_length, **arg_notes}


def _checkpointing(trainer) -> str:
    """Switch activation checkpointing on as Trainer.train does first thing (transformers 5), and say so."""
    args, model = trainer.args, trainer.model
    if not args.gradient_checkpointing:
        return "off"
    kwargs = dict(args.gradient_checkpointing_kwargs or {})
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs or None)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs or None)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return f"on (model.is_activation_checkpointing={base.is_activation_checkpointing}, kwargs {kwargs or 'default'})"


def _first_batch(trainer) -> dict:
    """The first batch from the trainer's own dataloader, then one forward + backward (no optimizer step)."""
    loader = trainer.get_train_dataloader()
    batch = next(iter(loader))
    shapes = {k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape")}
    # Trainer.train sets this per accumulation window before training_step: here one micro-batch, unscaled
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.training_step(trainer.model, batch)
    named = list(trainer.model.named_parameters())
    trainable = sum(1 for n, p in named if p.requires_grad)
    lora_grads = sum(1 for n, p in named if p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0)
    frozen_grads = sum(1 for n, p in named if not p.requires_grad and p.grad is not None)
    trainer.model.zero_grad(set_to_none=True)
    total = trainer.set_initial_training_values(trainer.args, loader)
    return {"first batch": ", ".join(f"{k} {s}" for k, s in shapes.items()),
            "forward+backward": (f"loss {float(loss):.4f}; non-zero gradients on {lora_grads} of {trainable} trainable "
                                 f"tensors (a fresh LoRA's A gets none while its B is zero), {frozen_grads} on "
                                 "frozen ones; no optimizer step"),
            "steps": (f"{total[-1]} optimizer steps ({total[1]} per epoch, {trainer.args.num_train_epochs} epochs"
                      + (f", max_steps {trainer.args.max_steps}" if trainer.args.max_steps > 0 else "") + ")")}


def _model_report(trainer) -> dict:
    model, args = trainer.model, trainer.args
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = list(model.parameters())
    total, trainable = sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
    adapters = sorted(getattr(model, "peft_config", {}) or [])
    return {"model": f"{type(base).__name__} ({type(base.config).__name__}, {base.config.num_hidden_layers} layers, "
                     f"hidden {base.config.hidden_size})",
            "PEFT": f"{type(model).__name__}, adapters {', '.join(adapters)}" if adapters else "none (full fine-tune)",
            "params": f"{total:,} total, {trainable:,} trainable ({100 * trainable / max(total, 1):.2f} %)",
            "dtype": ", ".join(sorted({str(p.dtype).replace('torch.', '') for p in params})),
            "device": (f"parameters on {', '.join(sorted({str(p.device) for p in params}))}; args.device "
                       f"{args.device}, n_gpu {args.n_gpu}, world_size {args.world_size}, "
                       f"{getattr(args.parallel_mode, 'value', args.parallel_mode)}"),
            "effective batch": (f"{trainer.get_total_train_batch_size(args)} = {args.per_device_train_batch_size} per "
                                f"device x {args.gradient_accumulation_steps} accumulation x {args.world_size} "
                                "processes"),
            "lr": f"{args.learning_rate} ({getattr(args.lr_scheduler_type, 'value', args.lr_scheduler_type)}, "
                  f"warmup {args.warmup_steps} steps)",
            "flags": (f"bf16={args.bf16} fp16={args.fp16} use_cpu={args.use_cpu} "
                      f"gradient_checkpointing={args.gradient_checkpointing} "
                      f"train_sampling_strategy={args.train_sampling_strategy}")}


STAGE_OF = {"sft": "sft", "uncond": "uncond", "dpo": "aligned"}


def build_trainer(cfg: TrainConfig, step: str, work_dir: Path, pair_files=None, start: str = "sft",
                  name: str | None = None):
    """(trainer, notes): the SFT / DPO trainer `racq train STEP` would build, with its run folder moved to
    `work_dir` (caches and checkpoints go there). The dry run inspects it; bench/bench_gpu.py trains it."""
    from racq.models import load_base

    if step not in STAGE_OF:
        raise ValueError(f"a dry run covers {', '.join(STAGE_OF)}, not {step!r}")
    name = name or STAGE_OF[step]
    work = dataclasses.replace(cfg, run_dir=str(work_dir))
    out = Path(work_dir) / name
    model, tok = load_base(cfg.base_model)
    tok.padding_side = "right"  # as the run: training pads on the right
    if step == "dpo":
        return _dpo_trainer(work, model, tok, Path(cfg.run_dir), pair_files, start, out)
    return _sft_trainer(work, model, tok, step == "uncond", out)


def dry_run(cfg: TrainConfig, step: str = "sft", pair_files=None, start: str = "sft", name: str | None = None) -> dict:
    """The plan of `racq train STEP` with `cfg` (an ordered dict of lines); writes nothing outside a temp folder."""
    from racq.models import resolve_model

    name = name or STAGE_OF.get(step, step)
    real_run = Path(cfg.run_dir)
    with tempfile.TemporaryDirectory(prefix="racq-dry-run-") as tmp:  # not the run folder: nothing is written there
        trainer, notes = build_trainer(cfg, step, Path(tmp), pair_files, start, name)
        plan = {"step": f"{step} -> adapter {name!r} in {cfg.adapters_dir} (dry run: not written)",
                "base model": str(resolve_model(cfg.base_model)), **_model_report(trainer),
                "gradient checkpointing": _checkpointing(trainer), **notes}
        if not cfg.full_finetune:  # the adapter's config as PEFT resolved it ("all-linear" -> module names)
            lc = trainer.model.peft_config["default"]
            targets = ", ".join(sorted({t.split(".")[-1] for t in lc.target_modules}))
            plan["LoRA"] = f"r {lc.r}, alpha {lc.lora_alpha}, dropout {lc.lora_dropout}, targets {targets} " \
                           f"(asked: {cfg.target_modules})"
        plan.update(_first_batch(trainer))
        resume = last_checkpoint(real_run / name)
        plan["resume"] = f"from {resume}" if resume else f"no checkpoint in {real_run / name}: starts fresh"
    return plan


def format_plan(plan: dict) -> str:
    width = max(len(k) for k in plan)
    return "\n".join(f"{k:>{width}}: {v}" for k, v in plan.items())
