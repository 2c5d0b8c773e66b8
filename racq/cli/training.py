"""The RAC chain: train sft|uncond|dpo|all and pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from racq.cli import ConfigOpt, SetOpt, _fail, _train_cfg, app, train_app


# ------------------------------------------------------------------ training
@train_app.command("sft")
def train_sft_cmd(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt):
    """LoRA SFT of p(question | query, passages) on split t1 -> adapter `sft`.

    Example: racq train sft --config recipes/cpu-default.yaml --set max_steps=10
    """
    from racq.train.sft import train_sft

    print(train_sft(_train_cfg(config, set_)))


@train_app.command("uncond")
def train_uncond_cmd(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt):
    """The query-only model p(question | query), same recipe and data -> adapter `uncond`.

    Example: racq train uncond --config recipes/cpu-default.yaml
    """
    from racq.train.sft import train_sft

    print(train_sft(_train_cfg(config, set_), query_only=True))


@train_app.command("dpo")
def train_dpo_cmd(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
                  pairs: Optional[List[Path]] = typer.Option(None, help="Preference file(s) (JSONL/parquet)."),
                  start: str = typer.Option("sft", help="Adapter the policy starts from."),
                  name: str = typer.Option("aligned", help="Name of the new stage."),
                  from_votes: bool = typer.Option(False, "--from-votes",
                                                  help="Train a new round from the app's human votes."),
                  db: Optional[Path] = typer.Option(None, help="Annotation DB for --from-votes."),
                  synthetic_weight: float = typer.Option(0.0, help="--from-votes: share of synthetic pairs mixed in.")):
    """DPO (sigmoid, beta) + NLL on chosen with the SFT policy as reference -> a new stage.

    Example: racq train dpo --pairs runs/default/pairs.jsonl --name aligned
    Example: racq train dpo --from-votes          # -> aligned-r1, aligned-r2, ...
    """
    cfg = _train_cfg(config, set_)
    if from_votes:
        from racq.feedback import FeedbackError, train_round

        def say(ev: dict) -> None:  # the round's steps (and orphaned rounds it marks failed), not every loss
            if ev.get("event") == "message":
                print(ev["message"], flush=True)

        try:
            print(train_round(cfg, db_path=db, synthetic_weight=synthetic_weight, progress=say))
        except FeedbackError as e:  # e.g. another process holds the round lease: say who, no traceback
            _fail(str(e))
        return
    from racq.train.dpo import train_dpo

    print(train_dpo(cfg, pairs or None, start=start, name=name))


@train_app.command("all")
def train_all_cmd(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt):
    """sft -> uncond -> pairs -> dpo, resumable: a killed run skips its finished steps.

    Example: racq train all --config recipes/cpu-default.yaml
    """
    from racq.train.pipeline import train_all

    print(json.dumps(train_all(_train_cfg(config, set_)), indent=2, default=str))


@app.command()
def pairs(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt):
    """Synthetic preference pairs on split t2: SFT sample vs the query-only/SFT token mixture.

    Example: racq pairs --set alpha=0.7 --set t2_limit=50
    """
    from racq.train.pairs import build_pairs

    print(json.dumps(build_pairs(_train_cfg(config, set_)), indent=2))


