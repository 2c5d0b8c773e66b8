"""Data layer on the shipped files in data/: loaders, the split rule, text cleaning, bad input.

    .venv/bin/pytest tests/test_data.py -q
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from racq.config import REPO_ROOT
from racq.data import LOADERS, SPLITS, DataError, Passage, clean_text, load_examples, split_of
from racq.data.clariq import load_question_bank
from racq.data.rac import _cambignq_passages, _paqa_passages
from racq.data.stats import dataset_stats, format_stats

DATA = REPO_ROOT / "data"

# Measured on the shipped files; data/README.md carries the same numbers.
COUNTS = {"paqa": 527, "cambignq": 461, "clariq": 3991, "clariq_fkw": 2181, "qulac": 2639}
TOPICS = {"paqa": 527, "cambignq": 461, "clariq": 298, "clariq_fkw": 237, "qulac": 198}


@pytest.fixture(scope="module")
def examples():
    return load_examples(data_dir=DATA)


def _split_digest(examples) -> str:
    rows = sorted(f"{ex.dataset}\t{ex.topic_id}\t{ex.gold_question}\t{ex.split}" for ex in examples)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


# --- the real files -------------------------------------------------------------------------------

def test_all_loaders_registered():
    assert set(COUNTS) <= set(LOADERS)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_record_and_topic_counts(examples, name):
    mine = [ex for ex in examples if ex.dataset == name]
    assert len(mine) == COUNTS[name]
    assert len({ex.topic_id for ex in mine}) == TOPICS[name]
    assert all(ex.query and ex.gold_question for ex in mine)


def test_no_escapes_left_in_loaded_text(examples):
    for ex in examples:
        for text in (ex.query, ex.gold_question, ex.extra.get("topic_desc", "")):
            assert "\\'" not in text and '\\"' not in text, (ex.dataset, text)


def test_clariq_skips_ask_nothing_and_merges_facets(examples):
    clariq = [ex for ex in examples if ex.dataset == "clariq"]
    assert all(ex.extra["question_id"] != "Q00001" for ex in clariq)
    # one record per (topic, question); the facets it was asked under are kept, not repeated rows
    assert len({(ex.topic_id, ex.gold_question) for ex in clariq}) == len(clariq)
    assert sum(len(ex.extra["facets"]) for ex in clariq) == 8566 + 2161 + 4499  # rows minus Q00001 rows
    assert Counter(ex.extra["source_split"] for ex in clariq) == {"train": 2440, "dev": 642, "test": 909}
    first = clariq[0]
    assert first.query == "Tell me about Obama family tree."
    assert first.topic_id == "trec:1" and first.passages == ()
    assert "Barack Obama's family history" in first.extra["topic_desc"]


def test_trec_topic_ids_coincide_across_sets(examples):
    by_set = defaultdict(dict)
    for ex in examples:
        by_set[ex.dataset].setdefault(ex.topic_id, ex)
    clariq, fkw, qulac = by_set["clariq"], by_set["clariq_fkw"], by_set["qulac"]
    assert set(qulac) <= set(clariq) and set(fkw) <= set(clariq)
    for tid, ex in qulac.items():  # same TREC topic = same description, not merely the same number
        assert ex.extra["topic_desc"] == clariq[tid].extra["topic_desc"], tid
    for tid, ex in fkw.items():
        assert ex.query == clariq[tid].query, tid


def test_clariq_fkw_rows_point_at_clariq_questions(examples):
    fkw = [ex for ex in examples if ex.dataset == "clariq_fkw"]
    clariq = {(ex.topic_id, ex.gold_question) for ex in examples if ex.dataset == "clariq"}
    assert all((ex.topic_id, ex.gold_question) in clariq for ex in fkw)
    assert all(ex.extra["facet_keywords"] for ex in fkw)


def test_question_bank():
    bank = load_question_bank(DATA)
    assert len(bank) == 3941 and bank["Q00001"] == ""
    assert bank["Q00384"] == "are you interested in seeing barack obamas family"


def test_paqa_passages_have_title_and_text(examples):
    paqa = [ex for ex in examples if ex.dataset == "paqa"]
    assert Counter(len(ex.passages) for ex in paqa)[10] > 500
    first = paqa[0].passages
    assert first[0].title == "Ju Wenjun" and first[0].text.startswith("s World Chess Championship Match 2018")
    assert first[1].title == "World Rapid Chess Championship"
    assert all(p.title and p.text and not p.title.startswith("#") for ex in paqa for p in ex.passages)


def test_cambignq_passages_are_split(examples):
    cam = [ex for ex in examples if ex.dataset == "cambignq"]
    assert min(len(ex.passages) for ex in cam) >= 2
    first = cam[0].passages
    assert first[0].text.startswith("chairperson of the african union commission")
    assert first[1].text.startswith("nkosazana dlamini-zuma on 15 july 2012")
    assert not any(p.text.startswith("#") for ex in cam for p in ex.passages)


# --- the split ------------------------------------------------------------------------------------

def test_split_follows_documented_rule(examples):
    for key in {ex.topic_id for ex in examples}:
        bucket = int(hashlib.sha256(key.encode()).hexdigest(), 16) % 100
        assert split_of(key) == ("test" if bucket < 20 else "t1" if bucket < 60 else "t2")
    assert [split_of(k) for k in ("trec:1", "trec:201")] == ["t2", "t1"]  # pinned: a change breaks old runs


def test_split_same_in_fresh_process_with_other_hash_seed(examples):
    code = ("import hashlib; from racq.data import load_examples; "
            f"rows = sorted(f'{{e.dataset}}\\t{{e.topic_id}}\\t{{e.gold_question}}\\t{{e.split}}' "
            f"for e in load_examples(data_dir={str(DATA)!r})); "
            "print(hashlib.sha256(chr(10).join(rows).encode()).hexdigest())")
    here = _split_digest(examples)
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == here


def test_topics_never_in_two_splits_even_across_datasets(examples):
    splits, sets = defaultdict(set), defaultdict(set)
    for ex in examples:
        splits[ex.topic_id].add(ex.split)
        sets[ex.topic_id].add(ex.dataset)
    assert all(len(s) == 1 for s in splits.values())
    # the check has teeth: many topics are shared between datasets
    assert sum({"clariq", "qulac"} <= s for s in sets.values()) == 198
    assert sum({"paqa", "cambignq"} <= s for s in sets.values()) > 100
    # and the official ClariQ split is not what decides ours (its test topics get spread too)
    official_test = {ex.topic_id for ex in examples if ex.extra.get("source_split") == "test"}
    assert {ex.split for ex in examples if ex.topic_id in official_test} == set(SPLITS)


def test_split_proportions_roughly_20_40_40(examples):
    topics = {ex.topic_id: ex.split for ex in examples}
    share = {s: n / len(topics) for s, n in Counter(topics.values()).items()}
    assert abs(share["test"] - 0.20) < 0.04
    assert abs(share["t1"] - 0.40) < 0.05 and abs(share["t2"] - 0.40) < 0.05


def test_load_examples_filters_split_and_limit():
    test = load_examples(["qulac"], split="test", data_dir=DATA)
    assert len(test) == 573 and {ex.split for ex in test} == {"test"}
    assert len(load_examples(["qulac"], data_dir=DATA, limit=5)) == 5
    with pytest.raises(ValueError, match="unknown split"):
        load_examples(["qulac"], split="train", data_dir=DATA)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_examples(["nope"], data_dir=DATA)


def test_dataset_stats_sum_to_counts():
    rows = dataset_stats(DATA)
    assert {(r["dataset"], r["split"]) for r in rows} == {(d, s) for d in LOADERS for s in SPLITS}
    for name, n in COUNTS.items():
        mine = [r for r in rows if r["dataset"] == name]
        assert sum(r["records"] for r in mine) == n
        assert sum(r["topics"] for r in mine) == TOPICS[name]
    table = format_stats(rows)
    assert "qulac" in table and "2639 (198)" in table


# --- text cleaning and passage parsing --------------------------------------------------------------

@pytest.mark.parametrize("raw, clean", [
    ("Barack Obama\\'s family", "Barack Obama's family"),
    ('the \\"Family Tree\\" essay', 'the "Family Tree" essay'),
    ("Obama\\\\\\'s", "Obama's"),  # Qulac's triple backslash
    ("  two\tspaces\n and   lines ", "two spaces and lines"),
    ("a \\n stays", "a \\n stays"),  # only quote escapes are dropped
    (None, ""),
])
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_paqa_passage_literal():
    raw = repr(["# Title One\nText one.", "# Title Two\nText  two.", "no title here"])
    assert _paqa_passages(raw) == [Passage("Title One", "Text one."), Passage("Title Two", "Text two."),
                                   Passage("", "no title here")]


def test_cambignq_passage_string():
    raw = "[# alpha beta, gamma, # delta epsilon, # zeta]"
    assert [p.text for p in _cambignq_passages(raw)] == ["alpha beta, gamma", "delta epsilon", "zeta"]
    assert all(p.title == "" for p in _cambignq_passages(raw))


# --- bad input -------------------------------------------------------------------------------------

def _write_gz(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(text)
    return path


def _rac_line(**kw) -> str:
    row = {"topic": "who won?", "question": "which year?", "Passage": repr(["# T\nx"])}
    row.update(kw)
    return json.dumps({k: v for k, v in row.items() if v is not None}) + "\n"


def _assert_data_error(excinfo, path, line):
    msg = str(excinfo.value)
    assert f"{path}:{line}" in msg, msg
    assert excinfo.value.line == line and excinfo.value.path == str(path)
    return msg


@pytest.mark.parametrize("bad_line, reason", [
    ("{not json\n", "not valid JSON"),
    (_rac_line(question=None), "question"),
    (_rac_line(Passage="['# T\\nx'"), "cannot parse Passage"),
    (_rac_line(Passage="{'a': 1}"), "not a list"),
    ('["a list"]\n', "expected a JSON object"),
])
def test_rac_bad_lines(tmp_path, bad_line, reason):
    path = _write_gz(tmp_path / "rac" / "paqa_test.jsonl.gz", _rac_line() + "\n" + bad_line)
    with pytest.raises(DataError) as e:
        LOADERS["paqa"](tmp_path)
    assert reason in _assert_data_error(e, path, 3)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match="qulac.json.gz.*file not found"):
        LOADERS["qulac"](tmp_path)


HEADER = "\t".join(["topic_id", "initial_request", "topic_desc", "clarification_need", "facet_id",
                    "facet_desc", "question_id", "question", "answer"]) + "\n"
GOOD = "1\tTell me about X.\tdesc\t2\tF0001\tfacet\tQ00002\tdo you mean x?\tyes\n"


@pytest.mark.parametrize("text, line, reason", [
    (HEADER + GOOD + "1\tTell me about X.\tdesc\n", 3, "expected 9 tab-separated columns, got 3"),
    (HEADER + GOOD + GOOD.replace("\tyes", "\tyes\textra"), 3, "got 10"),
    (HEADER.replace("question_id", "qid") + GOOD, 1, "'question_id'"),
    (HEADER + GOOD.replace("1\t", "one\t", 1), 2, "topic_id is not an integer"),
    (HEADER + GOOD + GOOD.replace("Tell me about X.", " "), 3, "empty initial_request"),
    (HEADER + GOOD.replace("facet\t", '"fa"cet\t'), 2, "malformed TSV"),
    (HEADER + GOOD + GOOD.replace("facet\t", '"facet\t') + GOOD, 3, "malformed TSV"),  # unclosed quote
])
def test_clariq_bad_rows(tmp_path, text, line, reason):
    path = _write_gz(tmp_path / "clariq" / "train.tsv.gz", text)
    with pytest.raises(DataError) as e:
        LOADERS["clariq"](tmp_path)
    assert reason in _assert_data_error(e, path, line)


def test_clariq_fkw_short_row(tmp_path):
    head = "\ttopic_id\tinitial_request\tfacet_desc\tquestion\n"
    path = _write_gz(tmp_path / "clariq_fkw" / "ClariQ-FKw.tsv.train.gz",
                     head + "0\t1\tTell me about X.\tx\tdo you mean x?\n" + "1\t1\tTell me\n")
    with pytest.raises(DataError) as e:
        LOADERS["clariq_fkw"](tmp_path)
    assert "got 3" in _assert_data_error(e, path, 3)


def test_qulac_bad_json_and_missing_column(tmp_path):
    path = _write_gz(tmp_path / "qulac" / "qulac.json.gz", '{"topic_id": {"0": 1},')
    with pytest.raises(DataError) as e:
        LOADERS["qulac"](tmp_path)
    assert "not valid JSON" in _assert_data_error(e, path, 1)
    _write_gz(path, json.dumps({"topic_id": {"0": 1}, "question": {"0": "q?"}}))
    with pytest.raises(DataError, match=r"qulac\.json\.gz:1: missing column\(s\) 'topic_facet_id'"):
        LOADERS["qulac"](tmp_path)


def test_good_tmp_files_load(tmp_path):
    """The bad-input tests above fail for the stated reason, not because the fixtures are wrong."""
    _write_gz(tmp_path / "clariq" / "train.tsv.gz", HEADER + GOOD + GOOD.replace("F0001", "F0002"))
    _write_gz(tmp_path / "clariq" / "dev.tsv.gz", HEADER)
    _write_gz(tmp_path / "clariq" / "test_with_labels.tsv.gz", HEADER)
    [ex] = LOADERS["clariq"](tmp_path)
    assert ex.topic_id == "trec:1" and [f["facet_id"] for f in ex.extra["facets"]] == ["F0001", "F0002"]
    _write_gz(tmp_path / "rac" / "paqa_test.jsonl.gz", _rac_line() + "\n" + _rac_line())
    assert [ex.passages for ex in LOADERS["paqa"](tmp_path)] == [(Passage("T", "x"),)] * 2
