"""Your own queries for the annotation pool: a .txt or .jsonl file read into pool examples.
`racq pool build --queries FILE [--index NAME]` uses this.

    racq pool build --queries my-queries.txt --index mine

    from racq.queries import read_queries
    found = read_queries("my-queries.txt")     # .examples go to racq.annotation.pool.build_pool(examples=...)

Formats:
- `.txt`: one query a line; blank lines and lines starting with `#` are skipped;
- `.jsonl` / `.ndjson`: one JSON object a line with `query` (text) and an optional `id` (text or a
  whole number); other keys are ignored, so a query log can be used as it is.
Each query is cleaned as the app cleans it (racq.service.clean_query). Its topic id is the row's `id`,
else "q-" + the first 10 hex digits of sha256 of the cleaned, case-folded query, so the same query
gets the same id in every file and re-running the pool build finds the queries it stored before.
Queries equal after cleaning and case folding are one query (the first row's id wins); `duplicates`
says how many rows that dropped. The whole file is read and checked before anything is returned:
every bad row is reported as `FILE:LINE: what is wrong` (racq.data.DataError), so a bad file writes
nothing to the database.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from racq.data import DataError, Example

DATASET = "custom"  # the dataset name of every query read here (the pool stores it with the query)
SUFFIXES = (".txt", ".jsonl", ".ndjson")
MAX_ID_CHARS = 128
MAX_REPORTED = 20  # bad rows listed in one error; the count says how many more there were


@dataclass(frozen=True)
class QueryFile:
    examples: list[Example]  # one per distinct query, in file order
    rows: int  # query rows read (blank and comment lines not counted)
    duplicates: int  # rows dropped because an earlier row had the same query
    notes: list[str]  # "FILE:LINE: what clean-up did" (control characters removed, cut to length)


def query_id(query: str) -> str:
    """The topic id of a query without an id of its own: stable across files and machines."""
    return "q-" + hashlib.sha256(query.casefold().encode()).hexdigest()[:10]


def _rows(path: Path):
    """(line number, raw query, raw id, None) per query row, or (line number, None, None, what is wrong)
    for a broken line: yielded, not raised, so the caller checks the rest of the file too."""
    jsonl = path.suffix.lower() != ".txt"
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as e:
            yield lineno, None, None, f"not UTF-8 text ({e.reason} at byte {e.start})"
            continue
        if not line.strip() or (not jsonl and line.lstrip().startswith("#")):
            continue
        if not jsonl:
            yield lineno, line, None, None
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            yield lineno, None, None, f"not valid JSON ({e})"
            continue
        if not isinstance(row, dict):
            yield lineno, None, None, f"expected a JSON object with \"query\", got {type(row).__name__}"
        elif "query" not in row:
            yield lineno, None, None, f"missing key \"query\" (keys: {', '.join(map(str, row)) or 'none'})"
        else:
            yield lineno, row["query"], row.get("id"), None


def _check_id(path: Path, lineno: int, raw) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise DataError(path, lineno, f"\"id\" is {type(raw).__name__}; give text or a whole number")
    value = str(raw).strip()
    if not value:
        raise DataError(path, lineno, "\"id\" is empty; leave it out to get one made from the query")
    if len(value) > MAX_ID_CHARS:
        raise DataError(path, lineno, f"\"id\" is {len(value)} characters; at most {MAX_ID_CHARS}")
    return value


def read_queries(path: str | Path) -> QueryFile:
    """Read and check the whole file (see the module docstring). Raises DataError naming every bad row."""
    from racq.service import BadQuery, clean_query

    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(path, None, f"unknown extension {path.suffix or '(none)'!r}: give a .txt file (one query "
                                    f"a line) or a .jsonl file (objects with \"query\" and an optional \"id\")")
    if not path.is_file():
        raise DataError(path, None, "no such file")
    errors, notes, examples, rows = [], [], [], 0
    seen_query: dict[str, int] = {}  # case-folded query -> line of its first row
    seen_id: dict[str, int] = {}  # id -> line of its row
    for lineno, raw_query, raw_id, broken in _rows(path):
        rows += 1
        try:
            if broken:
                raise DataError(path, lineno, broken)
            topic = _check_id(path, lineno, raw_id)
            try:
                query, cleaned = clean_query(raw_query)
            except BadQuery as e:
                raise DataError(path, lineno, str(e)) from None
        except DataError as e:
            errors.append(str(e))
            continue
        notes += [f"{path}:{lineno}: {n}" for n in cleaned]
        key = query.casefold()
        if key in seen_query:
            continue  # the same query again (whatever its id): the first row stands for it
        made_up = topic is None
        topic = topic or query_id(query)
        if topic in seen_id:  # two different queries under one id would be one topic in the pool
            errors.append(f"{path}:{lineno}: {'its made-up ' if made_up else ''}id {topic!r} is already "
                          f"used on line {seen_id[topic]}" + ("; give this row an id" if made_up else ""))
            continue
        seen_query[key], seen_id[topic] = lineno, lineno
        examples.append(Example(query, "", (), DATASET, topic))
    if errors:
        more = f"\n(and {len(errors) - MAX_REPORTED} more bad rows)" if len(errors) > MAX_REPORTED else ""
        raise DataError(path, None, f"{len(errors)} bad row(s), nothing was read:\n"
                        + "\n".join(errors[:MAX_REPORTED]) + more)
    if not examples:
        raise DataError(path, None, "no queries in it (blank lines and # comments are skipped)")
    return QueryFile(examples, rows, rows - len(examples), notes)


__all__ = ["DATASET", "QueryFile", "query_id", "read_queries"]
