"""The fast greedy path for asking: every stage's adapter MERGED into a plain copy of the base model, and
an own token loop over a DynamicCache that yields the text as it grows.

    from racq.fastgen import MergedStages
    fast = MergedStages(stage_model)                      # racq.generate.StageModel; copies built lazily
    for text in fast.stream(prompt, "sft"):               # the raw reply so far, one step per token
        print(text)

Why (bench/bench_ask.py measures it): PEFT's LoRA layers cost extra matmuls and Python dispatch on every
linear of every token, and `generate` adds its own per-step overhead; a merged plain model is the same
function with neither. Greedy text equals the PEFT path's (docs/eval/speed-equivalence.md). Each copy
is independent, so streaming needs no lock around the adapters that PEFT switches globally; the copies
share the base's (untouched) token embedding / tied output head, so one stage costs the base's
weights minus that matrix in memory. Sampling and RAC's mixture stay on the PEFT path (StageModel).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from typing import Iterator

import torch

from racq.config import GenConfig
from racq.decoding import guard_processors
from racq.models import BASE_STAGE

log = logging.getLogger(__name__)

# Tests only: seconds to wait after each token, so a browser test can watch a card's text grow while a
# tiny model (which answers in milliseconds) is still generating. Unset in normal use.
SLOW_TOKENS_ENV = "RACQ_SLOW_TOKENS_S"


class MergedStages:
    """One merged plain model per stage of a StageModel, (re)built when that stage's adapter changes."""

    def __init__(self, stage_model):
        self.sm = stage_model
        self.models: dict[str, object] = {}
        self.hashes: dict[str, str] = {}  # stage -> adapter hash its merged copy was built from
        self._build_lock = threading.Lock()

    # ------------------------------------------------------------ building
    def sync(self) -> list[str]:
        """Build the copies missing or out of date (a stage added or retrained in place); drop those of
        stages no longer loaded. Returns the stages (re)built."""
        built = []
        with self._build_lock:
            wanted = {s: self.sm.adapter_hashes.get(s, "") for s in self.sm.stages}
            for s in [s for s in self.models if s not in wanted]:
                del self.models[s], self.hashes[s]
            for s, digest in wanted.items():
                if self.hashes.get(s) != digest or s not in self.models:
                    self.models[s] = self._merged(s)
                    self.hashes[s] = digest
                    built.append(s)
        return built

    def _merged(self, stage: str):
        t0 = time.perf_counter()
        model = self.sm.model
        with self.sm.lock:  # the PEFT model must not switch adapters while it is copied
            dup = copy.deepcopy(model)
        if hasattr(dup, "peft_config"):
            dup = dup.unload() if stage == BASE_STAGE else dup.merge_and_unload(adapter_names=[stage])
        dup.eval()
        self._share_embeddings(dup)
        log.info("merged stage %s in %.1f s", stage, time.perf_counter() - t0)
        return dup

    def _share_embeddings(self, dup) -> None:
        """Point the copy's token embedding (and so its tied output head) at the base's: LoRA never
        touches it, and it is a fifth of a small model's weights."""
        base = self.sm.model.get_input_embeddings().weight
        emb = dup.get_input_embeddings()
        tied = dup.get_output_embeddings() is not None and dup.get_output_embeddings().weight is emb.weight
        if emb.weight.shape == base.shape and torch.equal(emb.weight, base):
            emb.weight = base
            if tied:
                dup.get_output_embeddings().weight = base

    # ------------------------------------------------------------ generation
    def stream(self, prompt: str, stage: str, gen: GenConfig | None = None) -> Iterator[str]:
        """The raw reply so far (the base stage's opener included), after each generated token; the last
        value is the whole reply. Greedy only: the PEFT path does sampling."""
        gen = gen or GenConfig()
        if gen.do_sample:
            raise ValueError("the merged path is greedy; sample with StageModel.generate")
        if stage not in self.models or self.hashes.get(stage) != self.sm.adapter_hashes.get(stage, ""):
            self.sync()
        if stage not in self.models:
            raise ValueError(f"stage not loaded: {stage}; loaded: {', '.join(self.models)}")
        opener = self.sm.opener(prompt, stage)
        yield from _greedy(self.models[stage], self.sm.tokenizer, prompt + opener, opener, gen)

    def generate(self, prompts, stage: str, gen: GenConfig | None = None) -> list[str]:
        """Whole replies, one per prompt (what StageModel.generate returns for greedy decoding)."""
        out = []
        for p in prompts:
            text = ""
            for text in self.stream(p, stage, gen):
                pass
            out.append(text)
        return out


@torch.inference_mode()
def _greedy(model, tok, prompt: str, opener: str, gen: GenConfig) -> Iterator[str]:
    """Greedy decoding as StageModel.generate does it (no special tokens added, stop at EOS, at the
    first '?' when gen.stop_at_question, or after max_new_tokens), one yield per token."""
    from transformers import DynamicCache

    delay = float(os.environ.get(SLOW_TOKENS_ENV) or 0)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    cache = DynamicCache()
    # logits for the last position only: the prompt's other rows of the 49k-word head are never read
    out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
    guards = guard_processors(gen, prompt_len=ids.shape[1])  # the same decoding guards as the PEFT path
    new: list[int] = []
    text = opener
    for _ in range(gen.max_new_tokens):
        logits = out.logits[:, -1]
        if guards:
            seq = torch.cat([ids, torch.tensor([new], dtype=ids.dtype)], dim=1)
            for g in guards:
                logits = g(seq, logits)
        nxt = int(logits[0].argmax())
        if nxt == tok.eos_token_id:
            break
        new.append(nxt)
        text = opener + tok.decode(new, skip_special_tokens=True)
        if delay:
            time.sleep(delay)
        yield text
        if gen.stop_at_question and "?" in text[len(opener):]:
            return
        if len(new) < gen.max_new_tokens:
            out = model(input_ids=torch.tensor([[nxt]]), cache=cache, use_cache=True)
    if not new:
        yield text


__all__ = ["MergedStages", "SLOW_TOKENS_ENV"]
