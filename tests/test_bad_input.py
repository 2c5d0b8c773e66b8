"""Bad input, table-driven: odd queries through clean_query, Asker.ask (tiny model + small real index) and
the Explore handler; odd annotator names and rationales through the app's API (stored verbatim, rendered
escaped); vote inputs past their bounds (store, handler, API: refused, nothing stored); malformed data
files the data tests do not cover. Each gets a clear message and loses nothing.

    .venv/bin/pytest -q tests/test_bad_input.py
"""

from __future__ import annotations

import gzip
import html
import json
import uuid

import pytest

from apphelpers import CallFailed, Rest, one_torch_thread, rows, serve, shown_token, synthetic_pool
from racq.config import GenConfig
from racq.service import BadQuery, clean_query

SAME = object()  # the cleaned query is the input itself
# (id, input, cleaned query | SAME | None = refused, message or note that must appear | None = no note)
QUERIES = [
    ("empty", "", None, "the query is empty"),
    ("whitespace", " \t\n\u3000\u00a0 ", None, "the query is empty"),
    ("control-only", "\x00\x07\x1b\x7f\u200b", None, "the query is empty"),
    ("not-text", 42, None, "must be text, not int"),
    ("20000-chars-words", "who " * 5000, "cut", "cut to its first"),
    ("20000-chars-one-word", "w" * 20000, "w" * 500, "cut to its first 500"),
    ("emoji", "🦊 who played 👩‍👩‍👧 in the 🇫🇷 film?", SAME, None),
    ("arabic", "من فاز بكأس العالم ٢٠١٨؟", SAME, None),
    ("hebrew", "מי ניצח במונדיאל 2018?", SAME, None),
    ("persian-zwnj", "می\u200cخواهم بدانم چه کسی برد", SAME, None),
    ("bidi-override", "who won \u202egnirts\u202c", "who won gnirts", "control characters"),
    ("control-chars", "who\x00 played\x07 wolverine\x1b[31m", "who played wolverine [31m", "control characters"),
    ("lone-surrogate", "who\ud800 won", "who won", "control characters"),
    ("non-utf8-bytes", b"caf\xe9 \xff who won", "caf\ufffd \ufffd who won", "not UTF-8"),
    ("utf8-bytes", "café who won".encode(), "café who won", None),
    ("html-js", "<script>alert(1)</script> <img src=x onerror=alert(1)> who", SAME, None),
    ("markdown", "**who** [won](javascript:alert(1)) `x` # heading", SAME, None),
    ("sql", "'; DROP TABLE votes; --", SAME, None),
    ("template", "${7*7} {{7*7}} %s %(x)s", SAME, None),
]
ACCEPTED = [q for q in QUERIES if q[2] is not None]


def expected(case):
    _, raw, want, _ = case
    if want is SAME:
        return raw
    if want == "cut":
        return ("who " * 125).strip()  # cut at a word boundary within 500 characters
    return want


@pytest.mark.parametrize("case", QUERIES, ids=[q[0] for q in QUERIES])
def test_clean_query(case):
    _, raw, want, message = case
    if want is None:
        with pytest.raises(BadQuery, match=message):
            clean_query(raw)
        return
    query, notes = clean_query(raw)
    assert query == expected(case)
    assert (message is None and notes == []) or any(message in n for n in notes), notes


@pytest.fixture(scope="module")
def asker(tiny_lm, tiny_adapters, passage_index):
    from racq.generate import StageModel
    from racq.retrieval import Index
    from racq.service import Asker

    rc, _ = passage_index
    with one_torch_thread():
        yield Asker(StageModel.load(tiny_lm, tiny_adapters), Index.load(rc.index_dir, cfg=rc))


def test_asker_answers_every_script_and_refuses_empty_queries(asker):
    gen = GenConfig(max_new_tokens=4)
    for case in QUERIES:
        name, raw, want, message = case
        if want is None:
            with pytest.raises(BadQuery, match=message):
                asker.ask(raw, k=2, gen=gen)
            continue
        out = asker.ask(raw, k=2, gen=gen)
        assert out["query"] == expected(case), name
        assert set(out["questions"]) == set(asker.stages) and out["errors"] == {}, name
        assert all(isinstance(q, str) for q in out["questions"].values())
        assert len(out["passages"]) == 2 and all(p["text"] for p in out["passages"]), name


def test_explore_handler_gives_a_clear_status_and_escaped_html(asker, tmp_path):
    from racq.ui import AppConfig, make_context
    from racq.ui.explore import run_query

    ctx = make_context(AppConfig(db=str(tmp_path / "r.db"), max_new_tokens=4, score=False), asker=asker)
    for case in QUERIES:
        name, raw, want, message = case
        updates = list(run_query(ctx, raw, 3))
        status, passages, cards = updates[-1]
        if want is None:
            assert "racq-error" in status and html.escape(message, quote=True) in status, (name, status)
            assert (passages, cards) == ("", ""), name
        else:
            assert f"{len(asker.stages)} stages" in status, (name, status)
            assert passages.count("<li") == 3 and cards.count("class='racq-card'") == len(asker.stages), name
        for u in updates:  # user text, passages and model output render as text, never as markup
            page = "".join(u)
            assert "<script" not in page and "<img" not in page and "${" not in page and "{{" not in page, name


# ------------------------------------------------------------------ the API: names and rationales
NAMES = [  # (name typed, accepted?, message when refused)
    ("ana", True, None),
    ("  padded name  ", True, None),
    ("<script>alert(1)</script>", True, None),
    ("<img src=x onerror=alert(1)>", True, None),
    ("'; DROP TABLE votes; --", True, None),
    ("**bold** [x](javascript:alert(1))", True, None),
    ("🦊 Renard 👩‍👩‍👧", True, None),
    ("مريم", True, None),
    ("שרה", True, None),
    ("ctl\x00\x07name", True, None),
    ("${7*7}{{7*7}}", True, None),
    ("", False, "type your name"),
    (" \t ", False, "type your name"),
    ("x" * 20000, False, "1-64 characters"),
    ("bad\ud800name", False, "not a valid Unicode character"),
]
RATIONALES = ["plain reason", "<script>alert('r')</script>", "'; DROP TABLE votes; --", "**md** _x_ [l](http://x)",
              "سبب واضح", "סיבה", "🦊👍", "ctl\x00\x1bchars", "r" * 2000, "  ${1+1} {{x}}  "]  # 2,000: the most kept


@pytest.fixture
def api(tmp_path, asker):
    from racq.store import open_db
    from racq.ui import AppConfig, build_app

    db = tmp_path / "racq.db"
    # 12 queries: with the reveal on an annotator gets one pair per query, and one rater votes 10 times
    synthetic_pool(open_db(db), 12)
    demo = build_app(AppConfig(db=str(db), max_new_tokens=4, score=False, preload=False), asker=asker)
    with serve(demo) as url:
        rest = Rest(url)
        yield rest, db
        rest.close()


def _counts(db):
    tables = sorted(r["name"] for r in rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'"))
    return {t: rows(db, f"SELECT COUNT(*) AS n FROM [{t}]")[0]["n"] for t in tables}


def test_names_and_rationales_are_stored_verbatim_and_rendered_escaped(api):
    rest, db = api
    before = _counts(db)
    for name, ok, message in NAMES:
        out = json.dumps(rest.call("annotate_sign_in", [name, ""], uuid.uuid4().hex), ensure_ascii=False)
        stored = rows(db, "SELECT name FROM annotators WHERE name = ?", [name.strip()]) if ok else []
        if ok:
            assert stored == [{"name": name.strip()}], ascii(name)
            who = json.dumps(f"Signed in as <b>{html.escape(name.strip())}", ensure_ascii=False)[1:-1]
            assert who.replace("$", "&#36;").replace("{", "&#123;").replace("}", "&#125;") in out, ascii(name)
        else:
            assert message in out, (ascii(name[:20]), out[:300])
        assert "<script" not in out and "<img" not in out
    assert len(rows(db, "SELECT * FROM annotators")) == sum(ok for _, ok, _ in NAMES)

    session = uuid.uuid4().hex
    token = shown_token(rest.call("annotate_sign_in", ["rater", ""], session))
    for rationale in RATIONALES:
        out = rest.call("annotate_left", [token, rationale, None], session)
        page = json.dumps(out, ensure_ascii=False)
        assert "recorded: left is better" in page and "<script" not in page, ascii(rationale[:30])
        token = shown_token(out)
    # Not valid Unicode: refused with a reason, nothing written, and the same showing still votes.
    refused = json.dumps(rest.call("annotate_left", [token, "why\ud800", None], session))
    assert "not saved" in refused and "not a valid Unicode character" in refused
    out = rest.call("annotate_left", [token, "fine", None], session)
    assert "recorded" in json.dumps(out)
    # Past the bounds (a long note, a showing id the server never issued): refused, nothing written.
    token = shown_token(out)
    for data, message in [([token, "r" * 2001, None], "your note is 2,001 characters; at most 2,000"),
                          ([token, "r" * 20000, None], "your note is 20,000 characters"),
                          (["x" * 10000, "", None], "an item id the server never issued"),
                          ([token.upper(), "", None], "never issued"), ([token + "0", "", None], "never issued"),
                          (["'; DROP TABLE votes; --", "", None], "never issued")]:
        page = json.dumps(rest.call("annotate_left", data, session))
        assert "not saved" in page and message in page, (data[0][:40], page[:300])
    for bad in ("x" * 10000, token[:31], "undo-" + token):
        page = json.dumps(rest.call("annotate_undo", [bad], session))
        assert "not undone" in page and "never issued" in page, page[:300]
    # A skip reason or a k that the screen never offers is refused by Gradio before our code runs.
    for api_name, data in [("annotate_skip", [shown_token(out), "", "'; DROP TABLE votes; --"]),
                           ("explore_ask", ["who", "abc"]), ("explore_ask", ["who", None]),
                           ("explore_ask", ["who", -5])]:
        with pytest.raises(CallFailed):
            rest.call(api_name, data, session)
    assert "the query is empty" in json.dumps(rest.call("explore_ask", ["\ud800\u200b", 3]))

    votes = rows(db, "SELECT v.rationale FROM votes v JOIN annotators a ON a.id = v.annotator_id "
                     "WHERE a.name = 'rater' ORDER BY v.id")
    assert [v["rationale"] for v in votes] == [r.strip() for r in RATIONALES] + ["fine"]
    after = _counts(db)
    assert set(after) == set(before)  # every table is still there ('; DROP TABLE ... did nothing)
    for table in ("queries", "passages", "query_passages", "candidates", "items", "migrations"):
        assert after[table] == before[table], table
    assert after["votes"] == len(RATIONALES) + 1
    assert rows(db, "PRAGMA integrity_check") == [{"integrity_check": "ok"}]


# ------------------------------------------------------------------ vote inputs past their bounds
def test_the_store_refuses_over_long_vote_fields_and_writes_nothing(tmp_path):
    from racq.store import StoreError, add_annotator, next_item, open_db, record_vote, undo_last
    from racq.store.votes import MAX_CLIENT_ID_CHARS, MAX_RATIONALE_CHARS, MAX_SKIP_REASON_CHARS

    db = open_db(tmp_path / "racq.db")
    synthetic_pool(db, 2)
    add_annotator(db, "ana")
    show = next_item(db, "ana")
    pair = (show.item_id, show.left_id, show.right_id)
    for client_id, kw, message in [
            ("c" * (MAX_CLIENT_ID_CHARS + 1), {}, "client_id must be text of at most 128 characters, got 129"),
            (12345, {}, "client_id must be text"),
            ("c1", {"rationale": "r" * (MAX_RATIONALE_CHARS + 1)}, "rationale must be text of at most 2000"),
            ("c2", {"skip_reason": "s" * (MAX_SKIP_REASON_CHARS + 1)}, "skip_reason must be text of at most 200"),
            ("c3", {"rationale": 42}, "rationale must be text")]:
        with pytest.raises(StoreError, match=message):
            record_vote(db, client_id, "ana", *pair, "skip" if "skip_reason" in kw else "left", **kw)
    assert rows(db.path, "SELECT * FROM votes") == []
    # exactly at the bounds: stored verbatim
    record_vote(db, "c" * 128, "ana", *pair, "skip", skip_reason="s" * 200, rationale="r" * 2000)
    assert rows(db.path, "SELECT client_id, skip_reason, rationale FROM votes") == [
        {"client_id": "c" * 128, "skip_reason": "s" * 200, "rationale": "r" * 2000}]
    with pytest.raises(StoreError, match="client_id must be text of at most 128"):
        undo_last(db, "ana", client_id="u" * 129)
    assert len(rows(db.path, "SELECT * FROM votes")) == 1  # no undo row
    assert undo_last(db, "ana", client_id="u" * 128)["client_id"] == "c" * 128


def test_vote_and_undo_handlers_refuse_out_of_bounds_input_and_store_nothing(tmp_path):
    from racq.store import all_votes
    from racq.ui import AppConfig, annotate, make_context

    ctx = make_context(AppConfig(db=str(tmp_path / "racq.db"), adapters_dir=str(tmp_path)))
    synthetic_pool(ctx.db, 2)
    st, user = annotate.new_state(), annotate.sign_in(ctx, None, "ana", "")
    token = annotate.show_next(ctx, user, st)["shown"]
    for kw, message in [({"token": "x" * 33}, "never issued"), ({"token": token.upper()}, "never issued"),
                        ({"token": 123}, "never issued"), ({"rationale": "r" * 2001}, "2,001 characters"),
                        ({"rationale": 42}, "the note must be text"),
                        ({"outcome": "skip", "reason": "'; DROP TABLE votes; --"}, "offered skip reasons"),
                        ({"outcome": "skip", "reason": annotate.WITHDRAWN}, "offered skip reasons"),
                        ({"reason": "r" * 300}, "offered skip reasons")]:
        a = {"token": token, "outcome": "left", "rationale": "", "reason": None} | kw
        ok, msg, reveal = annotate.vote(ctx, user, st, a["token"], a["outcome"], a["rationale"], a["reason"])
        assert not ok and msg.startswith("not saved: ") and message in msg and reveal is None, (kw, msg)
    for bad in ("x" * 10000, token[:31], 5):
        ok, msg, _ = annotate.undo(ctx, user, st, bad)
        assert not ok and msg.startswith("not undone: ") and "never issued" in msg
    assert all_votes(ctx.db) == []
    ok, _, _ = annotate.vote(ctx, user, st, token, "skip", "r" * 2000, annotate.SKIP_REASONS[0])
    assert ok and [(v["rationale"], v["skip_reason"]) for v in all_votes(ctx.db)] == [
        ("r" * 2000, annotate.SKIP_REASONS[0])]


# ------------------------------------------------------------------ data files (what test_data.py lacks)
_LINE = json.dumps({"topic": "who won?", "question": "which year?", "Passage": repr(["# T\nx"])}) + "\n"
DATA_FILES = [  # (loader, file under data_dir, bytes, reason)
    ("paqa", "rac/paqa_test.jsonl.gz", b"this is not gzip at all", "not a valid gzip file"),
    ("paqa", "rac/paqa_test.jsonl.gz", gzip.compress((_LINE * 200).encode())[:80], "truncated"),
    ("paqa", "rac/paqa_test.jsonl.gz", gzip.compress(_LINE.encode() + b'{"topic": "caf\xe9"}\n'), "not UTF-8"),
    ("cambignq", "rac/cambignq_dev.jsonl.gz", gzip.compress(bytes(range(256)) * 4), "not UTF-8"),  # a binary file
    ("clariq", "clariq/train.tsv.gz", b"\x1f\x8b\x08\x00garbage", "not a valid gzip file"),
    ("qulac", "qulac/qulac.json.gz", gzip.compress(b'{"topic_id": {"0": "\xff"}}'), "not UTF-8"),
]


@pytest.mark.parametrize("loader, rel, data, reason", DATA_FILES, ids=[f"{d[0]}-{d[3]}" for d in DATA_FILES])
def test_unreadable_data_files_name_the_file(tmp_path, loader, rel, data, reason):
    from racq.data import LOADERS, DataError

    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    with pytest.raises(DataError) as err:
        LOADERS[loader](tmp_path)
    assert str(path) in str(err.value) and reason in str(err.value)
