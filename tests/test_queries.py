"""Your own queries (racq.queries) and `racq pool build --queries FILE`: formats, FILE:LINE errors for
every bad row, stable ids, duplicates, and the pool built from them (tiny random model, real SQLite).

    PYTHONPATH=$PWD .venv/bin/pytest -q tests/test_queries.py
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from typer.testing import CliRunner

from racq.config import GenConfig
from racq.data import DataError, Passage
from racq.scoring.faithfulness import FaithfulnessConfig, Scorer
from racq.annotation.pool import build_pool
from racq.queries import query_id, read_queries
from racq.retrieval import Index
from racq.tiny import BagOfWords

CORPUS = [Passage("Zorblax router", "Hold the red button for ten seconds to reset the router."),
          Passage("Quillfeather kettle", "The kettle boils water in ninety seconds."),
          Passage("Moonbean garden", "Plant the moonbean seeds in spring.")]


def _error(path) -> str:
    with pytest.raises(DataError) as err:
        read_queries(path)
    return str(err.value)


def test_txt_skips_blanks_and_comments_cleans_and_collapses_duplicates(tmp_path):
    path = tmp_path / "q.txt"
    path.write_bytes("# my queries\n\nhow do I reset the router\n   # indented comment\n"
                     "  How do I   reset the router\t\nboil\x00 water\r\n".encode())
    found = read_queries(path)
    assert [(e.query, e.dataset, e.topic_id) for e in found.examples] == [
        ("how do I reset the router", "custom", query_id("how do I reset the router")),
        ("boil water", "custom", query_id("boil water"))]
    assert (found.rows, found.duplicates) == (3, 1)
    assert found.notes == [f"{path}:5: control characters or extra whitespace were removed",
                           f"{path}:6: control characters or extra whitespace were removed"]
    # the made-up id: "q-" + sha256 of the cleaned, case-folded query, the same in every file
    assert query_id("Boil water") == "q-" + hashlib.sha256(b"boil water").hexdigest()[:10]


def test_jsonl_ids_and_extra_keys(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"id": "t-1", "query": "reset the router", "user": "x"}, {"id": 7, "query": "boil water"},
        {"query": "plant seeds"}, {"id": "t-9", "query": "RESET the router"}]) + "\n\n")
    found = read_queries(path)
    assert [(e.query, e.topic_id) for e in found.examples] == [
        ("reset the router", "t-1"), ("boil water", "7"), ("plant seeds", query_id("plant seeds"))]
    assert found.duplicates == 1


def test_every_bad_row_is_named_with_its_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'{"query": "fine", "id": "a"}\n{oops\n[1, 2]\n{"text": "x"}\n{"query": "  "}\n'
                     b'{"query": 3}\n{"query": "y", "id": ["a"]}\n{"query": "z", "id": ""}\n'
                     b'{"query": "other", "id": "a"}\n{"query": "\xff"}\n')
    lines = _error(path).splitlines()
    assert lines[0] == f"{path}: 9 bad row(s), nothing was read:"
    assert [ln.split(": ", 1)[0] for ln in lines[1:]] == [f"{path}:{n}" for n in range(2, 11)]
    for n, words in [(2, "not valid JSON"), (3, "expected a JSON object"), (4, 'missing key "query" (keys: text)'),
                     (5, "the query is empty"), (6, "must be text, not int"), (7, '"id" is list'),
                     (8, '"id" is empty'), (9, "id 'a' is already used on line 1"), (10, "not UTF-8 text")]:
        assert words in lines[n - 1], (n, lines[n - 1])


def test_file_level_errors(tmp_path):
    (tmp_path / "q.csv").write_text("query\nx\n")
    assert "unknown extension '.csv'" in _error(tmp_path / "q.csv")
    assert _error(tmp_path / "nope.txt") == f"{tmp_path / 'nope.txt'}: no such file"
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    assert "no queries in it" in _error(tmp_path / "empty.txt")


def test_pool_from_a_queries_file_is_built_once_and_rerun_adds_nothing(tmp_path, tiny_lm, tiny_adapters):
    from racq.generate import StageModel
    from racq.store import open_db

    shutil.copytree(tiny_adapters, tmp_path / "adapters")
    sm = StageModel.load(tiny_lm, tmp_path / "adapters")
    index = Index.build(CORPUS, BagOfWords(), log=lambda m: None)
    path = tmp_path / "q.txt"
    path.write_text("how do I reset the router\nhow long does the kettle boil\nHOW DO I RESET THE ROUTER\n")
    db = open_db(tmp_path / "racq.db")
    scorer = Scorer(FaithfulnessConfig(use_semantic=False))

    def build(examples):
        return build_pool(db, n=len(examples), stage_model=sm, index=index, scorer=scorer, examples=examples,
                          gen=GenConfig(max_new_tokens=6))

    first = build(read_queries(path).examples)
    assert (first["queries"], first["new_queries"]) == (2, 2) and first["candidates_new"] > 0
    with db.read() as c:
        stored = list(c.query("SELECT text, dataset, topic_id FROM queries ORDER BY text"))
        n_items = next(c.query("SELECT COUNT(*) AS n FROM items"))["n"]
    assert [(q["text"], q["dataset"], q["topic_id"]) for q in stored] == [
        ("how do I reset the router", "custom", query_id("how do I reset the router")),
        ("how long does the kettle boil", "custom", query_id("how long does the kettle boil"))]
    assert n_items == first["items_new"] > 0
    again = build(read_queries(path).examples)
    assert (again["new_queries"], again["candidates_new"], again["items_new"]) == (0, 0, 0)
    path.write_text(path.read_text() + "when do I plant the seeds\n")  # a longer file adds only its new query
    more = build(read_queries(path).examples)
    assert (more["queries"], more["new_queries"]) == (3, 1)


def test_cli_bad_queries_file_writes_nothing_and_loads_no_model(tmp_path, monkeypatch):
    import racq.service
    from racq.cli import app

    monkeypatch.setattr(racq.service.Asker, "load", classmethod(lambda *a, **k: pytest.fail("model loaded")))
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "fine"}\n{"query": ""}\n')
    db = tmp_path / "racq.db"
    runner = CliRunner()
    res = runner.invoke(app, ["pool", "build", "--queries", str(path), "--db", str(db)])
    assert res.exit_code == 1 and f"{path}:2: the query is empty" in res.output and "nothing was written" in res.output
    assert not db.exists()
    res = runner.invoke(app, ["pool", "build", "--queries", str(path), "--existing", "--db", str(db)])
    assert res.exit_code == 1 and "leave out --existing and --split" in res.output
    assert not db.exists()
