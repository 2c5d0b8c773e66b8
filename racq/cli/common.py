"""What every `racq` command module shares: the app and its groups, the common options, and the helpers
that turn a bad input into one error line (fail, data_errors) or read the settings (train_cfg, model_config).

The command modules import this module, never racq.cli itself, so that racq/cli/__init__.py can import them
without a cycle.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer

from racq.config import ModelConfig, TrainConfig, load_config

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
vllm_app = _group("vllm", "The vLLM server that engine=vllm asks (stages as LoRA adapters).")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file of TrainConfig settings.")
SetOpt = typer.Option(None, "--set", "-s", help="Override a setting: --set key=value (repeatable).")
DbOpt = typer.Option(None, "--db", help="Annotation database (default: annotations/racq.db or $RACQ_DB).")
FormatOpt = typer.Option(None, "--format", help="jsonl | parquet | csv (default: from the file suffix).")
DataOpt = typer.Option(None, "--data", help="Your own data file (.jsonl, .jsonl.gz, .parquet) in the generic "
                       "format of docs/data-format.md, instead of the shipped datasets (setting `data`).")
EngineOpt = typer.Option(None, "--engine", help="joint (default) | merged | peft | vllm: how the stages are "
                         "generated (setting `engine`, `racq config model`).")
VllmUrlOpt = typer.Option(None, "--vllm-url", help="With --engine vllm: the vLLM server (default "
                          "http://127.0.0.1:8011, where `racq vllm serve` listens).")
IndexOpt = typer.Option(None, "--index", help="The named index (`racq index list`) that the --data rows' "
                        "passage_ids point into (setting `index`).")


def fail(msg: str, code: int = 1):
    """Print MSG as one red error line and exit with CODE (no traceback)."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextmanager
def data_errors():
    """A bad --data row, a missing --index or a run folder from other data: one line, no traceback."""
    from racq.data import DataError
    from racq.retrieval import IndexCorrupt, IndexMissing, IndexStale
    from racq.train.common import RunDataError

    try:
        yield
    except (DataError, RunDataError, IndexMissing, IndexCorrupt, IndexStale) as e:
        fail(str(e))


def train_cfg(config: Optional[Path], sets: Optional[List[str]], data: Optional[Path] = None,
              index: Optional[str] = None) -> TrainConfig:
    """TrainConfig from --config, then --set, then --data / --index (the options win)."""
    options = [f"{k}={v}" for k, v in (("data", data), ("index", index)) if v is not None]
    try:
        return load_config(TrainConfig, config, [*(sets or []), *options])
    except (ValueError, OSError) as e:
        fail(str(e))


def model_config(base_model: Optional[str], adapters_dir: Optional[str], engine: Optional[str] = None,
                 vllm_url: Optional[str] = None) -> ModelConfig:
    """ModelConfig with the --base-model, --adapters-dir, --engine and --vllm-url options applied."""
    mc = ModelConfig()
    for name, value in (("base_model", base_model), ("adapters_dir", adapters_dir), ("engine", engine),
                        ("vllm_url", vllm_url)):
        if value is not None:
            setattr(mc, name, value)
    return mc
