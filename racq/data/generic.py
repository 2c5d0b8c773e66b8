"""Your own training / evaluation data: one row per query in a JSONL (.jsonl, .jsonl.gz) or Parquet file,
read into the same Examples as the shipped benchmarks and split by the same rule (docs/data-format.md).

    racq data stats --data my-data.jsonl                 # checks every row, prints the split counts
    racq train all --data my-data.jsonl --set run_dir=runs/mine
    python -c "from racq.data.generic import load_data_file; print(load_data_file('tests/data/own_data.jsonl')[0])"

A row: `query` and `question` (the gold clarifying question) as non-empty text; the passages inline
(`passages`: strings "Title\\nText" or plain text, or objects {title, text}) or as ids into a named index
(`passage_ids`, with `index`), exactly one of the two; optional `interpretations` ([{question, answers}],
kept in Example.extra), `topic` (the split key; default the normalised query, as for PaQa/CAmbigNQ, so a
query shared with the shipped data lands in the same split), `id` (kept, must be unique) and `dataset`
(a label, default "custom"). A null value is the same as leaving the field out; any other field is an
error (a typo must not pass silently). Every error is racq.data.DataError: `FILE:LINE: what` (Parquet:
`FILE: row N: what`); an empty file is one too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Mapping

from racq.data.core import DataError, Example, Passage, clean_text, jsonl_rows, query_topic

FIELDS = ("query", "question", "passages", "passage_ids", "interpretations", "topic", "id", "dataset")
DEFAULT_DATASET = "custom"
SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


class _Bad(ValueError):
    """A row problem; the reader adds the file and line."""


def _text(row: dict, name: str) -> str:
    value = row.get(name)
    if value is None:
        raise _Bad(f"missing {name!r}")
    if not isinstance(value, str):
        raise _Bad(f"{name!r} is {type(value).__name__}, not text")
    text = clean_text(value)
    if not text:
        raise _Bad(f"{name!r} is empty")
    return text


def _list(row: dict, name: str) -> list:
    value = row[name]
    if not isinstance(value, (list, tuple)):
        raise _Bad(f"{name!r} is {type(value).__name__}, not a list")
    if not value:
        raise _Bad(f"{name!r} is an empty list")
    return list(value)


def _key(row: dict, name: str) -> str | None:
    """`topic` / `id`: text or a whole number (JSON ids often are), never empty."""
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Bad(f"{name!r} is {type(value).__name__}, not text or a whole number")
    if not str(value).strip():
        raise _Bad(f"{name!r} is empty")
    return str(value).strip()


def _inline_passage(item, n: int) -> Passage:
    if isinstance(item, str):
        # "Title\nText": the first line is the title; a single line (a trailing newline aside) is the text
        head, sep, body = item.strip().partition("\n")
        title, text = (head, body) if sep else ("", head)
    elif isinstance(item, dict):
        unknown = sorted(set(item) - {"title", "text"})
        if unknown:
            raise _Bad(f"passage {n}: unknown field(s) {', '.join(map(repr, unknown))} (a passage object has "
                       f"title and text)")
        title, text = item.get("title") or "", item.get("text")
        if text is None:
            raise _Bad(f"passage {n}: missing 'text'")
        for name, value in (("title", title), ("text", text)):
            if not isinstance(value, str):
                raise _Bad(f"passage {n}: {name!r} is {type(value).__name__}, not text")
    else:
        raise _Bad(f"passage {n} is {type(item).__name__}: give a string or an object {{title, text}}")
    if not clean_text(text):
        raise _Bad(f"passage {n} has no text")
    return Passage(clean_text(title), clean_text(text))


def _interpretations(value) -> list[dict]:
    if not isinstance(value, (list, tuple)):
        raise _Bad(f"'interpretations' is {type(value).__name__}, not a list")
    out = []
    for n, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise _Bad(f"interpretation {n} is {type(item).__name__}, not an object {{question, answers}}")
        unknown = sorted(set(item) - {"question", "answers"})
        if unknown:
            raise _Bad(f"interpretation {n}: unknown field(s) {', '.join(map(repr, unknown))}")
        try:
            question = _text(item, "question")
        except _Bad as e:
            raise _Bad(f"interpretation {n}: {e}") from None
        answers = item.get("answers")
        answers = [] if answers is None else answers
        if not isinstance(answers, (list, tuple)) or not all(isinstance(a, str) for a in answers):
            raise _Bad(f"interpretation {n}: 'answers' must be a list of strings")
        out.append({"question": question, "answers": [clean_text(a) for a in answers]})
    return out


def _parse_row(row, lookup: Callable[[], Mapping[str, Passage]]) -> Example:
    """One row -> an Example (`_Bad` on the first problem). `lookup()` gives the named index's passages
    by id; it is called only for a row with passage_ids."""
    if not isinstance(row, dict):
        raise _Bad(f"expected a JSON object, got {type(row).__name__}")
    row = {k: v for k, v in row.items() if v is not None}
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        raise _Bad(f"unknown field(s) {', '.join(map(repr, unknown))}; the fields are {', '.join(FIELDS)}")
    query, question = _text(row, "query"), _text(row, "question")
    if ("passages" in row) == ("passage_ids" in row):
        raise _Bad("give the passages inline ('passages') or as ids into a named index ('passage_ids'), "
                   + ("not both" if "passages" in row else "one of the two"))
    if "passages" in row:
        passages = [_inline_passage(item, n) for n, item in enumerate(_list(row, "passages"), 1)]
    else:
        ids = _list(row, "passage_ids")
        bad = [i for i in ids if not isinstance(i, str)]
        if bad:
            raise _Bad(f"'passage_ids' holds {type(bad[0]).__name__} {bad[0]!r}: ids are strings")
        by_id = lookup()
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise _Bad(f"passage id(s) {', '.join(map(repr, missing[:5]))} not in the index "
                       f"({len(by_id)} passages; the ids are the 'pid' values of its passages.jsonl)")
        passages = [by_id[i] for i in ids]
    dataset = _text(row, "dataset") if "dataset" in row else DEFAULT_DATASET
    extra = {"id": _key(row, "id")} if "id" in row else {}
    if "interpretations" in row:
        extra["interpretations"] = _interpretations(row["interpretations"])
    return Example(query=query, gold_question=question, passages=tuple(passages), dataset=dataset,
                   topic_id=_key(row, "topic") or query_topic(query), extra=extra)


def _jsonl_rows(path: Path) -> Iterator[tuple[int | None, str | None, object]]:
    """(line, None, row) of every non-blank line; a line that is not JSON is an error."""
    for lineno, row in jsonl_rows(path):
        yield lineno, None, row


def _parquet_rows(path: Path) -> Iterator[tuple[int | None, str | None, object]]:
    """(None, "row N", row) of every row: Parquet has no lines."""
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(path, None, f"is not a readable Parquet file ({e})") from None
    for i, row in enumerate(rows, 1):
        yield None, f"row {i}", row


def _index_passages(index) -> Mapping[str, Passage]:
    """Passages by id of the index that rows' passage_ids point into: a loaded racq.retrieval.Index, or a
    function that loads one (racq.retrieval.named_loader(name)), called only now that a row needs it."""
    if callable(index):
        index = index()
    if isinstance(index, str):
        raise TypeError(f"index {index!r}: give a loaded Index or racq.retrieval.named_loader({index!r})")
    return {p.pid: p for p in index.passages}


def load_data_file(path: str | Path, index=None) -> list[Example]:
    """Every row of a data file as an Example, in file order; DataError on the first bad row.

    `index`: the index rows' `passage_ids` point into (a loaded Index, or racq.retrieval.named_loader(name))."""
    path = Path(path)
    name = path.name.lower()
    if not name.endswith(SUFFIXES):
        raise DataError(path, None, f"unknown extension: use {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise DataError(path, None, "no such file")
    cache: dict = {}

    def lookup() -> Mapping[str, Passage]:
        if index is None or index == "":
            raise _Bad("'passage_ids' point into a named index: give it with --index NAME (`racq index list`)")
        if "by_id" not in cache:
            cache["by_id"] = _index_passages(index)
        return cache["by_id"]

    rows = _parquet_rows(path) if name.endswith(".parquet") else _jsonl_rows(path)
    out, ids = [], {}
    for line, label, row in rows:
        where = f"{path}:{line}" if label is None else f"{path} {label}"
        try:
            ex = _parse_row(row, lookup)
            if "id" in ex.extra and ex.extra["id"] in ids:
                raise _Bad(f"id {ex.extra['id']!r} is already used at {ids[ex.extra['id']]}")
        except _Bad as e:
            raise DataError(path, line, str(e) if label is None else f"{label}: {e}") from None
        if "id" in ex.extra:
            ids[ex.extra["id"]] = where
        ex.extra["where"] = where  # for messages about this row later on (extra is not part of equality)
        out.append(ex)
    if not out:
        raise DataError(path, None, "no rows: the file is empty")
    return out


__all__ = ["FIELDS", "DEFAULT_DATASET", "load_data_file"]
