"""Every stage in ONE forward pass: the base model's weights once, each batch row adding its own stage's
LoRA delta, so base, sft and aligned decode together and stream side by side.

    from racq.multilora import JointStages
    joint = JointStages(stage_model)                       # racq.generate.StageModel; built lazily
    for stage, text, done in joint.stream([("base", p0), ("sft", p1), ("aligned", p1)]):
        print(stage, text)                                 # the raw reply of that stage so far

Why (bench/bench_ask.py measures it): on a CPU a decode step of a small model is bound by reading its
weights (about 540 MB for SmolLM2-135M fp32 per token). The merged engine (racq.fastgen) reads them once
per stage per token; here every stage's row shares one read, and a LoRA delta (rank 16) costs a few
small matmuls per layer. The copy shares every weight tensor with the PEFT model (no second base in
memory) and carries each adapter as stacked A/B matrices, so loading a new round costs milliseconds.
`quantize="int8"` (opt-in, ModelConfig.quantize) swaps the base linears for torch's dynamic int8 ones:
about 2.5x faster again, but the questions change (docs/eval/speed-equivalence.md).

Each prompt is prefilled alone (so the first stage's words appear after one prompt's prefill); the
rows' caches are then left-padded to one length and decoded as one batch, a row leaving the batch
when it stops (end of text, its first "?", or max_new_tokens). Greedy only, like racq.fastgen; text
equals the PEFT path's up to float rounding (tests/test_ask_stream.py, docs/eval/speed-equivalence.md).
"""

from __future__ import annotations

import copy
import os
import threading
import time
from typing import Iterator, Sequence

import torch
from torch import nn

from racq.config import GenConfig
from racq.decoding import guard_processors
from racq.fastgen import SLOW_TOKENS_ENV
from racq.models import BASE_STAGE


class _Rows:
    """Which stage slot each row of the batch now in the model belongs to (shared by all layers)."""

    def __init__(self):
        self.slots: torch.Tensor | None = None


class MultiLoRALinear(nn.Module):
    """y = base(x) + per row (x A_s^T) B_s^T, s = that row's stage; slot 0 (the base stage) is zero."""

    def __init__(self, base: nn.Linear, a: torch.Tensor, b: torch.Tensor, rows: _Rows):
        super().__init__()
        self.base, self.rows = base, rows
        self.register_buffer("a", a, persistent=False)  # [stages, r, in]
        self.register_buffer("b", b, persistent=False)  # [stages, out, r], LoRA's scaling folded in

    def forward(self, x):
        y = self.base(x)
        slots = self.rows.slots
        if slots is None or not bool((slots > 0).any()):
            return y
        a, b = self.a[slots], self.b[slots]
        return y + torch.bmm(torch.bmm(x, a.transpose(1, 2)), b.transpose(1, 2))


QUANTIZE = ("none", "int8")


def _int8(linear: nn.Linear) -> nn.Module:
    """torch's dynamic int8 version of one base linear (weights int8 per tensor, activations quantized on
    the fly): a quarter of the bytes to read per token. The LoRA delta stays fp32. Opt-in: it changes
    what the stages ask (docs/eval/speed-equivalence.md), the adapters were trained on the fp32 base."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8)[0]  # a copy: base untouched


class JointStages:
    """One shared-weight copy of a StageModel's base with every loaded stage's LoRA stacked per layer."""

    def __init__(self, stage_model, quantize: str = "none"):
        if quantize not in QUANTIZE:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
        self.sm, self.quantize = stage_model, quantize
        self.model = None
        self.slots: dict[str, int] = {}
        self.hashes: dict[str, str] = {}
        self._rows = _Rows()
        self._lock = threading.Lock()  # one joint batch in the model at a time (rows are shared state)

    # ------------------------------------------------------------ building
    def sync(self) -> bool:
        """(Re)build when the loaded stages or their adapters changed; True when it rebuilt."""
        wanted = {s: self.sm.adapter_hashes.get(s, "") for s in self.sm.stages}
        with self._lock:
            if self.model is not None and wanted == self.hashes:
                return False
            self.model, self.slots = self._build(list(wanted))
            self.hashes = wanted
        return True

    def _build(self, stages: list[str]):
        from racq.generate import peft_name

        peft = self.sm.model
        inner = peft.get_base_model() if hasattr(peft, "peft_config") else peft
        shared = {id(t): t for t in list(inner.parameters()) + list(inner.buffers())}
        with self.sm.lock:  # PEFT must not add or switch adapters while its modules are copied
            dup = copy.deepcopy(inner, memo=shared)  # module objects copied, every tensor shared
        trained = [s for s in stages if s != BASE_STAGE]
        slots = {s: i for i, s in enumerate([BASE_STAGE] + trained)}
        for name, mod in list(dup.named_modules()):
            if not hasattr(mod, "lora_A") or not hasattr(mod, "base_layer"):
                continue
            if not isinstance(mod.base_layer, nn.Linear):
                raise ValueError(f"{name}: only LoRA on linear layers can be stacked")
            base = mod.base_layer
            r = max([mod.lora_A[peft_name(s)].weight.shape[0] for s in trained if peft_name(s) in mod.lora_A] or [1])
            a = torch.zeros(len(slots), r, base.in_features, dtype=base.weight.dtype)
            b = torch.zeros(len(slots), base.out_features, r, dtype=base.weight.dtype)
            for s in trained:
                key = peft_name(s)
                if key not in mod.lora_A:
                    continue  # this adapter does not touch this layer: its delta stays zero
                if getattr(mod, "use_dora", {}).get(key):
                    raise ValueError(f"{name}: DoRA adapters cannot be stacked")
                wa, wb = mod.lora_A[key].weight.detach(), mod.lora_B[key].weight.detach()
                a[slots[s], :wa.shape[0]] = wa
                b[slots[s], :, :wb.shape[1]] = wb * mod.scaling[key]
            if self.quantize == "int8":
                base = _int8(base)
            parent, _, leaf = name.rpartition(".")
            setattr(dup.get_submodule(parent) if parent else dup, leaf, MultiLoRALinear(base, a, b, self._rows))
        dup.eval()
        return dup, slots

    # ------------------------------------------------------------ generation
    def stream(self, jobs: Sequence[tuple[str, str]], gen: GenConfig | None = None
               ) -> Iterator[tuple[str, str, bool]]:
        """(stage, raw reply so far, finished) after each token of each job (stage, prompt); every job
        ends with one finished=True. The base stage's reply carries its opener, as on the PEFT path."""
        gen = gen or GenConfig()
        if gen.do_sample:
            raise ValueError("the joint path is greedy; sample with StageModel.generate")
        self.sync()
        missing = [s for s, _ in jobs if s not in self.slots]
        if missing:
            raise ValueError(f"stage(s) not loaded: {', '.join(missing)}; loaded: {', '.join(self.slots)}")
        with self._lock, torch.inference_mode():
            try:
                yield from self._stream(list(jobs), gen)
            finally:
                self._rows.slots = None

    def _forward(self, slots: list[int], **kw):
        self._rows.slots = torch.tensor(slots)
        return self.model(use_cache=True, **kw)

    def _stream(self, jobs, gen: GenConfig):
        from transformers import DynamicCache

        tok = self.sm.tokenizer
        delay = float(os.environ.get(SLOW_TOKENS_ENV) or 0)  # tests only, see racq.fastgen
        rows = []
        for stage, prompt in jobs:  # prefill one prompt at a time: the first card starts after one
            opener = self.sm.opener(prompt, stage)
            ids = tok(prompt + opener, return_tensors="pt", add_special_tokens=False)["input_ids"]
            cache = DynamicCache()
            out = self._forward([self.slots[stage]], input_ids=ids, cache=cache, logits_to_keep=1)
            row = {"stage": stage, "ids": ids[0].tolist(), "n": ids.shape[1], "new": [], "opener": opener,
                   "cache": cache, "guards": guard_processors(gen, prompt_len=ids.shape[1]), "done": False}
            self._step(row, out.logits[0, -1], tok, gen)
            rows.append(row)
            yield from self._emit(row, tok, delay)
        live = [r for r in rows if not r["done"]]
        if not live:
            return
        width = max(r["n"] for r in live)
        cache = DynamicCache(ddp_cache_data=[
            tuple(torch.cat([nn.functional.pad(getattr(r["cache"].layers[i], kind), (0, 0, width - r["n"], 0))
                             for r in live]) for kind in ("keys", "values"))
            for i in range(len(live[0]["cache"].layers))])
        mask = torch.zeros(len(live), width, dtype=torch.long)
        for j, r in enumerate(live):
            mask[j, width - r["n"]:] = 1
            r["cache"] = None
        while live:
            mask = torch.cat([mask, torch.ones(len(live), 1, dtype=torch.long)], dim=1)
            step_ids = torch.tensor([[r["new"][-1]] for r in live])
            pos = torch.tensor([[r["n"] + len(r["new"]) - 1] for r in live])
            out = self._forward([self.slots[r["stage"]] for r in live], input_ids=step_ids, attention_mask=mask,
                                position_ids=pos, cache=cache)
            for j, r in enumerate(live):
                self._step(r, out.logits[j, -1], tok, gen)
            for r in live:
                yield from self._emit(r, tok, delay)
            keep = [j for j, r in enumerate(live) if not r["done"]]
            if len(keep) < len(live) and keep:
                idx = torch.tensor(keep)
                cache.batch_select_indices(idx)
                mask = mask[idx]
            live = [live[j] for j in keep]

    @staticmethod
    def _step(row: dict, logits: torch.Tensor, tok, gen: GenConfig) -> None:
        """Choose this row's next token (greedy, after its guards) and whether it has finished."""
        if row["guards"]:
            seq = torch.tensor([row["ids"] + row["new"]])
            logits = logits[None]
            for g in row["guards"]:
                logits = g(seq, logits)
            logits = logits[0]
        nxt = int(logits.argmax())
        if nxt == tok.eos_token_id:
            row["done"] = True
            return
        row["new"].append(nxt)
        text = tok.decode(row["new"], skip_special_tokens=True)
        row["done"] = len(row["new"]) >= gen.max_new_tokens or (gen.stop_at_question and "?" in text)

    @staticmethod
    def _emit(row: dict, tok, delay: float):
        """One event per step of a row: its text so far (unchanged when it stopped at end of text)."""
        if delay:
            time.sleep(delay)
        yield row["stage"], row["opener"] + tok.decode(row["new"], skip_special_tokens=True), row["done"]


__all__ = ["JointStages", "MultiLoRALinear", "QUANTIZE"]
