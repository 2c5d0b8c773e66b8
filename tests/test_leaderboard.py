"""The leaderboard's data (racq.annotation.standings) and the screen's refresh, on a real SQLite file with votes
whose answer is known: aligned beats sft beats base, two annotators overlap, one leans left. Then the
real app with a users file: what `/leaderboard` tells an annotator, a visitor and an admin.

    HF_HUB_OFFLINE=1 .venv/bin/pytest tests/test_leaderboard.py -q     # ~35 s, most of it two app starts
"""

from __future__ import annotations

import contextlib
import html
import json
import random
import re
import types
import uuid

import numpy as np
import pytest

from apphelpers import STAGE_WORDS, AppServer, Rest, shown_token, synthetic_pool, write_config, write_users
from racq.data import Passage
from racq.annotation import rating
from racq.annotation.standings import (annotator_table, bt_figure, format_text, leaderboard, matrix_table, provisional_notice,
                              stage_table)
from racq.store import add_annotator, add_candidate, add_query_with_passages, make_items, open_db, record_vote
from racq.store.scores import add_scores, stage_scores

RANK = {"base": 0, "sft": 1, "aligned": 2}  # the truth: higher wins
SUPPORT = {"base": 0.2, "sft": 0.6, "aligned": 0.9, "aligned-r1": 0.95}  # automatic scores, same order


@pytest.fixture
def db(tmp_path):
    db = open_db(tmp_path / "racq.db")
    for q in range(8):
        qid = add_query_with_passages(db, f"query {q}", [Passage(f"T{q}", f"Text {q}.")], dataset="paqa",
                                      topic_id=str(q))
        for s in (*RANK, "aligned-r1"):
            cid = add_candidate(db, qid, s, f"{s} question {q}?")
            add_scores(db, [(cid, "faith-test", {"option_support": SUPPORT[s], "hallucinated": int(s == "base"),
                                                 "n_options": 2, "parent_f1": 0.5})])
    make_items(db, stages=list(RANK))  # aligned-r1 has scores but no items yet: a stage just trained
    add_annotator(db, "ana")
    add_annotator(db, "ben")
    with db.read() as c:
        items = list(c.query("SELECT i.id, i.cand_a, i.cand_b, ca.stage AS sa, cb.stage AS sb FROM items i "
                             "JOIN candidates ca ON ca.id = i.cand_a JOIN candidates cb ON cb.id = i.cand_b "
                             "ORDER BY i.id"))
    rng = random.Random(0)

    def vote(who, it, flip=False, outcome=None, left_first=None):
        a_wins = (RANK[it["sa"]] > RANK[it["sb"]]) != flip
        left_is_a = rng.random() < 0.5 if left_first is None else left_first
        left, right = (it["cand_a"], it["cand_b"]) if left_is_a else (it["cand_b"], it["cand_a"])
        outcome = outcome or ("left" if a_wins == left_is_a else "right")
        record_vote(db, uuid.uuid4().hex, who, it["id"], left, right, outcome)

    for k, it in enumerate(items):
        vote("ana", it, flip=(k % 6 == 5))            # ana follows the truth 5 times in 6
    for k, it in enumerate(items[:10]):
        if k == 9:
            vote("ben", it, outcome="skip")
        elif k == 8:
            vote("ben", it, outcome="tie")
        else:                                         # ben always picks the left side
            a_wins = RANK[it["sa"]] > RANK[it["sb"]]
            vote("ben", it, left_first=a_wins, outcome="left")
    return db


def test_leaderboard_numbers(db):
    data = leaderboard(db, n_boot=300, seed=1)
    assert data["n_votes"] == 24 + 10 and data["n_games"] == 33
    assert [r["stage"] for r in data["bradley_terry"]] == ["aligned", "sft", "base"]
    for r in data["bradley_terry"]:
        assert r["ci_low"] <= r["rating"] <= r["ci_high"] and r["elo_low"] <= r["elo"] <= r["elo_high"]
    wr = data["win_rates"]
    assert wr["aligned"]["win_rate"] > wr["sft"]["win_rate"] > wr["base"]["win_rate"]
    m = data["matrix"]
    assert m["stages"] == ["aligned", "sft", "base"]
    np.testing.assert_allclose(np.add(m["wins"], np.transpose(m["wins"])), m["games"])
    ann = {a["annotator"]: a for a in data["annotators"]}
    assert ann["ana"]["votes"] == 24
    assert (ann["ben"]["tie"], ann["ben"]["skip"], ann["ben"]["right"]) == (1, 1, 0)
    ag = data["agreement"]
    assert ag["method"] == "cohen" and ag["annotators"] == ["ana", "ben"] and ag["items"] == 9  # skip not shared
    bias = data["position_bias"]
    assert bias["ben"]["share_left"] == 1.0 and bias["ben"]["biased"]
    assert 0.2 < bias["ana"]["share_left"] < 0.8
    assert set(data["auto"]) == {*RANK, "aligned-r1"} and data["auto"]["aligned"]["option_support"] == pytest.approx(0.9)
    avh = data["auto_vs_human"]
    assert avh["n"] == 3 and avh["kendall_tau"] == pytest.approx(1.0) and avh["spearman"] == pytest.approx(1.0)


def test_tables_and_text(db):
    data = leaderboard(db, n_boot=100)
    headers, rows = stage_table(data)
    assert [r[1] for r in rows] == ["aligned", "sft", "base", "aligned-r1"]  # unvoted stage last
    assert rows[-1][0] == "–" and rows[-1][headers.index("option support")] == "0.95"
    h, mrows = matrix_table(data)
    assert h[1:] == ["aligned", "sft", "base"] and mrows[0][1] == "" and "(" in mrows[0][2]
    _, arows = annotator_table(data)
    assert [r[0] for r in arows] == ["ana", "ben"] and arows[1][-1] == "yes"
    text = format_text(data)
    assert "Cohen's κ" in text and "Kendall τ = 1.00" in text and "aligned-r1" in text
    fig = bt_figure(data)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][-1].startswith("aligned")


def test_stages_whose_intervals_overlap_share_a_rank(db):
    """The case of the issue: 34 votes whose point estimates order aligned > sft > base, but aligned's
    and sft's 95% intervals overlap, so they share rank 1 (Arena's rule); base is apart, rank 3."""
    data = leaderboard(db, n_boot=300, seed=1)
    bt = data["bradley_terry"]
    aligned, sft, base = bt
    assert aligned["ci_low"] <= sft["ci_high"] and sft["ci_low"] > base["ci_high"]
    assert [(r["stage"], r["rank"]) for r in bt] == [("aligned", 1), ("sft", 1), ("base", 3)]
    assert [r["rank"] for r in bt] == rating.shared_ranks([(r["ci_low"], r["ci_high"]) for r in bt])
    headers, rows = stage_table(data)
    assert [r[:2] for r in rows] == [[1, "aligned"], [1, "sft"], [3, "base"], ["–", "aligned-r1"]]
    lines = format_text(data).splitlines()
    assert "overlapping intervals share a rank" in lines[lines.index("") + 1]
    assert [ln.split()[:2] for ln in lines if ln.split()[1:2] in (["aligned"], ["sft"], ["base"])][:3] == [
        ["1", "aligned"], ["1", "sft"], ["3", "base"]]


def test_a_notice_while_a_stage_pair_has_few_votes(db):
    """Every pair of the fixture has 11 votes (skips not counted): provisional under a threshold of 12,
    not at 11 or the default 10; the notice names the pairs and their votes."""
    data = leaderboard(db, n_boot=20, min_pair_votes=12)
    assert [p["votes"] for p in data["pair_votes"]] == [11, 11, 11] and data["provisional"]
    notice = ("The ranking is provisional: the pair aligned–base has 11 votes, the pair aligned–sft has 11 "
              "votes, the pair sft–base has 11 votes (fewer than 12 each).")
    assert data["notice"] == provisional_notice(data) == notice and notice in format_text(data)
    assert f"**{notice}**" in screen_summary(data)  # the admin's summary on the screen
    for over in (leaderboard(db, n_boot=20, min_pair_votes=11), leaderboard(db, n_boot=20)):
        assert not over["provisional"] and over["thin_pairs"] == [] and over["notice"] == ""
        assert "provisional" not in format_text(over) and "provisional" not in screen_summary(over)
    one = {"thin_pairs": [{"pair": ["sft", "base"], "votes": 3}], "min_pair_votes": 10}
    assert provisional_notice(one) == "The ranking is provisional: the pair sft–base has 3 votes (fewer than 10)."
    from racq.ui import AppConfig

    assert AppConfig().min_pair_votes == 10


def screen_summary(data) -> str:
    from racq.ui import leaderboard as screen

    return screen.full_view(data)[0]


def test_the_published_ranking_shares_ranks_and_says_provisional_without_counts(db):
    """The annotators' view (publish_ranking, sign-in on, not an admin): the admins' shared ranks, and
    'provisional' with no pair, count or threshold in it."""
    pytest.importorskip("gradio")
    from racq.ui import leaderboard as screen

    for min_pair_votes, provisional in ((12, True), (11, False)):
        ctx = types.SimpleNamespace(db=db, is_admin=lambda request: False, cfg=types.SimpleNamespace(
            users_file="users.yaml", publish_ranking=True, min_pair_votes=min_pair_votes))
        out = screen.refresh(ctx, None)
        assert out[0] == (screen.RANKING + "\n\n" + screen.PROVISIONAL if provisional else screen.RANKING)
        assert not re.search(r"\d", out[0])
        table = out[2]["value"]
        assert list(table.columns) == ["rank", "stage"]
        assert table.values.tolist() == [[1, "aligned"], [1, "sft"], [3, "base"]]
        assert screen.ranking_rows(db, min_pair_votes=min_pair_votes) == (table.values.tolist(), provisional)


def test_rate_prints_shared_ranks_and_the_notice(db):
    from typer.testing import CliRunner

    from racq.cli import app

    result = CliRunner().invoke(app, ["rate", "--db", str(db.path), "--n-boot", "300", "--min-pair-votes", "12"])
    assert result.exit_code == 0, result.output
    assert "The ranking is provisional: the pair aligned–base has 11 votes" in result.output
    ranks = {ln.split()[1]: ln.split()[0] for ln in result.output.splitlines() if len(ln.split()) > 2
             and ln.split()[1] in RANK and ln.split()[0] in ("1", "2", "3")}
    assert ranks == {"aligned": "1", "sft": "1", "base": "3"}
    result = CliRunner().invoke(app, ["rate", "--db", str(db.path), "--n-boot", "300", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [(r["stage"], r["rank"]) for r in data["bradley_terry"]] == [("aligned", 1), ("sft", 1), ("base", 3)]
    assert data["min_pair_votes"] == 10 and not data["provisional"] and data["notice"] == ""
    assert "provisional" not in CliRunner().invoke(app, ["rate", "--db", str(db.path), "--n-boot", "50"]).output


def test_an_empty_database_reads_cleanly(tmp_path):
    data = leaderboard(open_db(tmp_path / "empty.db"), n_boot=10)
    assert data["bradley_terry"] == [] and data["auto"] == {} and stage_table(data)[1] == []
    assert "No votes" in format_text(data)
    assert bt_figure(data).axes[0].texts[0].get_text() == "no votes yet"


def test_scores_are_kept_per_scorer_and_not_duplicated(db):
    with db.read() as c:
        cid = next(c.query("SELECT id FROM candidates WHERE stage = 'sft' ORDER BY id"))["id"]
    assert add_scores(db, [(cid, "faith-test", {"option_support": 0.0})]) == 0  # already scored: kept
    assert add_scores(db, [(cid, "faith-other", {"option_support": 0.0})]) == 1
    assert stage_scores(db)["sft"]["option_support"] == pytest.approx(0.6)  # the most used scorer
    other = stage_scores(db, "faith-other")
    assert list(other) == ["sft"] and other["sft"]["n"] == 1 and other["sft"]["option_support"] == 0.0


def test_screen_refresh_and_layout(db, tmp_path):
    """Without a users file (auth off) the screen shows everything, to anyone, as before."""
    gr = pytest.importorskip("gradio")
    from racq.ui import AppConfig, make_context
    from racq.ui import leaderboard as screen

    summary, fig, stages, matrix, annotators, agreement = screen.full_view(leaderboard(db, n_boot=50))
    assert "34 votes" in summary and list(stages["stage"]) == ["aligned", "sft", "base", "aligned-r1"]
    assert list(matrix.columns)[1:] == ["aligned", "sft", "base"] and "Cohen" in agreement
    assert list(annotators["annotator"]) == ["ana", "ben"]

    ctx = make_context(AppConfig(db=str(db.path), adapters_dir=str(tmp_path)))
    with gr.Blocks() as demo:
        handle = screen.build(ctx)
    assert len(handle["outputs"]) == 6
    out = handle["refresh"](types.SimpleNamespace(session_hash="nobody-signed-in"))
    assert out[0] == summary and all(u["visible"] for u in out[1:])
    assert list(out[4]["value"]["annotator"]) == ["ana", "ben"] and out[5]["value"] == agreement
    assert any(d.api_name == "leaderboard" for d in demo.fns.values())
    # The tables stay "str": Gradio renders those cells and headers as text, never as Markdown/HTML.
    assert all(c.datatype == "str" for c in handle["outputs"] if isinstance(c, gr.Dataframe))


EVIL = "**x** <img src=x onerror=alert(1)>"  # a name anyone may type when sign-in is off
MARKUP = EVIL + " [y](http://e.x) www.e.x $$a$$ `c` | d\n# h\n---"  # more syntax than a 64-character name holds


def _text(markdown: str) -> tuple[str, str]:
    """(HTML, its text) as CommonMark (with tables) renders `markdown`."""
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable("table").render(markdown)
    return rendered, html.unescape(re.sub(r"<[^>]+>", "", rendered))


def test_names_in_markdown_are_text(db):
    """An annotator's name reaches the agreement Markdown as literal text: no emphasis, tag, link,
    code span, table cell or heading comes out of it."""
    from racq.ui import leaderboard as screen
    from racq.ui.render import md_esc

    add_annotator(db, EVIL)
    with db.read() as c:
        it = next(c.query("SELECT id, cand_a, cand_b FROM items ORDER BY id"))
    record_vote(db, uuid.uuid4().hex, EVIL, it["id"], it["cand_a"], it["cand_b"], "left")
    rendered, text = _text(screen.full_view(leaderboard(db, n_boot=10))[5])
    assert "<img" not in rendered and "<strong" not in rendered and "<em" not in rendered, rendered
    assert text.count(EVIL) == 3  # in the list of annotators, and in its pairs with ana and with ben
    rendered, text = _text(md_esc(MARKUP))
    for tag in ("<strong", "<em", "<img", "<a ", "<code", "<h1", "<hr", "<table"):
        assert tag not in rendered, (tag, rendered)
    assert text.strip() == MARKUP.replace("\n", " ")
    assert md_esc(None) == "" and md_esc("ana") == "ana"


# ------------------------------------------------------------------ the real app, sign-in on
USERS = {"ana": ("admin", "ana-secret-token"), "bob": ("annotator", "bob-secret-token"),
         "cat": ("annotator", "cat-secret-token")}
NAMES = re.compile(r"\b(ana|bob|cat)\b")


@pytest.fixture
def voted_pool(tmp_path):
    """A synthetic pool of 18 items, 12 of which bob and cat both voted on (aligned > sft > base), and a
    users file. Per test: the first test votes, and the next must not depend on it."""
    db = open_db(tmp_path / "racq.db")
    synthetic_pool(db, 6)
    with db.read() as c:
        items = list(c.query("SELECT i.id, i.cand_a, i.cand_b, ca.stage AS sa, cb.stage AS sb FROM items i "
                             "JOIN candidates ca ON ca.id = i.cand_a JOIN candidates cb ON cb.id = i.cand_b "
                             "ORDER BY i.id LIMIT 12"))
    for who in ("bob", "cat"):
        add_annotator(db, who)
        for it in items:
            outcome = "left" if RANK[it["sa"]] > RANK[it["sb"]] else "right"
            record_vote(db, uuid.uuid4().hex, who, it["id"], it["cand_a"], it["cand_b"], outcome)
    (tmp_path / "adapters").mkdir()
    return {"root": tmp_path, "db": db.path, "users": write_users(tmp_path / "users.yaml", USERS)}


@contextlib.contextmanager
def _app(pool, publish: bool):
    config = write_config(pool["root"] / f"app-{publish}.yaml", db=pool["db"], users_file=pool["users"],
                          adapters_dir=pool["root"] / "adapters", preload=False, check_index=False,
                          publish_ranking=publish)
    with AppServer(config, pool["root"] / "app.log") as app:
        rest = Rest(app.url)
        try:
            yield rest
        finally:
            rest.close()


def _sign_in(rest, name) -> tuple[str, list]:
    session = uuid.uuid4().hex
    return session, rest.call("annotate_sign_in", [name, USERS[name][1]], session)


def _board(rest, session) -> tuple[list, str]:
    out = rest.call("leaderboard", [], session)
    return out, json.dumps(out, ensure_ascii=False)


def _assert_nothing_count_bearing(out, text):
    """No annotator name, no plot, no number in the summary, the admin-only tables hidden and empty."""
    assert not NAMES.search(text), text
    assert not re.search(r"\d", out[0]) and out[1]["value"] is None and not out[1]["visible"]
    for table in (out[3], out[4]):
        assert table["value"]["data"] == [] and not table["visible"]
    assert out[5]["value"] == "" and not out[5]["visible"]


def _assert_everything(out, text, n_votes):
    """The admin's view: counts, the plot, every table, the annotators by name and their agreement."""
    assert f"**{n_votes} votes**" in out[0] and all(u["visible"] for u in out[1:]) and out[1]["value"]
    assert out[2]["value"]["headers"][:3] == ["rank", "stage", "games"]
    assert out[3]["value"]["headers"] == ["row beats column", "aligned", "sft", "base"]
    assert [r[0] for r in out[4]["value"]["data"]] == ["bob", "cat"] and "bob & cat" in out[5]["value"]


def test_annotators_get_no_counts_and_no_ranking_until_it_is_published(voted_pool):
    from racq.ui.leaderboard import NOT_PUBLISHED

    with _app(voted_pool, publish=False) as rest:
        bob, signed_in = _sign_in(rest, "bob")
        for session in (bob, uuid.uuid4().hex):  # an annotator, and a visitor who never signed in
            out, text = _board(rest, session)
            assert out[0] == NOT_PUBLISHED and not STAGE_WORDS.search(text), text
            assert out[2]["value"]["data"] == [] and not out[2]["visible"]
            _assert_nothing_count_bearing(out, text)
        before = _board(rest, bob)[1]
        assert "recorded: left" in json.dumps(rest.call("annotate_left", [shown_token(signed_in), "", None], bob))
        assert _board(rest, bob)[1] == before  # nothing to diff around one's own vote
        out, text = _board(rest, _sign_in(rest, "ana")[0])
        _assert_everything(out, text, n_votes=2 * 12 + 1)


def test_a_published_ranking_shows_rank_and_stage_only(voted_pool):
    from racq.ui.leaderboard import PROVISIONAL, RANKING

    with _app(voted_pool, publish=True) as rest:
        for session in (_sign_in(rest, "cat")[0], uuid.uuid4().hex):
            out, text = _board(rest, session)
            # 8 votes per stage pair, under the default min_pair_votes of 10: provisional, no count
            assert out[0] == RANKING + "\n\n" + PROVISIONAL and out[2]["visible"]
            assert out[2]["value"]["headers"] == ["rank", "stage"]
            assert out[2]["value"]["data"] == [[1, "aligned"], [2, "sft"], [3, "base"]]
            _assert_nothing_count_bearing(out, text)
        out, text = _board(rest, _sign_in(rest, "ana")[0])
        _assert_everything(out, text, n_votes=2 * 12)
