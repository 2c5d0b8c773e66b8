"""Exports in CSV and their dataset cards (racq.annotation.datacard), on a real SQLite file: the card's counts are
the database's, the CSV parses with the csv module, the card names the passages' licence and never
overwrites a README it did not write; and the README's read-only `sqlite-utils` commands run as
documented.

    .venv/bin/pytest -q tests/test_export_card.py       # ~10 s
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apphelpers import REPO, rows, synthetic_pool
from racq.annotation import rating
from racq.data import Passage, load_examples
from racq.annotation.datacard import card_path
from racq.annotation.prefs import export_prefs, export_votes
from racq.store import (add_annotator, add_candidate, add_query_with_passages, effective_votes,
                        finish_round, link_round_votes, make_items, open_db, preference_pairs,
                        record_round, record_vote, undo_last)

# (annotator, item index, outcome): ana and bob agree on items 0 and 9, disagree on 1, tie on 2
VOTES = [("ana", 0, "left"), ("bob", 0, "left"), ("ana", 1, "right"), ("bob", 1, "left"), ("ana", 2, "tie"),
         ("bob", 2, "tie"), ("ana", 3, "both_bad"), ("cat", 4, "skip"), ("cat", 5, "right"), ("cat", 6, "left"),
         ("ana", 9, "left"), ("bob", 9, "left")]


@pytest.fixture
def db(tmp_path):
    """A pool of 3 synthetic queries plus one whose passages are from the shipped corpus, the votes
    above, an undone vote, and a finished round trained on the first two votes."""
    store = open_db(tmp_path / "racq.db")
    synthetic_pool(store, 3)
    shipped = load_examples(["paqa"], limit=1)[0]
    qid = add_query_with_passages(store, shipped.query, shipped.passages[:2], dataset="paqa", topic_id="s")
    for s in ("base", "sft", "aligned"):
        add_candidate(store, qid, s, f"Which reading of the shipped query, {s}?")
    make_items(store)
    items = rows(store.path, "SELECT id, cand_a, cand_b FROM items ORDER BY id")
    for name in ("ana", "bob", "cat"):
        add_annotator(store, name)
    for k, (name, i, outcome) in enumerate(VOTES):
        it = items[i]
        left, right = (it["cand_a"], it["cand_b"]) if i % 2 else (it["cand_b"], it["cand_a"])  # per item
        record_vote(store, f"v{k}", name, it["id"], left, right, outcome,
                    skip_reason="x" if outcome == "skip" else None)
    undo_last(store, "cat")  # cat's item-6 vote: undone, so raw and effective counts differ
    rid = record_round(store, "aligned-r1", "aligned")
    link_round_votes(store, rid, [1, 2])
    finish_round(store, rid)
    new = add_candidate(store, qid, "aligned-r1", "Which reading, after the round?")  # lineage: round rid
    assert make_items(store) == 3
    (item,) = rows(store.path, "SELECT id, cand_a, cand_b FROM items WHERE cand_b = ? ORDER BY id LIMIT 1", [new])
    add_annotator(store, "dan")
    record_vote(store, "v-dan", "dan", item["id"], item["cand_a"], new, "tie")
    return store


def card_table(text: str, after: str) -> dict[str, dict[str, str]]:
    """The first Markdown table after the line holding `after`: {first cell: {header: cell}}."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    table = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip("|").split(" | ")])
        elif table:
            break
    header, _, *body = table
    return {row[0]: dict(zip(header, row)) for row in body}


def expected_outcomes(db_path: Path, effective: bool) -> dict[str, dict[str, str]]:
    """Per 'A vs B' stage pair, the card's columns, counted straight from the votes table."""
    where = (" WHERE v.outcome != 'undo' AND v.id NOT IN (SELECT undoes_vote_id FROM votes "
             "WHERE undoes_vote_id IS NOT NULL)") if effective else ""
    out: dict[str, Counter] = {}
    for r in rows(db_path, "SELECT cl.stage AS ls, cr.stage AS rs, v.outcome FROM votes v JOIN candidates cl "
                           "ON cl.id = v.left_candidate_id JOIN candidates cr ON cr.id = v.right_candidate_id" + where):
        a, b = sorted((r["ls"], r["rs"]))
        o = r["outcome"]
        col = {"tie": "tie", "both_bad": "both bad", "skip": "skip", "undo": "undo"}.get(o)
        if col is None:
            col = "A better" if (r["ls"] if o == "left" else r["rs"]) == a else "B better"
        out.setdefault(f"{a} vs {b}", Counter())[col] += 1
    return {pair: {k: str(v) for k, v in c.items()} | {"total": str(sum(c.values()))} for pair, c in out.items()}


def _subset(card: dict, expected: dict) -> dict:
    """The card's rows restricted to the expected columns, empty counts as '0' on both sides."""
    cols = {k for e in expected.values() for k in e}
    return {pair: {k: v for k, v in row.items() if k in cols and v != "0"} for pair, row in card.items()}


def test_votes_csv_and_its_card_count_what_the_database_holds(db, tmp_path):
    out = tmp_path / "out" / "votes.csv"
    card = card_path(out)
    assert card == out.parent / "README.md"
    n = export_votes(db, out, card=card)  # format from the suffix
    with open(out, newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    raw = rows(db.path, "SELECT id, outcome, skip_reason, undoes_vote_id FROM votes ORDER BY id")
    assert n == len(got) == len(raw) == len(VOTES) + 2  # + cat's undo row + dan's vote
    assert [(int(r["id"]), r["outcome"], r["skip_reason"] or None) for r in got] == [
        (r["id"], r["outcome"], r["skip_reason"]) for r in raw]
    assert got[-2]["undoes_vote_id"] == "10" and got[0]["undoes_vote_id"] == ""  # None: an empty cell

    text = card.read_text(encoding="utf-8")
    assert text.startswith("<!-- racq dataset card for votes.csv -->") and f"{n} rows" in text
    assert _subset(card_table(text, "Rows of this file"), expected_outcomes(db.path, False)) == \
        expected_outcomes(db.path, False)
    assert _subset(card_table(text, "effective votes of the whole database"), expected_outcomes(db.path, True)) == \
        expected_outcomes(db.path, True)
    people = card_table(text, "## Annotators")
    per = {r["name"]: r["n"] for r in rows(db.path, "SELECT a.name, COUNT(*) AS n FROM votes v JOIN annotators a "
                                                    "ON a.id = v.annotator_id GROUP BY a.name")}
    assert {name: int(row["rows"]) for name, row in people.items()} == per == {"ana": 5, "bob": 4, "cat": 4, "dan": 1}
    assert people["cat"]["effective votes"] == "2" and people["cat"]["of them skips"] == "1"
    agree = rating.agreement(effective_votes(db))
    assert f"Cohen's κ = {agree['kappa']:.2f} over {agree['items']} items" in text and agree["items"] == 4
    (rnd,) = card_table(text, "## Rounds and lineage").values()
    assert (rnd["stage"], rnd["status"], rnd["votes it trained on"], rnd["of them in this file"]) == (
        "aligned-r1", "done", "2", "2")
    made = card_table(text, "Where this file's questions come from")
    assert made["aligned-r1"]["made by round"] == "1" and made["aligned-r1"]["candidate appearances"] == "1"
    assert made["sft"]["made by round"] == "—"
    assert "2 of them are in RACQ's shipped corpus: CC BY-SA" in text  # the shipped query's two passages
    pids = rows(db.path, "SELECT COUNT(DISTINCT pid) AS n FROM query_passages")[0]["n"]
    assert f"Passages: {pids} distinct" in text and f"{pids - 2} are not in RACQ's shipped corpus" in text


def test_prefs_csv_rows_and_card_agree_with_the_pairs(db, tmp_path):
    out = tmp_path / "prefs.csv"
    n = export_prefs(db, out, card=tmp_path / "card.md")
    pairs = preference_pairs(db)
    with open(out, newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    assert n == len(got) == len(pairs) == 3  # items 0, 5, 9: item 1 disagrees, ties and skips give none
    assert [json.loads(r["vote_ids"]) for r in got] == [p["vote_ids"] for p in pairs]
    assert [json.loads(r["annotators"]) for r in got] == [p["annotators"] for p in pairs]
    assert "Topic 0 has two meanings" in got[0]["prompt"]  # the plain prompt quotes the passages
    text = (tmp_path / "card.md").read_text(encoding="utf-8")
    table = card_table(text, "Rows of this file")
    want = Counter((p["chosen_stage"], p["rejected_stage"]) for p in pairs)
    assert {(r["chosen stage"], r["rejected stage"]): int(r["rows"]) for r in table.values()} == want
    assert sum(int(r["votes behind them"]) for r in table.values()) == sum(len(p["vote_ids"]) for p in pairs) == 5
    assert "CC BY-SA is share-alike" in text  # item 9 is the shipped query: its prompt quotes those passages
    assert card_table(text, "## Annotators")["cat"]["rows with their vote"] == "1"


def test_the_card_never_overwrites_a_readme_it_did_not_write(db, tmp_path):
    mine = tmp_path / "README.md"
    mine.write_text("# my notes\n")
    out = tmp_path / "votes.jsonl"
    assert card_path(out) == tmp_path / "votes.card.md"
    export_votes(db, out, card=card_path(out))
    assert mine.read_text() == "# my notes\n" and (tmp_path / "votes.card.md").exists()
    other = tmp_path / "sub" / "prefs.parquet"
    export_prefs(db, other, card=card_path(other))
    readme = other.parent / "README.md"
    first = readme.read_text()
    assert card_path(other) == readme  # its own card: a re-export replaces it
    assert card_path(other.parent / "votes.csv") == other.parent / "votes.card.md"  # another export's card
    import pyarrow.parquet as pq
    assert pq.read_table(other).num_rows == 3 and "(parquet): 3 rows" in first


def test_racq_export_writes_the_card_or_not(db, tmp_path):
    from racq.cli import app

    out = tmp_path / "v" / "votes.csv"
    result = CliRunner().invoke(app, ["export", "votes", str(out), "--db", str(db.path)])
    assert result.exit_code == 0 and f"dataset card: {out.parent / 'README.md'}" in result.output, result.output
    bare = tmp_path / "w" / "votes.csv"
    result = CliRunner().invoke(app, ["export", "votes", str(bare), "--db", str(db.path), "--no-card"])
    assert result.exit_code == 0 and "card" not in result.output and os.listdir(bare.parent) == ["votes.csv"]
    result = CliRunner().invoke(app, ["export", "votes", str(tmp_path / "x.csv"), "--format", "xml", "--db",
                                      str(db.path)])
    assert result.exit_code == 1 and "format must be one of" in result.output
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "README.md").exists()


def test_the_readme_sqlite_utils_commands_run_read_only(db, tmp_path):
    """The README's "Browse the database" block, run as written against a real small database."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"### Browse the database.*?```bash\n(.*?)```", readme, re.S).group(1)
    assert "mode=ro" in block and "annotations/racq.db" in block
    script = block.replace("annotations/racq.db", str(db.path))
    before = hashlib.sha256(db.path.read_bytes()).hexdigest()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "training_rounds" in done.stdout and "CREATE TABLE" in done.stdout and "aligned-r1" in done.stdout
    assert re.search(r"cat\s+skip\s+1", done.stdout)  # the per-annotator outcome counts
    write = subprocess.run(["bash", "-c", script.splitlines()[0] + "\nsqlite-utils query \"$DB\" "
                            "\"delete from votes\""], env=env, capture_output=True, text=True, timeout=60)
    assert write.returncode != 0 and "readonly" in write.stderr
    assert hashlib.sha256(db.path.read_bytes()).hexdigest() == before
    assert rows(db.path, "SELECT COUNT(*) AS n FROM votes")[0]["n"] == len(VOTES) + 2
