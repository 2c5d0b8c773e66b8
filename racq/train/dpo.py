"""Alignment: DPO (sigmoid, beta 0.2) + 0.5 x NLL on chosen, reference = the frozen SFT policy.

    racq train dpo                                       # synthetic pairs -> adapter `aligned`
    racq train dpo --pairs prefs.jsonl --start aligned --name aligned-r1   # any TRL preference file
    racq train dpo --from-votes                          # human votes from the app (see racq.annotation.retrain)

The policy continues a stage's LoRA adapter (`sft` by default); TRL freezes a copy of it as the
"ref" adapter. When the start is not the SFT adapter (a human-feedback round starting from
`aligned`), the SFT weights are loaded into that "ref" adapter, so the reference is always SFT and
every stage stays one adapter of the same shape on the one base model.

Under a launcher (`accelerate launch --config_file recipes/accelerate/cpu-2proc.yaml -m racq.cli train dpo`)
each rank trains on its share of every batch; rank 0 alone writes the adapter and its manifest
(world_size, effective batch), the others wait for it (racq.train.dist).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from racq.config import TrainConfig
from racq.train.common import config_dict, last_checkpoint, losses, save_adapter, trainer_args
from racq.train.dist import run_shape


def load_pair_rows(paths: Iterable[Path | str]) -> list[dict]:
    """Rows with prompt/chosen/rejected from JSONL (or parquet) preference files; others are refused."""
    from racq.train.pairs import read_pairs

    rows = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"preference file not found: {path}")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            got = pq.read_table(path).to_pylist()
        else:
            got = list(read_pairs(path))
        for i, r in enumerate(got):
            if not all(k in r for k in ("prompt", "chosen", "rejected")):
                raise ValueError(f"{path}: row {i + 1} lacks prompt/chosen/rejected")
        rows += got
    if not rows:
        raise ValueError("no preference pairs to train on")
    return rows


def _token_length(tok, prompt, answer) -> int:
    if isinstance(prompt, list):
        text = tok.apply_chat_template(prompt + answer, tokenize=False)
    else:
        text = prompt + answer
    return len(tok(text, add_special_tokens=False)["input_ids"])


def dpo_args(cfg: TrainConfig, out: Path, rows: list[dict], tok, on_cpu: bool | None = None):
    """The DPOConfig of a run on `rows` (also what `racq train dpo --dry-run` checks, racq.train.plan)."""
    from trl import DPOConfig

    longest = max(max(_token_length(tok, r["prompt"], r["chosen"]), _token_length(tok, r["prompt"], r["rejected"]))
                  for r in rows)
    targs = trainer_args(cfg, out, cfg.dpo_lr, cfg.dpo_epochs, on_cpu=on_cpu)
    targs["train_sampling_strategy"] = "random"  # TRL's DPO rows have no `input_ids` to group by
    return DPOConfig(**targs, beta=cfg.beta,
                     loss_type=["sigmoid", "sft"], loss_weights=[1.0, cfg.nll_weight],
                     # Never truncate: the RAC authors' code silently cut prompts at 512 tokens.
                     max_length=longest + 8, precompute_ref_log_probs=cfg.precompute_ref)


def train_dpo(cfg: TrainConfig, pair_files: Iterable[Path | str] | None = None, start: str = "sft",
              reference: str = "sft", name: str = "aligned", extra_manifest: dict | None = None,
              callbacks: list | None = None) -> Path:
    """Train a DPO round and write adapter `name` (atomically, with a manifest)."""
    from datasets import Dataset
    from peft import PeftModel, set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from trl import DPOTrainer

    from racq.models import load_base, resolve_model

    adapters = Path(cfg.adapters_dir)
    for needed in {start, reference}:
        if not (adapters / needed / "adapter_config.json").exists():
            raise FileNotFoundError(f"adapter {needed!r} not found in {adapters}: train it first "
                                    f"(`racq train {'sft' if needed == 'sft' else 'dpo'}`)")
    files = list(pair_files or [Path(cfg.run_dir) / "pairs.jsonl"])
    rows = load_pair_rows(files)
    model, tok = load_base(cfg.base_model)
    tok.padding_side = "right"
    model = PeftModel.from_pretrained(model, str(adapters / start), is_trainable=True)
    keep = ("prompt", "chosen", "rejected")
    out = Path(cfg.run_dir) / name
    args = dpo_args(cfg, out, rows, tok)
    trainer = DPOTrainer(model=model, ref_model=None, args=args,
                         train_dataset=Dataset.from_list([{k: r[k] for k in keep} for r in rows]),
                         processing_class=tok, callbacks=callbacks)
    if reference != start:
        ref_state = load_peft_weights(str(adapters / reference), device="cpu")
        set_peft_model_state_dict(trainer.model, ref_state, adapter_name="ref")
    trainer.train(resume_from_checkpoint=last_checkpoint(out))
    manifest = {"stage": name, "kind": "DPO+NLL", "base_model": str(resolve_model(cfg.base_model)),  # name -> folder
                "start_adapter": start, "reference_adapter": reference, "pairs": [str(f) for f in files],
                "n_pairs": len(rows),
                "max_length": args.max_length, "config": config_dict(cfg), "metrics": losses(trainer),
                **run_shape(cfg.batch_size, cfg.grad_accum), **(extra_manifest or {})}
    trainer.model.set_adapter("default")
    return save_adapter(trainer.model, tok, adapters / name, manifest, adapter="default")


def write_pairs_jsonl(rows: list[dict], path: Path) -> Path:
    """Write TRL preference rows as JSONL (call it on rank 0 only under a launcher)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path
