"""Numbered schema migrations, recorded in the `migrations` table (number, name, applied_at).

    from racq.store.migrations import migrate, applied
    migrate(sqlite_utils.Database("annotations/racq.db"))   # open_db() does this for you

Rules: never edit a migration that has shipped; append a new number instead. Each migration runs in its
own transaction together with the row that records it, so a crash leaves the file at the previous
version, never half-way. A file that records a number this code does not know was written by a newer
racq and is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Union

import sqlite_utils

from racq.store.errors import StoreError

NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"

_CORE = f"""
CREATE TABLE annotators (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL DEFAULT 'annotator' CHECK (role IN ('annotator', 'admin')),
    created_at TEXT NOT NULL DEFAULT {NOW}
);
-- A query is identified by its text, dataset, topic AND its passage list (passages_key = hash of the
-- ranked pids): candidates were generated from those passages, so other passages make another query.
CREATE TABLE queries (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    dataset TEXT NOT NULL DEFAULT '',
    topic_id TEXT NOT NULL DEFAULT '',
    passages_key TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT {NOW},
    UNIQUE (text, dataset, topic_id, passages_key)
);
CREATE TABLE passages (
    pid TEXT PRIMARY KEY,            -- racq.data.Passage.pid (content hash)
    title TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE query_passages (
    query_id INTEGER NOT NULL REFERENCES queries(id),
    pid TEXT NOT NULL REFERENCES passages(pid),
    rank INTEGER NOT NULL,           -- 0 = best
    score REAL,
    PRIMARY KEY (query_id, rank)
);
CREATE TABLE candidates (
    id INTEGER PRIMARY KEY,
    query_id INTEGER NOT NULL REFERENCES queries(id),
    stage TEXT NOT NULL,
    adapter_hash TEXT NOT NULL DEFAULT '',
    decoding TEXT NOT NULL DEFAULT '{{}}',   -- JSON, sorted keys
    text TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT {NOW},
    UNIQUE (query_id, stage, adapter_hash, decoding, text)
);
-- An item is an unordered pair (cand_a < cand_b); which one is shown left is decided per showing
-- and recorded on the vote.
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    query_id INTEGER NOT NULL REFERENCES queries(id),
    cand_a INTEGER NOT NULL REFERENCES candidates(id),
    cand_b INTEGER NOT NULL REFERENCES candidates(id),
    created_at TEXT NOT NULL DEFAULT {NOW},
    CHECK (cand_a < cand_b),
    UNIQUE (cand_a, cand_b)
);
CREATE TABLE votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- AUTOINCREMENT: ids are never reused
    client_id TEXT NOT NULL UNIQUE,         -- set by the client per submission: a double submit records once
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    item_id INTEGER NOT NULL REFERENCES items(id),
    left_candidate_id INTEGER NOT NULL REFERENCES candidates(id),
    right_candidate_id INTEGER NOT NULL REFERENCES candidates(id),
    outcome TEXT NOT NULL CHECK (outcome IN ('left', 'right', 'tie', 'both_bad', 'skip', 'undo')),
    skip_reason TEXT,
    rationale TEXT,
    undoes_vote_id INTEGER UNIQUE REFERENCES votes(id),  -- UNIQUE: a vote is undone at most once
    created_at TEXT NOT NULL DEFAULT {NOW},
    elapsed_ms INTEGER,
    CHECK ((outcome = 'undo') = (undoes_vote_id IS NOT NULL)),
    CHECK (left_candidate_id != right_candidate_id)
);
CREATE TRIGGER votes_no_update BEFORE UPDATE ON votes
BEGIN SELECT RAISE(ABORT, 'votes are append-only: record an undo instead of updating'); END;
CREATE TRIGGER votes_no_delete BEFORE DELETE ON votes
BEGIN SELECT RAISE(ABORT, 'votes are append-only: record an undo instead of deleting'); END;
"""

_ROUNDS = f"""
CREATE TABLE training_rounds (
    id INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,             -- the stage this round produces, e.g. 'aligned-r1'
    base_stage TEXT NOT NULL,        -- the stage it starts from
    adapter_path TEXT,
    config TEXT NOT NULL DEFAULT '{{}}',
    status TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    created_at TEXT NOT NULL DEFAULT {NOW},
    finished_at TEXT,
    metrics TEXT
);
CREATE TABLE round_votes (
    round_id INTEGER NOT NULL REFERENCES training_rounds(id),
    vote_id INTEGER NOT NULL REFERENCES votes(id),
    PRIMARY KEY (round_id, vote_id)
);
CREATE INDEX round_votes_vote ON round_votes(vote_id);
ALTER TABLE candidates ADD COLUMN round_id INTEGER REFERENCES training_rounds(id);
"""


# One row per (candidate, scorer settings): the automatic faithfulness score shown beside the human
# ranking. `scorer` names the Scorer's settings (racq.store.scores.scorer_key), so scores from other
# settings sit side by side instead of being mixed. `details` keeps the Scorer's whole dict.
_SCORES = f"""
CREATE TABLE candidate_scores (
    candidate_id INTEGER NOT NULL REFERENCES candidates(id),
    scorer TEXT NOT NULL,
    option_support REAL,
    hallucinated INTEGER,
    n_options INTEGER,
    parent_f1 REAL,
    novel_content REAL,
    nli_min REAL,
    details TEXT NOT NULL DEFAULT '{{}}',
    created_at TEXT NOT NULL DEFAULT {NOW},
    PRIMARY KEY (candidate_id, scorer)
);
"""


# Named leases (racq.store.leases): "one training round at a time" across processes sharing this file.
# A round records which lease holder ran it (runner = host:pid:uuid), so a round left 'running' by a
# process that died can be told apart from one that is running now (racq.store.rounds.fail_stale_rounds).
_LEASES = """
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,            -- host:pid:uuid, unique per acquisition
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    acquired_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    expires_at TEXT NOT NULL         -- free after this unless renewed
);
ALTER TABLE training_rounds ADD COLUMN runner TEXT;
"""


def _indexes(db: sqlite_utils.Database) -> None:
    # The sampler and the per-annotator views filter on these columns on every call.
    db["votes"].create_index(["annotator_id", "item_id"], index_name="votes_annotator_item")
    db["votes"].create_index(["item_id"], index_name="votes_item")
    db["items"].create_index(["query_id"], index_name="items_query")
    db["candidates"].create_index(["query_id", "stage"], index_name="candidates_query_stage")
    db["query_passages"].create_index(["pid"], index_name="query_passages_pid")


# Which candidates' stages an annotator has been shown (the reveal after a vote). Append-only, one row
# per (annotator, candidate): the sampler never shows that annotator an item holding such a candidate
# again, since its stage would no longer be blind. Votes recorded before this table existed are taken
# as revealed (the app's default), so an upgraded database stays blind too.
_REVEALS = f"""
CREATE TABLE reveals (
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    candidate_id INTEGER NOT NULL REFERENCES candidates(id),
    vote_id INTEGER REFERENCES votes(id),
    created_at TEXT NOT NULL DEFAULT {NOW},
    PRIMARY KEY (annotator_id, candidate_id)
);
CREATE TRIGGER reveals_no_update BEFORE UPDATE ON reveals
BEGIN SELECT RAISE(ABORT, 'reveals are append-only'); END;
CREATE TRIGGER reveals_no_delete BEFORE DELETE ON reveals
BEGIN SELECT RAISE(ABORT, 'reveals are append-only'); END;
INSERT OR IGNORE INTO reveals (annotator_id, candidate_id, vote_id)
    SELECT annotator_id, left_candidate_id, id FROM votes WHERE outcome != 'undo'
    UNION ALL SELECT annotator_id, right_candidate_id, id FROM votes WHERE outcome != 'undo';
"""


Step = Union[str, Callable[[sqlite_utils.Database], None]]

MIGRATIONS: list[tuple[int, str, Step]] = [
    (1, "core tables: annotators, queries, passages, candidates, items, append-only votes", _CORE),
    (2, "training rounds and vote lineage", _ROUNDS),
    (3, "indexes for the sampler", _indexes),
    (4, "automatic faithfulness scores of candidates", _SCORES),
    (5, "stages revealed to each annotator (blindness after the reveal)", _REVEALS),
    (6, "leases (one training round at a time across processes) and the runner of each round", _LEASES),
]


def applied(db: sqlite_utils.Database) -> list[dict]:
    """The migrations recorded in this file, oldest first ([] for a new file)."""
    if "migrations" not in db.table_names():
        return []
    return list(db.query("SELECT number, name, applied_at FROM migrations ORDER BY number"))


def migrate(db: sqlite_utils.Database, target: int | None = None,
            migrations: list[tuple[int, str, Step]] | None = None) -> list[int]:
    """Apply the pending migrations up to `target` (default: all), each in its own transaction.

    `db` must be a connection with no open transaction. Returns the numbers applied now.
    """
    migrations = sorted(migrations or MIGRATIONS, key=lambda m: m[0])
    known = {number for number, _, _ in migrations}
    db.execute(f"""CREATE TABLE IF NOT EXISTS migrations (
        number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT {NOW})""")
    newer = [m["number"] for m in applied(db) if m["number"] not in known]
    if newer:
        raise StoreError(f"this database records migration(s) {newer} that this version of racq does "
                         f"not know: it was written by a newer racq; upgrade racq to open it")
    done_now = []
    for number, name, step in migrations:
        if target is not None and number > target:
            break
        db.execute("BEGIN IMMEDIATE")  # also waits for another process migrating the same file
        try:
            if db.execute("SELECT 1 FROM migrations WHERE number = ?", [number]).fetchone():
                db.execute("ROLLBACK")
                continue
            if callable(step):
                step(db)
            else:
                db.executescript(step)  # inside our transaction: sqlite-utils splits, no implicit COMMIT
            db.execute("INSERT INTO migrations (number, name) VALUES (?, ?)", [number, name])
            db.execute("COMMIT")
        except BaseException as exc:
            if db.conn.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"migration {number} ({name}) failed: {exc}; the database is left "
                                 f"at the previous version") from exc
            raise
        done_now.append(number)
    return done_now
