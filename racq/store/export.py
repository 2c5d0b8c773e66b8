"""Exports: the snapshots a vote file and a preference file are made from, and the file writer.

    from racq.store import open_db, prefs_snapshot, votes_snapshot
    rows, facts = votes_snapshot(open_db())    # racq.annotation.prefs.export_votes writes them (+ a card)
    pairs, facts = prefs_snapshot(open_db())   # racq.annotation.prefs.export_prefs turns these into TRL rows

The store returns rows and never formats prompts: the TRL preference rows (prompt text, chat messages)
are built in racq.annotation.prefs from the pair rows read here. Which votes give a pair: preference_pairs.
Formats (write_rows): jsonl, parquet, csv (lists and message lists become JSON text in their CSV cell;
None an empty cell). Files are written to a temporary name and renamed, so a failed export never
leaves a half file.

Dataset cards (racq.annotation.datacard, written by racq.annotation.prefs; `racq export` writes one unless
--no-card) take their numbers from the rows an export writes plus facts read in the same read transaction (card_facts: effective
votes for agreement, rounds and the votes they trained on, each candidate's round, each query's
passages), so card and file describe one snapshot of the database even while votes arrive.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterable

from racq.store.db import Store
from racq.store.errors import StoreError
from racq.store.rounds import round_rows, round_vote_ids
from racq.store.votes import pair_rows, vote_rows

FORMATS = ("jsonl", "parquet", "csv")
SUFFIXES = {".parquet": "parquet", ".csv": "csv"}  # anything else: jsonl


def _cell(value):
    """One CSV cell: lists and dicts as JSON text (they have no CSV form), None as an empty cell."""
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value


def _write_csv(rows: list[dict], f) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))  # no rows: an empty file
    writer = csv.DictWriter(f, columns)
    if columns:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})


def write_rows(rows: list[dict], path: Path, format: str) -> None:
    """Write `rows` as `format` to a temporary name, then rename it to `path` (never a half file)."""
    if format not in FORMATS:
        raise StoreError(f"format must be one of {FORMATS}, got {format!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if format == "jsonl":
            with open(tmp, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        elif format == "csv":
            with open(tmp, "w", encoding="utf-8", newline="") as f:  # newline="": csv writes its own \r\n
                _write_csv(rows, f)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def format_of(path: Path, format: str | None) -> str:
    """The format asked for, else the one the file suffix names (jsonl for any other suffix)."""
    return format or SUFFIXES.get(path.suffix.lower(), "jsonl")


def _marks(ids: list) -> str:
    return ",".join("?" * len(ids))


def card_facts(conn, query_ids: Iterable[int], candidate_ids: Iterable[int]) -> dict:
    """What a dataset card needs beyond the exported rows, on the export's connection (same snapshot):
    effective votes, rounds with the votes they trained on, the round of each candidate, and the
    dataset and passage ids of each query."""
    qids, cids = sorted(set(query_ids)), sorted(set(candidate_ids))
    queries = {q["id"]: {"dataset": q["dataset"], "pids": []} for q in conn.query(
        f"SELECT id, dataset FROM queries WHERE id IN ({_marks(qids)})", qids)} if qids else {}
    if qids:
        for r in conn.query(f"SELECT query_id, pid FROM query_passages WHERE query_id IN ({_marks(qids)}) "
                            "ORDER BY query_id, rank", qids):
            queries[r["query_id"]]["pids"].append(r["pid"])
    candidate_rounds = {r["id"]: r["round_id"] for r in conn.query(
        f"SELECT id, round_id FROM candidates WHERE id IN ({_marks(cids)})", cids)} if cids else {}
    return {"effective": vote_rows(conn, effective=True), "rounds": round_rows(conn),
            "round_votes": round_vote_ids(conn), "candidate_rounds": candidate_rounds, "queries": queries}


def prefs_snapshot(db: Store, *, stages: Iterable[str] | None = None,
                   unused_only: bool = False) -> tuple[list[dict], dict]:
    """(preference pair rows, card facts about them), read in one transaction, so a preference file
    and its card (racq.annotation.prefs.export_prefs) count the same votes even while votes arrive.
    stages/unused_only: as for preference_pairs."""
    with db.read() as conn:
        conn.execute("BEGIN")  # one snapshot: the file and its card count the same votes
        pairs = pair_rows(conn, stages=stages, unused_only=unused_only)
        facts = card_facts(conn, (p["query_id"] for p in pairs),
                           (c for p in pairs for c in (p["chosen_candidate_id"], p["rejected_candidate_id"])))
    return pairs, facts


def votes_snapshot(db: Store) -> tuple[list[dict], dict]:
    """(every raw vote row, undo rows included, oldest first; card facts about them), read in one
    transaction, so a vote file and its card (racq.annotation.prefs.export_votes) describe one snapshot."""
    with db.read() as conn:
        conn.execute("BEGIN")  # one snapshot for the file and its card
        rows = vote_rows(conn)
        facts = card_facts(conn, (r["query_id"] for r in rows),
                           (c for r in rows for c in (r["left_candidate_id"], r["right_candidate_id"])))
    return rows, facts
