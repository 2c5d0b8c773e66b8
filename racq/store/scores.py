"""Automatic faithfulness scores of pool candidates (table candidate_scores, migration 4).

    from racq.store.scores import add_scores, scorer_key, stage_scores
    key = scorer_key(scorer)                              # names the Scorer's settings
    add_scores(db, [(candidate_id, key, scorer.score(query, passages, question))])
    stage_scores(db)        # {stage: {"n", "option_support", "hallucinated", "parent_f1", ...}}
    scored_questions(db, key)   # [{stage, query, question, details}]: for racq.scoring.usefulness.stage_usefulness

A candidate has at most one score per scorer key; scoring it again with the same settings keeps the
first row (the scorer is deterministic). The leaderboard compares these per-stage means with the
human ranking.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Iterable, Sequence

from racq.store.db import Store, dumps
from racq.store.errors import StoreError

# Per-stage means reported by stage_scores; `hallucinated` is a 0/1 flag, so its mean is a rate.
METRICS = ("option_support", "hallucinated", "parent_f1", "novel_content", "nli_min")


def scorer_key(scorer) -> str:
    """`faith-<hash>` of the scorer's settings (dataclass config); equal settings, equal key."""
    cfg = getattr(scorer, "config", None)
    settings = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else {"class": type(scorer).__name__}
    return "faith-" + hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _num(value):
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def add_scores(db: Store, rows: Iterable[tuple[int, str, dict]]) -> int:
    """Store (candidate_id, scorer_key, Scorer.score dict) rows in one transaction; returns how many
    are new (already scored pairs are left as they are)."""
    values = []
    for cid, key, s in rows:
        if not key:
            raise StoreError("a score needs a scorer key (racq.store.scores.scorer_key)")
        values.append((int(cid), key, _num(s.get("option_support")), s.get("hallucinated"), s.get("n_options"),
                       _num(s.get("parent_f1")), _num(s.get("novel_content")), _num(s.get("nli_min")),
                       dumps(s)))
    if not values:
        return 0
    with db.write() as conn:
        ids = sorted({v[0] for v in values})
        known = {r["id"] for r in conn.query(
            f"SELECT id FROM candidates WHERE id IN ({','.join('?' * len(ids))})", ids)}
        missing = [i for i in ids if i not in known]
        if missing:
            raise StoreError(f"unknown candidate id(s) {missing[:10]}")
        before = conn.conn.total_changes
        conn.conn.executemany(
            "INSERT OR IGNORE INTO candidate_scores (candidate_id, scorer, option_support, hallucinated, "
            "n_options, parent_f1, novel_content, nli_min, details) VALUES (?,?,?,?,?,?,?,?,?)", values)
        return conn.conn.total_changes - before


def scored_ids(db: Store, candidate_ids: Sequence[int], key: str) -> set[int]:
    """Which of these candidates already have a score under `key`."""
    ids = sorted({int(c) for c in candidate_ids})
    if not ids:
        return set()
    with db.read() as conn:
        out = set()
        for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
            chunk = ids[start:start + 900]
            out |= {r["candidate_id"] for r in conn.query(
                f"SELECT candidate_id FROM candidate_scores WHERE scorer = ? AND candidate_id IN "
                f"({','.join('?' * len(chunk))})", [key, *chunk])}
        return out


def scorer_keys(db: Store) -> list[dict]:
    """[{scorer, n}] most-used first."""
    with db.read() as conn:
        return list(conn.query("SELECT scorer, COUNT(*) AS n FROM candidate_scores GROUP BY scorer "
                               "ORDER BY n DESC, scorer"))


def scored_questions(db: Store, key: str) -> list[dict]:
    """[{stage, query, question, details}] of every candidate scored under `key` (details: the Scorer's
    stored dict), for measures computed from the question itself (racq.scoring.usefulness.stage_usefulness)."""
    with db.read() as conn:
        rows = conn.query("SELECT c.stage, q.text AS query, c.text AS question, s.details FROM candidate_scores s "
                          "JOIN candidates c ON c.id = s.candidate_id JOIN queries q ON q.id = c.query_id "
                          "WHERE s.scorer = ? ORDER BY c.id", [key])
        return [{**r, "details": json.loads(r["details"] or "{}")} for r in rows]


def stage_scores(db: Store, key: str | None = None) -> dict[str, dict]:
    """Per stage: n (scored candidates) and the mean of each METRICS column (None when no candidate
    has it, e.g. nli_min without an NLI model). `key`: which scorer's rows (default: the most used)."""
    if key is None:
        keys = scorer_keys(db)
        if not keys:
            return {}
        key = keys[0]["scorer"]
    cols = ", ".join(f"AVG(s.{m}) AS {m}" for m in METRICS)
    with db.read() as conn:
        rows = conn.query(f"SELECT c.stage, COUNT(*) AS n, {cols} FROM candidate_scores s "
                          f"JOIN candidates c ON c.id = s.candidate_id WHERE s.scorer = ? "
                          f"GROUP BY c.stage ORDER BY c.stage", [key])
        return {r.pop("stage"): {**r, "scorer": key} for r in rows}
