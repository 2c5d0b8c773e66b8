"""racq vllm: the vLLM server that engine=vllm asks (racq.vllmserve builds its command, racq.vllmclient
talks to it)."""

from __future__ import annotations

import json
import os
from typing import Optional

import typer

from racq.cli.common import VllmUrlOpt, fail, model_config, vllm_app


@vllm_app.command("serve")
def vllm_serve(port: int = typer.Option(8011, help="Port to listen on."),
               host: str = typer.Option("127.0.0.1", help="Interface to bind."),
               base_model: Optional[str] = typer.Option(None, help="Base model: a folder or a name from `racq "
                                                        "models add` (default: the cached SmolLM2)."),
               adapters_dir: Optional[str] = typer.Option(None, help="Stage adapters, each served as a LoRA "
                                                          "module of its name (default: models/adapters)."),
               python: Optional[str] = typer.Option(None, help="The Python that has vLLM (default: .venv-vllm, "
                                                    "made by `make vllm`, else `python`)."),
               dtype: Optional[str] = typer.Option(None, help="Model dtype (default: the folder's own, float32 "
                                                   "for SmolLM2, as in process; bfloat16 on a GPU is faster)."),
               print_only: bool = typer.Option(False, "--print", help="Print the command, do not start it.")):
    """Start (or print) the vLLM server for the base model and every stage on disk: base served as
    `base`, each adapter as a LoRA module of its stage's name, runtime LoRA loading on (new rounds are
    registered by engine=vllm or `racq vllm register`). The server runs in the foreground.

    Example: racq vllm serve --port 8011
    Example: racq vllm serve --print
    Then:    racq ask --engine vllm "who played wolverine"
    """
    from racq.models import ModelMissing
    from racq.vllmserve import server_command, shell_line

    mc = model_config(base_model, adapters_dir)
    try:
        env, argv = server_command(mc.base_model, mc.adapters_dir, host, port, python=python, dtype=dtype)
    except (ModelMissing, OSError, ValueError) as e:
        fail(str(e))
    print(shell_line(env, argv), flush=True)
    if not print_only:
        os.execvpe(argv[0], argv, {**os.environ, **env})  # the server replaces this process (Ctrl-C stops it)


@vllm_app.command("register")
def vllm_register(vllm_url: Optional[str] = VllmUrlOpt,
                  base_model: Optional[str] = typer.Option(None, help="Base model (its tokenizer; default: the "
                                                           "cached SmolLM2)."),
                  adapters_dir: Optional[str] = typer.Option(None, help="Stage adapters (default: "
                                                             "models/adapters).")):
    """Register on a running vLLM server every stage on disk that it does not serve yet (runtime LoRA
    loading: the server must run with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, as `racq vllm serve` starts
    it; else restart it with `racq vllm serve`). Prints what the server serves.

    Example: racq vllm register --vllm-url http://127.0.0.1:8011
    """
    from racq.vllmclient import ServedStages, VLLMError

    mc = model_config(base_model, adapters_dir, vllm_url=vllm_url)
    try:
        sm = ServedStages.load(mc.base_model, mc.adapters_dir, mc.vllm_url, include_hidden=True)
    except (VLLMError, OSError) as e:
        fail(str(e))
    print(json.dumps({"url": sm.url, "base": sm.base_name, "stages": sm.stages, "registered_now": sm.registered,
                      "unavailable": sm.errors}, indent=2))
    if sm.errors:
        raise typer.Exit(1)
