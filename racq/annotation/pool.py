"""The candidate pool the annotators judge: queries, their retrieved passages, one question per stage,
its automatic faithfulness score, and the blind pairs (items) made from them.

    racq pool build --n 200               # 200 test-split queries x every stage on disk
    racq pool build --existing            # after a DPO round: only the new stage's candidates

    from racq.annotation.pool import build_pool
    build_pool("annotations/racq.db", n=200)             # loads the app's Asker (model, index, scorer)

What a run does, and why:
- queries: `n` test-split examples (never seen in training), in a fixed hash order, so `n=50` is a
  prefix of `n=200` and every machine picks the same ones; duplicate query texts are dropped;
- passages: the app's path (racq.service: clean the query, search the corpus index, top-k). A query
  already in the database keeps the passages it was stored with, so a new stage's question is asked
  from the same passages as the stages it will be compared with;
- generation: every missing (query, stage) is one prompt; prompts of several queries and stages go
  through one batched `generate` call (PEFT mixed-adapter batch), `batch_size` prompts per call,
  and each finished batch is written at once, so a killed run keeps its work;
- lineage: a candidate records its stage, the stage's adapter hash, the decoding and prompt settings,
  and the training round that produced the stage (the adapter manifest's round_id, else the latest
  finished round for that stage name);
- scores: every candidate without a score under the current Scorer settings is scored and stored;
- items: pairs of one query's candidates from different stages whose texts differ (store.make_items).
Re-running does only what is missing: a stage's candidate exists when one with the same adapter hash
and decoding exists for that query (a retrained adapter therefore gets new candidates).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from racq.config import GenConfig
from racq.data import Example, load_examples
from racq.models import BASE_STAGE
from racq.store import (Store, add_candidate, add_query_with_passages, candidate_texts, candidates_for,
                        first_query_ids, get_query, latest_query_ids, make_items, open_db, round_exists)
from racq.store.db import dumps
from racq.store.scores import add_scores, scored_ids, scorer_key

POOL_DATASETS = ("paqa", "cambignq")  # the datasets with passages: their queries suit the corpus index


class PoolError(RuntimeError):
    """The pool cannot be built as asked; the message says why and what to do."""


def order_key(ex: Example) -> str:
    """The fixed hash order queries are picked in (pick_queries; racq.eval.run samples in it too)."""
    return hashlib.sha256(f"{ex.dataset}\t{ex.topic_id}\t{ex.query}".encode()).hexdigest()


def pick_queries(examples: Iterable[Example], n: int) -> list[Example]:
    """`n` examples with distinct (cleaned) query texts, in a fixed hash order (file order and
    machine do not matter, and a smaller n picks a prefix of a larger one)."""
    from racq.service import BadQuery, clean_query

    out, seen = [], set()
    for ex in sorted(examples, key=order_key):
        try:
            text, _ = clean_query(ex.query)
        except BadQuery:
            continue
        if text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(ex if text == ex.query else Example(text, ex.gold_question, ex.passages, ex.dataset,
                                                           ex.topic_id, ex.extra))
        if len(out) >= n:
            break
    return out


def decoding_of(gen: GenConfig, prompt, seed: int | None, stage: str = "") -> dict:
    """What made a candidate's text, stored with it: decoding and prompt settings (for the base stage
    also its reply openers, which shape its text as much as an adapter does for the other stages)."""
    d = {"do_sample": gen.do_sample, "max_new_tokens": gen.max_new_tokens,
         "prompt_top_k": prompt.top_k, "passage_tokens": prompt.passage_tokens,
         "chat_template": prompt.use_chat_template}
    if stage == BASE_STAGE and prompt.base_openers:
        d["base_openers"] = list(prompt.base_openers)
    if gen.do_sample:
        d.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k, seed=seed)
    return d


def _stage_rounds(db: Store, adapters_dir, stages: Sequence[str]) -> dict[str, int]:
    """stage -> the round id its adapter manifest names, when that round exists for that stage."""
    if adapters_dir is None:
        return {}
    from racq.models import list_stages

    wanted = {s.name: s.manifest.get("round_id") for s in list_stages(adapters_dir, include_hidden=True)
              if s.name in stages and s.manifest.get("round_id") is not None}
    return {stage: int(rid) for stage, rid in wanted.items() if round_exists(db, rid, stage)}


def _existing(db: Store, qids: Sequence[int], adapter_hashes: dict[str, str], decodings: dict[str, str]) -> dict:
    """{(query_id, stage): candidate id} of candidates made with these adapters and (per stage) settings."""
    out = {}
    for r in candidates_for(db, qids):
        if adapter_hashes.get(r["stage"]) == r["adapter_hash"] and decodings.get(r["stage"]) == r["decoding"]:
            out.setdefault((r["query_id"], r["stage"]), r["id"])
    return out


def _pool_queries(db: Store, n: int) -> list[dict]:
    return [get_query(db, i) for i in first_query_ids(db, n)]


def why_not_loaded(sm, stage: str, adapters_dir) -> str:
    """Why a stage is not in this process's loaded model: a broken adapter (the load error), an adapter
    on disk that this process has not loaded (trained after the model was loaded), or none on disk."""
    folder = Path(adapters_dir) / stage
    err = getattr(sm, "errors", {}).get(stage)
    if err and err != "no adapter on disk":
        return f"the adapter at {folder} is broken ({err})"
    if (folder / "adapter_config.json").exists():
        return (f"its adapter is on disk at {folder} but not loaded in this process (it was trained after "
                f"the model was loaded; the app loads it in place after a round, or restart to load it)")
    return f"no adapter on disk at {folder}"


def build_pool(db: Store | str | Path | None = None, n: int = 200, stages: Sequence[str] | None = None, *,
               asker=None, stage_model=None, index=None, scorer=None, examples: Iterable[Example] | None = None,
               split: str = "test", datasets: Sequence[str] = POOL_DATASETS, existing: bool = False,
               batch_size: int = 8, gen: GenConfig | None = None, k: int | None = None, seed: int = 0,
               score: bool = True, progress: Callable[[int, int, str], None] | None = None,
               adapters_dir: str | Path | None = None) -> dict:
    """Add what is missing to the pool (see the module docstring) and return counts.

    db: a Store or a path (default: the app's database). stages: default every loaded stage.
    asker: a racq.service.Asker (default: built from stage_model/index/scorer, or Asker.load()).
    examples: where queries come from (default: `split` of `datasets`); existing=True instead takes
    the first `n` queries already in the database. progress(done, total, message) after each batch.
    adapters_dir: where to read adapter manifests for round lineage (default: the configured one).
    """
    t0 = time.time()
    db = db if isinstance(db, Store) else open_db(db)
    say = progress or (lambda done, total, msg: None)
    asker, scorer = _asker_and_scorer(asker, stage_model, index, scorer, score)
    sm = asker.stage_model
    stages = list(stages or sm.stages)
    adapters_dir = _check_stages(sm, stages, adapters_dir)
    if n < 1:
        raise PoolError(f"n must be at least 1, got {n}")
    gen = dataclasses.replace(gen or GenConfig(), batch_size=batch_size)
    if gen.best_of > 1:  # the pool's candidates are what the stages ask; a pick would hide their vagueness
        raise PoolError("the pool stores each stage's own question: best_of must be 1 here (it applies to "
                        "Explore, racq ask and racq eval)")
    decodings = {s: decoding_of(gen, sm.prompt, seed, s) for s in stages}
    hashes = {s: sm.adapter_hashes.get(s, "") for s in stages}
    rounds = _stage_rounds(db, adapters_dir, stages)

    say(0, 0, "choosing queries and retrieving passages")
    if existing:
        queries, new_queries = _pool_queries(db, n), 0
    else:
        if examples is None:
            examples = load_examples(list(datasets), split=split)
        queries, new_queries = _new_queries(db, asker, pick_queries(examples, n), k)
    qids = [q["id"] for q in queries]
    have = _existing(db, qids, hashes, {s: dumps(d) for s, d in decodings.items()})
    stats = {"queries": len(queries), "new_queries": new_queries, "stages": stages,
             "candidates_existing": len(have), "candidates_new": 0, "empty": 0, "generate_calls": 0,
             "scored": 0, "items_new": 0}
    lineage = {s: (hashes[s], decodings[s], rounds.get(s)) for s in stages}
    n_jobs = _generate(db, sm, queries, stages, have, lineage, gen, seed, batch_size, say, stats)
    if score and scorer is not None:
        _score(db, scorer, {q["id"]: q for q in queries}, have, say, stats)
    stats["items_new"] = make_items(db, query_ids=qids)
    stats["seconds"] = round(time.time() - t0, 1)
    say(n_jobs, n_jobs, f"pool ready: {stats['candidates_new']} new questions, {stats['items_new']} new pairs")
    return stats


def _asker_and_scorer(asker, stage_model, index, scorer, score: bool):
    """The Asker to generate with (built when not given) and the Scorer (None when score=False and none given)."""
    if asker is None:
        from racq.service import Asker

        if stage_model is not None and index is not None:
            asker = Asker(stage_model, index, scorer)
        else:
            asker = Asker.load(with_scorer=score and scorer is None, stage_model=stage_model, index=index)
    scorer = scorer if scorer is not None else asker.scorer
    if score and scorer is None:
        from racq.scoring.faithfulness import Scorer

        scorer = Scorer()
    return asker, scorer


def _check_stages(sm, stages: Sequence[str], adapters_dir):
    """The adapters folder to read lineage from; PoolError naming why when a stage is not loaded."""
    if adapters_dir is None:
        from racq.config import ADAPTERS_DIR

        adapters_dir = getattr(sm, "adapters_dir", None) or ADAPTERS_DIR
    missing = [s for s in stages if s not in sm.stages]
    if missing:
        why = "; ".join(f"{s}: {why_not_loaded(sm, s, adapters_dir)}" for s in missing)
        raise PoolError(f"stage(s) not loaded: {why}. Loaded: {', '.join(sm.stages)}")
    return adapters_dir


def _new_queries(db: Store, asker, picked: list[Example], k: int | None) -> tuple[list[dict], int]:
    """The picked queries as stored rows: a query already stored keeps its passages (so a new stage is
    asked from the same passages as the stages it is compared with); the others are retrieved now, in
    one batched search, and stored. Returns (queries, how many were new)."""
    qids = latest_query_ids(db, [(ex.query, ex.dataset, ex.topic_id) for ex in picked])
    to_retrieve = [i for i, qid in enumerate(qids) if qid is None]
    hits = asker.index.search_many([picked[i].query for i in to_retrieve], k or asker.prompt.top_k) \
        if to_retrieve else []
    for i, found in zip(to_retrieve, hits):
        ex = picked[i]
        qids[i] = add_query_with_passages(db, ex.query, [h.passage for h in found],
                                          [h.score for h in found], dataset=ex.dataset, topic_id=ex.topic_id)
    return [get_query(db, qid) for qid in qids], len(to_retrieve)


def _generate(db: Store, sm, queries: list[dict], stages: list[str], have: dict, lineage: dict,
              gen: GenConfig, seed: int, batch_size: int, say, stats: dict) -> int:
    """Generate the missing (query, stage) candidates, batched across queries and stages; each finished
    batch is stored at once (a killed run keeps its work). Adds the new ids to `have`, counts to `stats`;
    returns how many (query, stage) pairs it tried. lineage: stage -> (adapter hash, decoding, round id)."""
    from racq.prompts import extract_question

    prompts = {q["id"]: sm.passage_prompt(q["text"], q["passages"]) for q in queries
               if any((q["id"], s) not in have for s in stages)}
    jobs = sorted(((q["id"], s) for q in queries for s in stages if (q["id"], s) not in have),
                  key=lambda j: (len(prompts[j[0]]), j[0], stages.index(j[1])))  # similar lengths, less padding
    for b in range(0, len(jobs), batch_size):
        batch = jobs[b:b + batch_size]
        say(b, len(jobs), f"generating {b + len(batch)}/{len(jobs)} questions")
        texts = sm.generate([prompts[qid] for qid, _ in batch], [s for _, s in batch], gen,
                            seed=(seed + b) if gen.do_sample else None)
        stats["generate_calls"] += 1
        for (qid, stage), raw in zip(batch, texts):
            text = extract_question(raw)
            if not text:  # an empty question is nothing to judge; a later run tries again
                stats["empty"] += 1
                continue
            adapter_hash, decoding, round_id = lineage[stage]
            have[(qid, stage)] = add_candidate(db, qid, stage, text, adapter_hash=adapter_hash,
                                               decoding=decoding, round_id=round_id)
            stats["candidates_new"] += 1
    return len(jobs)


def _score(db: Store, scorer, by_id: dict[int, dict], have: dict, say, stats: dict) -> None:
    """Score every candidate in `have` that has no score under this scorer's settings; counts to `stats`."""
    key = scorer_key(scorer)
    done = scored_ids(db, list(have.values()), key)
    todo = [(qs, cid) for qs, cid in have.items() if cid not in done]
    text_of = candidate_texts(db, [cid for _, cid in todo]) if todo else {}
    for b in range(0, len(todo), 64):
        say(b, len(todo), f"scoring {min(b + 64, len(todo))}/{len(todo)} questions")
        rows = []
        for (qid, _), cid in todo[b:b + 64]:
            q = by_id[qid]
            rows.append((cid, key, scorer.score(q["text"], q["passages"], text_of[cid])))
        stats["scored"] += add_scores(db, rows)
    stats["scorer"] = key


__all__ = ["build_pool", "pick_queries", "decoding_of", "why_not_loaded", "PoolError"]
