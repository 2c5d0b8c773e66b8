"""The `racq` command. Every command's help ends with an example you can paste.

One module per command group: ask.py (ask, index, data, models, config), training.py (train, pairs),
annotation.py (pool, export, rate, users, app), evaluation.py (eval).

    racq ask "who won the world rapid chess championship in 2017"
    racq --help
"""

from __future__ import annotations

import os
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

from racq.config import TrainConfig, load_config  # noqa: E402

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
pool_app = typer.Typer(help="The candidate pool that annotators judge.", no_args_is_help=True)
export_app = typer.Typer(help="Exports of the annotation database.", no_args_is_help=True)
users_app = typer.Typer(help="Annotator accounts for the app's optional sign-in.", no_args_is_help=True)
app.add_typer(pool_app, name="pool")
app.add_typer(export_app, name="export")
app.add_typer(users_app, name="users")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file of TrainConfig settings.")
SetOpt = typer.Option(None, "--set", "-s", help="Override a setting: --set key=value (repeatable).")
DbOpt = typer.Option(None, "--db", help="Annotation database (default: annotations/racq.db or $RACQ_DB).")
FormatOpt = typer.Option(None, "--format", help="jsonl | parquet (default: from the file suffix).")


def _fail(msg: str, code: int = 1):
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _train_cfg(config: Optional[Path], sets: Optional[List[str]]) -> TrainConfig:
    try:
        return load_config(TrainConfig, config, sets or [])
    except (ValueError, OSError) as e:
        _fail(str(e))


# the command modules add their commands to the apps above (imported last: they import this module);
# this order is the order of `racq --help`
from racq.cli import ask, training, annotation, evaluation  # noqa: E402,F401,I001


def main():
    app()
