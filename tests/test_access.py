"""Access: who may do what, driven through the real app (python app.py, users file on) over HTTP.

    .venv/bin/pytest -q tests/test_access.py          # ~30 s, most of it the app starting

Sign-in with hashed tokens, the admin role on the Feedback-training endpoints, annotators' votes kept
to themselves, private files off every route, blind annotate payloads (no stage name, no adapter hash
before a vote), and a loopback-only bind unless told otherwise.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from apphelpers import (REPO, STAGE_WORDS, AppServer, CallFailed, Rest, adapter_hash, rows, shown_token,
                        synthetic_pool, write_config, write_users)

TOKENS = {"ana": ("admin", "ana-secret-token"), "bob": ("annotator", "bob-secret-token"),
          "cat": ("annotator", "cat-secret-token"), "dan": ("annotator", "dan-secret-token"),
          "eve": ("annotator", "eve-secret-token")}  # eve: only the throttle test uses her
HASHES = [adapter_hash(s) for s in ("base", "sft", "aligned")]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_lm, tiny_adapters):
    """The app on a synthetic pool of 18 items, a users file, the tiny model and adapters, and a small
    index folder (so every kind of private file exists on disk)."""
    import numpy as np

    from racq.data import Passage
    from racq.retrieval import Index, RetrievalConfig
    from racq.store import open_db

    root = tmp_path_factory.mktemp("access")
    db = root / "racq.db"
    synthetic_pool(open_db(db), 6)
    users = write_users(root / "users.yaml", TOKENS)
    rc = RetrievalConfig(index_dir=str(root / "index"))
    hashed = lambda texts, **kw: np.array([[len(t) % 7 + 1.0, 1.0] for t in texts], np.float32)  # noqa: E731
    Index.build([Passage("Private", "an index passage"), Passage("B", "another")], hashed, rc,
                log=lambda m: None).save(rc.index_dir)
    config = write_config(root / "app.yaml", db=db, base_model=tiny_lm, adapters_dir=tiny_adapters,
                          index_dir=rc.index_dir, check_index=False, preload=False, users_file=users)
    with AppServer(config, root / "app.log") as app:
        rest = Rest(app.url)
        yield {"url": app.url, "rest": rest, "db": db, "users": users, "root": root, "port": app.port,
               "private": [db, Path(str(db) + "-wal"), users, Path(tiny_lm) / "config.json",
                           Path(tiny_lm) / "model.safetensors", Path(tiny_adapters) / "sft" / "adapter_model.safetensors",
                           Path(tiny_adapters) / "sft" / "adapter_config.json", Path(rc.index_dir) / "passages.jsonl",
                           Path(rc.index_dir) / "index.faiss", REPO / "annotations" / "guidelines.md",
                           REPO / "app.py"]}
        rest.close()


def sign_in(rest, name, token=None, session=None):
    session = session or uuid.uuid4().hex
    out = rest.call("annotate_sign_in", [name, TOKENS[name][1] if token is None else token], session)
    return session, out


def text_of(outputs) -> str:
    return json.dumps(outputs, ensure_ascii=False)


# ------------------------------------------------------------------ sign-in
def test_wrong_token_is_refused_and_the_right_one_accepted(served):
    rest, db = served["rest"], served["db"]
    for name, token in [("bob", "wrong"), ("bob", ""), ("bob", TOKENS["ana"][1]), ("zed", "anything"),
                        ("ana", TOKENS["ana"][1] + " ")]:
        _, out = sign_in(rest, name, token)
        assert "unknown name or wrong token" in text_of(out), (name, token)
        assert shown_token(out) is None  # no item, no work screen
    _, out = sign_in(rest, "zed", "x" * 257)  # refused before any hashing, with a reason
    assert "tokens are at most 256" in text_of(out) and shown_token(out) is None
    assert rows(db, "SELECT name FROM annotators WHERE name IN ('zed', 'bob')") == []  # refused: no row
    session, out = sign_in(rest, "bob")
    assert "Signed in as <b>bob</b>" in text_of(out) and shown_token(out)
    _, out = sign_in(rest, "ana")
    assert "(admin)" in text_of(out)
    # Without a sign-in (or after signing out) a session cannot vote.
    anon = uuid.uuid4().hex
    out = rest.call("annotate_left", [shown_token(out), "", None], anon)
    assert "sign in first" in text_of(out)
    rest.call("annotate_sign_out", [], session)
    assert "sign in first" in text_of(rest.call("annotate_left", ["0" * 32, "", None], session))


def test_repeated_wrong_tokens_lock_that_name_out_for_a_while(served):
    """5 failures for a name (the default limit) and even its right token is refused, with a message
    that says why and for how long; other names still sign in. (Unit tests: tests/test_signin.py.)"""
    rest, db = served["rest"], served["db"]
    for _ in range(5):
        _, out = sign_in(rest, "eve", "not-eves-token")
        assert "unknown name or wrong token" in text_of(out)
    _, out = sign_in(rest, "eve")
    assert "too many failed sign-ins for this name: try again in 15 min" in text_of(out)
    assert shown_token(out) is None and rows(db, "SELECT * FROM annotators WHERE name = 'eve'") == []
    _, out = sign_in(rest, "bob")
    assert "Signed in as <b>bob</b>" in text_of(out) and shown_token(out)


def test_a_client_cannot_forge_the_signed_in_user(served):
    """The user lives in server-side session state; extra data sent for it is ignored or refused."""
    rest = served["rest"]
    forged = {"name": "ana", "role": "admin"}
    session = uuid.uuid4().hex
    try:
        out = rest.call("annotate_left", ["0" * 32, "", None, forged, {"shown": {}, "used": []}], session)
        assert "sign in first" in text_of(out)
    except CallFailed:
        pass  # refused outright is fine too
    out = rest.call("train_round", [0.0], session)
    assert "Only an admin" in text_of(out)


# ------------------------------------------------------------------ admin-only training
def test_only_an_admin_may_train_or_build_the_pool(served):
    rest, db = served["rest"], served["db"]
    bob, _ = sign_in(rest, "bob")
    for session in (bob, uuid.uuid4().hex):  # a signed-in annotator, and nobody
        assert "Only an admin can train a round" in text_of(rest.call("train_round", [0.0], session))
        assert "Only an admin can build the pool" in text_of(rest.call("pool_build", [], session))
        assert "for admins" in text_of(rest.call("feedback_summary", [], session))
    assert rows(db, "SELECT * FROM training_rounds") == []  # nothing was started
    ana, _ = sign_in(rest, "ana")
    assert "usable human pairs" in text_of(rest.call("feedback_summary", [], ana))


# ------------------------------------------------------------------ Explore cannot unblind the pool
def test_explore_answers_pool_queries_for_admins_only(served):
    """Explore names each question's stage, so an annotator asking a pool query there would see which
    stage wrote which candidate: with sign-in on, such a query is refused unless an admin asks."""
    rest = served["rest"]
    pool_query = "  What is TOPIC 3 "  # case and spacing do not get round it
    for session in (sign_in(rest, "bob")[0], uuid.uuid4().hex):  # an annotator, and nobody signed in
        out = text_of(rest.call("explore_ask", [pool_query, 2], session))
        assert "in the annotation pool" in out and "data-stage" not in out
    ana, _ = sign_in(rest, "ana")
    out = text_of(rest.call("explore_ask", [pool_query, 2], ana))
    assert "in the annotation pool" not in out and "data-stage" in out, out  # the admin gets stage cards
    bob, _ = sign_in(rest, "bob")
    out = text_of(rest.call("explore_ask", ["what is topic 99", 2], bob))  # not a pool query
    assert "in the annotation pool" not in out and "data-stage" in out


# ------------------------------------------------------------------ votes stay private
def test_annotators_cannot_read_each_others_votes(served):
    rest, db = served["rest"], served["db"]
    secret = f"cat-rationale-{uuid.uuid4().hex}"
    cat, out = sign_in(rest, "cat")
    cat_token = shown_token(out)
    out = rest.call("annotate_right", [cat_token, secret, None], cat)
    assert "recorded: right is better" in text_of(out) and secret in text_of(out)  # cat sees her own
    cat_next = shown_token(out)
    bob, out = sign_in(rest, "bob")
    seen = [text_of(out)]
    # bob cannot act on cat's showings: they are not in his session
    out = rest.call("annotate_left", [cat_next, "", None], bob)
    seen.append(text_of(out))
    assert "no longer on screen" in seen[-1]
    seen.append(text_of(rest.call("annotate_undo", [shown_token(json.loads(seen[0]))], bob)))
    assert "nothing to undo" in seen[-1]  # his undo never reaches cat's vote
    seen.append(text_of(rest.call("leaderboard", [], bob)))
    seen.append(text_of(rest.call("feedback_summary", [], bob)))
    assert not any(secret in s or cat_token in s for s in seen)
    cat_votes = rows(db, "SELECT v.* FROM votes v JOIN annotators a ON a.id = v.annotator_id WHERE a.name = 'cat'")
    assert [(v["outcome"], v["rationale"], v["client_id"]) for v in cat_votes] == [("right", secret, cat_token)]


# ------------------------------------------------------------------ blind payloads
def _without_reveal(outputs: list) -> str:
    """The payload minus the one element that reveals the pair just voted on (by design, after the vote)."""
    return text_of([v for v in outputs if not (isinstance(v, str) and v.startswith("<div>Recorded:"))])


def test_annotate_payloads_name_no_stage_and_no_adapter_before_a_vote(served):
    rest = served["rest"]
    session = uuid.uuid4().hex
    raws = []

    def call(api, data):
        events, raw = rest.events(api, data, session)
        raws.append(raw)
        assert events and events[-1][0] == "complete", (api, events)
        return events[-1][1]

    out = call("annotate_sign_in", ["dan", TOKENS["dan"][1]])
    assert not STAGE_WORDS.search(raws[-1]), raws[-1]
    token = shown_token(out)
    call("annotate_skip", [token, "", None])  # refused: a skip needs a reason
    call("annotate_left", ["f" * 32, "", None])  # unknown showing
    call("annotate_undo", [""])  # nothing on screen to undo
    pre_vote = "".join(raws)
    assert not STAGE_WORDS.search(pre_vote), pre_vote
    for outcome in ("left", "tie", "both_bad", "right"):
        out = call(f"annotate_{outcome}", [token, "", None])
        assert "recorded: " in text_of(out)
        again = call("annotate_left", [token, "", None])  # a double submit of the same showing
        assert "already recorded" in text_of(again) and not STAGE_WORDS.search(text_of(again))
        assert STAGE_WORDS.search(text_of(out))  # the reveal of the pair just voted on
        assert not STAGE_WORDS.search(_without_reveal(out)), out  # ... and nothing about the next one
        token = shown_token(out)
    out = call("annotate_skip", [token, "", "cannot judge / other"])
    assert not STAGE_WORDS.search(_without_reveal(out))
    out = call("annotate_undo", [shown_token(out)])
    assert "undid" in text_of(out) and not STAGE_WORDS.search(_without_reveal(out))
    call("annotate_sign_out", [])
    votes = rows(served["db"], "SELECT v.outcome, v.client_id FROM votes v JOIN annotators a "
                               "ON a.id = v.annotator_id WHERE a.name = 'dan' ORDER BY v.id")
    # the undone skip had been revealed: the item is withdrawn from dan (a second skip), not re-served
    assert [v["outcome"] for v in votes] == ["left", "tie", "both_bad", "right", "skip", "undo", "skip"]
    assert len({v["client_id"] for v in votes}) == 7  # each showing recorded once, plus the withdrawal
    everything = "".join(raws)
    assert not any(h in everything for h in HASHES)  # adapter hashes never leave the server
    with urllib.request.urlopen(served["url"] + "config", timeout=10) as r:
        assert not any(h.encode() in r.read() for h in HASHES)


# ------------------------------------------------------------------ files
def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_private_files_are_never_served(served):
    url = served["url"]
    for path in served["private"]:
        head = path.read_bytes()[:16] if path.exists() else b""
        if len(head) < 16:  # the -wal file: empty or gone once the last connection closed
            assert path.name.endswith("-wal"), path
            continue
        rel = Path(*path.parts[1:])
        routes = [f"gradio_api/file={path}", f"file={path}", f"gradio_api/file={urllib.parse.quote(str(path))}",
                  f"gradio_api/file={urllib.parse.quote(str(path), safe='')}", f"gradio_api/file=../../../../../../{rel}",
                  f"gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/{rel}", f"file=/./{rel}",
                  f"gradio_api/file={path.parent}/./{path.name}", f"gradio_api/file={path.name}",
                  f"static/../../../../../../{rel}", f"assets/..%2f..%2f..%2f..%2f..%2f..%2f{rel}",
                  f"gradio_api/file={str(path).upper()}", path.name, f"gradio_api/{path.name}"]
        for route in routes:
            status, body = _get(url + route)
            assert not (status == 200 and head in body), f"{route} served {path}"
    status, body = _get(url + "gradio_api/file=" + urllib.parse.quote(str(served["users"])))
    assert b"pbkdf2_sha256" not in body


# ------------------------------------------------------------------ network
def _listening(port: int) -> list[str]:
    """Local addresses with a LISTEN socket on `port`, from /proc/net/tcp{,6}."""
    out = []
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if int(p, 16) == port and state == "0A":
                out.append(addr)
    return out


def test_the_app_binds_loopback_unless_told_otherwise(served, tmp_path, monkeypatch):
    import importlib.util

    import gradio as gr

    import racq.ui as ui
    from racq.ui import AppConfig

    spec = importlib.util.spec_from_file_location("racq_app_main", REPO / "app.py")
    app_main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app_main)
    assert AppConfig().host == "127.0.0.1" and AppConfig().share is False
    addrs = _listening(served["port"])
    if addrs:  # Linux: the running app listens on 127.0.0.1 only
        assert set(addrs) == {"0100007F"}, addrs
    got = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: got.update(kw))
    ui.launch(AppConfig(db=str(tmp_path / "r.db"), adapters_dir=str(tmp_path), preload=False))
    assert got["server_name"] == "127.0.0.1" and got["share"] is False and got["mcp_server"] is False
    assert str(tmp_path / "r.db") in got["blocked_paths"] and got["allowed_paths"] == []
    seen = []
    monkeypatch.setattr(ui, "launch", lambda cfg: seen.append(cfg))
    assert app_main.main(["--db", str(tmp_path / "r.db")]) == 0
    assert app_main.main(["--db", str(tmp_path / "r.db"), "--host", "0.0.0.0"]) == 0
    assert [c.host for c in seen] == ["127.0.0.1", "0.0.0.0"] and not any(c.share for c in seen)
