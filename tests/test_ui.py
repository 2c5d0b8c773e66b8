"""The app's handlers without a browser: sign-in tokens, escaping, Explore's per-stage errors, and the
Annotate vote/undo/skip logic on a real SQLite file. (tests/test_ui_browser.py drives the real page.)"""

from __future__ import annotations

import re
import sys
import types

import pytest

from racq.config import load_config
from racq.data import Passage
from racq.store import add_candidate, add_query_with_passages, all_votes, make_items
from racq.ui import AppConfig, build_app, make_context, private_paths
from racq.ui import annotate, explore
from racq.ui.render import esc
from racq.ui.users import SignInError, add_user, check_sign_in, hash_token, load_users, verify_token

STAGE_WORDS = re.compile(r"\b(base|sft|aligned|uncond)\b", re.I)
INJECT = "<img src=x onerror=alert(1)> ${7*7}"


def test_tokens_are_salted_hashed_and_checked(tmp_path):
    h1, h2 = hash_token("s3cret"), hash_token("s3cret")
    assert h1 != h2 and "s3cret" not in h1  # a fresh salt each time, never the token itself
    assert verify_token("s3cret", h1) and not verify_token("S3cret", h1) and not verify_token("", h1)
    path = tmp_path / "users.yaml"
    token = add_user(path, "ana", "admin")
    add_user(path, "bob")
    users = load_users(path)
    assert check_sign_in(users, "ana", token) == "admin"
    with pytest.raises(SignInError) as wrong:
        check_sign_in(users, "ana", "nope")
    with pytest.raises(SignInError) as unknown:
        check_sign_in(users, "zed", token)
    assert str(wrong.value) == str(unknown.value)  # the page does not confirm which names exist
    assert check_sign_in(None, " ana ", "") == "annotator"  # auth off
    path.write_text("ana: {role: admin, token: plain-text}\n")
    with pytest.raises(ValueError, match="hash_token"):
        load_users(path)


def test_esc_leaves_no_markup_or_template():
    out = esc(INJECT + " {{x}}")
    assert "<" not in out and "${" not in out and "{{" not in out
    assert "&lt;img" in out


class _FakeStageModel:
    """Two stages; `sft` raises while generating; one stage failed to load."""

    stages = ["base", "sft"]
    errors = {"aligned": "adapter_config.json is unreadable"}
    adapter_hashes = {"base": "base", "sft": "s1"}
    prompt = None

    def passage_prompt(self, query, passages):
        return query

    def generate(self, prompts, stage, gen=None):
        if stage == "sft":
            raise RuntimeError("boom")
        return [f"Do you mean {INJECT}?"]


class _FakeIndex:
    def search(self, query, k):
        return [types.SimpleNamespace(rank=1, score=0.5, passage=Passage("T", INJECT))]


def _FakeAsker():  # noqa: N802 - the real Asker (one ask_stream for all stages) over fakes
    from racq.service import Asker

    return Asker(_FakeStageModel(), _FakeIndex(), engine="peft")


def test_explore_shows_each_stage_error_and_bad_query(tmp_path):
    ctx = make_context(AppConfig(db=str(tmp_path / "r.db"), adapters_dir=str(tmp_path)), asker=_FakeAsker())
    updates = list(explore.run_query(ctx, "who  won\x00", 3))
    status, passages, cards = updates[-1]
    assert "3 stages" in status and "control characters" in status
    assert "unavailable: RuntimeError: boom" in cards  # sft failed, the others still answered
    assert "unavailable: adapter_config.json is unreadable" in cards
    assert "Do you mean &lt;img" in cards and "<img" not in cards + passages
    assert len(updates) >= 4  # one update per stage before the final one: progress is visible
    (bad,) = list(explore.run_query(ctx, "   ", 3))
    assert "the query is empty" in bad[0] and bad[1:] == ("", "")


@pytest.fixture
def pool_ctx(tmp_path):
    ctx = make_context(AppConfig(db=str(tmp_path / "r.db"), adapters_dir=str(tmp_path)))
    for i in range(3):
        qid = add_query_with_passages(ctx.db, f"query {i}", [Passage("t", f"passage {i}")])
        add_candidate(ctx.db, qid, "sft", f"Is it A{i}?")
        add_candidate(ctx.db, qid, "aligned", f"Is it B{i}?")
    assert make_items(ctx.db) == 3
    return ctx


def test_annotate_is_blind_and_submits_once(pool_ctx):
    ctx, st = pool_ctx, annotate.new_state()
    user = annotate.sign_in(ctx, None, "ana", "")
    shown = annotate.show_next(ctx, user, st)
    assert not STAGE_WORDS.search(" ".join(str(v) for v in shown.values()))
    token = shown["shown"]
    assert annotate.vote(ctx, user, st, token, "skip", "", None)[0] is False  # a skip needs a reason
    ok, _, reveal = annotate.vote(ctx, user, st, token, "left", " because ", None)
    assert ok and STAGE_WORDS.search(reveal)  # revealed only once the vote is in
    assert annotate.vote(ctx, user, st, token, "left")[0] is False  # double click
    assert annotate.vote(ctx, user, st, token, "right")[0] is False  # a second key on the same showing
    assert annotate.vote(ctx, user, st, "not-a-token", "left")[0] is False
    nxt = annotate.show_next(ctx, user, st)
    ctx.cfg.reveal_after_vote = False  # stages not shown after a vote: an undone item comes back
    try:
        assert annotate.vote(ctx, user, st, nxt["shown"], "right")[0]
        after = annotate.show_next(ctx, user, st)
        assert annotate.undo(ctx, user, st, after["shown"])[0] is True
        assert annotate.undo(ctx, user, st, after["shown"])[0] is False  # double click on undo
        back = annotate.show_next(ctx, user, st)
        assert back["redo"] and back["left"] == nxt["left"] and back["right"] == nxt["right"]
        assert annotate.vote(ctx, user, st, back["shown"], "skip", "", "cannot judge / other")[0]
    finally:
        ctx.cfg.reveal_after_vote = True
    rows = all_votes(ctx.db)
    assert [r["outcome"] for r in rows] == ["left", "right", "undo", "skip"]
    assert rows[0]["rationale"] == "because" and rows[3]["skip_reason"] == "cannot judge / other"
    assert "2 / 3 done, 1 skipped" in annotate.progress_html(ctx, user)
    other = annotate.sign_in(ctx, None, "bob", "")
    assert "no votes yet" in annotate.my_votes_html(ctx, other)  # each annotator sees only their own


def test_undo_after_the_reveal_withdraws_the_item_instead_of_a_second_unblind_vote(pool_ctx):
    """The stages were shown after the vote: undo retracts it, the item goes to someone else, and a
    second undo takes back the vote before, never the withdrawal."""
    ctx, st = pool_ctx, annotate.new_state()
    assert ctx.cfg.reveal_after_vote
    user = annotate.sign_in(ctx, None, "cat", "")
    first = annotate.show_next(ctx, user, st)
    assert annotate.vote(ctx, user, st, first["shown"], "left")[2]  # revealed
    second = annotate.show_next(ctx, user, st)
    assert annotate.vote(ctx, user, st, second["shown"], "tie")[2]
    third = annotate.show_next(ctx, user, st)
    ok, msg, back = annotate.undo(ctx, user, st, third["shown"])
    assert ok and "another annotator" in msg and not back
    again = annotate.show_next(ctx, user, st)
    assert not again["redo"] and again["item"] == third["item"]  # still the unvoted third item
    ok, _, back = annotate.undo(ctx, user, st, again["shown"])  # the next undo: the first vote, not the withdrawal
    assert ok and not back
    mine = [r for r in all_votes(ctx.db) if r["annotator"] == "cat"]
    assert [r["outcome"] for r in mine] == ["left", "tie", "undo", "skip", "undo", "skip"]
    assert mine[2]["undoes_vote_id"] == mine[1]["id"] and mine[4]["undoes_vote_id"] == mine[0]["id"]
    assert mine[3]["skip_reason"] == mine[5]["skip_reason"] == annotate.WITHDRAWN
    assert mine[3]["item_id"] == mine[1]["item_id"] and mine[5]["item_id"] == mine[0]["item_id"]
    assert "2 / 3 done, 2 skipped" in annotate.progress_html(ctx, user)
    # the two withdrawn items are open to everyone else
    other, ost, seen = annotate.sign_in(ctx, None, "dan", ""), annotate.new_state(), set()
    while (show := annotate.show_next(ctx, other, ost))["shown"]:
        seen.add(show["item"])  # one item per query in this pool
        assert annotate.vote(ctx, other, ost, show["shown"], "left")[0]
    assert {first["item"], second["item"]} <= seen


def test_config_yaml_and_private_paths(tmp_path):
    y = tmp_path / "app.yaml"
    y.write_text(f"db: {tmp_path / 'a' / 'r.db'}\nstages: [sft, aligned]\nport: 7999\n")
    cfg = load_config(AppConfig, y, ["host=0.0.0.0"])
    assert cfg.stages == ["sft", "aligned"] and cfg.port == 7999 and cfg.host == "0.0.0.0"
    assert AppConfig().host == "127.0.0.1" and AppConfig().share is False
    blocked = private_paths(cfg)
    assert {str(tmp_path / "a" / "r.db"), str(tmp_path / "a" / "r.db-wal")} <= set(blocked)
    with pytest.raises(ValueError, match="unknown setting"):
        load_config(AppConfig, None, ["no_such=1"])


def test_app_builds_with_a_broken_extra_screen(tmp_path, monkeypatch):
    import racq.ui as ui

    broken = types.ModuleType("racq_test_broken_screen")
    broken.build = lambda ctx: 1 / 0
    monkeypatch.setitem(sys.modules, broken.__name__, broken)
    monkeypatch.setattr(ui, "extra_screens", lambda: [("Broken", broken.build, "tab-broken")])
    demo = build_app(AppConfig(db=str(tmp_path / "r.db"), adapters_dir=str(tmp_path)))
    config = str(demo.get_config_file())
    assert "Missing" not in config and "ZeroDivisionError" in config
    names = {d.get("api_name") for d in demo.get_config_file()["dependencies"]}
    assert {"explore_ask", "annotate_sign_in", "annotate_left", "annotate_skip", "annotate_undo"} <= names


def test_sign_in_tells_other_screens_who_is_admin(tmp_path):
    """Through a real server: the sign-in handler gets the gr.Request, so ctx.role(request) works for
    the Feedback screen's admin check; signing out forgets it."""
    from gradio_client import Client

    from apphelpers import serve

    users = tmp_path / "users.yaml"
    token = add_user(users, "ana", "admin")
    demo = build_app(AppConfig(db=str(tmp_path / "r.db"), adapters_dir=str(tmp_path), users_file=str(users)))
    with serve(demo) as url:  # a free port, not Gradio's scan from 7860 (a developer's `make demo` is there)
        client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
        client.predict("ana", token, api_name="/annotate_sign_in")
        ctx = demo.racq_context
        (session,) = ctx._users
        request = types.SimpleNamespace(session_hash=session)
        assert ctx.role(request) == "admin" and ctx.is_admin(request)
        client.predict(api_name="/annotate_sign_out")
        assert ctx.user(request) is None
