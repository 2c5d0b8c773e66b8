"""Human preferences: pool, export, rate, users, app."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from racq.cli.common import (DbOpt, EngineOpt, FormatOpt, SetOpt, VllmUrlOpt, app, export_app, fail, model_config,
                             pool_app, users_app)
from racq.config import MIN_PAIR_VOTES, load_config


# ------------------------------------------------------------------ pool, exports, ratings
@pool_app.command("build")
def pool_build_cmd(n: Optional[int] = typer.Option(None, "--n", help="Queries in the pool: from the test split "
                                                   "in a fixed order (default 200), or the first N of --queries "
                                                   "in that order (default: all of them)."),
                   queries: Optional[Path] = typer.Option(None, "--queries", help="Your own queries: a .txt file "
                                                          "(one a line; blank lines and # comments skipped) or a "
                                                          ".jsonl file (objects with \"query\", optional \"id\")."),
                   stages: Optional[str] = typer.Option(None, help="Comma list of stages (default: all on disk)."),
                   existing: bool = typer.Option(False, "--existing",
                                                 help="Only the queries already in the pool (after a new round)."),
                   split: Optional[str] = typer.Option(None, help="Data split the queries come from (default: "
                                                       "test)."),
                   batch_size: int = typer.Option(8, help="Prompts per batched generate call."),
                   base_model: Optional[str] = typer.Option(None, help="Base model: a folder or a name from "
                                                            "`racq models add` (default: cached SmolLM2)."),
                   adapters_dir: Optional[str] = typer.Option(None, help="Folder of stage adapters "
                                                              "(default: models/adapters)."),
                   index: Optional[str] = typer.Option(None, "--index", help="A named index of your own corpus "
                                                       "(`racq index list`); default: the shipped corpus."),
                   no_score: bool = typer.Option(False, "--no-score", help="Skip the faithfulness scores."),
                   engine: Optional[str] = EngineOpt, vllm_url: Optional[str] = VllmUrlOpt,
                   db: Optional[Path] = DbOpt):
    """Generate every stage's question for N queries, score them, and pair stages into items.

    Re-running adds only what is missing (e.g. a new stage aligned-r1 after `racq train dpo --from-votes`).
    Queries from --queries are stored as dataset "custom", topic id = the row's id or "q-" + a hash of
    the query; a bad row stops the build before anything is written (FILE:LINE: what is wrong).
    Example: racq pool build --n 200
    Example: racq pool build --n 50 --index mine
    Example: racq pool build --queries my-queries.txt --index mine
    Example: racq pool build --n 50 --engine vllm --vllm-url http://127.0.0.1:8011
    """
    from racq.annotation.pool import build_pool
    from racq.retrieval import RetrievalConfig
    from racq.service import Asker

    def show(done, total, msg):
        print(f"[pool] {msg}", file=sys.stderr, flush=True)

    examples = None
    if queries is not None:  # read and check the whole file before a model loads or the database opens
        if existing or split is not None:
            fail("--queries takes its queries from the file: leave out --existing and --split")
        found = _read_queries(queries, show)
        examples = found.examples
    try:
        mc = model_config(base_model, adapters_dir, engine, vllm_url)
        asker = Asker.load(mc, retrieval=RetrievalConfig(embedder=mc.embedder, index=index or ""),
                           with_scorer=not no_score)
        stats = build_pool(db, n=n if n is not None else len(examples) if examples is not None else 200,
                           stages=stages.split(",") if stages else None, asker=asker, examples=examples,
                           split=split or "test", existing=existing, batch_size=batch_size, score=not no_score,
                           progress=show, adapters_dir=mc.adapters_dir)
    except Exception as e:  # noqa: BLE001 - one clear line for the user
        fail(str(e))
    if examples is not None:
        stats["duplicates"] = found.duplicates
    print(json.dumps(stats, indent=2))


def _read_queries(path: Path, show):
    """The --queries file read and checked (racq.queries.read_queries); a bad row is one error line."""
    from racq.data import DataError
    from racq.queries import read_queries

    try:
        found = read_queries(path)
    except DataError as e:
        fail(f"{e}\nnothing was written")
    show(0, 0, f"{path}: {found.rows} queries read, {found.duplicates} duplicate(s) dropped, "
               f"{len(found.examples)} distinct")
    for note in found.notes:
        show(0, 0, note)
    return found


NoCardOpt = typer.Option(False, "--no-card", help="Do not write the dataset card beside the export.")


def _card_for(path: Path, no_card: bool):
    """Where the export's dataset card goes (racq.annotation.datacard.card_path), or None."""
    from racq.annotation.datacard import card_path

    return None if no_card else card_path(path)


@export_app.command("prefs")
def export_prefs_cmd(path: Path = typer.Argument(..., help="Output file (.jsonl, .parquet or .csv)."),
                     format: Optional[str] = FormatOpt,
                     tokenizer: Optional[Path] = typer.Option(None, help="Model folder whose tokenizer shapes the "
                                                              "prompts (default: the cached base model if present)."),
                     plain: bool = typer.Option(False, "--plain", help="Plain-text prompts, not chat messages."),
                     unused_only: bool = typer.Option(False, "--unused-only", help="Only votes no round used yet."),
                     no_card: bool = NoCardOpt, db: Optional[Path] = DbOpt):
    """The human preference pairs as TRL prompt/chosen/rejected rows (ties, both-bad, skips excluded),
    plus a dataset card beside them: README.md, or <stem>.card.md when the folder already has another
    README.md (counts per stage pair and outcome, annotators, agreement, rounds, passage licence).

    Example: racq export prefs runs/prefs.jsonl --format jsonl
    Example: racq export prefs runs/prefs.csv
    """
    from racq.config import DEFAULT_BASE_MODEL
    from racq.annotation.prefs import export_prefs
    from racq.store import open_db

    folder = tokenizer or (DEFAULT_BASE_MODEL if (DEFAULT_BASE_MODEL / "config.json").exists() else None)
    try:
        tok = None
        if folder is not None:
            from transformers import AutoTokenizer

            from racq.models import check_model_dir

            tok = AutoTokenizer.from_pretrained(check_model_dir(folder, "tokenizer model"))
        card = _card_for(path, no_card)
        n = export_prefs(open_db(db), path, format=format, tokenizer=tok, conversational=False if plain else None,
                         unused_only=unused_only, card=card)
    except Exception as e:  # noqa: BLE001
        fail(str(e))
    print(f"{n} preference pairs written to {path}" + (f"; dataset card: {card}" if card else ""))


@export_app.command("votes")
def export_votes_cmd(path: Path = typer.Argument(..., help="Output file (.jsonl, .parquet or .csv)."),
                     format: Optional[str] = FormatOpt, no_card: bool = NoCardOpt,
                     db: Optional[Path] = DbOpt):
    """Every raw vote row, undo rows included, oldest first, plus a dataset card beside it (README.md,
    or <stem>.card.md when the folder already has another README.md).

    Example: racq export votes runs/votes.jsonl
    Example: racq export votes runs/votes.csv --db annotations/study.example.db
    """
    from racq.annotation.prefs import export_votes
    from racq.store import open_db

    try:
        card = _card_for(path, no_card)
        n = export_votes(open_db(db), path, format=format, card=card)
    except Exception as e:  # noqa: BLE001
        fail(str(e))
    print(f"{n} votes written to {path}" + (f"; dataset card: {card}" if card else ""))


@app.command("rate")
def rate_cmd(db: Optional[Path] = DbOpt, n_boot: int = typer.Option(1000, help="Bootstrap resamples for the CIs."),
             min_pair_votes: int = typer.Option(MIN_PAIR_VOTES, help="Fewer votes than this on any stage pair "
                                                "(skips not counted) marks the ranking provisional."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")):
    """The leaderboard: win rates, Bradley-Terry with 95% CIs (stages whose intervals overlap share a
    rank), agreement, side bias, automatic scores; a notice names each stage pair with too few votes.

    Example: racq rate --n-boot 2000
    """
    from racq.annotation.standings import format_text, leaderboard
    from racq.store import open_db

    try:
        data = leaderboard(open_db(db), n_boot=n_boot, min_pair_votes=min_pair_votes)
    except Exception as e:  # noqa: BLE001
        fail(str(e))
    print(json.dumps(data, indent=2, default=str) if as_json else format_text(data))



# ------------------------------------------------------------------ users and the app
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
def app_cmd(port: Optional[int] = typer.Option(None, help="Port (default 7860, or the --config file's)."),
            host: Optional[str] = typer.Option(None, help="Interface to bind (default 127.0.0.1)."),
            db: Optional[Path] = typer.Option(None, "--db", help="Annotation database (default annotations/racq.db)."),
            config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML of AppConfig settings."),
            study: Optional[Path] = typer.Option(None, "--study", help="A study file: its guidelines, skip reasons, "
                                                 "button labels, overlap, reveal and database "
                                                 "(annotations/study.example.yaml shows every key)."),
            index: Optional[str] = typer.Option(None, "--index", help="A named index of your own corpus "
                                                "(`racq index list`); default: the shipped corpus."),
            share: bool = typer.Option(False, "--share", help="Also open a public Gradio share link (off by default)."),
            set_: Optional[List[str]] = SetOpt):
    """Serve the app (`python app.py` runs this command). One study = one YAML + one database: a bad
    study file or setting stops here (exit 2), naming the file and each bad key, before any server.

    Example: racq app --port 7861 --set users_file=annotations/users.yaml
    Example: racq app --study annotations/study.example.yaml
    Example: racq app --index mine
    Example: racq app --set engine=vllm --set vllm_url=http://127.0.0.1:8011
    """
    from racq.ui import AppConfig, apply_study, launch

    given = {"port": port, "host": host, "db": db, "study": study, "index": index}
    # only what was given: a value in the --config file is not overridden by an option's default
    sets = [*(set_ or []), *(f"{k}={v}" for k, v in given.items() if v is not None), *(["share=true"] if share else [])]
    try:
        cfg = load_config(AppConfig, config, sets)
        apply_study(cfg)  # before any server: errors name the study file and its keys
    except (ValueError, OSError) as e:
        fail(str(e), code=2)  # a usage error, as click and argparse exit
    launch(cfg)
