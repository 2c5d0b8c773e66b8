"""A round trained from the real app (`python app.py`) lands in that running app with no page open.

    PYTHONPATH=$PWD .venv/bin/pytest -q tests/test_round_app.py      # ~40 s: app start, 2 DPO steps, pool

An admin asks Explore (the model loads with base/sft/aligned), starts a round over the REST API and
disconnects mid-stream, as a closed browser tab does (Gradio then cancels that page's generator). The
round finishes on the server; a NEW client session then sees the job's log and result on the Feedback
screen, gets a question from `aligned-r1` in Explore, and adds that stage to the pool, all from the same
app process, never restarted.
"""

from __future__ import annotations

import json
import shutil
import uuid

import pytest

from apphelpers import AppServer, Rest, rows, synthetic_pool, until, write_config, write_users

ADMIN = ("ana", "ana-secret-token")
QUERY = "who played wolverine"


def _cards(outputs) -> dict[str, str]:
    """stage -> its Explore card's HTML, from explore_ask's final outputs (status, passages, cards)."""
    parts = outputs[2].split("<div class='racq-card' data-stage='")[1:]
    return {p.split("'", 1)[0]: p for p in parts}


@pytest.fixture
def app_dir(tmp_path, tiny_lm, tiny_adapters, passage_index):
    """Adapters, a voted pool (18 items, each 'left' by the admin), users, index and a 2-step DPO config."""
    from racq.store import add_annotator, open_db, record_vote

    shutil.copytree(tiny_adapters, tmp_path / "adapters")
    shutil.copytree(passage_index[0].index_dir, tmp_path / "index")
    db = open_db(tmp_path / "racq.db")
    synthetic_pool(db, 6)
    add_annotator(db, ADMIN[0], "admin")
    with db.read() as c:
        items = list(c.query("SELECT id, cand_a, cand_b FROM items ORDER BY id"))
    for it in items:
        record_vote(db, uuid.uuid4().hex, ADMIN[0], it["id"], it["cand_a"], it["cand_b"], "left")
    train = write_config(tmp_path / "train.yaml", run_dir=tmp_path / "run", max_steps=2, batch_size=2,
                         logging_steps=1, save_steps=100, warmup_steps=0)
    config = write_config(tmp_path / "app.yaml", db=db.path, base_model=tiny_lm, adapters_dir=tmp_path / "adapters",
                          index_dir=tmp_path / "index", check_index=False, preload=False, max_new_tokens=8,
                          users_file=write_users(tmp_path / "users.yaml", {ADMIN[0]: ("admin", ADMIN[1])}),
                          train_config=train)
    return {"db": db.path, "config": config, "log": tmp_path / "app.log", "n_queries": 6}


def _start_round_and_disconnect(url: str, session: str) -> None:
    """POST train_round, read the stream until the first progress update, then drop the connection."""
    import httpx

    with httpx.Client(timeout=60) as http:
        api = url + "gradio_api/call/train_round"
        r = http.post(api, json={"data": [0.0], "session_hash": session})
        assert r.status_code == 200, r.text
        with http.stream("GET", f"{api}/{r.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: generating"):
                    break  # the page saw the round start; now the tab is closed
                assert not line.startswith("event: error"), line


def test_a_round_started_then_abandoned_lands_in_the_running_app(app_dir):
    with AppServer(app_dir["config"], app_dir["log"]) as app:
        pid = app.proc.pid
        first, s1 = Rest(app.url), uuid.uuid4().hex
        first.call("annotate_sign_in", list(ADMIN), s1)
        before = _cards(first.call("explore_ask", [QUERY, 2], s1))  # loads the model: base, sft, aligned
        assert list(before) == ["base", "sft", "aligned"], before
        first.close()

        _start_round_and_disconnect(app.url, s1)
        done = until("the round to finish in the database", lambda: [
            r for r in rows(app_dir["db"], "SELECT * FROM training_rounds") if r["status"] != "running"])
        assert [(r["stage"], r["status"]) for r in done] == [("aligned-r1", "done")], done

        second, s2 = Rest(app.url), uuid.uuid4().hex  # a new page, after the round
        second.call("annotate_sign_in", list(ADMIN), s2)
        state = until("the job to load the stage", lambda: (lambda out: out if "New stage" in out[3] else None)(
            second.call("feedback_summary", [], s2)))
        summary, bar, log, message = state
        assert "`aligned-r1`" in message and "is loaded: Explore shows it now" in message, message
        assert "round: done" in bar and "loss" in log and f"round {done[0]['id']} done" in log, log

        cards = _cards(second.call("explore_ask", [QUERY, 2], s2))
        assert list(cards) == ["base", "sft", "aligned", "aligned-r1"], cards
        assert "racq-question" in cards["aligned-r1"] and "unavailable" not in cards["aligned-r1"], cards

        out = second.call("pool_build", [], s2)
        n = app_dir["n_queries"]
        assert f"Pool updated: {n} new questions" in out[2], json.dumps(out)
        made = rows(app_dir["db"], "SELECT round_id FROM candidates WHERE stage = 'aligned-r1'")
        assert len(made) == n and {c["round_id"] for c in made} == {done[0]["id"]}
        assert app.proc.poll() is None and app.proc.pid == pid  # the same process throughout
        second.close()
