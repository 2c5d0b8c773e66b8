"""The RAC chain: train sft|uncond|dpo|all and pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from racq.cli.common import ConfigOpt, DataOpt, IndexOpt, SetOpt, app, data_errors, fail, train_app, train_cfg
from racq.train.dist import main_print  # under a launcher: the result once, from rank 0

DryRunOpt = typer.Option(False, "--dry-run", help="Build the run (arguments, LoRA, model with PEFT, first batch, "
                         "one forward/backward), print its plan, train nothing and write no adapter.")


def dry_run(cfg, step: str, **kw) -> None:
    """Print the plan of `racq train STEP --dry-run` (racq.train.plan)."""
    from racq.train.plan import dry_run as plan_of, format_plan

    with data_errors():
        plan = format_plan(plan_of(cfg, step, **kw))
    main_print(plan)  # under `accelerate launch` every rank builds it; rank 0 prints


# ------------------------------------------------------------------ training
@train_app.command("sft")
def train_sft_cmd(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
                  data: Optional[Path] = DataOpt, index: Optional[str] = IndexOpt, dry: bool = DryRunOpt):
    """LoRA SFT of p(question | query, passages) on split t1 -> adapter `sft`.

    Example: racq train sft --config recipes/cpu-default.yaml --set max_steps=10
    Example: racq train sft --data my-data.jsonl --set run_dir=runs/mine
    Example: racq train sft --config recipes/llama8b-lora.yaml --dry-run --set base_model=/tmp/tiny-llama31
    Example: accelerate launch --config_file recipes/accelerate/cpu-2proc.yaml -m racq.cli train sft --set max_steps=10   # 2 processes (docs/scale-out.md)
    """
    from racq.train.sft import train_sft

    if dry:
        return dry_run(train_cfg(config, set_, data, index), "sft")

    with data_errors():
        main_print(train_sft(train_cfg(config, set_, data, index)))


@train_app.command("uncond")
def train_uncond_cmd(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
                     data: Optional[Path] = DataOpt, index: Optional[str] = IndexOpt, dry: bool = DryRunOpt):
    """The query-only model p(question | query), same recipe and data -> adapter `uncond`.

    Example: racq train uncond --config recipes/cpu-default.yaml
    """
    from racq.train.sft import train_sft

    if dry:
        return dry_run(train_cfg(config, set_, data, index), "uncond")

    with data_errors():
        main_print(train_sft(train_cfg(config, set_, data, index), query_only=True))


@train_app.command("dpo")
def train_dpo_cmd(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
                  pairs: Optional[List[Path]] = typer.Option(None, help="Preference file(s) (JSONL/parquet)."),
                  start: str = typer.Option("sft", help="Adapter the policy starts from."),
                  name: str = typer.Option("aligned", help="Name of the new stage."),
                  from_votes: bool = typer.Option(False, "--from-votes",
                                                  help="Train a new round from the app's human votes."),
                  db: Optional[Path] = typer.Option(None, help="Annotation DB for --from-votes."),
                  synthetic_weight: float = typer.Option(0.0, help="--from-votes: share of synthetic pairs mixed in."),
                  data: Optional[Path] = DataOpt, index: Optional[str] = IndexOpt, dry: bool = DryRunOpt):
    """DPO (sigmoid, beta) + NLL on chosen with the SFT policy as reference -> a new stage.

    With --data (and no --pairs) the pairs come from that file's t2 split: `racq pairs --data` first,
    resumed (nothing to do when it already ran in this run folder).
    Example: racq train dpo --pairs runs/default/pairs.jsonl --name aligned
    Example: racq train dpo --from-votes          # -> aligned-r1, aligned-r2, ...
    Example: racq train dpo --data my-data.jsonl --set run_dir=runs/mine
    Example: racq train dpo --config recipes/llama8b-lora.yaml --dry-run --set base_model=/tmp/tiny-llama31
    Example: accelerate launch --config_file recipes/accelerate/cpu-2proc.yaml -m racq.cli train dpo --from-votes   # rank 0 alone uses the DB
    """
    cfg = train_cfg(config, set_, data, index)
    if dry:
        return dry_run(cfg, "dpo", pair_files=pairs, start=start, name=name)
    if from_votes:
        from racq.annotation.retrain import FeedbackError, train_round

        def say(ev: dict) -> None:  # the round's steps (and orphaned rounds it marks failed), not every loss
            if ev.get("event") == "message":
                main_print(ev["message"], flush=True)

        try:
            main_print(train_round(cfg, db_path=db, synthetic_weight=synthetic_weight, progress=say))
        except FeedbackError as e:  # e.g. another process holds the round lease: say who, no traceback
            fail(str(e))
        return
    from racq.train.dpo import train_dpo

    with data_errors():
        if cfg.data and not pairs:
            from racq.train.pairs import build_pairs

            main_print(json.dumps(build_pairs(cfg), indent=2))
        main_print(train_dpo(cfg, pairs or None, start=start, name=name))


@train_app.command("all")
def train_all_cmd(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
                  data: Optional[Path] = DataOpt, index: Optional[str] = IndexOpt):
    """sft -> uncond -> pairs -> dpo, resumable: a killed run skips its finished steps.

    Example: racq train all --config recipes/cpu-default.yaml
    Example: racq train all --data my-data.jsonl --set run_dir=runs/mine --set adapters_dir=runs/mine/adapters
    """
    from racq.train.pipeline import train_all

    with data_errors():
        main_print(json.dumps(train_all(train_cfg(config, set_, data, index)), indent=2, default=str))


@app.command()
def pairs(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
          data: Optional[Path] = DataOpt, index: Optional[str] = IndexOpt):
    """Synthetic preference pairs on split t2: SFT sample vs the query-only/SFT token mixture.

    Example: racq pairs --set alpha=0.7 --set t2_limit=50
    Example: racq pairs --data my-data.jsonl --set run_dir=runs/mine
    Example: accelerate launch --config_file recipes/accelerate/cpu-2proc.yaml -m racq.cli pairs   # batches shared by 2 ranks, same file as one process
    """
    from racq.train.pairs import build_pairs

    with data_errors():
        main_print(json.dumps(build_pairs(train_cfg(config, set_, data, index)), indent=2))




@train_app.command("check-recipe")
def check_recipe_cmd(paths: List[Path] = typer.Argument(..., help="Recipe or accelerate config YAML file(s).")):
    """Check TrainConfig recipes and accelerate/DeepSpeed configs key by key, before a GPU run.

    A TrainConfig recipe is loaded as `racq train` loads it; an accelerate config is checked against
    accelerate's own ClusterConfig, its enums and `accelerate launch`'s options (a typo inside
    deepspeed_config is otherwise silently ignored). One line per file; exit 1 when any fails.
    A GPU recipe (use_cpu: false) given with accelerate configs is also checked against each of them
    (DeepSpeed's gradient accumulation and clipping must match the Trainer's; bf16 and use_cpu must agree).
    Example: racq train check-recipe recipes/llama8b-lora.yaml recipes/accelerate/*.yaml
    """
    from racq.train.recipes import RecipeError, check_recipe, check_together, recipe_kind

    bad, kinds = 0, {}
    for path in paths:
        try:
            print(check_recipe(path))
            kinds[path] = recipe_kind(path)
        except RecipeError as e:
            bad += 1
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    # a GPU recipe (use_cpu false) given with accelerate configs is meant to be launched with them: they must agree
    for recipe in [p for p, k in kinds.items() if k == "gpu"]:
        for accel in [p for p, k in kinds.items() if k == "accelerate"]:
            for problem in check_together(recipe, accel):
                bad += 1
                typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
    if bad:
        raise typer.Exit(1)
