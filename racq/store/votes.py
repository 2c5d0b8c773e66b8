"""Votes: append-only rows, idempotent on client_id; undo is a new row; preference pairs for training.

    vid = record_vote(db, client_id, "ana", show.item_id, show.left_id, show.right_id, "left",
                      reveal=True)       # ana will be shown both stages: never show her these candidates again
    undo_last(db, "ana")                 # appends an 'undo' row that cancels ana's latest vote
                                         # (and withdraws the item from ana when its stages were revealed)
    rows = effective_votes(db)           # what rating.py takes: votes minus undo rows and undone votes
    pairs = preference_pairs(db)         # chosen/rejected rows, ready for the prompt builder

Outcome -> preference mapping (preference_pairs): 'left' means the left candidate is chosen and the
right one rejected, 'right' the reverse. 'tie', 'both_bad' and 'skip' carry no preference and give no
pair (rating.py counts 'tie' and 'both_bad' as half a win each). Votes are grouped by item: when the
annotators of an item agree, one row carries all their vote ids; when they disagree the item is left
out (a contradictory pair would pull DPO both ways).
"""

from __future__ import annotations

import uuid
from typing import Iterable

from racq.store.db import Store, annotator_id, one
from racq.store.errors import StoreError
from racq.store.candidates import EFFECTIVE, query_row

VOTE_OUTCOMES = ("left", "right", "tie", "both_bad", "skip")
PREFERENCE_OUTCOMES = ("left", "right")
# The skip reason of an item withdrawn from an annotator after they undid a vote whose stages they had
# seen: a second vote would not be blind. undo_last never takes a withdrawal back.
WITHDRAWN = "withdrawn: undone after its stages were shown"
# Every free-text field of a vote is bounded, so one request cannot grow the file by megabytes.
MAX_CLIENT_ID_CHARS = 128  # the app sends a 32-hex uuid, or one with a short prefix/suffix
MAX_RATIONALE_CHARS = 2000
MAX_SKIP_REASON_CHARS = 200

# One vote row as the rest of racq sees it (rating.py, exports): ids, names and stages resolved.
_ROW = """SELECT v.id, v.client_id, a.name AS annotator, v.item_id, i.query_id, v.left_candidate_id,
    v.right_candidate_id, cl.stage AS left_stage, cr.stage AS right_stage, v.outcome, v.skip_reason,
    v.rationale, v.undoes_vote_id, v.created_at, v.elapsed_ms
    FROM {src} v JOIN annotators a ON a.id = v.annotator_id JOIN items i ON i.id = v.item_id
    JOIN candidates cl ON cl.id = v.left_candidate_id JOIN candidates cr ON cr.id = v.right_candidate_id"""


def record_vote(db: Store, client_id: str, annotator: str, item_id: int, left_id: int, right_id: int,
                outcome: str, *, skip_reason: str | None = None, rationale: str | None = None,
                elapsed_ms: int | None = None, reveal: bool = False) -> int:
    """Append one vote and return its id. Submitting the same client_id again returns the first vote's
    id and writes nothing (a double click records once); reusing it for a different vote raises.

    reveal=True: the caller is about to show the annotator which stage wrote each of the two questions;
    both candidates are recorded as revealed to them in the same transaction, and the sampler never
    serves them an item holding either candidate again (racq.store.candidates.next_item)."""
    _check_fields(client_id, skip_reason=skip_reason, rationale=rationale)
    if outcome not in VOTE_OUTCOMES:
        raise StoreError(f"outcome must be one of {VOTE_OUTCOMES}, got {outcome!r} (use undo_last to undo)")
    with db.write() as conn:
        aid = annotator_id(conn, annotator)
        prior = one(conn, "SELECT * FROM votes WHERE client_id = ?", [client_id])
        if prior is not None:
            same = (prior["annotator_id"], prior["item_id"], prior["left_candidate_id"],
                    prior["right_candidate_id"], prior["outcome"]) == (aid, item_id, left_id, right_id, outcome)
            if not same:
                raise StoreError(f"client_id {client_id!r} was already used for vote {prior['id']} "
                                 f"with different content; each submission needs its own client_id")
            return prior["id"]
        item = one(conn, "SELECT cand_a, cand_b FROM items WHERE id = ?", [item_id])
        if item is None:
            raise StoreError(f"unknown item id {item_id}")
        if {left_id, right_id} != {item["cand_a"], item["cand_b"]} or left_id == right_id:
            raise StoreError(f"item {item_id} pairs candidates {item['cand_a']} and {item['cand_b']}, "
                             f"not {left_id} and {right_id}")
        dup = one(conn, f"WITH eff AS ({EFFECTIVE}) SELECT id FROM eff WHERE annotator_id = ? AND item_id = ?",
                  [aid, item_id])
        if dup is not None:
            raise StoreError(f"{annotator} already voted on item {item_id} (vote {dup['id']}); "
                             f"undo that vote first to change it")
        vid = conn.execute(
            "INSERT INTO votes (client_id, annotator_id, item_id, left_candidate_id, right_candidate_id, "
            "outcome, skip_reason, rationale, elapsed_ms) VALUES (?,?,?,?,?,?,?,?,?)",
            [client_id, aid, item_id, left_id, right_id, outcome, skip_reason, rationale,
             None if elapsed_ms is None else int(elapsed_ms)]).lastrowid
        if reveal:
            conn.conn.executemany("INSERT OR IGNORE INTO reveals (annotator_id, candidate_id, vote_id) "
                                  "VALUES (?, ?, ?)", [(aid, left_id, vid), (aid, right_id, vid)])
        return vid


def _check_fields(client_id, *, skip_reason=None, rationale=None, required: bool = True) -> None:
    """Refuse (StoreError, before any write) a missing or over-long client_id and over-long texts."""
    if client_id is None or not str(client_id).strip():
        if required:
            raise StoreError("client_id is required (a fresh uuid per submission)")
    elif not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID_CHARS:
        raise StoreError(f"client_id must be text of at most {MAX_CLIENT_ID_CHARS} characters, got "
                         f"{len(client_id) if isinstance(client_id, str) else type(client_id).__name__}")
    for field, value, limit in (("skip_reason", skip_reason, MAX_SKIP_REASON_CHARS),
                                ("rationale", rationale, MAX_RATIONALE_CHARS)):
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            got = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
            raise StoreError(f"{field} must be text of at most {limit} characters, got {got}; nothing saved")


def undo_last(db: Store, annotator: str, client_id: str | None = None) -> dict | None:
    """Cancel `annotator`'s most recent effective vote by appending an 'undo' row.

    Returns the undone vote's row plus `withdrawn` (bool), or None when there is nothing left to undo.
    When that vote's candidates were revealed to the annotator (record_vote(reveal=True)), a second
    vote would not be blind, so the same transaction also withdraws the item from them: a 'skip' row
    with reason WITHDRAWN (which undo passes over, never takes back); the item goes to other
    annotators. Otherwise next_item serves the item to them again first. Both rows land or neither.
    Pass a client_id to make a double click undo once.
    """
    _check_fields(client_id, required=False)
    client_id = client_id or uuid.uuid4().hex
    with db.write() as conn:
        aid = annotator_id(conn, annotator)
        prior = one(conn, "SELECT * FROM votes WHERE client_id = ?", [client_id])
        if prior is not None:
            if prior["outcome"] != "undo" or prior["annotator_id"] != aid:
                raise StoreError(f"client_id {client_id!r} was already used for vote {prior['id']}")
            return _undone_row(conn, aid, prior["undoes_vote_id"])
        last = one(conn, f"WITH eff AS ({EFFECTIVE}) SELECT * FROM eff WHERE annotator_id = ? "
                   "AND NOT (outcome = 'skip' AND skip_reason = ?) ORDER BY id DESC LIMIT 1", [aid, WITHDRAWN])
        if last is None:
            return None
        conn.execute("INSERT INTO votes (client_id, annotator_id, item_id, left_candidate_id, "
                     "right_candidate_id, outcome, undoes_vote_id) VALUES (?,?,?,?,?,'undo',?)",
                     [client_id, aid, last["item_id"], last["left_candidate_id"],
                      last["right_candidate_id"], last["id"]])
        withdrawn = _revealed(conn, aid, (last["left_candidate_id"], last["right_candidate_id"]))
        if withdrawn:
            _withdraw(conn, aid, last, f"{client_id}-withdrawn")
        return _undone_row(conn, aid, last["id"], withdrawn)


def _revealed(conn, aid: int, candidate_ids) -> bool:
    ids = list(candidate_ids)
    return one(conn, f"SELECT 1 AS x FROM reveals WHERE annotator_id = ? AND candidate_id IN "
               f"({', '.join('?' * len(ids))})", [aid, *ids]) is not None


def _withdraw(conn, aid: int, vote: dict, client_id: str) -> None:
    """Inside the caller's transaction: take `vote`'s item away from its annotator for good."""
    conn.execute("INSERT INTO votes (client_id, annotator_id, item_id, left_candidate_id, right_candidate_id, "
                 "outcome, skip_reason) VALUES (?,?,?,?,?,'skip',?)",
                 [client_id, aid, vote["item_id"], vote["left_candidate_id"], vote["right_candidate_id"],
                  WITHDRAWN])


def _undone_row(conn, aid: int, vote_id: int, withdrawn: bool | None = None) -> dict:
    """The undone vote's row plus `withdrawn`; looked up only when the caller does not know it (a replayed
    undo, whose client_id was already used)."""
    row = one(conn, _ROW.format(src="votes") + " WHERE v.id = ?", [vote_id])
    if withdrawn is None:
        withdrawn = one(conn, "SELECT 1 AS x FROM votes WHERE annotator_id = ? AND item_id = ? AND "
                        "outcome = 'skip' AND skip_reason = ? AND id > ?",
                        [aid, row["item_id"], WITHDRAWN, vote_id]) is not None
    row["withdrawn"] = withdrawn
    return row


def all_votes(db: Store) -> list[dict]:
    """Every raw vote row, undo rows included, oldest first (for audits and export_votes)."""
    with db.read() as conn:
        return vote_rows(conn)


def effective_votes(db: Store, annotator: str | None = None) -> list[dict]:
    """Votes that count: no undo rows, no undone votes; skips included (filter them if you need to)."""
    with db.read() as conn:
        return vote_rows(conn, effective=True, annotator=annotator)


def vote_rows(conn, *, effective: bool = False, annotator: str | None = None) -> list[dict]:
    """all_votes (or, effective=True, effective_votes) on the caller's connection, so an export can read
    them in the same snapshot as what it writes."""
    sql = _ROW.format(src=f"({EFFECTIVE})" if effective else "votes")
    if annotator is None:
        return list(conn.query(sql + " ORDER BY v.id"))
    return list(conn.query(sql + " WHERE a.name = ? ORDER BY v.id", [annotator]))


def votes_for_annotator(db: Store, annotator: str) -> list[dict]:
    """One annotator's own history, newest first: each vote with the query and both texts, `undone`
    set on votes that were cancelled (undo rows are folded into that flag). Stages are not included:
    reveal them explicitly with stage_of_candidate if the UI wants to."""
    with db.read() as conn:
        aid = annotator_id(conn, annotator)
        return list(conn.query("""
            SELECT v.id, v.client_id, v.item_id, q.text AS query, v.left_candidate_id, cl.text AS left_text,
                   v.right_candidate_id, cr.text AS right_text, v.outcome, v.skip_reason, v.rationale,
                   v.created_at, v.elapsed_ms,
                   EXISTS (SELECT 1 FROM votes u WHERE u.undoes_vote_id = v.id) AS undone
            FROM votes v JOIN items i ON i.id = v.item_id JOIN queries q ON q.id = i.query_id
            JOIN candidates cl ON cl.id = v.left_candidate_id JOIN candidates cr ON cr.id = v.right_candidate_id
            WHERE v.annotator_id = ? AND v.outcome != 'undo' ORDER BY v.id DESC""", [aid]))


def preference_pairs(db: Store, *, stages: Iterable[str] | None = None, unused_only: bool = False) -> list[dict]:
    """Chosen/rejected rows from effective 'left'/'right' votes, one per item (see module docstring).

    Each row: item_id, query_id, query, dataset, topic_id, passages (tuple of Passage, best first),
    chosen, rejected (texts), chosen_stage, rejected_stage, chosen_candidate_id, rejected_candidate_id,
    vote_ids, annotators. `stages`: keep pairs whose two stages are both listed. `unused_only`: leave
    out votes already linked to a training round (round_votes).
    """
    with db.read() as conn:
        conn.execute("BEGIN")
        return pair_rows(conn, stages=stages, unused_only=unused_only)


def pair_rows(conn, *, stages: Iterable[str] | None = None, unused_only: bool = False) -> list[dict]:
    """preference_pairs on the caller's connection (inside its transaction: one snapshot)."""
    stages = set(stages) if stages is not None else None
    sql = _ROW.format(src=f"({EFFECTIVE})") + " WHERE v.outcome IN ('left', 'right')"
    if unused_only:
        sql += " AND NOT EXISTS (SELECT 1 FROM round_votes rv WHERE rv.vote_id = v.id)"
    by_item: dict[int, list[dict]] = {}
    for v in conn.query(sql + " ORDER BY v.id"):
        if stages is None or (v["left_stage"] in stages and v["right_stage"] in stages):
            by_item.setdefault(v["item_id"], []).append(v)
    texts: dict[int, str] = {}
    queries: dict[int, dict] = {}
    out = []
    for item_id, votes in by_item.items():
        winners = set()
        for v in votes:
            left = v["outcome"] == "left"
            v["chosen"], v["rejected"] = ((v["left_candidate_id"], v["right_candidate_id"]) if left
                                          else (v["right_candidate_id"], v["left_candidate_id"]))
            v["chosen_stage"], v["rejected_stage"] = ((v["left_stage"], v["right_stage"]) if left
                                                      else (v["right_stage"], v["left_stage"]))
            winners.add(v["chosen"])
        if len(winners) > 1:
            continue  # annotators disagree on this item
        first = votes[0]
        for cid in (first["chosen"], first["rejected"]):
            if cid not in texts:
                texts[cid] = one(conn, "SELECT text FROM candidates WHERE id = ?", [cid])["text"]
        if first["query_id"] not in queries:
            queries[first["query_id"]] = query_row(conn, first["query_id"])
        q = queries[first["query_id"]]
        out.append({
            "item_id": item_id, "query_id": q["id"], "query": q["text"], "dataset": q["dataset"],
            "topic_id": q["topic_id"], "passages": q["passages"],
            "chosen": texts[first["chosen"]], "rejected": texts[first["rejected"]],
            "chosen_stage": first["chosen_stage"], "rejected_stage": first["rejected_stage"],
            "chosen_candidate_id": first["chosen"], "rejected_candidate_id": first["rejected"],
            "vote_ids": [v["id"] for v in votes], "annotators": sorted({v["annotator"] for v in votes}),
        })
    return out
