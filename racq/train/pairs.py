"""Synthetic preference pairs on split t2 (RAC step 3).

chosen   = a sample of the SFT model (or the gold question with `chosen=gold`);
rejected = a sample of the hard token-level mixture: each token from the query-only model with
           probability alpha (0.7), else from the SFT model.
Sampling: T 0.7, top-p 0.9, top-k 50, <= 32 new tokens, up to 5 tries until a "?", cut after it.

With `faithfulness_filter` (the shipped CPU recipe) several candidates are drawn per side and ranked
by the project's faithfulness scorer against the prompt's passages: chosen = the most faithful SFT
sample, rejected = the least faithful mixture sample, and a pair is kept only when its chosen is
strictly more faithful. A 135M model's single SFT sample is too often option-free or itself invented
for RAC's "the SFT sample is the faithful side" to hold; the filter makes it hold.

With `useful_ranking` as well, candidates are ranked by faithful AND useful (`ranking_key`): useful &
grounded first (grounded, >= 2 distinct options, names >= 1 of the query's AmbigNQ interpretations --
t2's interpretations are training data like its gold questions; test's never are), then grounded, then
the share of interpretations named and distinct options, then faithfulness as before. Faithfulness
alone rewards a vague option-free or one-option question; this prefers the questions users need.

    racq pairs                        # -> runs/default/pairs.jsonl (TRL prompt/chosen/rejected)
    racq pairs --set alpha=0.5 --set t2_limit=50

Writes one JSON line per finished example as it goes, so a killed run resumes where it stopped.

Sharded under a launcher (`accelerate launch --config_file recipes/accelerate/cpu-2proc.yaml -m racq.cli
pairs`): the examples are cut into fixed batches of gen_batch_size, batch k always seeded cfg.seed +
7*k*gen_batch_size, and rank r samples batches r, r+W, r+2W, ... into its own shard (pairs.rankR.jsonl);
rank 0 then merges the shards into pairs.jsonl in example order. Batch contents and seeds do not
depend on the number of ranks, so W ranks write the same file as one process. A killed sharded run
resumes (its shards are merged first, at any number of ranks).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from tqdm import tqdm

from racq.config import GenConfig, PromptConfig, TrainConfig
from racq.prompts import extract_question
from racq.train import dist
from racq.train.common import answer_for, check_run_data, prompt_for, rank_own_passages, select_examples


def _sample_until_question(sm, prompts, stage, gen, seed, tries, mixture=None):
    """Sample each prompt, resampling those without a "?" (new seed each try). Returns (texts, tries,
    uncond_share) per prompt; texts are cut after the first "?"."""
    texts = [""] * len(prompts)
    used = [0] * len(prompts)
    share = [0.0] * len(prompts)
    pending = list(range(len(prompts)))
    for attempt in range(tries):
        if not pending:
            break
        mix = None
        if mixture is not None:
            mix = {**mixture, "query_prompts": [mixture["query_prompts"][i] for i in pending]}
        raw = sm.generate([prompts[i] for i in pending], stage, gen, seed=seed + 1000 * attempt, mixture=mix)
        still = []
        for j, i in enumerate(pending):
            texts[i], used[i] = extract_question(raw[j]), attempt + 1
            if mix is not None:
                share[i] = mix["uncond_share"][j]
            if "?" not in texts[i]:
                still.append(i)
        pending = still
    return texts, used, share


def faithfulness_key(s: dict) -> tuple:
    """Sort key, higher = more faithful: offers options and all supported > no invented option >
    share of supported options > less content absent from the passages."""
    return (int(s["n_options"] > 0 and not s["hallucinated"]), 1 - s["hallucinated"],
            round(s["option_support"], 3), -round(s["novel_content"], 3))


def ranking_key(s: dict) -> tuple:
    """Sort key, higher = better: faithfulness_key, led by usefulness when `s["useful"]` holds
    racq.scoring.usefulness.useful_scores (see the module docstring)."""
    u = s.get("useful")
    if u is None:
        return faithfulness_key(s)
    grounded = int(s["n_options"] > 0 and not s["hallucinated"])
    return (u["useful_grounded"] or 0, grounded, round(u["coverage"] or 0.0, 3), u["distinct_options"],
            *faithfulness_key(s))


def _with_usefulness(score: dict, query: str, question: str, interps) -> dict:
    from racq.scoring.usefulness import useful_scores

    grounded = int(score["n_options"] > 0 and not score["hallucinated"])
    return {**score, "useful": useful_scores(query, question, interps, grounded, [o["core"] for o in score["options"]])}


def _pick(texts: list[str], n: int, scores: list[dict] | None, best: bool) -> list[tuple[int, dict | None]]:
    """Per example (n consecutive candidates): the index of the candidate kept and its score. Candidates
    without a "?" are never kept when one with a "?" exists; among equals the earliest sample wins."""
    out = []
    for start in range(0, len(texts), n):
        idx = list(range(start, start + n))
        asks = [i for i in idx if "?" in texts[i]] or idx
        if scores is None:
            out.append((asks[0], None))
            continue
        sign = 1 if best else -1
        i = max(asks, key=lambda i: (tuple(sign * v for v in ranking_key(scores[i])), -i))
        out.append((i, scores[i]))
    return out


def _summary(s: dict | None) -> dict | None:
    if s is None:
        return None
    out = {"n_options": s["n_options"], "hallucinated": s["hallucinated"],
           "option_support": round(s["option_support"], 3), "novel_content": round(s["novel_content"], 3)}
    if s.get("useful") is not None:
        out.update({k: s["useful"][k] for k in ("useful_grounded", "coverage", "distinct_options")})
    return out


def build_pairs(cfg: TrainConfig, out_path: Path | None = None, stage_model=None) -> dict:
    """Write `pairs.jsonl` in the run folder (resuming); return counts. Under a launcher the batches are
    shared round-robin among the ranks and rank 0 merges their shard files (see the module docstring)."""
    out_path = Path(out_path or Path(cfg.run_dir) / "pairs.jsonl")
    check_run_data(cfg)  # before appending to (resuming) a pairs file made from other data
    sm = _pair_model(cfg, stage_model)
    examples = select_examples(cfg, "t2", cfg.t2_limit)
    ranked = rank_own_passages(examples, cfg.embedder, cfg.top_k, Path(cfg.run_dir) / "ranked-t2.json")
    order = [e.topic_id for e in examples]
    # what a killed multi-rank run left counts as done (then the final merge restores example order)
    leftovers = merge_shards(out_path, order) if dist.is_main() else 0
    dist.barrier()
    done = _done_keys(out_path)
    ws, rk, bs = dist.world_size(), dist.rank(), cfg.gen_batch_size
    items = list(zip(examples, ranked))
    # batch k is always examples[k*bs:(k+1)*bs] with seed cfg.seed + 7*k*bs, whoever samples it
    mine = [(k, [(e, r) for e, r in items[k * bs:(k + 1) * bs] if e.topic_id not in done])
            for k in range(rk, -(-len(items) // bs), ws)]
    mine = [(k, todo) for k, todo in mine if todo]
    stats = {"examples": len(examples), "resumed": sum(t in done for t in order), "written": 0,
             "dropped_identical": 0, "dropped_no_question": 0, "dropped_not_more_faithful": 0}
    scorer = _scorer(cfg) if cfg.faithfulness_filter and mine else None
    gen = GenConfig(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k_sampling,
                    max_new_tokens=cfg.max_new_tokens,
                    # all candidates of a batch in one call: rows draw independently from one seeded RNG
                    batch_size=bs * max(1, cfg.chosen_candidates, cfg.rejected_candidates))
    target = out_path if ws == 1 else shard_path(out_path, rk)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as fh, tqdm(total=sum(len(t) for _, t in mine), desc="pairs",
                                                           unit="ex", disable=not dist.is_main()) as bar:
        for k, todo in mine:
            buf = io.StringIO()
            _pairs_batch(buf, sm, cfg, gen, scorer, todo, cfg.seed + 7 * k * bs, stats)
            fh.write(buf.getvalue())  # one write per batch: a kill leaves at most a torn last line
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(todo))
    return _finish(out_path, order, stats, resort=leftovers > 0)


COUNTS = ("written", "dropped_identical", "dropped_no_question", "dropped_not_more_faithful")


def _finish(out_path: Path, order: list[str], stats: dict, resort: bool) -> dict:
    """Sum the ranks' counts, merge their shards (rank 0; `resort`: put the file in example order even
    without shards) and write pairs.stats.json; every rank returns rank 0's stats."""
    every = dist.gather(stats)  # also waits until every rank has closed its shard
    if dist.is_main():
        stats = {**stats, **{k: sum(s[k] for s in every) for k in COUNTS}}
        merge_shards(out_path, order, always=resort)
        stats["total_pairs"] = sum(1 for _ in read_pairs(out_path)) if out_path.exists() else 0
        (out_path.parent / "pairs.stats.json").write_text(json.dumps(stats, indent=2))
    return dist.share(stats)


def shard_path(out_path: Path, rank: int) -> Path:
    """The file rank `rank` writes its batches to (pairs.rank1.jsonl beside pairs.jsonl)."""
    return out_path.with_name(f"{out_path.stem}.rank{rank}{out_path.suffix}")


def merge_shards(out_path: Path, order: list[str], always: bool = False) -> int:
    """Fold the rank shard files into `out_path` (atomically) and delete them; returns how many shards.

    Each example is a pair row (when kept) followed by its done marker; the merged file holds every
    finished example once, in `order` (examples from other selections first, as found), which is the
    file one process writes. A pair row without its marker (a torn write) is dropped: the example is
    not done and is sampled again. With no shards the file is left as it is, unless `always`."""
    shards = sorted(out_path.parent.glob(f"{out_path.stem}.rank*{out_path.suffix}"))
    if not shards and not (always and out_path.exists()):
        return 0
    groups: dict[str, list[str]] = {}
    for path in ([out_path] if out_path.exists() else []) + shards:
        row_line = None
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row_line = None
                continue
            if "done" in row:
                if row["done"] not in groups:  # the first finished copy wins (out_path, then shards)
                    kept = [row_line] if row_line and json.loads(row_line)["topic_id"] == row["done"] else []
                    groups[row["done"]] = kept + [line]
                row_line = None
            elif "prompt" in row:
                row_line = line
    index = {t: i for i, t in enumerate(order)}
    seen = {t: i for i, t in enumerate(groups)}
    ranked = sorted(groups, key=lambda t: (t in index, index.get(t, seen[t])))
    tmp = out_path.with_name(f".{out_path.name}.merging")
    tmp.write_text("".join(line + "\n" for t in ranked for line in groups[t]), encoding="utf-8")
    tmp.replace(out_path)
    for path in shards:
        path.unlink()
    return len(shards)


def _pair_model(cfg: TrainConfig, stage_model=None):
    """The given stage model, or the base with the sft and uncond adapters; an error names a missing one."""
    from racq.generate import StageModel

    sm = stage_model or StageModel.load(cfg.base_model, cfg.adapters_dir, stages=["sft", "uncond"],
                                        include_hidden=True,
                                        prompt=PromptConfig(top_k=cfg.top_k, passage_tokens=cfg.passage_tokens))
    for need in ("sft", "uncond"):
        if need not in sm.stages:
            raise RuntimeError(f"adapter {need!r} is missing in {cfg.adapters_dir}: run `racq train "
                               f"{'sft' if need == 'sft' else 'uncond'}` first ({sm.errors.get(need, '')})")
    return sm


def _pairs_batch(fh, sm, cfg: TrainConfig, gen: GenConfig, scorer, batch: list, seed: int, stats: dict) -> None:
    """Sample, score and pick one batch's candidates; write its kept pairs and a done marker per example."""
    nc = 1 if cfg.chosen == "gold" else max(1, cfg.chosen_candidates)
    nr = max(1, cfg.rejected_candidates)
    chosen, ctries, rejected, rtries, share = _candidates(sm, cfg, gen, batch, seed, nc, nr)
    cscores = rscores = None
    if scorer is not None:
        cscores, rscores = _candidate_scores(scorer, cfg, batch, chosen, rejected, nc, nr)
    cpick, rpick = _pick(chosen, nc, cscores, best=True), _pick(rejected, nr, rscores, best=False)
    chosen, ctries = [chosen[i] for i, _ in cpick], [ctries[i] for i, _ in cpick]
    rejected = [rejected[i] for i, _ in rpick]
    rtries, share = [rtries[i] for i, _ in rpick], [share[i] for i, _ in rpick]
    tok = sm.tokenizer
    for (e, r), c, ct, rj, rt, sh, (_, cs), (_, rs) in zip(batch, chosen, ctries, rejected, rtries, share,
                                                           cpick, rpick):
        if "?" not in c:
            stats["dropped_no_question"] += 1
        elif c.strip().lower() == rj.strip().lower():
            stats["dropped_identical"] += 1
        elif cs is not None and ranking_key(cs) <= ranking_key(rs):
            stats["dropped_not_more_faithful"] += 1
        else:
            row = {"prompt": prompt_for(tok, e.query, r, cfg), "chosen": answer_for(tok, c),
                   "rejected": answer_for(tok, rj), "query": e.query, "topic_id": e.topic_id,
                   "dataset": e.dataset, "passage_ids": [p.pid for p in r], "chosen_text": c,
                   "rejected_text": rj, "chosen_tries": ct, "rejected_tries": rt,
                   "rejected_uncond_share": round(sh, 3), "alpha": cfg.alpha, "seed": seed,
                   "source": "synthetic", "chosen_from": cfg.chosen,
                   "candidates": [nc, nr], "chosen_faith": _summary(cs), "rejected_faith": _summary(rs)}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            stats["written"] += 1
        # a marker line per example makes resume exact even for dropped examples
        fh.write(json.dumps({"done": e.topic_id}) + "\n")


def _candidates(sm, cfg: TrainConfig, gen: GenConfig, batch: list, seed: int, nc: int, nr: int):
    """nc chosen (SFT samples, or the gold question) and nr rejected (mixture samples) per example:
    (chosen, chosen tries, rejected, rejected tries, rejected's uncond token share)."""
    prompts = [sm.passage_prompt(e.query, r) for e, r in batch]
    qprompts = [sm.query_prompt(e.query) for e, _ in batch]
    if cfg.chosen == "gold":
        chosen, ctries = [e.gold_question for e, _ in batch], [0] * len(batch)
    else:
        chosen, ctries, _ = _sample_until_question(sm, [p for p in prompts for _ in range(nc)], "sft",
                                                   gen, seed, cfg.tries)
    rejected, rtries, share = _sample_until_question(
        sm, [p for p in prompts for _ in range(nr)], "sft", gen, seed + 1, cfg.tries,
        mixture={"alpha": cfg.alpha, "query_prompts": [q for q in qprompts for _ in range(nr)],
                 "adapter": "uncond"})
    return chosen, ctries, rejected, rtries, share


def _candidate_scores(scorer, cfg: TrainConfig, batch: list, chosen: list, rejected: list, nc: int, nr: int):
    """Faithfulness scores of every candidate against its example's passages (with usefulness when
    `useful_ranking`): (chosen scores, rejected scores), in the candidates' order."""
    cscores = [scorer.score(e.query, r, chosen[k * nc + j]) for k, (e, r) in enumerate(batch) for j in range(nc)]
    rscores = [scorer.score(e.query, r, rejected[k * nr + j]) for k, (e, r) in enumerate(batch) for j in range(nr)]
    if cfg.useful_ranking:
        from racq.scoring.usefulness import interpretations_for

        interps = [interpretations_for(e.query) for e, _ in batch]
        cscores = [_with_usefulness(cscores[k * nc + j], e.query, chosen[k * nc + j], interps[k])
                   for k, (e, _) in enumerate(batch) for j in range(nc)]
        rscores = [_with_usefulness(rscores[k * nr + j], e.query, rejected[k * nr + j], interps[k])
                   for k, (e, _) in enumerate(batch) for j in range(nr)]
    return cscores, rscores


def _scorer(cfg: TrainConfig):
    from racq.scoring.faithfulness import FaithfulnessConfig, Scorer

    return Scorer(FaithfulnessConfig(embedder=cfg.embedder))


def _done_keys(path: Path) -> set[str]:
    keys = set()
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from a kill: ignored, example redone
                continue
            if "done" in row:
                keys.add(row["done"])
    return keys


def read_pairs(path: Path):
    """The pair rows of a pairs file (marker lines and torn lines skipped)."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "prompt" in row:
            yield row
