"""The vLLM server command for the stages on disk (`racq vllm serve` prints or runs it; tests start it).

    from racq.vllmserve import server_command, shell_line
    env, argv = server_command(base_model, adapters_dir, port=8011)
    print(shell_line(env, argv))

What it serves: the base model as `base` (`--served-model-name`), every adapter folder as a LoRA module
named like its stage (uncond included: `racq eval` asks it), in the base model's own dtype (vLLM would
otherwise downcast a float32 model to bfloat16, and the questions would drift from the in-process ones),
with RACQ's request settings only (`--generation-config vllm`: no defaults read from the model folder).
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True lets racq.vllmclient register rounds trained later without a
restart; restarting with the new stage in --lora-modules is the alternative.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from racq.config import REPO_ROOT
from racq.models import check_model_dir, list_stages

VENV_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"  # `make vllm` (its own venv: vLLM pins transformers)
SERVED_BASE = "base"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the --max-lora-rank values vLLM accepts
ROUND_SLOTS = 2  # adapters beyond those on disk one batch may mix (rounds registered at run time)


def adapter_rank(folder: Path) -> int:
    cfg = json.loads((Path(folder) / "adapter_config.json").read_text())
    return max([int(cfg.get("r") or 0), *map(int, (cfg.get("rank_pattern") or {}).values())])


def server_command(base_model: str, adapters_dir: str | Path, host: str = "127.0.0.1", port: int = 8011,
                   python: str | Path | None = None, dtype: str | None = None, max_model_len: int = 2048,
                   kv_cache_gb: int = 2, min_rank: int = 16) -> tuple[dict, list[str]]:
    """(environment variables, argv) of the server for BASE_MODEL and every adapter in ADAPTERS_DIR."""
    model = check_model_dir(base_model)
    if dtype is None:  # the dtype the folder was saved in (racq models setup: float32)
        dtype = json.loads((model / "config.json").read_text()).get("dtype") or "auto"
    stages = [s for s in list_stages(adapters_dir, include_hidden=True) if s.path is not None]
    rank = max([min_rank, *(adapter_rank(s.path) for s in stages)])
    rank = next((r for r in LORA_RANKS if r >= rank), rank)
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "HF_HUB_OFFLINE": "1",
           "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gb)}  # GiB of KV cache on a CPU (ignored on a GPU)
    python = python or (VENV_PYTHON if VENV_PYTHON.exists() else "python")
    # the module entry point: the `vllm` console script asks for a distribution named vllm (vllm-cpu is not)
    argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
            "--served-model-name", SERVED_BASE, "--dtype", dtype, "--generation-config", "vllm",
            "--enable-lora", "--max-lora-rank", str(rank), "--max-loras", str(len(stages) + ROUND_SLOTS),
            "--max-model-len", str(max_model_len), "--host", host, "--port", str(port)]
    if stages:
        argv += ["--lora-modules", *(f"{s.name}={s.path.resolve()}" for s in stages)]
    return env, argv


def shell_line(env: dict, argv: list[str]) -> str:
    """The command as one line to paste into a shell."""
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(argv)])


__all__ = ["SERVED_BASE", "VENV_PYTHON", "adapter_rank", "server_command", "shell_line"]
