"""Generation for every stage from ONE base model in memory, plus RAC's hard token-level mixture.

    from racq.generate import StageModel
    sm = StageModel.load()                       # base + every adapter in models/adapters
    sm.ask(query, passages)                      # {"base": "...?", "sft": "...?", "aligned": "...?"}

Stages are LoRA adapters on the one base model (`base` = adapters off). All stages for a query go
through one batched `generate` call with PEFT's mixed-adapter batches (`adapter_names`); when PEFT
refuses a mix, we fall back to switching the active adapter per stage.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from racq.config import ADAPTERS_DIR, BASE_MODEL, GenConfig, PromptConfig
from racq.data import Passage
from racq.decoding import guard_processors
from racq.models import BASE_STAGE, Stage, list_stages, load_base, seeded_torch, stage_order
from racq.prompts import base_opener, extract_question, passage_prompt_messages, query_prompt_messages, render

log = logging.getLogger(__name__)


def peft_name(stage: str) -> str:
    """The adapter name PEFT knows STAGE by (the base model is the reserved `__base__`)."""
    return "__base__" if stage == BASE_STAGE else stage


def sampling_processors(gen: GenConfig) -> LogitsProcessorList:
    """Temperature → top-k → top-p, the warpers `generate` would add, made explicit so a mixture
    processor can run *before* them (custom processors otherwise run after the built-in warpers)."""
    procs = LogitsProcessorList()
    if gen.temperature and gen.temperature != 1.0:
        procs.append(TemperatureLogitsWarper(gen.temperature))
    if gen.top_k and gen.top_k > 0:
        procs.append(TopKLogitsWarper(gen.top_k))
    if gen.top_p is not None and gen.top_p < 1.0:
        procs.append(TopPLogitsWarper(gen.top_p))
    return procs


class MixtureLogitsProcessor(LogitsProcessor):
    """RAC's hard token-level mixture: each next token comes from the query-only model with
    probability `alpha`, else from the policy that `generate` runs (the SFT adapter).

    The query-only side reads its *own* prompt (no passages) and keeps its own KV cache over the shared
    generated tokens; it runs on the same base model through PEFT's per-call `adapter_names`. The coin
    flips use a private generator, so they never shift the sampling RNG: alpha=0 reproduces plain SFT
    sampling and alpha=1 plain query-only sampling, token for token, with the same seed.
    """

    def __init__(self, model, input_ids, attention_mask, adapter: str = "uncond", alpha: float = 0.7,
                 seed: int = 0):
        self.model, self.adapter, self.alpha = model, adapter, float(alpha)
        self.input_ids, self.mask = input_ids, attention_mask
        self.past = None
        self.coins = torch.Generator().manual_seed(seed)
        self.picks: list[torch.Tensor] = []  # per step: which rows took the query-only token

    def _forward(self, ids, mask):
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=self.past,
                         use_cache=True, adapter_names=[self.adapter] * ids.shape[0])
        self.past = out.cache
        return out.logits[:, -1, :].float()

    @torch.no_grad()
    def __call__(self, input_ids, scores):
        if self.past is None:
            other = self._forward(self.input_ids, self.mask)
        else:
            self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=-1)
            other = self._forward(input_ids[:, -1:], self.mask)
        pick = torch.rand(scores.shape[0], generator=self.coins) < self.alpha
        self.picks.append(pick)
        return torch.where(pick[:, None].to(scores.device), other.to(scores.dtype), scores)

    def uncond_share(self) -> list[float]:
        """Per row, the share of generated tokens that came from the query-only model."""
        if not self.picks:
            return []
        return torch.stack(self.picks, 1).float().mean(1).tolist()


@dataclass
class StageModel:
    """The one base model with its stage adapters loaded side by side."""

    model: object
    tokenizer: object
    stages: list[str]
    errors: dict[str, str] = field(default_factory=dict)  # stage -> why it is unavailable
    prompt: PromptConfig = field(default_factory=PromptConfig)
    adapter_hashes: dict[str, str] = field(default_factory=dict)
    adapters_dir: Path | None = None  # where the adapters were read from (None: given by the caller)
    # One model, many threads (app handlers, pool builder): generation switches the active adapter,
    # so calls are serialised; on a CPU they would compete for the same cores anyway.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @classmethod
    def load(cls, base_model: str | Path = BASE_MODEL, adapters_dir: str | Path = ADAPTERS_DIR,
             stages: Sequence[str] | None = None, include_hidden: bool = False, dtype: str = "float32",
             prompt: PromptConfig | None = None, model=None, tokenizer=None) -> "StageModel":
        """Load the base (or take a loaded one) and attach every adapter; a broken adapter marks its stage
        unavailable (with the reason) instead of stopping the others."""
        if model is None:
            model, tokenizer = load_base(base_model, dtype)
        found = list_stages(adapters_dir, include_hidden=include_hidden)
        wanted = [s for s in found if stages is None or s.name in stages]
        errors = {name: "no adapter on disk" for name in (stages or []) if name not in {s.name for s in found}}
        names, hashes = [BASE_STAGE], {BASE_STAGE: "base"}
        for st in wanted:
            if st.path is None:
                continue
            try:
                model = _attach(model, st.path, st.name)
                names.append(st.name)
                hashes[st.name] = st.adapter_hash
            except Exception as e:  # a corrupt or mismatched adapter must not take the app down
                log.warning("stage %s unavailable: %s", st.name, e)
                errors[st.name] = f"{type(e).__name__}: {e}"
        model.eval()
        return cls(model, tokenizer, names, errors, prompt or PromptConfig(), hashes, Path(adapters_dir))

    def add_stage(self, name: str, path: str | Path) -> bool:
        """Attach one more adapter to the loaded base, in place (PEFT load_adapter; the other stages stay
        loaded): how a running app takes a freshly trained round without a restart. Returns False when
        that adapter (same files) is already loaded. A broken adapter raises; .errors keeps why."""
        stage = Stage(name, Path(path), {})
        digest = stage.adapter_hash
        with self.lock:  # generation switches adapters on this model: never attach mid-generate
            if name in self.stages and self.adapter_hashes.get(name) == digest:
                return False
            if name in self.stages:  # retrained under the same name: the new files replace the old
                self.model.delete_adapter(name)
                self.stages = [s for s in self.stages if s != name]
            try:
                self.model = _attach(self.model, stage.path, name)
            except Exception as e:
                self.errors[name] = f"{type(e).__name__}: {e}"
                raise
            self.model.eval()
            self.errors.pop(name, None)
            self.adapter_hashes = {**self.adapter_hashes, name: digest}
            # rebinding (not appending) keeps a reader's list(self.stages) consistent without the lock
            self.stages = sorted([*self.stages, name], key=stage_order)
        return True

    # ------------------------------------------------------------ prompts
    def passage_prompt(self, query: str, passages: Sequence[Passage]) -> str:
        p = self.prompt
        msgs = passage_prompt_messages(query, passages, self.tokenizer, p.top_k, p.passage_tokens, p.evidence)
        return render(msgs, self.tokenizer, p.use_chat_template)

    def query_prompt(self, query: str) -> str:
        return render(query_prompt_messages(query), self.tokenizer, self.prompt.use_chat_template)

    def opener(self, prompt: str, stage: str) -> str:
        """The text STAGE's reply is primed with after PROMPT: the base stage's opener
        (racq.prompts.base_opener, PromptConfig.base_openers), "" for a trained stage. Every engine (PEFT,
        joint, vLLM) sends prompt + opener and prepends the opener to the reply: one path."""
        return base_opener(prompt, self.prompt.base_openers) if stage == BASE_STAGE else ""

    # ------------------------------------------------------------ generation
    def _gen_config(self, gen: GenConfig, sample_with_processors: bool) -> GenerationConfig:
        tok = self.tokenizer
        kw = dict(max_new_tokens=gen.max_new_tokens, pad_token_id=tok.pad_token_id,
                  eos_token_id=tok.eos_token_id, stop_strings=["?"] if gen.stop_at_question else None)
        if gen.do_sample and not sample_with_processors:
            kw.update(do_sample=True, temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k)
        elif gen.do_sample:  # warpers come from our own list, after the mixture processor
            kw.update(do_sample=True, temperature=1.0, top_p=1.0, top_k=0)
        else:
            kw.update(do_sample=False)
        return GenerationConfig(**kw)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], stages: Sequence[str] | str, gen: GenConfig | None = None,
                 seed: int | None = None, mixture: dict | None = None) -> list[str]:
        """Raw completions, one per prompt; `stages` is one stage for all or one per prompt.

        `mixture={"alpha": a, "query_prompts": [...], "adapter": "uncond"}` samples from RAC's hard
        mixture of that adapter and the (single) given stage; the returned texts are the mixture's, and
        `mixture["uncond_share"]` receives, per row, the share of tokens the query-only model chose.
        """
        with self.lock:
            return self._generate(prompts, stages, gen or GenConfig(), seed, mixture)

    def _generate(self, prompts, stages, gen, seed, mixture) -> list[str]:
        stages = [stages] * len(prompts) if isinstance(stages, str) else list(stages)
        missing = sorted(set(stages) - set(self.stages) - ({"uncond"} if mixture else set()))
        if missing:
            raise ValueError(f"stage(s) not loaded: {', '.join(missing)}; loaded: {', '.join(self.stages)}")
        out: list[str] = []
        bs = max(1, gen.batch_size)
        for i in range(0, len(prompts), bs):
            sub_seed = None if seed is None else seed + i
            sub_mix = None
            if mixture:
                sub_mix = {**mixture, "query_prompts": mixture["query_prompts"][i:i + bs]}
            out += self._generate_batch(list(prompts[i:i + bs]), stages[i:i + bs], gen, sub_seed, sub_mix)
            if mixture:
                mixture.setdefault("uncond_share", []).extend(sub_mix["processor"].uncond_share())
        return out

    def _generate_batch(self, prompts, stages, gen, seed, mixture) -> list[str]:
        tok, model = self.tokenizer, self.model
        # the base stage's reply is primed with an opener (racq.prompts.base_opener); never in a mixture
        openers = [self.opener(p, s) if mixture is None else "" for p, s in zip(prompts, stages)]
        prompts = [p + o for p, o in zip(prompts, openers)]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        custom = LogitsProcessorList()
        use_own_warpers = bool(gen.do_sample and (mixture is not None or seed is not None))
        if mixture is not None:
            if len(set(stages)) != 1:
                raise ValueError("a mixture runs against one policy stage")
            q = tok(mixture["query_prompts"], return_tensors="pt", padding=True, add_special_tokens=False)
            proc = MixtureLogitsProcessor(model, q["input_ids"], q["attention_mask"],
                                          mixture.get("adapter", "uncond"), mixture["alpha"],
                                          seed=(seed or 0) + 7919)
            mixture["processor"] = proc  # lets the caller read per-row provenance (uncond_share)
            custom.append(proc)
        custom.extend(guard_processors(gen, enc["input_ids"].shape[1]))  # bans before our sampling warpers
        if use_own_warpers:
            custom.extend(sampling_processors(gen))
        kwargs = dict(**enc, generation_config=self._gen_config(gen, use_own_warpers),
                      logits_processor=custom)
        if gen.stop_at_question:
            kwargs["tokenizer"] = tok  # generate needs it to match the stop string
        # a seed seeds this call only: the caller's (process-wide) torch RNG state is left as it was
        with seeded_torch(seed) if seed is not None else contextlib.nullcontext():
            seqs = self._run(kwargs, stages, mixture is not None)
        new = seqs[:, enc["input_ids"].shape[1]:]
        texts = tok.batch_decode(new, skip_special_tokens=True)
        return [o + t for o, t in zip(openers, texts)]

    def _run(self, kwargs, stages, single_policy: bool):
        model = self.model
        if not hasattr(model, "peft_config"):
            return model.generate(**kwargs)
        if single_policy or len(set(stages)) == 1:
            # One stage: make it the active adapter (PEFT's forward hooks for adapter_names would also
            # capture the mixture processor's own forward calls).
            return _with_stage(model, stages[0], lambda: model.generate(**kwargs))
        try:
            return model.generate(**kwargs, adapter_names=[peft_name(s) for s in stages])
        except (ValueError, TypeError) as e:  # e.g. adapters PEFT cannot mix in one batch
            log.info("mixed-adapter batch refused (%s); switching adapters per stage", e)
            rows = {}
            for s in dict.fromkeys(stages):
                idx = [i for i, x in enumerate(stages) if x == s]
                sub = {k: (v[idx] if torch.is_tensor(v) else v) for k, v in kwargs.items()}
                for i, seq in zip(idx, _with_stage(model, s, lambda: model.generate(**sub))):
                    rows[i] = seq
            width = max(r.shape[0] for r in rows.values())
            pad = self.tokenizer.pad_token_id
            return torch.stack([torch.nn.functional.pad(rows[i], (0, width - rows[i].shape[0]), value=pad)
                                for i in range(len(stages))])

    def ask(self, query: str, passages: Sequence[Passage], stages: Sequence[str] | None = None,
            gen: GenConfig | None = None) -> dict[str, str]:
        """One greedy clarifying question per stage, all stages in one batched call."""
        stages = list(stages or self.stages)
        prompt = self.passage_prompt(query, passages)
        texts = self.generate([prompt] * len(stages), stages, gen or GenConfig(batch_size=len(stages)))
        return {s: extract_question(t) for s, t in zip(stages, texts)}


def _attach(model, path: Path, name: str):
    from peft import PeftModel

    if hasattr(model, "peft_config"):
        model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        return model
    return PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=False)


def _with_stage(model, stage: str, fn):
    if stage == BASE_STAGE:
        with model.disable_adapter():
            return fn()
    previous = model.active_adapter
    model.set_adapter(stage)
    try:
        return fn()
    finally:
        model.set_adapter(previous)


def n_params(model) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
