"""The leaderboard's data (racq.leaderboard) and the screen's refresh, on a real SQLite file with votes
whose answer is known: aligned beats sft beats base, two annotators overlap, one leans left.

    HF_HUB_OFFLINE=1 .venv/bin/pytest tests/test_leaderboard.py -q
"""

from __future__ import annotations

import random
import uuid

import numpy as np
import pytest

from racq.data import Passage
from racq.leaderboard import (annotator_table, bt_figure, format_text, leaderboard, matrix_table, stage_table)
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


def test_screen_refresh_and_layout(db):
    gr = pytest.importorskip("gradio")
    from racq.ui import leaderboard as screen

    summary, fig, stages, matrix, annotators, agreement = screen.refresh(db.path, n_boot=50)
    assert "34 votes" in summary and list(stages["stage"]) == ["aligned", "sft", "base", "aligned-r1"]
    assert list(matrix.columns)[1:] == ["aligned", "sft", "base"] and "Cohen" in agreement

    class Ctx:
        db_path, cfg = db.path, None

    with gr.Blocks() as demo:
        handle = screen.build(Ctx())
    assert len(handle["outputs"]) == 6 and handle["refresh"]()[0] == summary
    assert any(d.api_name == "leaderboard" for d in demo.fns.values())
