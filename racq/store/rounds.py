"""Training rounds and their lineage: which votes trained which round, which round made which stage.

    rid = record_round(db, "aligned-r1", "aligned", adapter_path="models/adapters/aligned-r1", config=cfg)
    link_round_votes(db, rid, [vid for p in pairs for vid in p["vote_ids"]])
    finish_round(db, rid, metrics={"loss": 0.41})        # status 'done' (or status="failed")
    votes_of_round(db, rid); rounds_of_vote(db, vid)     # lineage both ways
    fail_stale_rounds(db)      # rounds left 'running' by a process that died -> 'failed', with the reason
Candidates added later for stage 'aligned-r1' get round_id = rid automatically (see add_candidate).
"""

from __future__ import annotations

from typing import Iterable

from racq.store.db import Store, dumps, loads, one
from racq.store.errors import StoreError
from racq.store.leases import lease_row, why_free

STATUSES = ("running", "done", "failed")
ROUND_LEASE = "round"  # the lease a process holds while it trains a round (racq.annotation.retrain.train_round)


def _decode(row: dict | None) -> dict | None:
    if row is not None:
        row["config"], row["metrics"] = loads(row["config"]), loads(row["metrics"])
    return row


def record_round(db: Store, stage: str, base_stage: str, *, adapter_path: str | None = None,
                 config: dict | None = None, status: str = "running", runner: str | None = None) -> int:
    """Start a round that trains `stage` from `base_stage`; returns the round id.
    runner: the holder of the round lease (host:pid:uuid) that trains it."""
    if not (stage or "").strip() or not (base_stage or "").strip():
        raise StoreError("a round needs a stage name and a base stage name")
    if status not in STATUSES:
        raise StoreError(f"status must be one of {STATUSES}, got {status!r}")
    with db.write() as conn:
        finished = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')" if status != "running" else "NULL"
        return conn.execute(
            f"INSERT INTO training_rounds (stage, base_stage, adapter_path, config, status, runner, finished_at) "
            f"VALUES (?, ?, ?, ?, ?, ?, {finished})",
            [stage, base_stage, None if adapter_path is None else str(adapter_path), dumps(config or {}),
             status, runner]).lastrowid


def finish_round(db: Store, round_id: int, *, status: str = "done", metrics: dict | None = None) -> dict:
    """Mark a round done (or failed) with its metrics; returns the round."""
    if status not in ("done", "failed"):
        raise StoreError(f"a round finishes as 'done' or 'failed', not {status!r}")
    with db.write() as conn:
        if one(conn, "SELECT 1 AS x FROM training_rounds WHERE id = ?", [round_id]) is None:
            raise StoreError(f"unknown training round {round_id}")
        conn.execute("UPDATE training_rounds SET status = ?, metrics = ?, "
                     "finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
                     [status, dumps(metrics), round_id])
        return _decode(one(conn, "SELECT * FROM training_rounds WHERE id = ?", [round_id]))


def _stopped(runner: str | None) -> str:
    host, pid = (runner.split(":")[:2] if runner and runner.count(":") >= 2 else (None, None))
    who = f" (pid {pid} on host {host})" if pid else ""
    return f"the process that ran it{who} stopped before the round finished"


def fail_stale_rounds(db: Store, lease: str = ROUND_LEASE) -> list[dict]:
    """Mark 'failed' every 'running' round whose runner no longer holds the round lease (it died, or was
    killed, mid-round); returns those rounds. One transaction, so a round that another process starts
    meanwhile (it takes the lease first) is never touched."""
    with db.write() as conn:
        row = lease_row(conn, lease)
        live = row["holder"] if row is not None and why_free(row) is None else None
        stale = [r for r in conn.query("SELECT id, runner FROM training_rounds WHERE status = 'running' "
                                       "ORDER BY id") if live is None or r["runner"] != live]
        for r in stale:
            conn.execute("UPDATE training_rounds SET status = 'failed', metrics = ?, "
                         "finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
                         [dumps({"error": _stopped(r["runner"])}), r["id"]])
        return [_decode(one(conn, "SELECT * FROM training_rounds WHERE id = ?", [r["id"]])) for r in stale]


def link_round_votes(db: Store, round_id: int, vote_ids: Iterable[int]) -> int:
    """Record that these votes trained this round (idempotent); returns how many links are new."""
    ids = sorted({int(v) for v in vote_ids})
    with db.write() as conn:
        if one(conn, "SELECT 1 AS x FROM training_rounds WHERE id = ?", [round_id]) is None:
            raise StoreError(f"unknown training round {round_id}")
        known = {r["id"] for r in conn.query(
            f"SELECT id FROM votes WHERE id IN ({','.join('?' * len(ids))})", ids)} if ids else set()
        missing = [v for v in ids if v not in known]
        if missing:
            raise StoreError(f"unknown vote id(s) {missing[:10]}")
        before = conn.conn.total_changes
        conn.conn.executemany("INSERT OR IGNORE INTO round_votes (round_id, vote_id) VALUES (?, ?)",
                              [(round_id, v) for v in ids])
        return conn.conn.total_changes - before


def get_round(db: Store, round_id: int) -> dict:
    with db.read() as conn:
        row = _decode(one(conn, "SELECT * FROM training_rounds WHERE id = ?", [round_id]))
    if row is None:
        raise StoreError(f"unknown training round {round_id}")
    return row


def list_rounds(db: Store) -> list[dict]:
    with db.read() as conn:
        return round_rows(conn)


def round_rows(conn) -> list[dict]:
    """list_rounds on the caller's connection (an export reads it in the snapshot it writes from)."""
    return [_decode(r) for r in conn.query("SELECT * FROM training_rounds ORDER BY id")]


def round_vote_ids(conn) -> dict[int, list[int]]:
    """{round id: the ids of the votes it trained on} for every round, on the caller's connection."""
    out: dict[int, list[int]] = {}
    for r in conn.query("SELECT round_id, vote_id FROM round_votes ORDER BY round_id, vote_id"):
        out.setdefault(r["round_id"], []).append(r["vote_id"])
    return out


def round_exists(db: Store, round_id: int, stage: str | None = None) -> bool:
    """Whether training round `round_id` exists (and, given `stage`, trained that stage)."""
    sql, args = "SELECT 1 AS x FROM training_rounds WHERE id = ?", [round_id]
    if stage is not None:
        sql, args = sql + " AND stage = ?", args + [stage]
    with db.read() as conn:
        return one(conn, sql, args) is not None


def used_vote_ids(db: Store) -> set[int]:
    """The ids of the votes that some finished ('done') round trained on."""
    with db.read() as conn:
        return {r["vote_id"] for r in conn.query(
            "SELECT rv.vote_id FROM round_votes rv JOIN training_rounds r ON r.id = rv.round_id "
            "WHERE r.status = 'done'")}


def votes_of_round(db: Store, round_id: int) -> list[int]:
    with db.read() as conn:
        return [r["vote_id"] for r in conn.query(
            "SELECT vote_id FROM round_votes WHERE round_id = ? ORDER BY vote_id", [round_id])]


def rounds_of_vote(db: Store, vote_id: int) -> list[int]:
    with db.read() as conn:
        return [r["round_id"] for r in conn.query(
            "SELECT round_id FROM round_votes WHERE vote_id = ? ORDER BY round_id", [vote_id])]
