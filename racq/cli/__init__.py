"""The `racq` command. Every command's help ends with an example you can paste.

One module per command group: ask.py (ask, index, data, models, config), training.py (train, pairs),
annotation.py (pool, export, rate, users, app), evaluation.py (eval).

    racq ask "who won the world rapid chess championship in 2017"
    racq --help
"""

from __future__ import annotations

import os
from contextlib import contextmanager
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


def _group(name: str, help: str) -> typer.Typer:
    """A `racq NAME ...` command group."""
    sub = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


index_app = _group("index", "The passage index.")
data_app = _group("data", "Benchmark data.")
models_app = _group("models", "Local models and stages.")
train_app = _group("train", "The RAC training chain.")
pool_app = _group("pool", "The candidate pool that annotators judge.")
export_app = _group("export", "Exports of the annotation database.")
users_app = _group("users", "Annotator accounts for the app's optional sign-in.")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file of TrainConfig settings.")
SetOpt = typer.Option(None, "--set", "-s", help="Override a setting: --set key=value (repeatable).")
DbOpt = typer.Option(None, "--db", help="Annotation database (default: annotations/racq.db or $RACQ_DB).")
FormatOpt = typer.Option(None, "--format", help="jsonl | parquet | csv (default: from the file suffix).")
DataOpt = typer.Option(None, "--data", help="Your own data file (.jsonl, .jsonl.gz, .parquet) in the generic "
                       "format of docs/data-format.md, instead of the shipped datasets (setting `data`).")
IndexOpt = typer.Option(None, "--index", help="The named index (`racq index list`) that the --data rows' "
                        "passage_ids point into (setting `index`).")


def _fail(msg: str, code: int = 1):
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextmanager
def _data_errors():
    """A bad --data row, a missing --index or a run folder from other data: one line, no traceback."""
    from racq.data import DataError
    from racq.retrieval import IndexCorrupt, IndexMissing, IndexStale
    from racq.train.common import RunDataError

    try:
        yield
    except (DataError, RunDataError, IndexMissing, IndexCorrupt, IndexStale) as e:
        _fail(str(e))


def _train_cfg(config: Optional[Path], sets: Optional[List[str]], data: Optional[Path] = None,
               index: Optional[str] = None) -> TrainConfig:
    """TrainConfig from --config, then --set, then --data / --index (the options win)."""
    options = [f"{k}={v}" for k, v in (("data", data), ("index", index)) if v is not None]
    try:
        return load_config(TrainConfig, config, [*(sets or []), *options])
    except (ValueError, OSError) as e:
        _fail(str(e))


# the command modules add their commands to the apps above (imported last: they import this module);
# this order is the order of `racq --help`
from racq.cli import ask, training, annotation, evaluation  # noqa: E402,F401,I001


def main():
    app()
