"""The pool: annotators, queries with their passages, generated candidates, pair items, and the sampler.

    db = open_db()
    add_annotator(db, "ana")
    qid = add_query_with_passages(db, ex.query, ex.passages, dataset=ex.dataset, topic_id=ex.topic_id)
    add_candidate(db, qid, "sft", text, adapter_hash=h, decoding={"do_sample": False})
    make_items(db)                                  # pairs of candidates from different stages
    show = next_item(db, "ana")                     # Showing(item_id, query, passages, left_*, right_*)

Sampler rules (next_item):
- an annotator never gets an item they have an effective vote on (a skip counts: skipped items do
  not come back); undo_last() puts the item back and it is served FIRST, with the same left/right
  as when it was undone, so "undo" reads as "go back one";
- blindness after the reveal: an annotator is never served an item holding a candidate whose stage
  was revealed to them (table `reveals`, written by record_vote(reveal=True)). With three stages per
  query that is one pair per query per annotator; other annotators still get the query's other
  pairs, so overlap and agreement keep working;
- second annotator: while fewer than `overlap` of the annotated items have two or more annotators, an
  item annotated by exactly one other person is served; otherwise a fresh item; when fresh items run
  out, items others annotated are served (least-annotated first);
- within that pool the stage pair with the fewest votes so far goes first (then the least-annotated
  item; ties broken at random), and left/right is drawn at random for every showing.
Two people who ask at the same instant may get the same fresh item; that only adds overlap.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from typing import Iterable, Sequence

from racq.data import Passage
from racq.store.db import Store, annotator_id, dumps, one
from racq.store.errors import StoreError

ROLES = ("annotator", "admin")
MAX_NAME_CHARS = 64  # annotator names (racq.ui.users checks the same limit before signing anyone in)
# The sampler's default RNG (callers may pass their own). RACQ_SAMPLER_SEED=<int or text> seeds it, so a
# run of the app (tests/apphelpers.py APP_ENV sets it; tests/conftest.py reseeds it per test) can be
# replayed draw for draw, as far as the order of requests allows; unset (the default), it is seeded
# from the OS, as always.
SEED_ENV = "RACQ_SAMPLER_SEED"


def _seed(value: str | None):
    if not value:
        return None
    return int(value) if value.strip().lstrip("-").isdigit() else value


_RNG = random.Random(_seed(os.environ.get(SEED_ENV)))

# Votes that count: not undo rows and not undone. `eff` in the sampler SQL below.
EFFECTIVE = """SELECT v.* FROM votes v WHERE v.outcome != 'undo'
    AND NOT EXISTS (SELECT 1 FROM votes u WHERE u.undoes_vote_id = v.id)"""


@dataclass(frozen=True)
class Showing:
    """One item as shown to one annotator. Stages are deliberately absent: the comparison is blind."""

    item_id: int
    query_id: int
    query: str
    passages: tuple[Passage, ...]
    left_id: int
    left_text: str
    right_id: int
    right_text: str
    redo: bool = False  # True when this item comes back after an undo


# ------------------------------------------------------------------ annotators
def add_annotator(db: Store, name: str, role: str = "annotator") -> dict:
    """Create an annotator (or return the existing one with that name and role)."""
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME_CHARS:
        # the length, not the name: a 20,000-character name would make an unreadable message
        raise StoreError(f"annotator name must be 1-{MAX_NAME_CHARS} characters, got {len(name)}")
    if role not in ROLES:
        raise StoreError(f"role must be one of {ROLES}, got {role!r}")
    with db.write() as conn:
        row = one(conn, "SELECT * FROM annotators WHERE name = ?", [name])
        if row is None:
            conn.execute("INSERT INTO annotators (name, role) VALUES (?, ?)", [name, role])
            row = one(conn, "SELECT * FROM annotators WHERE name = ?", [name])
        elif row["role"] != role:
            raise StoreError(f"annotator {name!r} already exists with role {row['role']!r}")
        return row


def get_annotator(db: Store, name: str) -> dict | None:
    with db.read() as conn:
        return one(conn, "SELECT * FROM annotators WHERE name = ?", [(name or "").strip()])


def list_annotators(db: Store) -> list[dict]:
    with db.read() as conn:
        return list(conn.query("SELECT * FROM annotators ORDER BY id"))


# ------------------------------------------------------------------ queries and candidates
def add_query_with_passages(db: Store, query: str, passages: Sequence[Passage],
                            scores: Sequence[float] | None = None, *, dataset: str = "",
                            topic_id: str = "") -> int:
    """Store a query with its ranked passages (best first); returns the query id. Idempotent."""
    if not (query or "").strip():
        raise StoreError("empty query text")
    if scores is not None and len(scores) != len(passages):
        raise StoreError(f"{len(scores)} scores for {len(passages)} passages")
    key = hashlib.sha1("\n".join(p.pid for p in passages).encode()).hexdigest()[:16]
    with db.write() as conn:
        found = one(conn, "SELECT id FROM queries WHERE text = ? AND dataset = ? AND topic_id = ? "
                    "AND passages_key = ?", [query, dataset or "", topic_id or "", key])
        if found:
            return found["id"]
        qid = conn.execute("INSERT INTO queries (text, dataset, topic_id, passages_key) VALUES (?,?,?,?)",
                           [query, dataset or "", topic_id or "", key]).lastrowid
        for rank, p in enumerate(passages):
            conn.execute("INSERT OR IGNORE INTO passages (pid, title, text) VALUES (?, ?, ?)",
                         [p.pid, p.title, p.text])
            conn.execute("INSERT INTO query_passages (query_id, pid, rank, score) VALUES (?,?,?,?)",
                         [qid, p.pid, rank, None if scores is None else float(scores[rank])])
        return qid


def get_query(db: Store, query_id: int) -> dict:
    """{id, text, dataset, topic_id, passages: [Passage, ...] best first}."""
    with db.read() as conn:
        return query_row(conn, query_id)


def query_row(conn, query_id: int) -> dict:
    """get_query on the caller's connection (inside its transaction: one snapshot with its other reads)."""
    row = one(conn, "SELECT id, text, dataset, topic_id FROM queries WHERE id = ?", [query_id])
    if row is None:
        raise StoreError(f"unknown query id {query_id}")
    row["passages"] = tuple(Passage(p["title"], p["text"]) for p in conn.query(
        "SELECT p.title, p.text FROM query_passages qp JOIN passages p ON p.pid = qp.pid "
        "WHERE qp.query_id = ? ORDER BY qp.rank", [query_id]))
    return row


def add_candidate(db: Store, query_id: int, stage: str, text: str, *, adapter_hash: str = "",
                  decoding: dict | None = None, round_id: int | None = None) -> int:
    """Store one generated question; returns its id (the same id if this exact generation exists).

    round_id None: the latest finished training round that produced `stage`, if any (lineage).
    """
    if not (stage or "").strip():
        raise StoreError("empty stage name")
    if text is None:
        raise StoreError("candidate text is None")
    with db.write() as conn:
        if one(conn, "SELECT 1 AS x FROM queries WHERE id = ?", [query_id]) is None:
            raise StoreError(f"unknown query id {query_id}")
        args = [query_id, stage, adapter_hash or "", dumps(decoding or {}), text]
        found = one(conn, "SELECT id FROM candidates WHERE query_id = ? AND stage = ? AND adapter_hash = ? "
                    "AND decoding = ? AND text = ?", args)
        if found:
            return found["id"]
        if round_id is None:
            r = one(conn, "SELECT id FROM training_rounds WHERE stage = ? AND status = 'done' "
                    "ORDER BY id DESC LIMIT 1", [stage])
            round_id = r["id"] if r else None
        elif one(conn, "SELECT 1 AS x FROM training_rounds WHERE id = ?", [round_id]) is None:
            raise StoreError(f"unknown training round {round_id}")
        return conn.execute("INSERT INTO candidates (query_id, stage, adapter_hash, decoding, text, round_id) "
                            "VALUES (?,?,?,?,?,?)", args + [round_id]).lastrowid


def stage_of_candidate(db: Store, candidate_id: int) -> str:
    with db.read() as conn:
        row = one(conn, "SELECT stage FROM candidates WHERE id = ?", [candidate_id])
    if row is None:
        raise StoreError(f"unknown candidate id {candidate_id}")
    return row["stage"]


def _marks(ids: Sequence) -> str:
    return ",".join("?" * len(ids))


CHUNK = 900  # ids per IN (...) list: under SQLite's old 999-parameter limit


def first_query_ids(db: Store, n: int) -> list[int]:
    """The ids of the `n` oldest queries (the pool that `racq pool build --existing` extends)."""
    with db.read() as conn:
        return [r["id"] for r in conn.query("SELECT id FROM queries ORDER BY id LIMIT ?", [n])]


def latest_query_ids(db: Store, keys: Sequence[tuple[str, str, str]]) -> list[int | None]:
    """For each (text, dataset, topic_id): the newest stored query with it (any passages), or None.
    One read, so every answer comes from the same snapshot."""
    with db.read() as conn:
        conn.execute("BEGIN")
        rows = [one(conn, "SELECT id FROM queries WHERE text = ? AND dataset = ? AND topic_id = ? "
                    "ORDER BY id DESC LIMIT 1", [text, dataset or "", topic_id or ""])
                for text, dataset, topic_id in keys]
    return [r["id"] if r else None for r in rows]


def candidates_for(db: Store, query_ids: Sequence[int]) -> list[dict]:
    """Every candidate of these queries, oldest first: {id, query_id, stage, adapter_hash, decoding
    (canonical JSON text, as stored)}."""
    ids = list(query_ids)
    out: list[dict] = []
    with db.read() as conn:
        conn.execute("BEGIN")
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            out.extend(conn.query(f"SELECT id, query_id, stage, adapter_hash, decoding FROM candidates "
                                  f"WHERE query_id IN ({_marks(chunk)}) ORDER BY id", chunk))
    return out


def candidate_texts(db: Store, candidate_ids: Sequence[int]) -> dict[int, str]:
    """{candidate id: its text} for these ids (unknown ids are left out)."""
    ids = list(candidate_ids)
    out: dict[int, str] = {}
    with db.read() as conn:
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            out.update((r["id"], r["text"]) for r in conn.query(
                f"SELECT id, text FROM candidates WHERE id IN ({_marks(chunk)})", chunk))
    return out


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def is_pool_query(db: Store, query: str) -> bool:
    """Whether `query` (case and spacing ignored) is the text of a query that has annotation items."""
    want = _norm(query)
    with db.read() as conn:
        return any(_norm(r["text"]) == want for r in conn.query(
            "SELECT DISTINCT q.text FROM queries q JOIN items i ON i.query_id = q.id"))


def pool_candidates(db: Store) -> dict[int, list[dict]]:
    """{query_id: [{id, stage, text}, ...]} for every query that has annotation items, oldest first."""
    out: dict[int, list[dict]] = {}
    with db.read() as conn:
        for c in conn.query("SELECT c.id, c.query_id, c.stage, c.text FROM candidates c WHERE c.query_id IN "
                            "(SELECT DISTINCT query_id FROM items) ORDER BY c.id"):
            out.setdefault(c.pop("query_id"), []).append(c)
    return out


def make_items(db: Store, stages: Iterable[str] | None = None, query_ids: Iterable[int] | None = None) -> int:
    """Create the missing items: every pair of one query's candidates from DIFFERENT stages whose texts
    differ (after squeezing whitespace and case). Returns how many were created."""
    stages = set(stages) if stages is not None else None
    wanted = set(query_ids) if query_ids is not None else None
    with db.write() as conn:
        by_query: dict[int, list[dict]] = {}
        for c in conn.query("SELECT id, query_id, stage, text FROM candidates ORDER BY id"):
            if (stages is None or c["stage"] in stages) and (wanted is None or c["query_id"] in wanted):
                by_query.setdefault(c["query_id"], []).append(c)
        existing = {(r["cand_a"], r["cand_b"]) for r in conn.query("SELECT cand_a, cand_b FROM items")}
        new = []
        for qid, cands in by_query.items():
            for i, a in enumerate(cands):
                for b in cands[i + 1:]:
                    if a["stage"] != b["stage"] and _norm(a["text"]) != _norm(b["text"]) \
                            and (a["id"], b["id"]) not in existing:
                        new.append((qid, a["id"], b["id"]))  # ids ascend: cand_a < cand_b holds
        conn.conn.executemany("INSERT INTO items (query_id, cand_a, cand_b) VALUES (?, ?, ?)", new)
        return len(new)


# ------------------------------------------------------------------ the sampler
def _item_rows(conn, annotator: int, stages: set[str] | None) -> tuple[list[dict], dict[str, int], int, int]:
    """Items with their stage pair and number of (non-skip) annotators, plus votes per stage pair."""
    rows = list(conn.query(f"""
        WITH eff AS ({EFFECTIVE}),
        ann AS (SELECT item_id, COUNT(DISTINCT annotator_id) AS n FROM eff WHERE outcome != 'skip'
                GROUP BY item_id),
        mine AS (SELECT DISTINCT item_id FROM eff WHERE annotator_id = :a),
        rev AS (SELECT candidate_id FROM reveals WHERE annotator_id = :a)
        SELECT i.id, i.query_id, i.cand_a, i.cand_b, ca.stage AS sa, cb.stage AS sb,
               COALESCE(ann.n, 0) AS n_ann, (mine.item_id IS NOT NULL) AS is_mine,
               (i.cand_a IN rev OR i.cand_b IN rev) AS revealed
        FROM items i JOIN candidates ca ON ca.id = i.cand_a JOIN candidates cb ON cb.id = i.cand_b
        LEFT JOIN ann ON ann.item_id = i.id LEFT JOIN mine ON mine.item_id = i.id""", {"a": annotator}))
    rows = [r for r in rows if stages is None or (r["sa"] in stages and r["sb"] in stages)]
    pair_votes: dict[str, int] = {}
    for r in rows:
        r["pair"] = "|".join(sorted((r["sa"], r["sb"])))
        pair_votes.setdefault(r["pair"], 0)
    for r in conn.query(f"""WITH eff AS ({EFFECTIVE}) SELECT ca.stage AS sa, cb.stage AS sb, COUNT(*) AS n
            FROM eff JOIN items i ON i.id = eff.item_id JOIN candidates ca ON ca.id = i.cand_a
            JOIN candidates cb ON cb.id = i.cand_b WHERE eff.outcome != 'skip' GROUP BY sa, sb"""):
        pair = "|".join(sorted((r["sa"], r["sb"])))
        if pair in pair_votes:
            pair_votes[pair] += r["n"]
    n1 = sum(1 for r in rows if r["n_ann"] == 1)
    n2 = sum(1 for r in rows if r["n_ann"] >= 2)
    return rows, pair_votes, n1, n2


def next_item(db: Store, annotator: str, *, overlap: float = 0.2, stages: Iterable[str] | None = None,
              rng: random.Random | None = None) -> Showing | None:
    """The next item for `annotator` (see the module docstring for the rules); None when none is left."""
    if not 0.0 <= overlap <= 1.0:
        raise StoreError(f"overlap must be within [0, 1], got {overlap}")
    rng = rng or _RNG
    stages = set(stages) if stages is not None else None
    with db.read() as conn:
        conn.execute("BEGIN")  # one snapshot for all the reads below
        aid = annotator_id(conn, annotator)
        rows, pair_votes, n1, n2 = _item_rows(conn, aid, stages)
        open_rows = {r["id"]: r for r in rows if not r["is_mine"] and not r["revealed"]}
        if not open_rows:
            return None
        # An item this annotator undid and has not voted on again comes first, sides as before.
        for u in conn.query("""SELECT v.item_id, v.left_candidate_id AS l, v.right_candidate_id AS r
                FROM votes u JOIN votes v ON v.id = u.undoes_vote_id
                WHERE u.annotator_id = ? ORDER BY u.id DESC""", [aid]):
            if u["item_id"] in open_rows:
                return _showing(conn, open_rows[u["item_id"]], u["l"], u["r"], redo=True)
        fresh = [r for r in open_rows.values() if r["n_ann"] == 0]
        second = [r for r in open_rows.values() if r["n_ann"] == 1]
        if second and n2 < overlap * (n1 + n2):
            pool = second
        elif fresh:
            pool = fresh
        else:
            least = min(r["n_ann"] for r in open_rows.values())
            pool = [r for r in open_rows.values() if r["n_ann"] == least]
        fewest = min(pair_votes[r["pair"]] for r in pool)
        pool = [r for r in pool if pair_votes[r["pair"]] == fewest]
        least = min(r["n_ann"] for r in pool)
        pick = rng.choice(sorted((r for r in pool if r["n_ann"] == least), key=lambda r: r["id"]))
        left, right = (pick["cand_a"], pick["cand_b"]) if rng.random() < 0.5 else (pick["cand_b"], pick["cand_a"])
        return _showing(conn, pick, left, right)


def _showing(conn, item: dict, left: int, right: int, redo: bool = False) -> Showing:
    q = query_row(conn, item["query_id"])
    texts = {r["id"]: r["text"] for r in conn.query(
        "SELECT id, text FROM candidates WHERE id IN (?, ?)", [left, right])}
    return Showing(item["id"], q["id"], q["text"], q["passages"], left, texts[left], right, texts[right], redo)


def progress(db: Store, annotator: str, stages: Iterable[str] | None = None) -> dict:
    """{"done": items this annotator has an effective vote on (skips included), "skipped": of which
    skips, "total": done + the items still open to them under `stages` (items holding a candidate
    revealed to them are not: they will never be served to this annotator)}."""
    stages = set(stages) if stages is not None else None
    with db.read() as conn:
        conn.execute("BEGIN")
        aid = annotator_id(conn, annotator)
        rows, _, _, _ = _item_rows(conn, aid, stages)
        ids = {r["id"] for r in rows if r["is_mine"] or not r["revealed"]}
        mine = {r["item_id"]: r["outcome"] for r in conn.query(
            f"WITH eff AS ({EFFECTIVE}) SELECT item_id, outcome FROM eff WHERE annotator_id = ?", [aid])
            if r["item_id"] in ids}
    return {"done": len(mine), "skipped": sum(o == "skip" for o in mine.values()), "total": len(ids)}
