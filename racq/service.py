"""The path of a query: text -> checked query -> retrieve passages -> prompt -> one question per stage
-> faithfulness scores. `racq ask`, the app's Explore screen and the candidate pool all call this.

    from racq.service import Asker
    asker = Asker.load()
    asker.ask("who played wolverine")
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass, field
from typing import Sequence

from racq.config import GenConfig, ModelConfig, PromptConfig

MAX_QUERY_CHARS = 500  # longer queries are cut: the prompt must stay short on a CPU


class BadQuery(ValueError):
    """The query cannot be asked (empty after clean-up); the message says why."""


def clean_query(text, max_chars: int = MAX_QUERY_CHARS) -> tuple[str, list[str]]:
    """(query, notes): control characters dropped, whitespace squeezed, cut at `max_chars`.

    Any language and any script is accepted; only emptiness is an error."""
    notes = []
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            text = text.decode("utf-8", errors="replace")
            notes.append("bytes that are not UTF-8 were replaced by \ufffd")
    if not isinstance(text, str):
        raise BadQuery(f"the query must be text, not {type(text).__name__}")
    # Format characters go, except the joiners that spell words: ZWJ (emoji sequences) and ZWNJ
    # (Persian and other scripts write it inside words; a space there would split the word).
    kept = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co") and c not in "\u200c\u200d" else c
                   for c in text)
    kept = " ".join(kept.split())
    if kept != text.strip():
        notes.append("control characters or extra whitespace were removed")
    if not kept:
        raise BadQuery("the query is empty: type a question, e.g. 'who played wolverine'")
    if len(kept) > max_chars:
        kept = kept[:max_chars].rsplit(" ", 1)[0] or kept[:max_chars]
        notes.append(f"the query was cut to its first {len(kept)} characters (limit {max_chars})")
    return kept, notes


@dataclass
class Asker:
    stage_model: object  # racq.generate.StageModel
    index: object  # racq.retrieval.Index
    scorer: object | None = None  # racq.faithfulness.Scorer
    prompt: PromptConfig = field(default_factory=PromptConfig)

    @classmethod
    def load(cls, model: ModelConfig | None = None, prompt: PromptConfig | None = None, retrieval=None,
             with_scorer: bool = False, stage_model=None, index=None) -> "Asker":
        from racq import retrieval as r
        from racq.generate import StageModel

        model, prompt = model or ModelConfig(), prompt or PromptConfig()
        if model.threads:
            import torch

            torch.set_num_threads(model.threads)
        sm = stage_model or StageModel.load(model.base_model, model.adapters_dir, dtype=model.dtype, prompt=prompt)
        idx = index or r.load_or_build(retrieval or r.RetrievalConfig(embedder=model.embedder))
        scorer = None
        if with_scorer:
            from racq.faithfulness import Scorer

            scorer = Scorer()
        return cls(sm, idx, scorer, prompt)

    @property
    def stages(self) -> list[str]:
        return list(self.stage_model.stages)

    def retrieve(self, query: str, k: int | None = None):
        return self.index.search(query, k or self.prompt.top_k)

    def ask(self, query, k: int | None = None, stages: Sequence[str] | None = None, score: bool = False,
            gen: GenConfig | None = None) -> dict:
        """Everything a screen needs for one query, as plain data."""
        t0 = time.perf_counter()
        query, notes = clean_query(query)
        hits = self.retrieve(query, k)
        t1 = time.perf_counter()
        passages = [h.passage for h in hits]
        wanted = list(stages or self.stages)
        errors = {s: self.stage_model.errors.get(s, "not loaded") for s in wanted if s not in self.stages}
        errors.update({s: e for s, e in self.stage_model.errors.items() if stages is None})
        ready = [s for s in wanted if s in self.stages]
        questions = self.stage_model.ask(query, passages, ready, gen) if ready else {}
        t2 = time.perf_counter()
        out = {"query": query, "notes": notes,
               "passages": [{"rank": h.rank, "score": float(h.score), "pid": h.passage.pid,
                             "title": h.passage.title, "text": h.passage.text} for h in hits],
               "questions": questions, "errors": errors,
               "adapter_hashes": {s: self.stage_model.adapter_hashes.get(s, "") for s in questions},
               "seconds": {"retrieve": round(t1 - t0, 3), "generate": round(t2 - t1, 3)}}
        if score and self.scorer is not None:
            out["scores"] = {s: self.scorer.score(query, passages, q) for s, q in questions.items()}
            out["seconds"]["score"] = round(time.perf_counter() - t2, 3)
        return out
