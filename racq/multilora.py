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

Each prompt is prefilled alone (so the first stage's words appear after one prompt's prefill), after the
prompt prefix every passage prompt shares (template, instruction), whose keys and values each stage
computes once; the rows' caches are then left-padded to one length and decoded as one batch, a row
leaving the batch when it stops (end of text, its first "?", or max_new_tokens). Each decode step feeds
every row its last token plus `draft_tokens` guessed ones (prompt lookup: what followed the same words in
the other stages' replies, the prompt or earlier queries' replies, racq.drafting); one pass scores them all,
and a row keeps a guess only where it equals its own greedy choice, so the text is what one token per
step gives (a rejected guess's cache slot is masked out). On a CPU a pass over 3 rows x 4 tokens costs
about a quarter more than 3 x 1, and the stages copy titles, the query, each other and their own earlier
questions' shapes, so a question takes about a third fewer passes
(bench/README.md). The output head runs as W @ h^T (TallHead): MKL's kernel is ~4x faster that way for
a few rows. Attention folds the query heads that share a key/value head into extra query positions
(racq.attention) instead of copying the keys and values per head. `stream` is greedy, like racq.fastgen; text
equals the PEFT path's up to float rounding (tests/test_joint.py, docs/eval/speed-equivalence.md).
`sample` draws best-of-N's samples (racq.bestof) the same way: every stage's samples as rows of one batch.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
import zlib
from collections import deque
from typing import Iterator, Sequence

import torch
from torch import nn

from racq.attention import use_packed_attention
from racq.config import DRAFT_TOKENS, GenConfig
from racq.decoding import guard_processors
from racq.drafting import HISTORY_REPLIES, draft as _draft  # a module global: tests swap it for an oracle
from racq.fastgen import SLOW_TOKENS_ENV
from racq.kvcache import batch_cache
from racq.models import BASE_STAGE


class _Rows:
    """Which stage slot each row of the batch now in the model belongs to (shared by all layers)."""

    def __init__(self):
        self.slots: torch.Tensor | None = None
        self.single: int | None = None  # the one slot of every row, when they share it (a prefill)
        self._masks: dict[int, torch.Tensor] = {}

    def set(self, slots: list[int] | None) -> None:
        self.slots = None if slots is None else torch.tensor(slots)
        self.single = slots[0] if slots and len(set(slots)) == 1 else None
        self._masks = {}

    def mask(self, col_slot: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[rows, 1, columns]: 1 where a column of the stacked LoRA ranks belongs to that row's stage
        (one per rank layout, shared by every layer of that layout for this forward pass)."""
        key = col_slot.shape[0]
        if key not in self._masks:
            self._masks[key] = (col_slot[None, :] == self.slots[:, None]).to(dtype)[:, None, :]
        return self._masks[key]


class MultiLoRALinear(nn.Module):
    """y = base(x) + per row (x A_s^T) B_s^T, s = that row's stage; slot 0 (the base stage) is zero.

    Why the stacked form: a decode step holds one row per stage, so one product with every stage's A
    side by side ([in, stages*r]), a 0/1 mask keeping each row's own columns, and one product with the
    B's side by side costs two small matmuls per layer, where a gather of each row's A and B and two
    batched matmuls cost four ops and copies (the masked columns add exact zeros)."""

    def __init__(self, base: nn.Linear, a: torch.Tensor, b: torch.Tensor, rows: _Rows):
        """a: [stages, r, in], b: [stages, out, r] with LoRA's scaling folded in; slot 0 (base) is dropped."""
        super().__init__()
        self.base, self.rows, self.r = base, rows, a.shape[1]
        stages = a.shape[0]
        self.register_buffer("a_cat", a[1:].reshape((stages - 1) * self.r, a.shape[2]).contiguous(), persistent=False)
        self.register_buffer("b_cat", b[1:].permute(1, 0, 2).reshape(b.shape[1], (stages - 1) * self.r).contiguous(),
                             persistent=False)
        self.register_buffer("col_slot", torch.arange(1, stages).repeat_interleave(self.r), persistent=False)
        # each stage's B again, contiguous: a column slice of b_cat makes MKL copy it on every prefill
        # product (about +100 us per linear, ~20 ms per prefill); A's row slice needs no copy
        self.register_buffer("b", b.contiguous(), persistent=False)

    def forward(self, x):
        y = self.base(x)
        rows = self.rows
        if rows.single is not None:  # every row one stage (a prefill): its own columns only
            if rows.single == 0:
                return y
            cols = slice((rows.single - 1) * self.r, rows.single * self.r)
            return _add_product(y, x @ self.a_cat[cols].T, self.b[rows.single].T)
        if rows.slots is None or self.a_cat.shape[0] == 0:
            return y
        return _add_product(y, (x @ self.a_cat.T) * rows.mask(self.col_slot, x.dtype), self.b_cat.T)


def _add_product(y: torch.Tensor, h: torch.Tensor, bt: torch.Tensor) -> torch.Tensor:
    """y + h @ bt as one addmm: the GEMM adds into y as it writes, instead of a second pass over a
    [tokens, out] tensor (a 250-token prefill: 0.55 -> 0.49 s, the logits bit for bit the same here;
    bench/README.md run 7)."""
    out = torch.addmm(y.reshape(-1, y.shape[-1]), h.reshape(-1, h.shape[-1]), bt)
    return out.view(y.shape)


class TallHead(nn.Module):
    """The output head as W @ h^T instead of h @ W^T: the same logits (up to float rounding), but for the
    few rows of a decode step MKL's kernel for the tall 49k-row head is about 4x faster this way
    (bench/README.md: 10 ms instead of 40 ms for 3 rows on 2 cores)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = weight  # the tied embedding itself: no copy

    def forward(self, h):
        return (self.weight @ h.reshape(-1, h.shape[-1]).T).T.reshape(*h.shape[:-1], self.weight.shape[0])


QUANTIZE = ("none", "int8")


def _int8(linear: nn.Linear) -> nn.Module:
    """torch's dynamic int8 version of one base linear (weights int8 per tensor, activations quantized on
    the fly): a quarter of the bytes to read per token. The LoRA delta stays fp32. Opt-in: it changes
    what the stages ask (docs/eval/speed-equivalence.md), the adapters were trained on the fp32 base."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8)[0]  # a copy: base untouched


class JointStages:
    """One shared-weight copy of a StageModel's base with every loaded stage's LoRA stacked per layer."""

    def __init__(self, stage_model, quantize: str = "none", draft_tokens: int = DRAFT_TOKENS):
        if quantize not in QUANTIZE:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
        self.sm, self.quantize = stage_model, quantize
        self.model = None
        self.slots: dict[str, int] = {}
        self.hashes: dict[str, str] = {}
        self.draft_tokens = draft_tokens
        self._history: deque[list[int]] = deque(maxlen=HISTORY_REPLIES)  # earlier replies' tokens, newest last
        self._rows = _Rows()
        self._prefix_ids: list[int] | None = None
        self._prefix_kv: dict[int, list] = {}  # slot -> the prompt prefix's (keys, values) per layer
        self._lock = threading.Lock()  # one joint batch in the model at a time (rows are shared state)

    # ------------------------------------------------------------ building
    def sync(self) -> bool:
        """(Re)build when the loaded stages or their adapters changed; True when it rebuilt."""
        wanted = {s: self.sm.adapter_hashes.get(s, "") for s in self.sm.stages}
        with self._lock:
            if self.model is not None and wanted == self.hashes:
                return False
            self.model, self.slots = self._build(list(wanted))
            self.hashes, self._prefix_kv, self._prefix_ids = wanted, {}, None
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
        head = dup.get_output_embeddings()
        if isinstance(head, nn.Linear) and head.bias is None:
            dup.set_output_embeddings(TallHead(head.weight))
        use_packed_attention(dup)
        dup.eval()
        return dup, slots

    # ------------------------------------------------------------ generation
    def stream(self, jobs: Sequence[tuple[str, str]], gen: GenConfig | None = None
               ) -> Iterator[tuple[str, str, bool]]:
        """(stage, raw reply so far, finished) after each token of each job (stage, prompt); every job
        ends with one finished=True. The base stage's reply carries its opener, as on the PEFT path."""
        gen = gen or GenConfig()
        if gen.do_sample:
            raise ValueError("the joint path is greedy; sample with JointStages.sample")
        with self._batch(jobs):
            yield from self._stream(list(jobs), gen)

    @contextlib.contextmanager
    def _batch(self, jobs):
        """The model, rebuilt if the stages changed, held for one batch of jobs (rows are shared state)."""
        self.sync()
        missing = [s for s, _ in jobs if s not in self.slots]
        if missing:
            raise ValueError(f"stage(s) not loaded: {', '.join(missing)}; loaded: {', '.join(self.slots)}")
        with self._lock, torch.inference_mode():
            try:
                yield
            finally:
                self._rows.set(None)

    def sample(self, jobs: Sequence[tuple[str, str]], n: int, gen: GenConfig, seed: int = 0) -> list[list[str]]:
        """n sampled raw replies to each job (stage, prompt): each prompt prefilled once, then every job's n
        rows decoded in one batch (best-of-N, racq.bestof). Row i of a stage draws from its own generator,
        seeded by (seed, stage, i), one draw per token it keeps, so a row's text depends neither on the
        other rows of the batch nor on draft_tokens (a guess is kept only where the row's own draw equals
        it), up to float rounding. gen's guards, temperature, top-k, top-p, as StageModel.generate samples."""
        from racq.generate import sampling_processors

        if n <= 0:
            return [[] for _ in jobs]
        tok, rows, per_job = self.sm.tokenizer, [], []
        warpers = sampling_processors(gen)  # stateless: one list serves every row
        with self._batch(jobs):
            for stage, prompt in jobs:
                row, logits = self._prefilled(stage, prompt, gen)  # one prefill; batch_cache copies it per row
                seeds = [zlib.crc32(f"{seed}:{stage}:{i}".encode()) for i in range(n)]
                mine = [{**row, "new": [], "rng": torch.Generator().manual_seed(x), "warpers": warpers} for x in seeds]
                for r in mine:
                    self._step(r, logits, tok, gen)
                rows += mine
                per_job.append(mine)
            for _ in self._decode(rows, tok, gen, delay=0.0):
                pass
        return [[r["opener"] + tok.decode(r["new"], skip_special_tokens=True) for r in mine] for mine in per_job]

    def _forward(self, slots: list[int], **kw):
        self._rows.set(slots)
        return self.model(use_cache=True, **kw)

    # ------------------------------------------------------------ prefill
    def _prompt_prefix(self) -> list[int]:
        """The tokens every passage prompt starts with (chat template, instruction, "User Query:"): the
        longest common start of two prompts that differ in everything a query changes."""
        if self._prefix_ids is None:
            try:
                one, two = (self.sm.tokenizer(self.sm.passage_prompt(q, []), add_special_tokens=False)["input_ids"]
                            for q in ("a", "zz 9"))
            except Exception:  # noqa: BLE001 - a prompt layout without passages: no shared prefix
                one, two = [], []
            n = 0
            while n < min(len(one), len(two)) and one[n] == two[n]:
                n += 1
            self._prefix_ids = one[:n]
        return self._prefix_ids

    def _prefill(self, stage: str, ids: torch.Tensor):
        """A prompt's cache and last logits. Why the prefix: each stage keeps the keys and values of the
        prompts' common start (computed alone, once per stage), so a prompt prefills only what follows
        it (about 45 of 290 tokens saved per stage, the same each time whatever came before)."""
        from transformers import DynamicCache

        slot, prefix = self.slots[stage], self._prompt_prefix()
        n = len(prefix)
        # a prefix of a few tokens saves less than its bookkeeping; a prompt must keep one token to prefill
        if n < 8 or ids.shape[1] <= n or ids[0, :n].tolist() != prefix:
            cache = DynamicCache()
            return cache, self._forward([slot], input_ids=ids, cache=cache, logits_to_keep=1)
        if slot not in self._prefix_kv:
            head = DynamicCache()
            self._forward([slot], input_ids=ids[:, :n], cache=head, logits_to_keep=1)
            self._prefix_kv[slot] = [(layer.keys, layer.values) for layer in head.layers]
        # the cache only ever grows by concatenation (new tensors), so the stored prefix is never written
        cache = DynamicCache(ddp_cache_data=list(self._prefix_kv[slot]))
        return cache, self._forward([slot], input_ids=ids[:, n:], cache=cache, logits_to_keep=1)

    def _prefilled(self, stage: str, prompt: str, gen: GenConfig) -> tuple[dict, torch.Tensor]:
        """A job's decode row (prompt + the base stage's opener, prefilled) and its first logits."""
        opener = self.sm.opener(prompt, stage)
        ids = self.sm.tokenizer(prompt + opener, return_tensors="pt", add_special_tokens=False)["input_ids"]
        cache, out = self._prefill(stage, ids)
        return ({"stage": stage, "ids": ids[0].tolist(), "n": ids.shape[1], "new": [], "opener": opener,
                 "cache": cache, "guards": guard_processors(gen, prompt_len=ids.shape[1]), "done": False},
                out.logits[0, -1])

    # ------------------------------------------------------------ decoding
    def _stream(self, jobs, gen: GenConfig):
        tok = self.sm.tokenizer
        delay = float(os.environ.get(SLOW_TOKENS_ENV) or 0)  # tests only, see racq.fastgen
        rows = []
        for stage, prompt in jobs:  # prefill one prompt at a time: the first card starts after one
            row, logits = self._prefilled(stage, prompt, gen)
            self._step(row, logits, tok, gen)
            rows.append(row)
            yield from self._emit(row, tok, delay)
        yield from self._decode(rows, tok, gen, delay)
        self._history.extend(r["new"] for r in rows if r["new"])

    def _decode(self, rows: list[dict], tok, gen: GenConfig, delay: float):
        """Decode the prefilled rows as one batch until every row has stopped, emitting each step."""
        live = [r for r in rows if not r["done"]]
        if not live:
            return
        width = max(r["n"] for r in live)
        # room for every pass a reply can take (each keeps >= 1 token), so the buffers never grow
        cache = batch_cache([(r["cache"], r["n"]) for r in live], room=gen.max_new_tokens * (1 + self.draft_tokens))
        mask = torch.zeros(len(live), width, dtype=torch.long)
        for j, r in enumerate(live):
            mask[j, width - r["n"]:] = 1
            r["cache"] = None
        while live:
            # Each row's last token, then up to `draft_tokens` guessed ones (racq.drafting.draft); the
            # model checks all in one pass (about a quarter dearer than one token on a CPU, bench/README.md) and a
            # row keeps the guesses its own greedy choices confirm, so the text is what one token per
            # step gives. A rejected guess's cache entry is masked out; positions count kept tokens only.
            drafts = [_draft(r, rows, self.draft_tokens, self._history) for r in live]
            width = 1 + max(len(d) for d in drafts)
            step_ids = torch.tensor([[r["new"][-1]] + d + [r["new"][-1]] * (width - 1 - len(d))
                                     for r, d in zip(live, drafts)])
            pos = torch.tensor([[r["n"] + len(r["new"]) - 1 + i for i in range(width)] for r in live])
            mask = torch.cat([mask, torch.ones(len(live), width, dtype=torch.long)], dim=1)
            out = self._forward([self.slots[r["stage"]] for r in live], input_ids=step_ids, attention_mask=mask,
                                position_ids=pos, cache=cache)
            for j, (r, d) in enumerate(zip(live, drafts)):
                kept = 1
                for i in range(width):
                    self._step(r, out.logits[j, i], tok, gen)
                    if r["done"] or i >= len(d) or r["new"][-1] != d[i]:
                        break
                    kept += 1  # guess i confirmed: the logits after it are the model's own next step
                mask[j, mask.shape[1] - width + kept:] = 0
            for r in live:
                yield from self._emit(r, tok, delay)
            keep = [j for j, r in enumerate(live) if not r["done"]]
            if len(keep) < len(live) and keep:
                idx = torch.tensor(keep)
                cache.batch_select_indices(idx)  # racq.kvcache.GrowingLayer: its buffers, room kept
                mask = mask[idx]
            live = [live[j] for j in keep]

    @staticmethod
    def _step(row: dict, logits: torch.Tensor, tok, gen: GenConfig) -> None:
        """Choose this row's next token (greedy, or a draw from the row's generator when it samples, after
        its guards) and whether it has finished."""
        rng = row.get("rng")
        if row["guards"] or rng is not None:
            seq = torch.tensor([row["ids"] + row["new"]])
            logits = logits[None]
            for g in row["guards"] + (row["warpers"] if rng is not None else []):
                logits = g(seq, logits)
            logits = logits[0]
        if rng is not None:
            nxt = int(torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=rng))
        else:
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


__all__ = ["DRAFT_TOKENS", "JointStages", "MultiLoRALinear", "QUANTIZE", "TallHead"]
