"""engine="vllm": every stage asked of an OpenAI-compatible vLLM server, the stages served as LoRA
adapters by name (`base` = the served base model, no adapter; sft, aligned, aligned-rN = LoRA modules).

    from racq.vllmclient import ServedStages
    sm = ServedStages.load(base_model, adapters_dir, url="http://127.0.0.1:8011")   # tokenizer only
    sm.generate([p, p], ["base", "sft"])                  # raw replies, concurrent requests
    for stage, text, done in sm.stream([("base", p), ("sft", p)]):   # as racq.multilora.JointStages
        print(stage, text)

Why a server: on GPUs and for many users vLLM batches requests continuously and serves every adapter
over one copy of the base; RACQ then holds only the tokenizer (docs/vllm.md). The prompts are RACQ's
own (StageModel.passage_prompt, the base stage's opener from StageModel.opener, the same path as the
in-process engines), sent as text to /v1/completions: greedy (temperature 0), max_tokens =
GenConfig.max_new_tokens, stop at the first "?" when GenConfig.stop_at_question. ServedStages is a
StageModel without a model, so the Asker, the pool and `racq eval` use it through the same calls.

sync() registers every stage on disk that the server lacks (POST /v1/load_lora_adapter; the server must
start with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, as `racq vllm serve` does); a stage it cannot take is
unavailable with the reason. The mixture sampler and training stay in-process.
"""

from __future__ import annotations

import json
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import httpx

from racq.config import DEFAULT_VLLM_URL, GenConfig, PromptConfig
from racq.generate import StageModel
from racq.models import BASE_STAGE, Stage, check_model_dir, list_stages, stage_order

DEFAULT_URL = DEFAULT_VLLM_URL
CONNECT_TIMEOUT = 5.0  # a server that is down answers at once; one that is not there at all within this
READ_TIMEOUT = 600.0  # a busy CPU server can take minutes for a batch; a GPU one answers in seconds
MAX_CONCURRENT = 64  # requests in flight from one generate call (the server batches them)


class VLLMError(RuntimeError):
    """The vLLM server cannot answer as asked; the message says why and what to do."""


class VLLMClient:
    """The few endpoints RACQ uses, over one pooled httpx client (thread-safe)."""

    def __init__(self, url: str = DEFAULT_URL, read_timeout: float = READ_TIMEOUT):
        self.url = (url or DEFAULT_URL).rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(read_timeout, connect=CONNECT_TIMEOUT),
                                 limits=httpx.Limits(max_connections=MAX_CONCURRENT + 8))

    def _call(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            return self.http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise VLLMError(f"the vLLM server at {self.url} did not answer {path} ({type(e).__name__}: {e}); "
                            f"start it with `racq vllm serve` or set vllm_url") from e

    def models(self) -> dict[str, dict]:
        """Served model id -> its card (vLLM: a LoRA module's card has `parent` = the base model's id)."""
        r = self._call("GET", "/v1/models")
        if r.status_code != 200:
            raise VLLMError(f"the vLLM server at {self.url} answered /v1/models with {r.status_code}: {r.text[:300]}")
        return {card["id"]: card for card in r.json().get("data", [])}

    def complete(self, body: dict) -> str:
        r = self._call("POST", "/v1/completions", json=body)
        _check(r, body["model"], self.url)
        return r.json()["choices"][0]["text"]

    def stream(self, body: dict, stop: threading.Event | None = None) -> Iterator[str]:
        """The completion's text so far after each streamed chunk (server-sent events)."""
        text = ""
        try:
            with self.http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
                if r.status_code != 200:
                    r.read()
                    _check(r, body["model"], self.url)
                for line in r.iter_lines():
                    if stop is not None and stop.is_set():
                        return
                    if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    if chunk.get("error"):
                        raise VLLMError(f"the vLLM server at {self.url} failed mid-stream: {chunk['error']}")
                    text += chunk["choices"][0].get("text") or ""
                    yield text
        except httpx.TransportError as e:
            raise VLLMError(f"the vLLM server at {self.url} did not answer /v1/completions "
                            f"({type(e).__name__}: {e})") from e

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Register a LoRA adapter at run time (the server needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)."""
        r = self._call("POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})
        if r.status_code == 404:
            raise VLLMError("its runtime LoRA loading is off (start it with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, "
                            "as `racq vllm serve` does, or restart it with the stage in --lora-modules)")
        if r.status_code != 200:
            raise VLLMError(f"loading the adapter failed ({r.status_code}: {r.text[:300]})")

    def unload_adapter(self, name: str) -> None:
        r = self._call("POST", "/v1/unload_lora_adapter", json={"lora_name": name})
        if r.status_code != 200:
            raise VLLMError(f"unloading adapter {name} failed ({r.status_code}: {r.text[:300]})")

    def close(self) -> None:
        self.http.close()


def _check(r: httpx.Response, model: str, url: str) -> None:
    if r.status_code == 404 and "does not exist" in r.text:
        raise VLLMError(f"stage {model} is not loaded on the vLLM server at {url}: register it with "
                        f"`racq vllm register --url {url}` (or restart the server with `racq vllm serve`)")
    if r.status_code != 200:
        raise VLLMError(f"the vLLM server at {url} answered {r.status_code} for {model}: {r.text[:300]}")


def request_body(model: str, prompt: str, gen: GenConfig, seed: int | None = None) -> dict:
    """The /v1/completions request of one stage's prompt (text exactly as in-process: no special tokens
    added, the chat template already holds them)."""
    if gen.no_repeat_ngram_size:
        raise VLLMError("the vllm engine cannot apply no_repeat_ngram_size (a RACQ logits processor): set it to "
                        "0 or use engine joint")
    body = {"model": model, "prompt": prompt, "max_tokens": gen.max_new_tokens, "add_special_tokens": False,
            "skip_special_tokens": True, "repetition_penalty": 1.0}
    if gen.stop_at_question:
        body.update(stop=["?"], include_stop_str_in_output=True)
    if gen.do_sample:
        body.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k, seed=seed)
    else:
        body.update(temperature=0.0)
    return body


@dataclass
class ServedStages(StageModel):
    """A StageModel whose stages a vLLM server generates: the tokenizer and prompts here, no model.

    `wanted`: the stage names to serve (None = every one on disk); `include_hidden`: uncond too."""

    client: VLLMClient | None = None
    wanted: list[str] | None = None
    include_hidden: bool = False
    base_name: str = ""  # the served base model's id (the card without a parent)
    registered: list[str] = field(default_factory=list)  # stages this process registered on the server
    _sync_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def load(cls, base_model, adapters_dir, url: str = DEFAULT_URL, stages: Sequence[str] | None = None,
             include_hidden: bool = False, prompt=None, tokenizer=None) -> "ServedStages":
        """The stages on disk, matched to the server at URL (sync); raises VLLMError when it is down."""
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(check_model_dir(base_model))
        sm = cls(None, tokenizer, [BASE_STAGE], prompt=prompt or PromptConfig(), adapters_dir=Path(adapters_dir),
                 client=VLLMClient(url),
                 wanted=list(stages) if stages is not None else None, include_hidden=include_hidden)
        sm.sync()
        return sm

    @classmethod
    def serving(cls, sm: StageModel, url: str = DEFAULT_URL) -> "ServedStages":
        """The vLLM twin of a loaded StageModel: its tokenizer, prompts, adapters folder and stages."""
        served = cls(None, sm.tokenizer, [BASE_STAGE], prompt=sm.prompt, adapters_dir=sm.adapters_dir,
                     client=VLLMClient(url), wanted=list(sm.stages) + list(sm.errors), include_hidden=True)
        served.sync()
        return served

    @property
    def url(self) -> str:
        return self.client.url

    def _disk(self) -> list[Stage]:
        found = list_stages(self.adapters_dir, include_hidden=self.include_hidden) if self.adapters_dir else []
        return [s for s in found if s.path is not None and (self.wanted is None or s.name in self.wanted)]

    def sync(self) -> list[str]:
        """Match the server to the adapters on disk: a stage the server lacks is registered at run time;
        one it cannot take is unavailable (self.errors says why). Returns the stages registered now."""
        with self._sync_lock:
            served = self.client.models()
            bases = [m for m, card in served.items() if not card.get("parent")]
            if not bases:
                raise VLLMError(f"the vLLM server at {self.url} serves no base model: {', '.join(served)}")
            self.base_name = bases[0]
            names, hashes, new = [BASE_STAGE], {BASE_STAGE: "base"}, []
            for st in self._disk():
                if st.name not in served:
                    try:
                        self.client.load_adapter(st.name, st.path)
                        new.append(st.name)
                    except VLLMError as e:
                        self.errors[st.name] = f"stage {st.name} is not loaded on the vLLM server at {self.url}: {e}"
                        continue
                names.append(st.name)
                hashes[st.name] = st.adapter_hash
                self.errors.pop(st.name, None)
            self.adapter_hashes = hashes
            self.stages = sorted(names, key=stage_order)  # rebound, not appended (readers without the lock)
            self.registered += new
        return new

    def add_stage(self, name: str, path: str | Path) -> bool:
        """A round trained while the app runs: registered on the server (a retrained one reloaded), as
        StageModel.add_stage attaches it in process. False when the server already has these files."""
        stage = Stage(name, Path(path), {})
        if self.adapter_hashes.get(name) == stage.adapter_hash and name in self.stages:
            return False
        if name in self.stages:  # retrained under the same name: the server must drop its old weights
            self.client.unload_adapter(name)
        if self.wanted is not None and name not in self.wanted:
            self.wanted = [*self.wanted, name]
        self.sync()
        if name not in self.stages:
            raise VLLMError(self.errors.get(name, f"stage {name} has no adapter at {path}"))
        return True

    # ------------------------------------------------------------ generation
    def _model(self, stage: str) -> str:
        if stage not in self.stages:
            raise VLLMError(self.errors.get(stage) or f"stage {stage} is not loaded on the vLLM server at {self.url} "
                            f"(loaded: {', '.join(self.stages)}); is its adapter in {self.adapters_dir}?")
        return self.base_name if stage == BASE_STAGE else stage

    def generate(self, prompts: Sequence[str], stages: Sequence[str] | str, gen: GenConfig | None = None,
                 seed: int | None = None, mixture: dict | None = None) -> list[str]:
        """Raw completions, one per prompt, as StageModel.generate: every prompt one concurrent request."""
        if mixture is not None:
            raise VLLMError("the mixture sampler runs in process (racq pairs, racq train): not on the vLLM engine")
        gen = gen or GenConfig()
        stages = [stages] * len(prompts) if isinstance(stages, str) else list(stages)
        bodies = [request_body(self._model(s), p + self.opener(p, s), gen, None if seed is None else seed + i)
                  for i, (p, s) in enumerate(zip(prompts, stages))]
        if not bodies:
            return []
        with ThreadPoolExecutor(max_workers=min(len(bodies), MAX_CONCURRENT)) as pool:
            texts = list(pool.map(self.client.complete, bodies))
        return [self.opener(p, s) + t for p, s, t in zip(prompts, stages, texts)]

    def stream(self, jobs: Sequence[tuple[str, str]], gen: GenConfig | None = None
               ) -> Iterator[tuple[str, str, bool]]:
        """(stage, raw reply so far, finished) as each job's tokens arrive, the jobs (stage, prompt) sent
        as concurrent streaming requests: the same events as racq.multilora.JointStages.stream, so the
        cards fill together. A failed request raises here (the Asker marks the stages still open)."""
        gen = gen or GenConfig()
        jobs = [(s, p, self.opener(p, s)) for s, p in jobs]
        bodies = [request_body(self._model(s), p + o, gen) for s, p, o in jobs]
        events: queue.Queue = queue.Queue()
        stop = threading.Event()

        def run(i: int, body: dict) -> None:
            text = ""
            try:
                for text in self.client.stream(body, stop):
                    events.put((i, text, False, None))
                events.put((i, text, True, None))
            except Exception as e:  # noqa: BLE001 - handed to the consumer's thread
                events.put((i, text, True, e))

        threads = [threading.Thread(target=run, args=(i, b), daemon=True) for i, b in enumerate(bodies)]
        for t in threads:
            t.start()
        try:
            left = len(jobs)
            while left:
                i, text, done, err = events.get()
                if err is not None:
                    raise err
                left -= done
                yield jobs[i][0], jobs[i][2] + text, done
        finally:
            stop.set()  # the consumer stopped early or failed: the other requests end at their next chunk


__all__ = ["DEFAULT_URL", "ServedStages", "VLLMClient", "VLLMError", "request_body"]
