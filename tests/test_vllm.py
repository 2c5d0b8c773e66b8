"""engine="vllm" against a real vLLM server (racq.vllmclient, racq.vllmserve).

The server runs from .venv-vllm (`make vllm`; `make test-vllm` sets it up and runs this file) on a free
loopback port with a tiny random Llama made here (hidden 128, 4 heads: head size 32, the smallest the
vLLM CPU attention backend takes) and random LoRA adapters (non-zero B, so they change the outputs).
It is started with the same command `racq vllm serve` prints and always stopped, pass or fail. Without
.venv-vllm the server tests skip, saying so; the down-server test needs no server and always runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import httpx
import pytest

from racq.config import GenConfig, ModelConfig, PromptConfig
from racq.vllmclient import ServedStages, VLLMClient, VLLMError
from racq.vllmserve import VENV_PYTHON, server_command

START_TIMEOUT = 600  # s: vLLM's engine start-up on 2 busy CPU cores (about 1 min when idle)
needs_vllm = pytest.mark.skipif(not VENV_PYTHON.exists(), reason=(
    f"{VENV_PYTHON.parent.parent} is missing: `make vllm` sets it up (`make test-vllm` runs these tests)"))
QUERY = "who played wolverine"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, log) -> None:
    """Until /v1/models answers (state), the server dies (fail with its log) or START_TIMEOUT passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        try:  # the pause between polls is a wait on the process: an early exit shows at once
            proc.wait(timeout=0.5)
            pytest.fail(f"the vLLM server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        except subprocess.TimeoutExpired:
            continue
    pytest.fail(f"the vLLM server did not answer within {START_TIMEOUT} s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the engine-core child goes with it
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory, real_tokenizer):
    """(url, base folder, adapters folder, a later round's folder), the server stopped after the module."""
    from racq.tiny import make_random_adapter, make_tiny_lm

    root = tmp_path_factory.mktemp("vllm")
    base = make_tiny_lm(root / "lm", seed=0, tokenizer=real_tokenizer, hidden=128)
    adapters = root / "adapters"
    make_random_adapter(base, adapters / "sft", seed=1)
    later = make_random_adapter(base, root / "later" / "aligned-r1", seed=3)  # a round trained after start
    port = _free_port()
    env, argv = server_command(str(base), adapters, port=port, kv_cache_gb=1, max_model_len=1024)
    log = root / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc, log)
        yield url, base, adapters, later
    finally:
        _stop(proc)


def _asker(url, base, adapters, index):
    from racq.service import Asker

    mc = ModelConfig(base_model=str(base), adapters_dir=str(adapters), engine="vllm", vllm_url=url)
    return Asker.load(mc, PromptConfig(top_k=2), index=index, cache_size=0)


def test_a_server_that_is_down_is_one_clear_error():
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(VLLMError, match=f"the vLLM server at {url} did not answer /v1/models.*racq vllm serve"):
        VLLMClient(url).models()


@pytest.mark.vllm
@needs_vllm
def test_stages_answer_through_the_server_as_in_process(server, passage_index):
    from racq.generate import StageModel
    from racq.retrieval import Index

    url, base, adapters, _ = server
    rc, _ = passage_index
    asker = _asker(url, base, adapters, Index.load(rc.index_dir, cfg=rc))
    assert asker.stages == ["base", "sft"] and asker.stage_model.base_name == "base"
    events = list(asker.ask_stream(QUERY, k=2))
    final = {e["stage"]: e for e in events if e["event"] == "stage"}
    assert set(final) == {"base", "sft"} and not any("error" in e for e in final.values())
    tokens = {s: [e["text"] for e in events if e["event"] == "token" and e["stage"] == s] for s in final}
    assert all(len(t) > 1 for t in tokens.values()), "each stage streams token by token"
    assert all(t[-1] == final[s]["raw"] for s, t in tokens.items())
    assert final["base"]["raw"] != final["sft"]["raw"], "the adapter changes the reply: sft routes to its LoRA"

    # the same prompt in process (PEFT path, greedy): the same replies, the base stage's opener included
    sm = StageModel.load(base, adapters, prompt=asker.prompt)
    prompt = sm.passage_prompt(QUERY, [h.passage for h in asker.retrieve(QUERY, 2)])
    gen = GenConfig()
    here = dict(zip(["base", "sft"], sm.generate([prompt, prompt], ["base", "sft"], gen)))
    there = dict(zip(["base", "sft"], asker.stage_model.generate([prompt, prompt], ["base", "sft"], gen)))
    assert there == here == {s: final[s]["raw"] for s in here}
    assert here["base"].startswith(sm.opener(prompt, "base"))


@pytest.mark.vllm
@needs_vllm
def test_a_new_round_is_registered_at_run_time(server, tmp_path):
    url, base, adapters, later = server
    folder = tmp_path / "adapters"
    shutil.copytree(adapters, folder)
    sm = ServedStages.load(str(base), folder, url)
    assert "aligned-r1" not in sm.stages
    with pytest.raises(VLLMError, match=f"stage aligned-r1 is not loaded on the vLLM server at {url}"):
        sm.generate(["x"], "aligned-r1")
    shutil.copytree(later, folder / "aligned-r1")  # what a Feedback round writes
    assert sm.sync() == ["aligned-r1"]
    assert "aligned-r1" in VLLMClient(url).models() and sm.stages == ["base", "sft", "aligned-r1"]
    p = sm.passage_prompt(QUERY, [])
    r1, sft = sm.generate([p, p], ["aligned-r1", "sft"])
    assert r1 and r1 != sft
    assert sm.add_stage("aligned-r1", folder / "aligned-r1") is False  # same files: nothing to do
    body = {"model": "aligned-r2", "prompt": p, "max_tokens": 4}
    with pytest.raises(VLLMError, match=f"stage aligned-r2 is not loaded on the vLLM server at {url}"):
        VLLMClient(url).complete(body)



@pytest.mark.vllm
@needs_vllm
def test_eval_and_the_pool_generate_through_the_server(server, passage_index, tmp_path):
    """`racq eval --engine vllm` asks what the in-process reference asks; `racq pool build --engine vllm`
    stores every stage's candidate (the same generate call as in process)."""
    from racq.data import Example
    from racq.eval.gen import JsonlCache, generate_all
    from racq.eval.run import EvalConfig
    from racq.annotation.pool import build_pool
    from racq.retrieval import Index

    url, base, adapters, _ = server
    rc, passages = passage_index
    exs = [Example(q, "Which one?", tuple(passages[i:i + 3]), "paqa", f"t{i}")
           for i, q in enumerate(["who played wolverine", "who won the world cup in 2018"])]
    got = {}
    for engine in ("peft", "vllm"):
        cfg = EvalConfig(stages=["base", "sft"], base_model=str(base), adapters_dir=str(adapters), engine=engine,
                         vllm_url=url, max_new_tokens=12, cache_dir=str(tmp_path / "cache"))
        got[engine], stats = generate_all(exs, [list(e.passages) for e in exs], cfg,
                                          JsonlCache(tmp_path / "cache" / "gen.jsonl"))
        assert stats["generated"] == 4, engine  # the engine is part of the cache key: nothing shared
    assert got["vllm"] == got["peft"]
    asker = _asker(url, base, adapters, Index.load(rc.index_dir, cfg=rc))
    stats = build_pool(tmp_path / "pool.db", n=2, asker=asker, examples=exs, score=False,
                       adapters_dir=str(adapters))
    assert stats["candidates_new"] + stats["empty"] == 4 and stats["candidates_new"] >= 2
