"""Exports: TRL preference data from the votes, and every raw vote row.

    from racq.store import open_db, export_prefs, export_votes
    export_prefs(open_db(), "runs/prefs.jsonl", tokenizer=tok)   # conversational when tok has a chat template
    export_prefs(open_db(), "runs/prefs.parquet", format="parquet", conversational=False)
    export_votes(open_db(), "runs/votes.csv", card="runs/README.md")   # + a dataset card (racq.datacard)

TRL's explicit-prompt preference format: `prompt`, `chosen`, `rejected`. Conversational: `prompt` is the
message list from racq.prompts.passage_prompt_messages, `chosen`/`rejected` are one assistant message
each. Plain: `prompt` is the string racq.prompts.render gives (the chat template with the assistant
turn opened when the tokenizer has one, else the plain text), `chosen`/`rejected` are strings.
Lineage columns ride along: item_id, query_id, dataset, topic_id, vote_ids, annotators, chosen_stage,
rejected_stage, chosen_candidate_id, rejected_candidate_id. Which votes give a row: preference_pairs.
Formats: jsonl, parquet, csv (lists and message lists become JSON text in their CSV cell; None an
empty cell). Files are written to a temporary name and renamed, so a failed export never leaves a
half file.

Dataset card (`card=PATH`, racq.datacard; `racq export` writes one unless --no-card): its numbers come
from the rows this export writes plus facts read in the same read transaction (effective votes for
agreement, rounds and the votes they trained on, each candidate's round, each query's passages), so
card and file describe one snapshot of the database even while votes arrive.
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
LINEAGE = ("item_id", "query_id", "dataset", "topic_id", "vote_ids", "annotators", "chosen_stage", "rejected_stage",
           "chosen_candidate_id", "rejected_candidate_id")


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


def _write(rows: list[dict], path: Path, format: str) -> None:
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


def _format_of(path: Path, format: str | None) -> str:
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


def _card(card, kind: str, path: Path, format: str, rows: list[dict], facts: dict, db: Store, **filters) -> None:
    from racq.datacard import render_card, write_card  # Markdown and the corpus check: not store code

    write_card(card, render_card(kind, path, format, rows, facts, db_name=db.path.name, filters=filters))


def export_prefs(db: Store, path: str | Path, format: str | None = None, tokenizer=None, *,
                 conversational: bool | None = None, top_k: int = 3, passage_tokens: int = 64,
                 stages: Iterable[str] | None = None, unused_only: bool = False,
                 card: str | Path | None = None) -> int:
    """Write the preference pairs as TRL preference rows; returns the number of rows written.

    format: 'jsonl', 'parquet' or 'csv' (default: from the file suffix). conversational: message lists
    (default: True exactly when `tokenizer` has a chat template). top_k/passage_tokens go to the
    prompt builder; stages/unused_only go to preference_pairs. card: also write a dataset card there
    (racq.datacard.card_path(path) picks the usual place).
    """
    # Imported here so the store loads without the prompt module; the prompt text is the exact one
    # generation used (racq.prompts.render), so training sees what the stages were prompted with.
    from racq.prompts import has_chat_template, passage_prompt_messages, render

    path = Path(path)
    format = _format_of(path, format)
    conversational = has_chat_template(tokenizer) if conversational is None else conversational
    with db.read() as conn:
        conn.execute("BEGIN")  # one snapshot: the file and its card count the same votes
        pairs = pair_rows(conn, stages=stages, unused_only=unused_only)
        facts = card_facts(conn, (p["query_id"] for p in pairs),
                           (c for p in pairs for c in (p["chosen_candidate_id"], p["rejected_candidate_id"])))
    rows = []
    for p in pairs:
        messages = passage_prompt_messages(p["query"], list(p["passages"]), tokenizer=tokenizer,
                                           top_k=top_k, passage_tokens=passage_tokens)
        if conversational:
            row = {"prompt": messages,
                   "chosen": [{"role": "assistant", "content": p["chosen"]}],
                   "rejected": [{"role": "assistant", "content": p["rejected"]}]}
        else:
            row = {"prompt": render(messages, tokenizer), "chosen": p["chosen"], "rejected": p["rejected"]}
        row.update({k: p[k] for k in LINEAGE})
        rows.append(row)
    _write(rows, path, format)
    if card is not None:
        _card(card, "prefs", path, format, rows, facts, db, stages=sorted(stages) if stages else None,
              unused_only=unused_only)
    return len(rows)


def export_votes(db: Store, path: str | Path, format: str | None = None, *, card: str | Path | None = None) -> int:
    """Write every raw vote row (undo rows included, oldest first); returns the number of rows.
    card: also write a dataset card there."""
    path = Path(path)
    format = _format_of(path, format)
    with db.read() as conn:
        conn.execute("BEGIN")  # one snapshot for the file and its card
        rows = vote_rows(conn)
        facts = card_facts(conn, (r["query_id"] for r in rows),
                           (c for r in rows for c in (r["left_candidate_id"], r["right_candidate_id"])))
    _write(rows, path, format)
    if card is not None:
        _card(card, "votes", path, format, rows, facts, db)
    return len(rows)
