"""Blindness after the reveal and the one-transaction undo + withdraw, on real SQLite files.

    .venv/bin/pytest -q tests/test_blindness.py

With reveal on, a vote shows the annotator which stage wrote each question; the store records that
(table `reveals`) and the sampler never shows them either question again. Undoing a revealed vote
withdraws the item from them in the same transaction as the undo.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections import Counter

import pytest
import sqlite_utils

from racq.data import Passage
from racq.store import (WITHDRAWN, StoreError, add_annotator, add_candidate, add_query_with_passages,
                        all_votes, effective_votes, make_items, migrate, next_item, open_db, progress,
                        record_vote, stage_of_candidate, undo_last)

STAGES = ("base", "sft", "aligned")


def build_pool(db, n_queries: int, stages=STAGES) -> None:
    for q in range(n_queries):
        ps = [Passage(f"Title {q}", f"Passage about topic {q}.")]
        qid = add_query_with_passages(db, f"query {q}", ps, dataset="paqa", topic_id=str(q))
        for s in stages:
            add_candidate(db, qid, s, f"Which {s} meaning of topic {q}?")
    make_items(db)


@pytest.fixture
def db(tmp_path):
    store = open_db(tmp_path / "racq.db")
    for name in ("ana", "ben", "cat"):
        add_annotator(store, name)
    return store


def vote_through(db, who, rng, revealed: dict, outcome="left", overlap=0.2):
    """One showing for `who` and a vote with the reveal on; returns (showing, vote id) or None.
    Checks the showing against everything revealed to `who` so far, then adds its candidates."""
    show = next_item(db, who, rng=rng, overlap=overlap)
    if show is None:
        return None
    seen = revealed.setdefault(who, set())
    clash = {show.left_id, show.right_id} & seen
    vid = record_vote(db, uuid.uuid4().hex, who, show.item_id, show.left_id, show.right_id, outcome, reveal=True)
    seen |= {show.left_id, show.right_id}
    return show, vid, clash


def test_no_showing_holds_a_candidate_revealed_to_that_annotator(db):
    build_pool(db, 40)  # 40 queries x 3 stages = 120 items
    rng, revealed, clashes, shown = random.Random(7), {}, 0, 0
    while (got := vote_through(db, "ana", rng, revealed)) is not None:
        shown += 1
        clashes += bool(got[2])
    assert clashes == 0
    # one pair per query per annotator with three stages; every query is still reached
    assert shown == 40
    queries = Counter(v["query_id"] for v in effective_votes(db, "ana"))
    assert len(queries) == 40 and set(queries.values()) == {1}
    assert progress(db, "ana") == {"done": 40, "skipped": 0, "total": 40}
    # the pairs are spread over the three stage pairs, not stuck on one
    pairs = Counter(tuple(sorted((v["left_stage"], v["right_stage"]))) for v in effective_votes(db, "ana"))
    assert len(pairs) == 3 and max(pairs.values()) - min(pairs.values()) <= 2


def test_overlap_and_agreement_still_work_with_the_reveal_on(db):
    build_pool(db, 40)
    rng, revealed, clashes = random.Random(11), {}, 0
    who = ["ana", "ben", "cat"]
    for k in range(90):
        got = vote_through(db, who[k % 3], rng, revealed, overlap=0.3)
        assert got is not None
        clashes += bool(got[2])
    assert clashes == 0
    per_item = Counter(v["item_id"] for v in effective_votes(db))
    double = sum(n >= 2 for n in per_item.values()) / len(per_item)
    assert 0.2 <= double <= 0.4, double  # items judged by two people: agreement can be computed


def test_with_the_reveal_off_nothing_is_blocked(db):
    build_pool(db, 4)
    rng = random.Random(0)
    n = 0
    while (show := next_item(db, "ana", rng=rng)) is not None:
        record_vote(db, uuid.uuid4().hex, "ana", show.item_id, show.left_id, show.right_id, "tie")
        n += 1
    assert n == 12  # every pair of every query


def test_undo_of_a_revealed_vote_withdraws_the_item_in_the_same_write(db):
    build_pool(db, 3)
    rng, revealed = random.Random(1), {}
    first, v1, _ = vote_through(db, "ana", rng, revealed)
    undone = undo_last(db, "ana", client_id="undo-1")
    assert undone["id"] == v1 and undone["withdrawn"] is True
    assert undo_last(db, "ana", client_id="undo-1")["withdrawn"] is True  # a double click: same answer
    rows = [r for r in all_votes(db) if r["annotator"] == "ana"]
    assert [r["outcome"] for r in rows] == ["left", "undo", "skip"] and rows[2]["skip_reason"] == WITHDRAWN
    assert undo_last(db, "ana") is None  # a withdrawal is never undone
    assert all(s.item_id != first.item_id for s in [next_item(db, "ana", rng=rng)])
    # without a reveal the item comes back instead
    show = next_item(db, "ben", rng=rng)
    record_vote(db, "b1", "ben", show.item_id, show.left_id, show.right_id, "right")
    back = undo_last(db, "ben")
    assert back["withdrawn"] is False and next_item(db, "ben", rng=rng).redo


def test_a_failed_withdrawal_leaves_the_vote_as_it_was(db):
    """Inject a real failure into the second write of undo + withdraw: neither row lands."""
    build_pool(db, 2)
    rng, revealed = random.Random(2), {}
    _, v1, _ = vote_through(db, "ana", rng, revealed)
    with sqlite3.connect(db.path) as c:
        c.execute("CREATE TRIGGER fail_withdraw BEFORE INSERT ON votes WHEN NEW.outcome = 'skip' "
                  "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    before = all_votes(db)
    with pytest.raises(StoreError, match="injected failure"):
        undo_last(db, "ana", client_id="undo-x")
    assert all_votes(db) == before and [v["id"] for v in effective_votes(db)] == [v1]
    with sqlite3.connect(db.path) as c:
        c.execute("DROP TRIGGER fail_withdraw")
    assert undo_last(db, "ana", client_id="undo-x")["withdrawn"] is True  # the retry works whole


def test_reveals_are_append_only_and_recorded_with_the_vote(db):
    build_pool(db, 1)
    show = next_item(db, "ana", rng=random.Random(0))
    vid = record_vote(db, "c1", "ana", show.item_id, show.left_id, show.right_id, "left", reveal=True)
    with sqlite3.connect(db.path) as c:
        got = c.execute("SELECT candidate_id, vote_id FROM reveals ORDER BY candidate_id").fetchall()
        assert got == sorted([(show.left_id, vid), (show.right_id, vid)])
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            c.execute("DELETE FROM reveals")
    # a vote refused by the store reveals nothing
    with pytest.raises(StoreError):
        record_vote(db, "c2", "ana", show.item_id, show.left_id, show.right_id, "left", reveal=True)
    with sqlite3.connect(db.path) as c:
        assert c.execute("SELECT COUNT(*) FROM reveals").fetchone()[0] == 2


def test_an_upgraded_database_counts_old_votes_as_revealed(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    migrate(old, target=4)
    old.execute("INSERT INTO annotators (name) VALUES ('ana')")
    old.execute("INSERT INTO queries (text, passages_key) VALUES ('q', 'k')")
    old.execute("INSERT INTO candidates (query_id, stage, text) VALUES (1, 'base', 'a?'), (1, 'sft', 'b?'), "
                "(1, 'aligned', 'c?')")
    old.execute("INSERT INTO items (query_id, cand_a, cand_b) VALUES (1, 1, 2), (1, 1, 3), (1, 2, 3)")
    old.execute("INSERT INTO votes (client_id, annotator_id, item_id, left_candidate_id, right_candidate_id, "
                "outcome) VALUES ('c1', 1, 1, 2, 1, 'left')")
    old.close()
    store = open_db(path)
    assert next_item(store, "ana") is None  # both other items hold a candidate ana saw revealed
    assert {stage_of_candidate(store, c) for c in (1, 2)} == {"base", "sft"}


def test_every_connection_commits_with_synchronous_full(db):
    for ctx in (db.read, db.write):
        with ctx() as c:
            assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # 2 = FULL
