"""The path of a query: text -> checked query -> retrieve passages (once) -> prompt -> every stage's
question, streamed token by token -> faithfulness (and usefulness) scores. `racq ask` and the app's Explore screen call
`Asker.ask_stream`; `Asker.ask` is the same call drained into one dict.

    from racq.service import Asker
    asker = Asker.load()
    asker.ask("who played wolverine")
    for event in asker.ask_stream("who played wolverine", score=True):
        print(event["event"], event.get("stage"), event.get("text") or event.get("question"))

Events, in order: one "passages" (query, notes, passages, stages, errors of stages not loaded, and
coverage: racq.coverage.assess, whether the corpus covers the query at all); then "start", "token"* (the
raw reply so far), with GenConfig.best_of > 1 a "picking" (the greedy reply is done, best_of - 1
samples are being drawn and scored: racq.bestof; on the joint engine every stage's samples are drawn in
one batch once every greedy reply is done), and "stage" (the final question, its scores, or its error)
per stage. For a query the
corpus does not cover, racq.coverage.guard keeps only the options the passages support or asks a generic
question (the model's own in `unguarded`). Generation: `engine="joint"` (default; racq.multilora: every
stage decoded in ONE batch over one copy of the base, so all stages start together, their tokens
interleave and each stage's "stage" event comes when it stops; cached stages answer first), "merged"
(racq.fastgen: one plain merged model per stage, stage after stage, each stage's events contiguous),
"peft" (the one PEFT model, as training uses; always for do_sample) or "vllm" (racq.vllmclient: a vLLM
server at `vllm_url` serves the stages as LoRA adapters; one concurrent streaming request per stage, the
events as for joint; no model in this process). An answer cache (LRU, `cache_size`
entries) answers the same query, k, stage adapter,
settings and index again without generating; a stage loaded or retrained in place misses it.
"""

from __future__ import annotations

import dataclasses
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from racq.config import DRAFT_TOKENS, GenConfig, ModelConfig, PromptConfig
from racq.coverage import assess, guard
from racq.scoring.usefulness import card_usefulness

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


class AnswerCache:
    """A bounded least-recently-used map (OrderedDict); `drop(stage)` forgets that stage's answers."""

    def __init__(self, size: int = 256):
        self.size, self.data = max(0, int(size)), OrderedDict()

    def get(self, key):
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        return None

    def put(self, key, value) -> None:
        if self.size:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)

    def drop(self, stage: str) -> int:
        gone = [k for k in self.data if k[0] == "stage" and k[1] == stage]
        for k in gone:
            del self.data[k]
        return len(gone)


ENGINES = ("joint", "merged", "peft", "vllm")


@dataclass
class Asker:
    stage_model: object  # racq.generate.StageModel
    index: object  # racq.retrieval.Index
    scorer: object | None = None  # racq.scoring.faithfulness.Scorer
    prompt: PromptConfig = field(default_factory=PromptConfig)
    engine: str = "joint"  # "joint" (racq.multilora), "merged" (racq.fastgen), "peft" (StageModel.generate), "vllm"
    cache_size: int = 256
    quantize: str = "none"  # engine joint: "int8" = dynamic int8 base linears (ModelConfig.quantize)
    draft_tokens: int = DRAFT_TOKENS  # engine joint: guessed tokens checked per decode step (ModelConfig.draft_tokens)
    coverage: object = None  # racq.coverage.CoverageConfig; None = its defaults
    vllm_url: str = ""  # engine vllm: the server (ModelConfig.vllm_url; "" = racq.vllmclient.DEFAULT_URL)
    _fast: object = field(default=None, repr=False)
    _joint: object = field(default=None, repr=False)
    _cache: AnswerCache = field(default=None, repr=False)

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.quantize not in ("none", "int8"):
            raise ValueError(f"quantize must be none or int8, got {self.quantize!r}")
        if self.draft_tokens < 0:
            raise ValueError(f"draft_tokens must be 0 (off) or more, got {self.draft_tokens}")
        self._cache = AnswerCache(self.cache_size)
        if self.engine == "vllm" and not hasattr(self.stage_model, "client"):
            from racq.vllmclient import ServedStages

            # given an in-process StageModel: its stages and prompts, generated by the server instead
            self.stage_model = ServedStages.serving(self.stage_model, self.vllm_url or None)

    @classmethod
    def load(cls, model: ModelConfig | None = None, prompt: PromptConfig | None = None, retrieval=None,
             with_scorer: bool = False, stage_model=None, index=None, cache_size: int = 256) -> "Asker":
        from racq import retrieval as r
        from racq.generate import StageModel

        model, prompt = model or ModelConfig(), prompt or PromptConfig()
        if model.threads:
            import torch

            torch.set_num_threads(model.threads)
        if stage_model is None and model.engine == "vllm":  # the server holds the model: the tokenizer is enough
            from racq.vllmclient import ServedStages

            stage_model = ServedStages.load(model.base_model, model.adapters_dir, model.vllm_url or None,
                                            prompt=prompt)
        sm = stage_model or StageModel.load(model.base_model, model.adapters_dir, dtype=model.dtype, prompt=prompt)
        idx = index or r.load_or_build(retrieval or r.RetrievalConfig(embedder=model.embedder))
        scorer = None
        if with_scorer:
            from racq.scoring.faithfulness import Scorer

            scorer = Scorer()
        asker = cls(sm, idx, scorer, prompt, engine=model.engine, cache_size=cache_size, quantize=model.quantize,
                    vllm_url=model.vllm_url, draft_tokens=model.draft_tokens)
        asker.refresh()  # build the merged copies now, not on the first query
        return asker

    @property
    def stages(self) -> list[str]:
        return list(self.stage_model.stages)

    def retrieve(self, query: str, k: int | None = None):
        return self.index.search(query, k or self.prompt.top_k)

    # ------------------------------------------------------------ engines and the cache
    @property
    def fast(self):
        """The merged-stage engine (racq.fastgen.MergedStages), made on first use; None for engine=peft."""
        if self.engine != "merged" or not hasattr(self.stage_model, "model"):
            return None
        if self._fast is None:
            from racq.fastgen import MergedStages

            self._fast = MergedStages(self.stage_model)
        return self._fast

    @property
    def joint(self):
        """The all-stages-in-one-batch engine (racq.multilora.JointStages), made on first use; None unless
        engine=joint."""
        if self.engine != "joint" or not hasattr(self.stage_model, "model"):
            return None
        if self._joint is None:
            from racq.multilora import JointStages

            self._joint = JointStages(self.stage_model, quantize=self.quantize, draft_tokens=self.draft_tokens)
        return self._joint

    @property
    def together(self):
        """The engine that answers a query's stages together, their tokens interleaved: the joint engine,
        or for engine=vllm the server's stages (racq.vllmclient.ServedStages); None for merged and peft."""
        if self.engine == "vllm":
            return self.stage_model
        return self.joint

    def warm(self) -> None:
        """Build what the first query would otherwise wait for (the merged copies of every stage, or the
        joint engine's stacked adapters; for vllm: register on the server the stages it lacks); the app
        calls it in its preload thread, so the first click does not pay for it."""
        for engine in (self.fast, self.together):
            if engine is not None:
                engine.sync()

    def refresh(self, stage: str | None = None) -> None:
        """After a stage was loaded or retrained in place: (re)build its merged copy and forget its
        cached answers (all stages' when `stage` is None)."""
        if stage is None:
            self._cache = AnswerCache(self.cache_size)
        else:
            self._cache.drop(stage)
        self.warm()

    def _key(self, query: str, k: int, stage: str, gen: GenConfig) -> tuple:
        settings = dataclasses.replace(gen, batch_size=0)  # batching does not change a greedy answer
        fp = (getattr(self.index, "meta", None) or {}).get("fingerprint", id(self.index))
        return ("stage", stage, self.stage_model.adapter_hashes.get(stage, ""), query, k, repr(settings),
                repr(self.stage_model.prompt), fp, self.engine, self.quantize)

    def _stream(self, prompt: str, stage: str, gen: GenConfig) -> Iterator[str]:
        if self.fast is not None and not gen.do_sample:
            yield from self.fast.stream(prompt, stage, gen)
        else:
            yield self.stage_model.generate([prompt], stage, gen)[0]

    # ------------------------------------------------------------ asking
    def ask_stream(self, query, k: int | None = None, stages: Sequence[str] | None = None, score: bool = False,
                   gen: GenConfig | None = None) -> Iterator[dict]:
        """The events of one query (see the module docstring). A stage that fails while generating or
        scoring says so in its own "stage" event; the other stages still answer. BadQuery is raised
        before any event."""
        t0 = time.perf_counter()
        gen = gen or GenConfig()
        if gen.best_of > 1 and (gen.do_sample or self.scorer is None):
            raise ValueError("best_of picks among the greedy reply and samples by the faithfulness scorer: it "
                             "needs do_sample=False and a scorer (Asker.load(with_scorer=True))")
        query, notes = clean_query(query)
        k = k or self.prompt.top_k
        hits = self.retrieve(query, k)
        passages = [h.passage for h in hits]
        wanted = list(stages or self.stages)
        errors = {s: self.stage_model.errors.get(s, "not loaded") for s in wanted if s not in self.stages}
        errors.update({s: e for s, e in self.stage_model.errors.items() if stages is None})
        cov = assess(hits, self.coverage)  # does the corpus cover the query at all (racq.coverage)
        yield {"event": "passages", "query": query, "notes": notes, "stages": wanted, "errors": errors,
               "coverage": cov,
               "passages": [{"rank": h.rank, "score": float(h.score), "pid": h.passage.pid,
                             "title": h.passage.title, "text": h.passage.text} for h in hits],
               "seconds": round(time.perf_counter() - t0, 3)}
        joint = self.together is not None and not gen.do_sample
        todo = []
        for stage in wanted:
            if stage in errors:
                yield {"event": "stage", "stage": stage, "error": errors[stage]}
                continue
            done = self._cache.get(self._key(query, k, stage, gen)) if joint else None
            if done is not None:  # the joint engine answers the other stages together, after these
                yield self._final(query, passages, stage, done, score, cov, cached=True)
            else:
                todo.append(stage)
        prompt = self.stage_model.passage_prompt(query, passages) if todo else None
        if joint and todo:
            yield from self._joint_events(query, k, passages, prompt, todo, score, gen, cov)
            todo = []
        for stage in todo:  # one stage after the other (engine merged or peft, or sampling)
            key = self._key(query, k, stage, gen)
            done = None if gen.do_sample else self._cache.get(key)
            if done is not None:
                yield self._final(query, passages, stage, done, score, cov, cached=True)
                continue
            yield {"event": "start", "stage": stage}
            t, raw = time.perf_counter(), ""
            try:
                for raw in self._stream(prompt, stage, gen):
                    yield {"event": "token", "stage": stage, "text": raw}
                if gen.best_of > 1:
                    yield {"event": "picking", "stage": stage, "text": raw, "n": gen.best_of}
                done = self._done(raw, stage, t, key, gen, query, prompt, passages)
            except Exception as e:  # noqa: BLE001 - this stage's card shows it, the others go on
                yield {"event": "stage", "stage": stage, "error": f"{type(e).__name__}: {e}"}
                continue
            yield self._final(query, passages, stage, done, score, cov, cached=False)
        yield {"event": "done", "seconds": round(time.perf_counter() - t0, 3)}

    def _joint_events(self, query, k, passages, prompt, stages, score, gen, cov) -> Iterator[dict]:
        """Every stage of `stages` decoded in one batch (racq.multilora): all start together, their
        tokens interleave, each ends with its own "stage" event as soon as it stops."""
        t = time.perf_counter()
        for stage in stages:
            yield {"event": "start", "stage": stage}
        greedy = {}  # best_of > 1: each stage's finished greedy reply, until every stage's samples are drawn
        try:
            for stage, raw, finished in self.together.stream([(s, prompt) for s in stages], gen):
                yield {"event": "token", "stage": stage, "text": raw}
                if finished and gen.best_of > 1:
                    yield {"event": "picking", "stage": stage, "text": raw, "n": gen.best_of}
                    greedy[stage] = raw
                elif finished:
                    done = self._done(raw, stage, t, self._key(query, k, stage, gen), gen, query, prompt, passages)
                    yield self._final(query, passages, stage, done, score, cov, cached=False)
                    stages = [s for s in stages if s != stage]
            if greedy:  # every stage's samples in one joint batch (racq.bestof), then each stage's pick
                from racq.bestof import sample_replies

                samples = sample_replies(self.together, [(s, prompt) for s in greedy], gen)
                for (stage, raw), mine in zip(greedy.items(), samples):
                    done = self._done(raw, stage, t, self._key(query, k, stage, gen), gen, query, prompt, passages,
                                      samples=mine)
                    yield self._final(query, passages, stage, done, score, cov, cached=False)
                    stages = [s for s in stages if s != stage]
        except Exception as e:  # noqa: BLE001 - the batch failed: every stage still in it says so
            for stage in stages:
                yield {"event": "stage", "stage": stage, "error": f"{type(e).__name__}: {e}"}

    def _done(self, raw: str, stage: str, t: float, key, gen: GenConfig, query: str, prompt: str,
              passages, samples: list[str] | None = None) -> dict:
        """A generated answer as the cache keeps it (with best_of > 1: the kept one of the candidates; the
        samples are drawn here unless the joint engine drew them with the other stages')."""
        from racq.prompts import extract_question

        done = {"question": extract_question(raw), "raw": raw,
                "adapter_hash": self.stage_model.adapter_hashes.get(stage, "")}
        if gen.best_of > 1:
            done.update(self._best_of(query, prompt, passages, stage, raw, gen, samples))
        done["seconds"] = round(time.perf_counter() - t, 3)
        if not gen.do_sample:
            self._cache.put(key, done)
        return done

    def _best_of(self, query: str, prompt: str, passages, stage: str, raw: str, gen: GenConfig,
                 samples: list[str] | None) -> dict:
        """racq.bestof: the greedy reply `raw` and best_of - 1 samples; the kept one, its scores (against the
        passages the card is scored with) and what it was picked from."""
        from racq.bestof import pick, sample_replies
        from racq.prompts import extract_question

        shown = passages[:self.prompt.top_k]
        if samples is None:  # engine merged, peft or vllm: this stage's seeded batch on the PEFT/vLLM path
            [samples] = sample_replies(self.stage_model, [(stage, prompt)], gen)
        raws = [raw, *samples]
        kept, cands = pick(query, [extract_question(r) for r in raws], lambda q: self.scorer.score(query, shown, q))
        out = {"question": cands[kept]["question"], "raw": raws[kept],
               "best_of": {"n": len(raws), "kept": kept, "candidates": [c["question"] for c in cands]}}
        if cands[kept]["faith"] is not None:
            out["scores"] = cands[kept]["faith"]
        return out

    def _final(self, query, passages, stage: str, done: dict, score: bool, cov: dict, cached: bool) -> dict:
        """A stage's "stage" event: its answer, scored (once: a cached answer keeps its scores), then
        guarded when the corpus does not cover the query (racq.coverage; the cache keeps the model's own)."""
        shown = passages[:self.prompt.top_k]  # scored against the passages the prompt held
        if score and self.scorer is not None and done["question"] and "useful" not in done:
            try:
                if "scores" not in done:  # best-of scored it already
                    done["scores"] = self.scorer.score(query, shown, done["question"])
                # usefulness beside it: distinct options, and the query's human interpretations it names
                done["useful"] = card_usefulness(query, done["question"], done["scores"])
            except Exception as e:  # noqa: BLE001 - keep the question, say why scores are missing
                done = {**done, "score_error": f"{type(e).__name__}: {e}"}
        out = guard(done, cov, query, shown, self.scorer, self.coverage)
        if out["question"] != done["question"]:  # the guard rewrote it: usefulness of what is shown
            out.pop("useful", None)
            if out.get("scores"):
                out["useful"] = card_usefulness(query, out["question"], out["scores"])
        return {"event": "stage", "stage": stage, "cached": cached, **out}

    def ask(self, query, k: int | None = None, stages: Sequence[str] | None = None, score: bool = False,
            gen: GenConfig | None = None) -> dict:
        """Everything a screen needs for one query, as plain data: ask_stream drained."""
        out = {"questions": {}, "adapter_hashes": {}, "seconds": {}}
        for ev in self.ask_stream(query, k, stages, score, gen):
            if ev["event"] == "passages":
                out.update({k_: ev[k_] for k_ in ("query", "notes", "passages", "errors", "coverage")})
                out["seconds"]["retrieve"] = ev["seconds"]
            elif ev["event"] == "stage" and "error" in ev:
                out["errors"][ev["stage"]] = ev["error"]
            elif ev["event"] == "stage":
                out["questions"][ev["stage"]] = ev["question"]
                out["adapter_hashes"][ev["stage"]] = ev["adapter_hash"]
                if "scores" in ev:
                    out.setdefault("scores", {})[ev["stage"]] = ev["scores"]
                if "useful" in ev:
                    out.setdefault("useful", {})[ev["stage"]] = ev["useful"]
                if "best_of" in ev:
                    out.setdefault("best_of", {})[ev["stage"]] = ev["best_of"]
            elif ev["event"] == "done":
                out["seconds"]["total"] = ev["seconds"]
        return out
