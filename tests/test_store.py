"""racq.store on real SQLite files: migrations, append-only votes, idempotency, undo, and a real "database
or disk is full" mid-write (the pool, sampler, concurrency, pairs and exports: tests/test_store_pool.py)."""

import random
import sqlite3

import pytest
import sqlite_utils

from racq.data import Passage
from racq.store import (MIGRATIONS, WITHDRAWN, StoreError, add_query_with_passages, all_votes, applied,
                        effective_votes, migrate, next_item, open_db, record_vote, undo_last,
                        votes_for_annotator)
from storehelpers import build_pool, fresh_store, vote_next


@pytest.fixture
def db(tmp_path):
    return fresh_store(tmp_path)


# ------------------------------------------------------------------ migrations
def test_open_creates_the_folder_records_migrations_and_uses_wal(tmp_path):
    store = open_db(tmp_path / "a" / "b" / "racq.db")
    assert store.path.exists()
    with store.read() as c:
        assert [m["number"] for m in applied(c)] == [m[0] for m in MIGRATIONS]
        assert all(m["applied_at"] for m in applied(c))
        assert c.journal_mode == "wal"
        assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    open_db(store.path)  # reopening applies nothing and does not fail
    with store.read() as c:
        assert len(applied(c)) == len(MIGRATIONS)


def test_an_old_database_is_upgraded_and_keeps_its_data(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    assert migrate(old, target=1) == [1]
    assert "training_rounds" not in old.table_names()
    old.execute("INSERT INTO annotators (name) VALUES ('ana')")
    old.execute("INSERT INTO queries (text, passages_key) VALUES ('q', 'k')")
    old.execute("INSERT INTO candidates (query_id, stage, text) VALUES (1, 'base', 'a?'), (1, 'sft', 'b?')")
    old.execute("INSERT INTO items (query_id, cand_a, cand_b) VALUES (1, 1, 2)")
    old.execute("INSERT INTO votes (client_id, annotator_id, item_id, left_candidate_id, right_candidate_id, "
                "outcome) VALUES ('c1', 1, 1, 2, 1, 'left')")
    old.close()

    store = open_db(path)
    with store.read() as c:
        assert [m["number"] for m in applied(c)] == [m[0] for m in MIGRATIONS]  # every migration, 4+ included
        assert "round_id" in c["candidates"].columns_dict
        assert "votes_annotator_item" in {i.name for i in c["votes"].indexes}
    (v,) = effective_votes(store)
    assert (v["client_id"], v["left_stage"], v["right_stage"], v["outcome"]) == ("c1", "sft", "base", "left")


def test_a_database_from_a_newer_racq_is_refused(tmp_path):
    store = open_db(tmp_path / "x.db")
    with sqlite3.connect(store.path) as c:
        c.execute("INSERT INTO migrations (number, name) VALUES (999, 'from the future')")
    with pytest.raises(StoreError, match="newer racq"):
        open_db(store.path)


def test_a_failing_migration_leaves_the_previous_version(tmp_path):
    db = sqlite_utils.Database(tmp_path / "m.db")
    steps = [(1, "ok", "CREATE TABLE a (x);"), (2, "broken", "CREATE TABLE b (x); INSERT INTO nowhere VALUES (1);")]
    with pytest.raises(StoreError, match="migration 2"):
        migrate(db, migrations=steps)
    assert [m["number"] for m in applied(db)] == [1]
    assert "b" not in db.table_names()


# ------------------------------------------------------------------ votes
def test_votes_are_append_only(db):
    build_pool(db, 1)
    vote_next(db, "ana")
    with sqlite3.connect(db.path) as c:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            c.execute("UPDATE votes SET outcome = 'right'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            c.execute("DELETE FROM votes")
    assert [v["outcome"] for v in all_votes(db)] == ["left"]


def test_undo_of_a_revealed_vote_withdraws_it_in_one_store_call_and_rows_stay_append_only(db):
    """undo_last is the one store call the Annotate screen makes for undo: after a reveal it appends
    the undo row and the withdrawal together; the events it wrote can be neither changed nor deleted."""
    build_pool(db, 1, stages=("base", "sft"))  # one item: once withdrawn, nothing is left for ana
    show = next_item(db, "ana", rng=random.Random(0))
    vid = record_vote(db, "v1", "ana", show.item_id, show.left_id, show.right_id, "left", reveal=True)
    undone = undo_last(db, "ana", client_id="u1")
    assert undone["id"] == vid and undone["withdrawn"] is True
    rows = all_votes(db)
    assert [(r["outcome"], r["item_id"]) for r in rows] == [("left", show.item_id), ("undo", show.item_id),
                                                          ("skip", show.item_id)]
    assert rows[1]["undoes_vote_id"] == vid and rows[2]["skip_reason"] == WITHDRAWN
    assert next_item(db, "ana", rng=random.Random(0)) is None  # withdrawn: never served to ana again
    assert next_item(db, "ben", rng=random.Random(0)).item_id == show.item_id  # still open to others
    assert undo_last(db, "ana") is None  # a withdrawal is never undone
    with sqlite3.connect(db.path) as c:
        for sql in ("UPDATE votes SET outcome = 'right' WHERE outcome = 'skip'",
                    "UPDATE votes SET skip_reason = NULL", "DELETE FROM votes WHERE outcome = 'skip'",
                    "DELETE FROM votes WHERE outcome = 'undo'"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                c.execute(sql)
    assert [(r["id"], r["outcome"], r["skip_reason"]) for r in all_votes(db)] == \
        [(r["id"], r["outcome"], r["skip_reason"]) for r in rows]


def test_a_double_submit_records_once(db):
    build_pool(db, 1)
    show = next_item(db, "ana", rng=random.Random(1))
    args = ("same-click", "ana", show.item_id, show.left_id, show.right_id, "right")
    first, second = record_vote(db, *args), record_vote(db, *args)
    assert first == second and len(all_votes(db)) == 1
    with pytest.raises(StoreError, match="already used"):
        record_vote(db, "same-click", "ana", show.item_id, show.left_id, show.right_id, "left")
    assert [v["outcome"] for v in all_votes(db)] == ["right"]


def test_bad_votes_are_refused_and_write_nothing(db):
    build_pool(db, 1)
    show = next_item(db, "ana", rng=random.Random(1))
    with pytest.raises(StoreError, match="unknown annotator"):
        record_vote(db, "c1", "nobody", show.item_id, show.left_id, show.right_id, "left")
    with pytest.raises(StoreError, match="outcome"):
        record_vote(db, "c2", "ana", show.item_id, show.left_id, show.right_id, "undo")
    with pytest.raises(StoreError, match="pairs candidates"):
        record_vote(db, "c3", "ana", show.item_id, show.left_id, show.left_id + 100, "left")
    with pytest.raises(StoreError, match="unknown item"):
        record_vote(db, "c4", "ana", 10_000, show.left_id, show.right_id, "left")
    assert all_votes(db) == []


def test_undo_cancels_the_last_vote_and_serves_the_item_again(db):
    build_pool(db, 2)
    rng = random.Random(3)
    first, v1 = vote_next(db, "ana", "left", rng)
    second, v2 = vote_next(db, "ana", "tie", rng)
    with pytest.raises(StoreError, match="already voted"):
        record_vote(db, "again", "ana", second.item_id, second.left_id, second.right_id, "left")

    undone = undo_last(db, "ana", client_id="undo-click")
    assert undone["id"] == v2 and undo_last(db, "ana", client_id="undo-click")["id"] == v2  # double click
    assert [v["id"] for v in effective_votes(db)] == [v1]
    back = next_item(db, "ana", rng=rng)
    assert back.redo and (back.item_id, back.left_id, back.right_id) == (second.item_id, second.left_id,
                                                                         second.right_id)
    v3 = record_vote(db, "revote", "ana", back.item_id, back.left_id, back.right_id, "right")
    assert [v["id"] for v in effective_votes(db)] == [v1, v3]
    rows = all_votes(db)
    assert [r["outcome"] for r in rows] == ["left", "tie", "undo", "right"] and rows[2]["undoes_vote_id"] == v2
    assert next_item(db, "ana", rng=rng).item_id not in {first.item_id, second.item_id}
    history = votes_for_annotator(db, "ana")
    assert [(h["id"], h["undone"]) for h in history] == [(v3, 0), (v2, 1), (v1, 0)]
    assert all("stage" not in key for h in history for key in h)  # blind


def test_undo_with_nothing_to_undo_returns_none(db):
    assert undo_last(db, "ana") is None
    build_pool(db, 1)
    vote_next(db, "ana")
    assert undo_last(db, "ana") is not None and undo_last(db, "ana") is None


def test_an_annotator_sees_only_their_own_votes(db):
    build_pool(db, 2)
    _, va = vote_next(db, "ana")
    _, vb = vote_next(db, "ben")
    assert [h["id"] for h in votes_for_annotator(db, "ana")] == [va]
    assert [h["id"] for h in votes_for_annotator(db, "ben")] == [vb]
    assert [v["id"] for v in effective_votes(db, "ben")] == [vb]


# ------------------------------------------------------------------ atomic writes
def capped(db):
    """A second handle on the same file whose connections may not grow it by a single page."""
    with db.read() as c:
        pages = c.execute("PRAGMA page_count").fetchone()[0]
    return open_db(db.path, pragmas={"max_page_count": pages})


def test_disk_full_mid_vote_raises_store_error_and_writes_nothing(db):
    build_pool(db, 2)
    note = "because " * 250  # 2,000 characters, the most a vote keeps
    other = next_item(db, "ben", rng=random.Random(0))
    record_vote(db, "c-ben", "ben", other.item_id, other.left_id, other.right_id, "left", rationale=note)
    full = capped(db)  # the votes page is half full: a second such row needs a page the cap forbids
    show = next_item(full, "ana", rng=random.Random(0))
    with pytest.raises(StoreError, match="full.*nothing from this operation was saved"):
        record_vote(full, "c-full", "ana", show.item_id, show.left_id, show.right_id, "left", rationale=note)
    assert [v["client_id"] for v in all_votes(db)] == ["c-ben"]
    with db.read() as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Once there is room, the same submission goes through (the failed one left no client_id behind).
    record_vote(db, "c-full", "ana", show.item_id, show.left_id, show.right_id, "left", rationale="because")
    assert len(all_votes(db)) == 2


def test_disk_full_mid_query_leaves_no_partial_rows(db):
    full = capped(db)
    passages = [Passage("small", "fits"), Passage("huge", "word " * 100_000)]
    with pytest.raises(StoreError, match="full"):
        add_query_with_passages(full, "a query", passages)  # query row and first passage fit; second not
    with db.read() as c:
        for table in ("queries", "passages", "query_passages"):
            assert c[table].count == 0, table
    # The same query with only the small passage fits under the same cap: the failure above came
    # part-way through the write, after rows that were then rolled back.
    qid = add_query_with_passages(full, "a query", passages[:1])
    with db.read() as c:
        assert (c["queries"].count, c["passages"].count, c["query_passages"].count) == (1, 1, 1)
    assert qid


