"""Human-feedback DPO rounds: the app's votes -> preference pairs -> a new stage `aligned-rN`.

    racq train dpo --from-votes                                   # -> aligned-r1, then aligned-r2, ...
    racq train dpo --from-votes --synthetic-weight 0.3 --db annotations/racq.db
    racq pool build --existing                                    # then: candidates of the new stage

    from racq.annotation.retrain import usable_pairs, train_round
    usable_pairs(open_db())          # {"pairs": 42, "new_pairs": 10, "excluded": {...}, ...}
    train_round(TrainConfig(), synthetic_weight=0.3, progress=print)

Which votes make a pair (racq.store.preference_pairs): effective votes only (undo rows and undone
votes never count); 'left'/'right' give chosen/rejected; 'tie', 'both_bad' and 'skip' carry no
preference and are EXCLUDED; an item whose annotators picked different winners is dropped as a
conflict (it would pull DPO both ways). Every round starts again from `aligned` with `sft` as the
reference (racq.train.dpo), so a round trains on ALL usable human pairs so far, not only new ones;
`new_pairs` says how many pairs hold a vote that no finished round has used yet.

A round: check inputs -> export the human pairs (the exact prompts the stages are shown, conversational
when the tokenizer has a chat template) -> optionally mix in synthetic pairs from cfg.run_dir/pairs.jsonl
so they make `synthetic_weight` of the training set -> record the round (status 'running') and link
every vote it uses (lineage both ways: round_votes) -> train -> write the round id into the adapter
manifest -> mark the round 'done' with its losses (or 'failed' with the error, re-raised).
One round at a time across processes (the app, the CLI, on any host sharing the database): a round
holds the 'round' lease in the database (racq.store.leases) from its first check to its last write,
renewed by a heartbeat; a second call anywhere is refused with who holds it and since when. Rounds
left 'running' by a process that died are marked 'failed' (with why) before a new round starts.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Callable

from racq.config import TrainConfig
from racq.annotation.prefs import export_prefs
from racq.train import dist
from racq.store import (ROUND_LEASE, LeaseHeld, Store, effective_votes, fail_stale_rounds, finish_round,
                        held_lease, link_round_votes, open_db, preference_pairs, record_round,
                        used_vote_ids)

EXCLUDED_OUTCOMES = ("tie", "both_bad", "skip")
START, REFERENCE = "aligned", "sft"


class FeedbackError(RuntimeError):
    """A round cannot start; the message says why and how to fix it. Nothing was recorded."""


def _store(db) -> Store:
    return db if isinstance(db, Store) else open_db(db)


def usable_pairs(db: Store | str | Path | None = None) -> dict:
    """How many human preference pairs a round would train on, and why the other votes are not used.

    Returns {pairs, new_pairs, votes (effective), preference_votes (left/right), excluded: {tie,
    both_bad, skip}: votes, conflicting_items, by_stage: {"chosen>rejected": n}}.
    """
    db = _store(db)
    votes = effective_votes(db)
    pairs = preference_pairs(db)
    used = used_vote_ids(db)
    outcomes = Counter(v["outcome"] for v in votes)
    pref_items = {v["item_id"] for v in votes if v["outcome"] in ("left", "right")}
    return {"pairs": len(pairs),
            "new_pairs": sum(1 for p in pairs if not set(p["vote_ids"]) <= used),
            "votes": len(votes),
            "preference_votes": outcomes["left"] + outcomes["right"],
            "excluded": {o: outcomes[o] for o in EXCLUDED_OUTCOMES},
            "conflicting_items": len(pref_items) - len(pairs),
            "by_stage": dict(Counter(f"{p['chosen_stage']}>{p['rejected_stage']}" for p in pairs))}


def mix_synthetic(n_human: int, synthetic: list[dict], weight: float, seed: int = 0) -> list[dict]:
    """Synthetic rows so that they are `weight` of n_human + them: round(n_human * w / (1 - w)) rows,
    drawn without replacement with a fixed seed (all of them when fewer exist)."""
    if not 0.0 <= weight < 1.0:
        raise FeedbackError(f"synthetic_weight must be in [0, 1), got {weight} (1 would leave no human pairs)")
    want = round(n_human * weight / (1.0 - weight))
    if want <= 0 or not synthetic:
        return []
    if want >= len(synthetic):
        return list(synthetic)
    picked = sorted(random.Random(seed).sample(range(len(synthetic)), want))
    return [synthetic[i] for i in picked]


def progress_callback(fn: Callable[[dict], None]):
    """A transformers TrainerCallback that calls fn({"event", "step", "max_steps", "loss"?}) as
    training goes (events: train_begin, step, log, train_end)."""
    from transformers import TrainerCallback  # here, not at import: transformers is slow to import

    class ProgressCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            fn({"event": "train_begin", "step": state.global_step, "max_steps": state.max_steps})

        def on_step_end(self, args, state, control, **kw):
            fn({"event": "step", "step": state.global_step, "max_steps": state.max_steps})

        def on_log(self, args, state, control, logs=None, **kw):
            logs = dict(logs or {})
            fn({"event": "log", "step": state.global_step, "max_steps": state.max_steps,
                "loss": logs.get("loss"), "logs": logs})

        def on_train_end(self, args, state, control, **kw):
            fn({"event": "train_end", "step": state.global_step, "max_steps": state.max_steps})

    return ProgressCallback()


def _synthetic_rows(cfg: TrainConfig) -> list[dict]:
    from racq.train.pairs import read_pairs

    path = Path(cfg.run_dir) / "pairs.jsonl"
    if not path.exists():
        raise FeedbackError(f"synthetic_weight > 0 needs synthetic pairs at {path}: run `racq pairs` "
                            f"first, or train with --synthetic-weight 0")
    return list(read_pairs(path))


def train_round(cfg: TrainConfig, db_path: str | Path | Store | None = None, synthetic_weight: float = 0.0,
                progress: Callable[[dict], None] | object | None = None, *, start: str = START,
                reference: str = REFERENCE, min_pairs: int = 1) -> dict:
    """Train the next human-feedback round (see the module docstring); returns what it did.

    progress: a callable taking event dicts ({"event": "message", "message": ...} for the steps of a
    round, then the training events of progress_callback), or a ready TrainerCallback.
    Returns {round_id, stage, adapter, n_human_pairs, n_synthetic_pairs, synthetic_weight, votes, metrics}.

    Under a launcher (`accelerate launch ... -m racq.cli train dpo --from-votes`) rank 0 alone touches
    the database (lease, round, votes) and writes the pairs files; it sends the other ranks the plan
    (files, stage name) and they train on it with it, then return what the written manifest says.
    """
    if not dist.is_main():
        return _follow_round(cfg, progress)
    plan_sent: list[bool] = []
    try:
        return _lead_round(cfg, db_path, synthetic_weight, progress, start, reference, min_pairs, plan_sent)
    except BaseException as exc:
        if not plan_sent:  # the other ranks wait for a plan: send them why there is none (no-op alone)
            dist.share({"error": f"{type(exc).__name__}: {exc}"})
        raise


def _lead_round(cfg, db_path, synthetic_weight, progress, start, reference, min_pairs, plan_sent) -> dict:
    db = _store(db_path)
    say = (lambda msg: progress({"event": "message", "message": msg})) if callable(progress) else (lambda msg: None)
    with contextlib.ExitStack() as stack:
        try:
            lease = stack.enter_context(held_lease(db, ROUND_LEASE))
        except LeaseHeld as e:
            raise FeedbackError(f"another training round is running: {e}; wait for it to finish") from None
        for r in fail_stale_rounds(db):  # we hold the lease: any other 'running' round is an orphan
            say(f"round {r['id']} ({r['stage']}) marked failed: {r['metrics']['error']}")
        return _train_round(cfg, db, synthetic_weight, progress, say, start, reference, min_pairs, lease.holder,
                            plan_sent)


def _as_callback(progress):
    """The TrainerCallback that `progress` is or asks for (None for none)."""
    if progress is None:
        return None
    return progress_callback(progress) if callable(progress) else progress


def _follow_round(cfg: TrainConfig, progress) -> dict:
    """A rank other than 0: train rank 0's plan (rank 0 records the round and writes the adapter)."""
    from racq.train.dpo import train_dpo

    plan = dist.share()
    if "error" in plan:
        raise FeedbackError(f"rank 0 did not start the round: {plan['error']}")
    callback = _as_callback(progress)
    path = train_dpo(cfg, plan["files"], start=plan["start"], reference=plan["reference"], name=plan["name"],
                     extra_manifest=plan["extra"], callbacks=[callback] if callback is not None else None)
    manifest = json.loads((Path(path) / "manifest.json").read_text())
    extra = plan["extra"]
    return {"round_id": extra["round_id"], "stage": plan["name"], "adapter": str(path),
            "n_human_pairs": extra["n_human_pairs"], "n_synthetic_pairs": extra["n_synthetic_pairs"],
            "synthetic_weight": extra["synthetic_weight"], "votes": extra["n_votes"],
            "metrics": manifest.get("metrics") or {}, "status": f"trained on rank {dist.rank()} (rank 0 records it)"}


def _check_inputs(cfg, db, synthetic_weight, start, reference, min_pairs) -> tuple[dict, object, list[dict]]:
    """Everything that can be checked before a round is recorded: (usable_pairs, tokenizer, synthetic rows)."""
    from racq.models import check_model_dir

    if not 0.0 <= synthetic_weight < 1.0:
        raise FeedbackError(f"synthetic_weight must be in [0, 1), got {synthetic_weight}")
    summary = usable_pairs(db)
    if summary["pairs"] < max(1, min_pairs):
        ex = summary["excluded"]
        raise FeedbackError(
            f"{summary['pairs']} usable human pair(s), need at least {max(1, min_pairs)}: votes so far "
            f"{summary['votes']} ({summary['preference_votes']} left/right, {ex['tie']} tie, {ex['both_bad']} "
            f"both bad, {ex['skip']} skip, {summary['conflicting_items']} conflicting item(s)). Collect more "
            f"votes on the Annotate screen")
    adapters = Path(cfg.adapters_dir)
    for need in dict.fromkeys((start, reference)):
        if not (adapters / need / "adapter_config.json").exists():
            raise FeedbackError(f"adapter {need!r} not found in {adapters}: train it first (`racq train all`)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(check_model_dir(cfg.base_model))
    return summary, tok, _synthetic_rows(cfg) if synthetic_weight > 0 else []


def _export(cfg, db, tok, folder: Path, synthetic_all, synthetic_weight) -> tuple[list[Path], int, list, list[int]]:
    """The training files: human pairs (+ the synthetic share). Returns (files, n_human, synthetic, vote ids)."""
    from racq.train.dpo import write_pairs_jsonl

    human_file = folder / "human.jsonl"
    n_human = export_prefs(db, human_file, format="jsonl", tokenizer=tok, top_k=cfg.top_k,
                           passage_tokens=cfg.passage_tokens)
    human = [json.loads(line) for line in human_file.read_text(encoding="utf-8").splitlines()]
    vote_ids = sorted({v for row in human for v in row["vote_ids"]})
    files = [human_file]
    synthetic = mix_synthetic(n_human, synthetic_all, synthetic_weight, cfg.seed)
    if synthetic:
        kinds = {isinstance(r["prompt"], list) for r in human + synthetic}
        if len(kinds) > 1:
            raise FeedbackError("the synthetic pairs and the human pairs are in different formats (chat "
                                "messages vs plain text): rebuild the pairs with the same base model "
                                "(`racq pairs`), or train with --synthetic-weight 0")
        files.append(write_pairs_jsonl([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in synthetic],
                                       folder / "synthetic.jsonl"))
    return files, n_human, synthetic, vote_ids


def _train_round(cfg, db, synthetic_weight, progress, say, start, reference, min_pairs, runner, plan_sent) -> dict:
    from racq.models import next_round_name
    from racq.train.common import config_dict
    from racq.train.dpo import train_dpo

    callback = _as_callback(progress)
    summary, tok, synthetic_all = _check_inputs(cfg, db, synthetic_weight, start, reference, min_pairs)
    adapters = Path(cfg.adapters_dir)
    name = next_round_name(adapters)
    say(f"exporting {summary['pairs']} human pairs")
    files, n_human, synthetic, vote_ids = _export(cfg, db, tok, Path(cfg.run_dir) / "feedback" / name,
                                                  synthetic_all, synthetic_weight)
    say(f"{n_human} human + {len(synthetic)} synthetic pairs -> stage {name}")

    # ---- the round itself
    settings = {"start": start, "reference": reference, "synthetic_weight": synthetic_weight,
                "n_human_pairs": n_human, "n_synthetic_pairs": len(synthetic),
                "pairs_files": [str(f) for f in files], "train": config_dict(cfg)}
    rid = record_round(db, name, start, adapter_path=str(adapters / name), config=settings, runner=runner)
    try:
        link_round_votes(db, rid, vote_ids)
        stale = Path(cfg.run_dir) / name  # checkpoints of an earlier failed round of this name: not ours
        if stale.exists():
            shutil.rmtree(stale)
        extra = {"round_id": rid, "source": "human feedback", "db": str(db.path), "n_human_pairs": n_human,
                 "n_synthetic_pairs": len(synthetic), "synthetic_weight": synthetic_weight, "n_votes": len(vote_ids)}
        # the other ranks (under a launcher) train this same plan from the files just written
        dist.share({"files": [str(f) for f in files], "start": start, "reference": reference, "name": name,
                    "extra": extra})
        plan_sent.append(True)
        say(f"training round {rid} ({name}) from {start}, reference {reference}")
        path = train_dpo(cfg, files, start=start, reference=reference, name=name, extra_manifest=extra,
                         callbacks=[callback] if callback is not None else None)
        manifest = json.loads((Path(path) / "manifest.json").read_text())
    except BaseException as exc:
        finish_round(db, rid, status="failed", metrics={"error": f"{type(exc).__name__}: {exc}"})
        say(f"round {rid} failed: {exc}")
        raise
    done = finish_round(db, rid, metrics=manifest.get("metrics") or {})
    say(f"round {rid} done: new stage {name} in {adapters}")
    return {"round_id": rid, "stage": name, "adapter": str(path), "n_human_pairs": n_human,
            "n_synthetic_pairs": len(synthetic), "synthetic_weight": synthetic_weight, "votes": len(vote_ids),
            "metrics": done["metrics"], "status": done["status"]}
