"""`racq eval`: every stage's greedy clarifying questions on a test split, scored against the gold
question (ROUGE, BLEU, embedding similarity) and against the passages they were generated from
(option grounding, hallucination, PARENT-style, novel content; NLI when configured).

    racq eval --stages base,uncond,sft,aligned --limit 40 --passages own --datasets paqa,cambignq --run v1

    from racq.eval.run import EvalConfig, evaluate
    metrics = evaluate(EvalConfig(run="v1", limit=40))     # writes results/v1/{metrics.json, ...}

What a run does, and why:
- examples: per dataset, the first `limit` examples of `split` with a gold question (and, for
  `--passages own`, passages) in racq.annotation.pool's fixed hash order, so `--limit 20` is a prefix of `--limit 40`;
- passages: `own` = the example's own passages ranked by the embedder, top-k (racq.train.common.
  rank_own_passages, the same ranking and prompt builder as training); `retrieved` = top-k from the
  corpus index (racq.retrieval), the app's path;
- prompts: StageModel.passage_prompt; the hidden `uncond` stage (query-only model) gets its own
  query-only prompt and is scored against the same passages as the others;
- generation: greedy, <= max_new_tokens, batched across examples AND stages (PEFT mixed-adapter
  batches), cached on disk by (stage, adapter hash, base model, prompt hash, decoding): a re-run
  generates nothing and loads no model; adding a stage generates only that stage. Scores are cached
  the same way (by scorer settings and texts);
- the gold question is also scored for faithfulness (row `gold`): the reference's own grounding;
- output: results/<run>/metrics.json, per_example.jsonl, report.md (racq.eval.report), plots.png.
"""


from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from racq.config import (ADAPTERS_DIR, BASE_MODEL, DEFAULT_EMBEDDER, DEFAULT_VLLM_URL, DRAFT_TOKENS, REPO_ROOT,
                          GenConfig, PromptConfig, helpfield)
from racq.data import Example, load_examples
# generation and its caches live in racq.eval.gen; these names are importable from here as before
from racq.eval.gen import (QUERY_ONLY_STAGES, EvalError, JsonlCache, best_of_stages, generate_all,  # noqa: F401
                          prompt_evidence, sha_key, stage_hashes)
from racq.retrieval.named import named_loader
from racq.scoring.metrics import METRICS as REF_METRICS
from racq.scoring.options import repeats_option
from racq.scoring.usefulness import EVIDENCE_METRICS, USEFUL_METRICS, evidence, useful_scores

USEFUL_COLUMNS = (*USEFUL_METRICS, *EVIDENCE_METRICS, "grounded_prompt")
FAITH_METRICS = ("option_support", "hallucinated", "grounded", "repeats_option", "has_options", "novel_content", "parent_precision",
                 "parent_recall", "parent_f1", "is_question")
NLI_METRICS = ("nli_min", "nli_hallucinated")
GOLD = "gold"


@dataclass
class EvalConfig:
    split: str = helpfield("test", "Data split to evaluate on: test (never trained on), t1, t2, or all (every "
                                   "row: for a `data` file you held out yourself).")
    stages: list[str] = helpfield(["base", "uncond", "sft", "aligned"], "Stages to evaluate.")
    datasets: list[str] = helpfield(["paqa", "cambignq"], "Datasets (one report table each).")
    data: str = helpfield("", "Your own data instead of `datasets`: a .jsonl, .jsonl.gz or .parquet file in the "
                              "generic format (docs/data-format.md), one report table per `dataset` label in it.")
    index: str = helpfield("", "A named index (`racq index build --passages PATH --name NAME`): the one the rows' "
                               "passage_ids point into, and the one `passages=retrieved` searches; empty = "
                               "rows carry their passages, and retrieval uses the shipped corpus.")
    limit: int = helpfield(40, "Examples per dataset (0 = all).")
    passages: str = helpfield("own", "own = the example's own passages ranked; retrieved = top-k from the index.")
    run: str = helpfield("default", "Name of the results folder: results/<run>/.")
    results_dir: str = helpfield(str(REPO_ROOT / "results"), "Where run folders are written.")
    cache_dir: str = helpfield(str(REPO_ROOT / "results" / ".cache"), "Generation and score caches (shared by runs).")
    base_model: str = helpfield(BASE_MODEL, "Base model: a folder or a name from `racq models add`.")
    adapters_dir: str = helpfield(str(ADAPTERS_DIR), "Stage adapters folder.")
    embedder: str = helpfield(DEFAULT_EMBEDDER, "Embedder for passage ranking and embed_sim.")
    top_k: int = helpfield(PromptConfig.top_k, "Passages per prompt (as in training).")
    passage_tokens: int = helpfield(PromptConfig.passage_tokens, "Token budget per passage (as in training).")
    base_openers: list[str] = helpfield(PromptConfig().base_openers, "Reply openers of the untuned base "
                                        "stage, one per prompt by hash (PromptConfig.base_openers; [] = none).")
    evidence: str = helpfield(PromptConfig.evidence, "What the prompt shows (PromptConfig.evidence): lead = "
                              "top_k passages' first passage_tokens tokens; mmr = sentences from all own "
                              "passages, same budget.")
    max_new_tokens: int = helpfield(32, "Most new tokens per question (greedy decoding).")
    no_repeat_ngram_size: int = helpfield(0, "Decoding guard (GenConfig.no_repeat_ngram_size): no n-gram "
                                             "of this many tokens twice in a reply; 0 = off.")
    sample_no_repeat_ngram_size: int = helpfield(
        GenConfig.sample_no_repeat_ngram_size,  # the app's default, so the eval draws what Explore draws
        "With best_of > 1: the samples' guard only (GenConfig.sample_no_repeat_ngram_size); "
        "0 = as no_repeat_ngram_size.")
    batch_size: int = helpfield(8, "Prompts per batched generate call (stages mixed in a batch).")
    best_of: int = helpfield(1, "Best-of-N as the app picks it (GenConfig.best_of, racq.bestof): the greedy question "
                                "and best_of - 1 seeded samples, the scorer's favourite kept; 1 = greedy only. "
                                "With engine=joint the samples are the app's own draws (JointStages.sample).")
    best_of_stages: list[str] = helpfield([], "With best_of > 1: the stages picked that way (empty = every "
                                              "stage), so one run compares e.g. aligned best-of-5 with sft greedy.")
    engine: str = helpfield("peft", "peft = the reference path (PEFT mixed-adapter batches); joint = the app's "
                                    "default (an example's stages decoded in one batch, racq.multilora); merged = "
                                    "one merged model per stage (racq.fastgen); both to check they ask the same "
                                    "(docs/eval/speed-equivalence.md); vllm = a vLLM server at vllm_url, "
                                    "batch_size concurrent requests (docs/eval/vllm-equivalence.md).")
    vllm_url: str = helpfield(DEFAULT_VLLM_URL, "With engine=vllm: the server (ModelConfig.vllm_url, "
                                                       "`racq vllm serve`).")
    quantize: str = helpfield("none", "With engine=joint: int8 = dynamic int8 base linears (ModelConfig.quantize).")
    draft_tokens: int = helpfield(DRAFT_TOKENS, "With engine=joint: guessed tokens checked per decode step "
                                     "(ModelConfig.draft_tokens; 0 = one token per step, to check they ask the same).")
    reference_stage: str = helpfield("sft", "Stage every other stage is paired-tested against.")
    n_boot: int = helpfield(2000, "Bootstrap resamples for CIs and the paired test.")
    seed: int = helpfield(0, "Bootstrap seed.")
    nli_model: str | None = helpfield(None, "Local NLI model folder for the NLI scores (None = skipped).")
    calibration: bool = helpfield(True, "Report the metric's agreement with the hand-labelled calibration set.")


# ---------------------------------------------------------------- examples and passages
def pick_examples(datasets: Sequence[str], split: str, limit: int, need_passages: bool = True,
                  data_file: str | None = None, index=None) -> list[Example]:
    """Per dataset, the first `limit` usable examples in racq.annotation.pool's fixed hash order. With `data_file`,
    its rows instead, per `dataset` label in the file (`datasets` ignored); split `all` takes every split."""
    from racq.annotation.pool import order_key

    found = load_examples(datasets, split=None if split == "all" else split, data_file=data_file, index=index)
    out = []
    for ds in dict.fromkeys(e.dataset for e in found) if data_file else datasets:
        exs = [e for e in found if e.dataset == ds and e.gold_question and (e.passages or not need_passages)]
        if not exs:
            why = " with passages of their own (use --passages retrieved)" if need_passages else ""
            raise EvalError(f"dataset {ds!r} has no {split} examples{why}")
        exs = sorted(exs, key=order_key)
        out += exs[:limit] if limit else exs
    return out


def passages_for(examples: Sequence[Example], cfg: EvalConfig, index=None) -> list[list]:
    if cfg.passages == "own":
        from racq.train.common import rank_own_passages

        key = hashlib.sha1(cfg.run.encode()).hexdigest()[:8]
        k = cfg.top_k if cfg.evidence == "lead" else 10 ** 6  # mmr picks sentences from every own passage
        return rank_own_passages(examples, cfg.embedder, k, Path(cfg.cache_dir) / f"ranked-{key}.json")
    if cfg.passages == "retrieved":
        if index is None:
            from racq.retrieval import RetrievalConfig, load_or_build

            index = load_or_build(RetrievalConfig(embedder=cfg.embedder, index=cfg.index))
        return [[h.passage for h in hits] for hits in index.search_many([e.query for e in examples], cfg.top_k)]
    raise EvalError(f"--passages must be 'own' or 'retrieved', not {cfg.passages!r}")


# ---------------------------------------------------------------- scoring
class CachedScorer:
    """Faithfulness and reference scores, memoised on disk by scorer settings and texts."""

    def __init__(self, scorer, cache: JsonlCache, embedder_name: str, embedder=None):
        from racq.store.scores import scorer_key

        self.scorer, self.cache, self.key = scorer, cache, scorer_key(scorer)
        self.embedder_name, self.embedder = embedder_name, embedder

    def faith(self, query: str, passages, question: str) -> dict:
        key = sha_key(["faith", self.key, query, [p.pid for p in passages], question])
        value = self.cache.get(key)
        if value is None:
            value = self.scorer.score(query, passages, question)
            self.cache.put_many({key: value})
        return value

    def reference(self, preds: Sequence[str], golds: Sequence[str]) -> list[dict]:
        from racq.scoring.metrics import reference_scores_batch

        keys = [sha_key(["ref", self.embedder_name, p, g]) for p, g in zip(preds, golds)]
        vals = [self.cache.get(k) for k in keys]
        todo = [i for i, v in enumerate(vals) if v is None]
        if todo:
            fresh = reference_scores_batch([preds[i] for i in todo], [golds[i] for i in todo], self.embedder,
                                           self.embedder_name)
            for i, v in zip(todo, fresh):
                vals[i] = v
            self.cache.put_many({keys[i]: vals[i] for i in todo})
        return vals


def flat_scores(faith: dict, ref: dict | None, question: str, query: str = "", interps=()) -> dict:
    """The per-example numbers the report aggregates (None where a metric does not apply; the
    usefulness ones where the query has no human interpretations)."""
    row = {m: (ref or {}).get(m) for m in REF_METRICS}
    row.update({m: faith.get(m) for m in FAITH_METRICS if m in faith})
    row["has_options"] = int(faith["n_options"] > 0)
    # a clarifying question that actually offers interpretations, every one of them in the passages: the
    # headline faithfulness rate (an option-free question cannot hallucinate, but it does not clarify either)
    row["grounded"] = int(faith["n_options"] > 0 and not faith["hallucinated"])
    row["repeats_option"] = int(repeats_option(question, query))  # "the final or the final?"
    row["is_question"] = int("?" in question)
    use = useful_scores(query, question, interps, row["grounded"], [o["core"] for o in faith["options"]])
    row.update({m: use[m] for m in USEFUL_METRICS})
    for m in NLI_METRICS:
        if m in faith:
            row[m] = faith[m]
    return row


# ---------------------------------------------------------------- the run
def evaluate(cfg: EvalConfig, *, stage_model=None, scorer=None, index=None, examples=None, embedder=None,
             log: Callable[[str], None] | None = None) -> dict:
    """Run the evaluation described in the module docstring; returns the metrics dict it writes."""
    from racq.eval import report as evalreport
    from racq.scoring.faithfulness import FaithfulnessConfig, Scorer

    say = log or (lambda m: print(f"[racq eval] {m}", file=sys.stderr, flush=True))
    t0 = time.time()
    exs = _examples(cfg, examples, say)
    passages = passages_for(exs, cfg, index)
    cache_dir = Path(cfg.cache_dir)
    gen_cache = JsonlCache(cache_dir / "generations.jsonl")
    shown = prompt_evidence(exs, passages, cfg, stage_model)
    if cfg.evidence != "lead":  # the prompt saw sentences of every own passage: score against those
        scored_against = shown
    else:
        scored_against = passages

    scorer = scorer or Scorer(FaithfulnessConfig(embedder=cfg.embedder, nli_model=cfg.nli_model))
    cs = CachedScorer(scorer, JsonlCache(cache_dir / "scores.jsonl"), cfg.embedder, embedder)
    questions, gen_stats = generate_all(exs, passages, cfg, gen_cache, stage_model, say,
                                        faith_of=lambda i, q: cs.faith(exs[i].query, scored_against[i], q))
    picks = gen_stats.pop("picks", {})
    rows = _score_rows(exs, scored_against, shown, questions, gen_stats["hashes"], cfg, cs)
    for r in rows:  # what racq.bestof picked among, as the app's card says it
        if (r["example"], r["stage"]) in picks:
            r["best_of"] = picks[r["example"], r["stage"]]
    metrics = evalreport.summarise(rows, cfg, _calibration(cfg, scorer, cs, say))
    metrics.update(_run_facts(cfg, cs, gen_stats, say))
    metrics["seconds"] = round(time.time() - t0, 1)
    evalreport.write_run(Path(cfg.results_dir) / cfg.run, rows, metrics)
    say(f"wrote {Path(cfg.results_dir) / cfg.run} ({metrics['seconds']} s; {gen_stats['generated']} generated, "
        f"{gen_stats['cached']} from cache)")
    return metrics


def _examples(cfg: EvalConfig, examples, say) -> list[Example]:
    """The run's examples (given, or picked by the config), after the checks that need no model."""
    stage_hashes(cfg.adapters_dir, cfg.stages)  # a missing stage fails before anything is loaded
    if cfg.passages not in ("own", "retrieved"):
        raise EvalError(f"--passages must be 'own' or 'retrieved', not {cfg.passages!r}")
    if cfg.best_of < 1:
        raise EvalError(f"best_of must be 1 (greedy only) or more, got {cfg.best_of}")
    best_of_stages(cfg)  # names only evaluated stages
    if cfg.reference_stage not in cfg.stages:
        say(f"reference stage {cfg.reference_stage} not evaluated: no paired tests")
    exs = list(examples) if examples is not None else pick_examples(cfg.datasets, cfg.split, cfg.limit,
                                                                     cfg.passages == "own", cfg.data,
                                                                     named_loader(cfg.index))
    if not exs:
        raise EvalError(f"{cfg.data} has no {cfg.split} examples (`racq data stats --data {cfg.data}` counts "
                        f"them per split; --split all takes every row)" if cfg.data else "no examples to evaluate")
    say(f"{len(exs)} examples, stages {', '.join(cfg.stages)}, passages {cfg.passages}")
    return exs


def _score_rows(exs, passages, shown, questions: dict, hashes: dict, cfg: EvalConfig, cs: CachedScorer) -> list[dict]:
    """One row per (example, stage), the gold question included: its prediction, scores and options."""
    pairs = [(i, s) for i in range(len(exs)) for s in cfg.stages]
    refs = dict(zip(pairs, cs.reference([questions[p] for p in pairs], [exs[i].gold_question for i, _ in pairs])))
    rows = []
    for i, e in enumerate(exs):
        interps = _interpretations(e.query)
        for s in [GOLD, *cfg.stages]:
            q = e.gold_question if s == GOLD else questions[i, s]
            faith = cs.faith(e.query, passages[i], q)
            scores = flat_scores(faith, refs.get((i, s)), q, e.query, interps)
            if s == GOLD:  # what the prompt makes possible: its evidence, and the reference grounded in it
                scores.update({m: v for m, v in evidence(e.query, shown[i], interps).items() if m in EVIDENCE_METRICS})
                in_prompt = faith if shown[i] == list(passages[i]) else cs.faith(e.query, shown[i], q)
                scores["grounded_prompt"] = int(in_prompt["n_options"] > 0 and not in_prompt["hallucinated"])
            rows.append({"example": i, "dataset": e.dataset, "topic_id": e.topic_id, "query": e.query, "stage": s,
                         "adapter_hash": hashes.get(s, ""),
                         "prompt": "query-only" if s in QUERY_ONLY_STAGES else ("gold" if s == GOLD else "passages"),
                         "passage_ids": [p.pid for p in passages[i]], "gold": e.gold_question, "prediction": q,
                         "scores": scores,
                         "options": [{k: o[k] for k in ("text", "supported", "how")} for o in faith["options"]],
                         "skipped": faith.get("skipped", [])})
    return rows


def _calibration(cfg: EvalConfig, scorer, cs: CachedScorer, say) -> dict | None:
    """The scorer's agreement with the hand-labelled calibration set, when asked for and present."""
    if not cfg.calibration:
        return None
    from racq.scoring.calibration import calibration_agreement

    from racq.data import DataError

    say("calibration: scoring the hand-labelled set")
    try:
        return calibration_agreement(scorer, score_fn=cs.faith)
    except DataError as e:  # the run's own results matter more than the calibration report
        say(f"calibration skipped: {e}")
        return None


def _run_facts(cfg: EvalConfig, cs: CachedScorer, gen_stats: dict, say) -> dict:
    """What the metrics record besides the scores: generation and scoring counts, adapters, training."""
    from racq.models import list_stages

    training = {st.name: {k: st.manifest.get(k) for k in ("kind", "split", "examples", "n_pairs", "created")}
                for st in list_stages(cfg.adapters_dir, include_hidden=True)
                if st.name in cfg.stages and st.manifest}
    return {"usefulness_calibration": _matcher_agreement(say),
            "generation": {k: v for k, v in gen_stats.items() if k != "hashes"},
            "adapter_hashes": gen_stats["hashes"],
            "training": training,
            "scoring": {"cache_hits": cs.cache.hits, "computed": cs.cache.misses, "scorer": cs.key}}


def _interpretations(query: str) -> list:
    from racq.data import DataError
    from racq.scoring.usefulness import interpretations_for

    try:
        return interpretations_for(query)
    except DataError:  # no reference file: the usefulness columns read "—", the rest still runs
        return []


def _matcher_agreement(say) -> dict | None:
    from racq.data import DataError
    from racq.scoring.usefulness import matcher_agreement

    try:
        return matcher_agreement()
    except DataError as e:
        say(f"usefulness calibration skipped: {e}")
        return None


def config_dict(cfg: EvalConfig) -> dict:
    return dataclasses.asdict(cfg)


__all__ = ["EvalConfig", "EvalError", "evaluate", "pick_examples", "passages_for", "generate_all",
           "CachedScorer", "JsonlCache", "flat_scores", "FAITH_METRICS", "QUERY_ONLY_STAGES"]
