"""Loaders for the passage-less clarification sets: ClariQ, ClariQ-FKw and Qulac (data/clariq*, data/qulac).

    from racq.data import load_examples
    t1 = load_examples(["clariq", "clariq_fkw", "qulac"], split="t1")

All three number their topics with TREC Web Track ids (1-200: Web Track 2009-12, the Qulac topics;
201-300: Web Track 2013-14), and the ids coincide: each of Qulac's 198 topics is a ClariQ train/dev
topic with the same topic_desc, and each ClariQ-FKw row carries its ClariQ topic_id and initial
request. So topic_id = "trec:<id>" puts one TREC topic in one split whichever set it comes from.

ClariQ and Qulac repeat every question once per facet (with a facet-specific answer); a record here
is one distinct (topic, question), and the facets it was asked under go into extra["facets"].
ClariQ rows with question Q00001 ("ask nothing") and Qulac's question-less facet rows are skipped.
The official ClariQ split is kept in extra["source_split"]; `Example.split` follows racq's own rule.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from racq.config import DATA_DIR
from racq.data.core import DataError, Example, clean_text, open_text, register

NO_QUESTION = "Q00001"  # ClariQ's "ask nothing" entry of the question bank
CLARIQ_FILES = (("train", "train.tsv.gz"), ("dev", "dev.tsv.gz"), ("test", "test_with_labels.tsv.gz"))
CLARIQ_COLUMNS = ("topic_id", "initial_request", "topic_desc", "clarification_need",
                  "facet_id", "facet_desc", "question_id", "question", "answer")
FKW_FILES = (("train", "ClariQ-FKw.tsv.train.gz"), ("dev", "ClariQ-FKw.tsv.dev.gz"))
FKW_COLUMNS = ("", "topic_id", "initial_request", "facet_desc", "question")  # "" = row index into ClariQ
QULAC_COLUMNS = ("topic_id", "topic_facet_id", "topic", "topic_type", "facet_type",
                 "topic_desc", "facet_desc", "question", "answer")


def read_tsv(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each row of a tab-separated file with a header naming `columns`."""
    with open_text(path) as fh:
        reader = csv.reader(fh, delimiter="\t", strict=True)
        start = 1  # first line of the current row: a quoted field may span lines, or swallow the rest
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(path, 1, "empty file (no header line)")
            missing = [repr(c) for c in columns if c not in header]
            if missing:
                raise DataError(path, 1, f"header lacks column(s) {', '.join(missing)}")
            start = reader.line_num + 1
            for row in reader:
                if row and len(row) != len(header):
                    raise DataError(path, start, f"expected {len(header)} tab-separated columns, got {len(row)}")
                if row:  # not a blank line
                    yield start, dict(zip(header, row))
                start = reader.line_num + 1
        except csv.Error as e:  # a stray or unclosed quote
            raise DataError(path, start, f"malformed TSV ({e}; read up to line {reader.line_num})") from None


def _int(path, line, value, column: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise DataError(path, line, f"{column} is not an integer: {value!r}") from None


def _text(path, line, value, column: str) -> str:
    text = clean_text(value)
    if not text:
        raise DataError(path, line, f"empty {column}")
    return text


def _add(records: dict, ex: Example, facet: dict) -> None:
    """Keep the first record of each (topic, question) and collect the facets it was asked under."""
    kept = records.setdefault((ex.topic_id, ex.gold_question), ex)
    kept.extra["facets"].append(facet)


@register("clariq")
def load_clariq(data_dir: Path) -> list[Example]:
    records: dict[tuple[str, str], Example] = {}
    for source, name in CLARIQ_FILES:
        path = Path(data_dir) / "clariq" / name
        for line, row in read_tsv(path, CLARIQ_COLUMNS):
            question = clean_text(row["question"])
            if row["question_id"] == NO_QUESTION or not question:
                continue
            topic = _int(path, line, row["topic_id"], "topic_id")
            ex = Example(query=_text(path, line, row["initial_request"], "initial_request"),
                         gold_question=question, passages=(), dataset="clariq", topic_id=f"trec:{topic}",
                         extra={"source_split": source, "question_id": row["question_id"],
                                "topic_desc": clean_text(row["topic_desc"]),
                                "clarification_need": _int(path, line, row["clarification_need"],
                                                           "clarification_need"),
                                "facets": []})
            _add(records, ex, {"facet_id": row["facet_id"], "facet_desc": clean_text(row["facet_desc"]),
                               "answer": clean_text(row["answer"])})
    return list(records.values())


@register("clariq_fkw")
def load_clariq_fkw(data_dir: Path) -> list[Example]:
    out = []
    for source, name in FKW_FILES:
        path = Path(data_dir) / "clariq_fkw" / name
        for line, row in read_tsv(path, FKW_COLUMNS):
            topic = _int(path, line, row["topic_id"], "topic_id")
            out.append(Example(query=_text(path, line, row["initial_request"], "initial_request"),
                               gold_question=_text(path, line, row["question"], "question"), passages=(),
                               dataset="clariq_fkw", topic_id=f"trec:{topic}",
                               extra={"source_split": source, "facet_keywords": clean_text(row["facet_desc"]),
                                      "clariq_row": _int(path, line, row[""], "row index")}))
    return out


@register("qulac")
def load_qulac(data_dir: Path) -> list[Example]:
    """qulac.json is one pandas "columns" object, {column: {row index: value}}, on a single line."""
    path = Path(data_dir) / "qulac" / "qulac.json.gz"
    with open_text(path) as fh:
        try:
            table = json.load(fh)
        except json.JSONDecodeError as e:
            raise DataError(path, e.lineno, f"not valid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(table, dict):
        raise DataError(path, 1, "expected a JSON object of columns")
    missing = [repr(c) for c in QULAC_COLUMNS if not isinstance(table.get(c), dict)]
    if missing:
        raise DataError(path, 1, f"missing column(s) {', '.join(missing)}")
    records: dict[tuple[str, str], Example] = {}
    for key in sorted(table["topic_id"], key=lambda k: _int(path, 1, k, "row index")):
        try:
            row = {c: "" if table[c][key] is None else str(table[c][key]) for c in QULAC_COLUMNS}
        except KeyError as e:
            raise DataError(path, 1, f"row {key} has no value in column {e.args[0]!r}") from None
        question = clean_text(row["question"])
        if not question:  # the per-facet "X" rows carry no question
            continue
        topic = _int(path, 1, row["topic_id"], f"topic_id of row {key}")
        ex = Example(query=_text(path, 1, row["topic"], f"topic of row {key}"), gold_question=question,
                     passages=(), dataset="qulac", topic_id=f"trec:{topic}",
                     extra={"topic_type": row["topic_type"], "topic_desc": clean_text(row["topic_desc"]),
                            "facets": []})
        _add(records, ex, {"facet_id": row["topic_facet_id"], "facet_type": row["facet_type"],
                           "facet_desc": clean_text(row["facet_desc"]), "answer": clean_text(row["answer"])})
    return list(records.values())


def load_question_bank(data_dir: Path | None = None) -> dict[str, str]:
    """ClariQ's pool of candidate questions, id -> text (Q00001 is "", meaning ask nothing)."""
    path = Path(data_dir or DATA_DIR) / "clariq" / "question_bank.tsv.gz"
    return {row["question_id"]: clean_text(row["question"])
            for _, row in read_tsv(path, ("question_id", "question"))}
