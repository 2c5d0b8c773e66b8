"""Faults the app must survive: kill -9 mid-vote, a full disk, a database from an older racq, a corrupt
index, missing or corrupt adapters. (Kill/resume of `racq train all` is in tests/test_train.py.)

    .venv/bin/pytest -q tests/test_faults.py
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
import uuid
from collections import Counter

import pytest
import sqlite_utils

from apphelpers import (AppServer, Rest, integrity, one_torch_thread, rows, serve, shown_token, synthetic_pool,
                        write_config)
from racq.store import MIGRATIONS, migrate, open_db
from racq.ui import AppConfig, annotate, build_app, make_context
from racq.ui.explore import run_query

OUTCOMES = ("left", "right", "tie", "both_bad")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


# ------------------------------------------------------------------ (a) kill -9 while votes stream in
def test_kill_9_mid_stream_loses_no_acknowledged_vote(tmp_path, tiny_lm):
    db = tmp_path / "racq.db"
    synthetic_pool(open_db(db), 20)
    config = write_config(tmp_path / "app.yaml", db=db, base_model=tiny_lm, adapters_dir=tmp_path / "adapters",
                          index_dir=tmp_path / "index", check_index=False, preload=False)
    app = AppServer(config, tmp_path / "app.log").start()
    rest = Rest(app.url, timeout=30)
    acked, failed, finished, lock = [], [], [], threading.Lock()
    enough = threading.Event()  # set at 24 acknowledged votes (or when no annotator is left to reach them)
    n_threads = 6

    def annotator(k: int) -> None:
        session = uuid.uuid4().hex
        try:
            token = shown_token(rest.call("annotate_sign_in", [f"a{k}", ""], session))
            while token:
                out = rest.call(f"annotate_{OUTCOMES[k % 4]}", [token, f"reason {k}", None], session)
                if "recorded: " in json.dumps(out):
                    with lock:
                        acked.append(token)
                        if len(acked) >= 24:
                            enough.set()
                token = shown_token(out)
            with lock:
                finished.append(k)  # ran out of items: never cut off
        except Exception as e:  # noqa: BLE001 - the server died under this call: never acknowledged
            with lock:
                failed.append(type(e).__name__)
        finally:
            with lock:
                if len(failed) + len(finished) == n_threads:
                    enough.set()  # nobody left to vote: don't wait out the timeout

    threads = [threading.Thread(target=annotator, args=(k,), daemon=True) for k in range(n_threads)]
    try:
        for t in threads:
            t.start()
        assert enough.wait(300), f"24 acknowledged votes not reached in 300 s ({len(acked)} acked)"
        assert len(acked) >= 24, f"annotators stopped at {len(acked)} acked votes: {failed=} {finished=}"
        app.kill9()  # votes are in flight right now
        deadline = time.monotonic() + 120
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not [t for t in threads if t.is_alive()], "annotator threads still running 120 s after the kill"
        assert finished == [] and len(failed) == n_threads, (finished, failed)  # every annotator was cut off
        assert integrity(db) == "ok"
        stored = Counter(r["client_id"] for r in rows(db, "SELECT client_id FROM votes"))
        assert [t for t in acked if stored[t] != 1] == []  # every acknowledged vote, exactly once
        assert set(stored.values()) == {1}

        app = AppServer(config, tmp_path / "app.log").start()  # same database, fresh process
        rest2 = Rest(app.url)
        mine = rows(db, "SELECT COUNT(*) AS n FROM votes v JOIN annotators a ON a.id = v.annotator_id "
                        "WHERE a.name = 'a0'")[0]["n"]
        out = rest2.call("annotate_sign_in", ["a0", ""], "after-restart")
        # the restarted app counts what survived; each of a0's votes (one per query) also took the two
        # other pairs of its query out of a0's share, since a0 saw those questions' stages
        assert f"{mine} / {60 - 2 * mine} done" in json.dumps(out)
        out = rest2.call("annotate_tie", [shown_token(out), "", None], "after-restart")
        assert "recorded: both good / tie" in json.dumps(out)
        assert len(rows(db, "SELECT id FROM votes")) == sum(stored.values()) + 1
        assert integrity(db) == "ok"
        rest2.close()
    finally:
        app.stop()
        rest.close()


# ------------------------------------------------------------------ (b) a full disk
def test_a_vote_on_a_full_disk_gets_a_clear_error_and_writes_nothing(tmp_path):
    db = tmp_path / "racq.db"
    synthetic_pool(open_db(db), 3)
    demo = build_app(AppConfig(db=str(db), adapters_dir=str(tmp_path), check_index=False, preload=False))
    ctx = demo.racq_context
    with serve(demo) as url:
        rest, session = Rest(url), uuid.uuid4().hex
        first = shown_token(rest.call("annotate_sign_in", ["ana", ""], session))
        note = "because " * 250  # 2,000 characters, the most a vote keeps
        token = shown_token(rest.call("annotate_right", [first, note, None], session))  # votes page half full
        pages = rows(db, "PRAGMA page_count")[0]["page_count"]
        ctx.db = open_db(db, pragmas={"max_page_count": pages})  # the file may not grow by one page
        out = json.dumps(rest.call("annotate_left", [token, note, None], session))  # needs a new page
        assert "not saved" in out and "full" in out and "nothing from this operation was saved" in out
        assert "free space and retry" in out
        assert [v["client_id"] for v in rows(db, "SELECT * FROM votes")] == [first] and integrity(db) == "ok"
        ctx.db = open_db(db)  # space is back: the same showing (still on screen) records normally
        out = json.dumps(rest.call("annotate_left", [token, "because", None], session))
        assert "recorded: left is better" in out
        assert [(v["client_id"], v["rationale"]) for v in rows(db, "SELECT * FROM votes")] == [
            (first, note.strip()), (token, "because")]
        rest.close()


# ------------------------------------------------------------------ (c) a database from an older racq
def _old_database(path, target: int) -> dict:
    """A file at migration `target`, filled with that schema's plain SQL; returns its rows per table."""
    db = sqlite_utils.Database(sqlite3.connect(path, isolation_level=None))
    migrate(db, target=target)
    run = db.execute
    run("INSERT INTO annotators (name, role) VALUES ('ana', 'annotator'), ('boss', 'admin')")
    for q in range(3):
        qid = run("INSERT INTO queries (text, dataset, topic_id, passages_key) VALUES (?, 'paqa', ?, ?)",
                  [f"old query {q}", str(q), f"key{q}"]).lastrowid
        run("INSERT INTO passages (pid, title, text) VALUES (?, ?, ?)", [f"p{q}", f"T{q}", f"old passage {q}"])
        run("INSERT INTO query_passages (query_id, pid, rank, score) VALUES (?, ?, 0, 0.5)", [qid, f"p{q}"])
        ids = [run("INSERT INTO candidates (query_id, stage, adapter_hash, decoding, text) VALUES (?, ?, 'h', '{}', ?)",
                   [qid, s, f"Old question {j} for {q}?"]).lastrowid for j, s in enumerate(("base", "sft", "aligned"))]
        for a, b in ((0, 1), (1, 2), (0, 2)):
            run("INSERT INTO items (query_id, cand_a, cand_b) VALUES (?, ?, ?)", [qid, ids[a], ids[b]])
    run("INSERT INTO votes (client_id, annotator_id, item_id, left_candidate_id, right_candidate_id, outcome, "
        "rationale) VALUES ('old-vote', 1, 1, 2, 1, 'right', 'kept from the old version')")
    tables = ["annotators", "queries", "passages", "query_passages", "candidates", "items", "votes"]
    before = {t: list(db.query(f"SELECT * FROM {t} ORDER BY rowid")) for t in tables}
    db.close()
    return before


@pytest.mark.parametrize("target", [1, 2, 3])
def test_an_older_database_is_upgraded_by_the_app_and_keeps_its_rows(tmp_path, target):
    path = tmp_path / "old.db"
    before = _old_database(path, target)
    ctx = build_app(AppConfig(db=str(path), adapters_dir=str(tmp_path), check_index=False, preload=False)).racq_context
    assert [r["number"] for r in rows(path, "SELECT number FROM migrations ORDER BY number")] == [m[0] for m in MIGRATIONS]
    for table, old in before.items():
        now = rows(path, f"SELECT * FROM {table} ORDER BY rowid")
        assert [{k: r[k] for k in o} for r, o in zip(now, old)] == old and len(now) == len(old), table
    user = annotate.sign_in(ctx, None, "ana", "")
    st = annotate.new_state()
    shown = annotate.show_next(ctx, user, st)
    # the old vote counts; the two other pairs of its query hold a question whose stage ana was shown
    # (old votes count as revealed), so 7 of the 9 items are hers to judge
    assert "1 / 7 done" in shown["progress"]
    ok, msg, _ = annotate.vote(ctx, user, st, shown["shown"], "tie")
    assert ok and "kept from the old version" in annotate.my_votes_html(ctx, user)
    assert integrity(path) == "ok"


# ------------------------------------------------------------------ (d) a corrupt index
def test_a_corrupt_index_names_the_fix_and_the_app_recovers_after_a_rebuild(tmp_path, tiny_lm, tiny_adapters,
                                                                            passage_index):
    from racq.retrieval import load_or_build

    rc, passages = passage_index
    index_dir = tmp_path / "index"
    shutil.copytree(rc.index_dir, index_dir)
    faiss_file = index_dir / "index.faiss"
    faiss_file.write_bytes(faiss_file.read_bytes()[:100])  # truncated
    db = tmp_path / "racq.db"
    synthetic_pool(open_db(db), 2)
    cfg = AppConfig(db=str(db), base_model=str(tiny_lm), adapters_dir=str(tiny_adapters), index_dir=str(index_dir),
                    check_index=False, score=False, max_new_tokens=4, preload=False)
    ctx = make_context(cfg)
    status, _, _ = list(run_query(ctx, "who played wolverine", 3))[-1]
    assert "IndexCorrupt" in status and "racq index build" in status and str(index_dir) in status
    user = annotate.sign_in(ctx, None, "ana", "")  # annotation does not need the index
    st = annotate.new_state()
    assert annotate.vote(ctx, user, st, annotate.show_next(ctx, user, st)["shown"], "left")[0]

    logs = []
    index = load_or_build(cfg.retrieval_config(), passages=passages, log=logs.append)
    assert index.source == "built"
    assert any("racq index build" in m and "Rebuilding" in m for m in logs), logs
    status, found, cards = list(run_query(ctx, "who played wolverine", 3))[-1]  # same app, no restart
    assert "3 stages" in status and "Hugh Jackman" in found and cards.count("class='racq-question'") == 3


# ------------------------------------------------------------------ (e) missing or corrupt adapters
def test_broken_adapters_are_marked_unavailable_and_the_app_keeps_running(tmp_path, tiny_lm, tiny_adapters,
                                                                         passage_index):
    rc, _ = passage_index
    adapters = tmp_path / "adapters"
    for name, src in (("sft", "sft"), ("aligned", "aligned"), ("aligned-r1", "aligned")):
        shutil.copytree(tiny_adapters / src, adapters / name)
    (adapters / "aligned" / "adapter_model.safetensors").write_bytes(b"\x00 not a safetensors file")
    (adapters / "aligned-r1" / "adapter_model.safetensors").unlink()  # weights missing
    db = tmp_path / "racq.db"
    synthetic_pool(open_db(db), 2)
    wanted = ["base", "sft", "aligned", "aligned-r1", "aligned-r2"]  # aligned-r2: not on disk at all
    demo = build_app(AppConfig(db=str(db), base_model=str(tiny_lm), adapters_dir=str(adapters),
                               index_dir=rc.index_dir, check_index=False, score=False, max_new_tokens=4,
                               preload=False, stages=wanted))
    with serve(demo) as url:
        rest = Rest(url)
        for _ in range(2):  # and again: a broken stage stays an error card, nothing crashes
            status, _, cards = rest.call("explore_ask", ["who played wolverine", 3])
            assert "5 stages" in status, status
            for stage in wanted:
                card = cards.split(f"data-stage='{stage}'>")[1].split("<div class='racq-card'")[0]
                if stage in ("base", "sft"):
                    assert "racq-question" in card and "unavailable" not in card, stage
                else:
                    assert "unavailable: " in card, (stage, card)
        assert "no adapter" in cards.split("data-stage='aligned-r2'>")[1]
        session = uuid.uuid4().hex  # annotation goes on
        token = shown_token(rest.call("annotate_sign_in", ["ana", ""], session))
        assert "recorded" in json.dumps(rest.call("annotate_right", [token, "", None], session))
        rest.close()
