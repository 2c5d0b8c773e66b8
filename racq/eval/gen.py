"""The generation half of `racq eval`: the on-disk caches, the identities that key them (base model,
stage adapters), and generate_all, which asks every stage for its question on every example and
generates only what the cache lacks.

racq.eval.run re-exports what it always offered from here (generate_all, JsonlCache, EvalError,
QUERY_ONLY_STAGES); its docstring describes the whole run. `cfg` below is a racq.eval.run.EvalConfig
(not imported here: racq.eval.run imports this module).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

from racq.config import DRAFT_TOKENS, GenConfig, PromptConfig
from racq.prompts import base_opener, extract_question

QUERY_ONLY_STAGES = ("uncond",)
ENGINES = ("peft", "merged", "joint", "vllm")


class EvalError(RuntimeError):
    """The evaluation cannot run as asked; the message says why and what to do."""


# ---------------------------------------------------------------- caches
def sha_key(obj) -> str:
    """A cache key: a short sha256 of OBJ as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:24]


class JsonlCache:
    """key -> value, appended to one JSONL file per kind; a torn last line is ignored."""

    def __init__(self, path: Path):
        self.path, self.data, self.hits, self.misses = Path(path), {}, 0, 0
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.data[row["key"]] = row["value"]

    def get(self, key: str):
        value = self.data.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put_many(self, items: dict) -> None:
        if not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            for k, v in items.items():
                fh.write(json.dumps({"key": k, "value": v}, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.data.update(items)


def model_identity(folder: str | Path) -> str:
    """A cheap identity of a base model folder: its config and its weight files' names and sizes."""
    from racq.models import resolve_model

    folder = resolve_model(folder)  # a registered name is its folder: re-pointing the name changes the identity
    parts = [(folder / "config.json").read_text() if (folder / "config.json").exists() else str(folder)]
    parts += [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(folder.glob("*.safetensors"))]
    return sha_key(parts)


def stage_hashes(adapters_dir: str | Path, stages: Sequence[str]) -> dict[str, str]:
    """Each stage's adapter hash; EvalError naming the stages that have no adapter on disk."""
    from racq.models import list_stages

    found = {s.name: s for s in list_stages(adapters_dir, include_hidden=True)}
    missing = [s for s in stages if s not in found]
    if missing:
        raise EvalError(f"stage(s) {', '.join(missing)} have no adapter in {adapters_dir}; on disk: "
                        f"{', '.join(found)}. Train them first (racq train all) or drop them from --stages")
    return {s: found[s].adapter_hash for s in stages}


def load_tokenizer(base_model: str):
    """The base model's tokenizer alone (prompts are built and cache keys made without the model)."""
    from transformers import AutoTokenizer

    from racq.models import check_model_dir

    return AutoTokenizer.from_pretrained(check_model_dir(base_model))


# ---------------------------------------------------------------- generation
def generate_all(examples, passages, cfg, cache: JsonlCache, stage_model=None,
                 say: Callable[[str], None] = lambda m: None,
                 faith_of: Callable[[int, str], dict] | None = None) -> tuple[dict, dict]:
    """{(example index, stage): question} for every pair, generating only what the cache lacks. With
    cfg.best_of > 1 the stages in cfg.best_of_stages (all when empty) keep the best of their greedy
    question and samples (racq.bestof, as the app picks), scored by faith_of(example index, question)."""
    from racq.generate import StageModel

    if cfg.engine not in ENGINES:
        raise EvalError(f"engine must be one of {', '.join(ENGINES)}, got {cfg.engine!r}")
    prompt_cfg = PromptConfig(top_k=cfg.top_k, passage_tokens=cfg.passage_tokens, base_openers=list(cfg.base_openers),
                              evidence=cfg.evidence)
    tok = stage_model.tokenizer if stage_model is not None else load_tokenizer(cfg.base_model)
    builder = StageModel(None, tok, [], prompt=prompt_cfg)  # the same prompt methods generation uses
    hashes = stage_hashes(cfg.adapters_dir, cfg.stages)
    gen = GenConfig(max_new_tokens=cfg.max_new_tokens, do_sample=False, batch_size=cfg.batch_size,
                    no_repeat_ngram_size=cfg.no_repeat_ngram_size,
                    sample_no_repeat_ngram_size=cfg.sample_no_repeat_ngram_size)
    decoding = _decoding(cfg, gen)
    prompts, keys, out = _prompts_and_keys(examples, passages, cfg, builder, hashes, decoding, cache)
    jobs = sorted((j for j in prompts if j not in out), key=lambda j: (len(prompts[j]), j))
    stats = {"cached": len(out), "generated": len(jobs), "generate_calls": 0, "seconds": 0.0}
    if jobs:
        t0 = time.time()
        stage_model = _stage_model_for(jobs, cfg, hashes, prompt_cfg, stage_model, say)
        stats["generate_calls"] = _generate_jobs(jobs, prompts, keys, out, stage_model, cfg, gen, cache, say)
        stats["seconds"] = round(time.time() - t0, 1)
    if cfg.best_of > 1:
        if faith_of is None:
            raise EvalError("best_of needs the scorer: pass faith_of (racq.eval.run.evaluate does)")
        gen = dataclasses.replace(gen, best_of=cfg.best_of)
        stats["best_of"], stats["picks"] = _best_of_jobs(examples, cfg, hashes, prompt_cfg, prompts, keys, out, gen,
                                                         cache, stage_model, faith_of, say)
    return out, {"hashes": hashes, **stats}


def best_of_stages(cfg) -> list[str]:
    """The stages whose question is the best of cfg.best_of (none when best_of is 1)."""
    if cfg.best_of <= 1:
        return []
    unknown = [s for s in cfg.best_of_stages if s not in cfg.stages]
    if unknown:
        raise EvalError(f"best_of_stages names stage(s) not evaluated: {', '.join(unknown)}")
    return list(cfg.best_of_stages or cfg.stages)


def _best_of_jobs(examples, cfg, hashes, prompt_cfg, prompts: dict, keys: dict, out: dict, gen: GenConfig,
                  cache: JsonlCache, stage_model, faith_of, say) -> tuple[dict, dict]:
    """Replace each best-of stage's greedy question in `out` by racq.bestof's pick among it and its
    samples (one seeded batch per prompt, as the app draws them; cached like the greedy replies).
    Returns the run's counts and, per (example index, stage), {n, kept, candidates} as the app reports it.
    engine=joint samples as the app does by default (an example's stages in one joint batch); the other
    engines sample on the PEFT path (or the vLLM server), one seeded batch per prompt."""
    from racq.bestof import SEED, pick, sample_replies

    stages = best_of_stages(cfg)
    sampling = {"samples": gen.best_of - 1, "seed": SEED, "temperature": gen.temperature, "top_p": gen.top_p,
                "top_k": gen.top_k}
    if cfg.engine == "joint":  # its own draws: the PEFT path's cached samples are not the app's
        sampling["sampler"] = "joint"
    if gen.sample_no_repeat_ngram_size:  # only when on, so the keys of earlier runs stay what they were
        sampling["sample_no_repeat_ngram_size"] = gen.sample_no_repeat_ngram_size
    skeys = {j: sha_key({"of": k, **sampling}) for j, k in keys.items() if j[1] in stages}
    todo = [j for j in sorted(skeys) if cache.get(skeys[j]) is None]
    if todo:
        stage_model = stage_model or _stage_model_for(todo, cfg, hashes, prompt_cfg, None, say)
        sampler = stage_model
        if cfg.engine == "joint":
            from racq.multilora import JointStages

            sampler = JointStages(stage_model, quantize=cfg.quantize, draft_tokens=cfg.draft_tokens)
    n = 0
    for batch in (_batches(todo, cfg) if cfg.engine == "joint" else [[j] for j in todo]):
        raws = sample_replies(sampler, [(j[1], prompts[j]) for j in batch], gen)
        cache.put_many({skeys[j]: {"stage": j[1], "raws": r} for j, r in zip(batch, raws)})
        n += len(batch)
        if n % 10 < len(batch) or n == len(todo):
            say(f"best of {gen.best_of}: sampled {n}/{len(todo)}")
    kept, picks = {s: 0 for s in stages}, {}
    for j in sorted(skeys):
        cands = [out[j], *(extract_question(r) for r in cache.get(skeys[j])["raws"])]
        i, _ = pick(examples[j[0]].query, cands, lambda q, e=j[0]: faith_of(e, q))
        out[j] = cands[i]
        kept[j[1]] += i > 0
        picks[j] = {"n": len(cands), "kept": i, "candidates": cands}
    return ({"n": gen.best_of, "stages": stages, "sampled": len(todo), "kept_sample": kept,
             "of": {s: sum(1 for j in skeys if j[1] == s) for s in stages},
             "sample_guard": gen.sample_guard}, picks)


def _decoding(cfg, gen: GenConfig) -> dict:
    """The decoding settings that enter every generation's cache key."""
    decoding = {"do_sample": False, "max_new_tokens": cfg.max_new_tokens, "base": model_identity(cfg.base_model),
                "stop_at_question": gen.stop_at_question}
    if cfg.engine != "peft":  # the reference path keeps its cache keys; another engine gets its own
        decoding["engine"] = cfg.engine
    if cfg.quantize != "none":
        if cfg.engine != "joint":
            raise EvalError("quantize=int8 needs engine=joint")
        decoding["quantize"] = cfg.quantize
    if cfg.draft_tokens != DRAFT_TOKENS:  # only off the default, so the joint runs' keys stay what they were
        if cfg.engine != "joint" or cfg.draft_tokens < 0:
            raise EvalError("draft_tokens (0 or more) is a setting of engine=joint")
        decoding["draft_tokens"] = cfg.draft_tokens
    if cfg.no_repeat_ngram_size:  # only when on, so the keys of guard-free runs stay what they were
        decoding["no_repeat_ngram_size"] = cfg.no_repeat_ngram_size
    return decoding


def _prompts_and_keys(examples, passages, cfg, builder, hashes: dict, decoding: dict, cache: JsonlCache):
    """Per (example index, stage): its prompt, its cache key, and its question when the cache has it."""
    prompts, keys, out = {}, {}, {}
    for i, (e, ps) in enumerate(zip(examples, passages)):
        for s in cfg.stages:
            p = builder.query_prompt(e.query) if s in QUERY_ONLY_STAGES else builder.passage_prompt(e.query, ps)
            prompts[i, s] = p
            # generate() primes the base stage's reply with an opener, so it is part of that stage's key
            keys[i, s] = sha_key({"stage": s, "adapter": hashes[s], "prompt": hashlib.sha256(p.encode()).hexdigest(),
                                  "prefix": base_opener(p, cfg.base_openers) if s == "base" else "", **decoding})
            hit = cache.get(keys[i, s])
            if hit is not None:
                out[i, s] = hit["question"]
    return prompts, keys, out


def _stage_model_for(jobs, cfg, hashes: dict, prompt_cfg: PromptConfig, stage_model, say):
    """The given stage model, or one loaded with the stages the jobs need; checked against the run."""
    from racq.generate import StageModel

    sm, wanted = stage_model, sorted({s for _, s in jobs})
    if cfg.engine == "vllm":  # the server generates: this process holds the tokenizer only
        from racq.vllmclient import ServedStages

        say(f"asking the vLLM server at {cfg.vllm_url} for stages {', '.join(wanted)}")
        sm = ServedStages.serving(sm, cfg.vllm_url) if sm is not None else ServedStages.load(
            cfg.base_model, cfg.adapters_dir, cfg.vllm_url, stages=wanted, include_hidden=True, prompt=prompt_cfg)
    if sm is None:
        say(f"loading {cfg.base_model} with stages {', '.join(wanted)}")
        sm = StageModel.load(cfg.base_model, cfg.adapters_dir, stages=wanted, include_hidden=True, prompt=prompt_cfg)
    if sm.prompt.evidence != cfg.evidence:
        raise EvalError(f"the stage model's prompts show {sm.prompt.evidence!r} evidence, the run asks for "
                        f"{cfg.evidence!r}")
    if list(sm.prompt.base_openers) != list(cfg.base_openers):
        raise EvalError(f"the stage model primes base with {sm.prompt.base_openers!r}, the run asks for "
                        f"{cfg.base_openers!r}")
    for s in {s for _, s in jobs}:
        if s not in sm.stages:
            raise EvalError(f"stage {s} could not be loaded: {sm.errors.get(s, 'unknown reason')}")
        if s != "base" and sm.adapter_hashes.get(s) not in (None, hashes[s]):
            raise EvalError(f"stage {s}: the loaded adapter differs from the one on disk; reload")
    return sm


def _engine(sm, cfg, gen: GenConfig, prompts: dict) -> Callable[[list], list[str]]:
    """A batch of (example index, stage) jobs -> their raw replies, by cfg.engine."""
    if cfg.engine == "merged":
        from racq.fastgen import MergedStages

        fast = MergedStages(sm)
        # one prompt at a time, as the app asks
        return lambda batch: [fast.generate([prompts[j]], j[1], gen)[0] for j in batch]
    if cfg.engine == "joint":  # an example's stages in one batch, as the app asks
        from racq.multilora import JointStages

        joint = JointStages(sm, quantize=cfg.quantize, draft_tokens=cfg.draft_tokens)

        def run(batch):
            done = {s: t for s, t, fin in joint.stream([(j[1], prompts[j]) for j in batch], gen) if fin}
            return [done[j[1]] for j in batch]

        return run
    return lambda batch: sm.generate([prompts[j] for j in batch], [s for _, s in batch], gen)


def _batches(jobs: list, cfg) -> list[list]:
    """joint: an example's missing stages together; otherwise batch_size jobs in order."""
    if cfg.engine == "joint":
        by_example: dict = {}
        for j in sorted(jobs, key=lambda j: (j[0], cfg.stages.index(j[1]))):
            by_example.setdefault(j[0], []).append(j)
        return list(by_example.values())
    return [jobs[b:b + cfg.batch_size] for b in range(0, len(jobs), cfg.batch_size)]


def _generate_jobs(jobs, prompts: dict, keys: dict, out: dict, sm, cfg, gen: GenConfig, cache: JsonlCache,
                   say) -> int:
    """Generate every job into `out` and the cache; returns the number of generate calls."""
    run = _engine(sm, cfg, gen, prompts)
    calls = n_done = 0
    for batch in _batches(jobs, cfg):
        texts = run(batch)
        calls += 1
        new = {}
        for j, raw in zip(batch, texts):
            out[j] = extract_question(raw)
            new[keys[j]] = {"stage": j[1], "raw": raw, "question": out[j]}
        cache.put_many(new)  # written per batch: a killed run keeps its work
        n_done += len(batch)
        say(f"generated {n_done}/{len(jobs)}")
    return calls


def prompt_evidence(examples, passages, cfg, stage_model=None) -> list[list]:
    """Per example, the passages exactly as its prompt shows them (racq.evidence)."""
    from racq.evidence import prompt_passages

    tok = stage_model.tokenizer if stage_model is not None else load_tokenizer(cfg.base_model)
    return [prompt_passages(e.query, ps, tok, cfg.top_k, cfg.passage_tokens, cfg.evidence)
            for e, ps in zip(examples, passages)]
