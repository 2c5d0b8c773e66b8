"""Your own corpus: read passages from JSONL / CSV / Parquet or a folder of .txt/.md files, and chunk
long documents into passages. `racq index build --passages PATH --name NAME` uses this.

    from racq.corpus import read_documents, chunk_documents
    docs = read_documents("my-docs/")              # [(title, text, where)], every error names file:line
    passages = chunk_documents(docs, chunk_words=120, overlap_words=20)

Inputs:
- `.jsonl` / `.ndjson`: one JSON object per line with a title and a text field (names settable);
- `.csv`: a header row with those columns;
- `.parquet`: those columns;
- a folder: every `.txt` and `.md` file under it (sorted by path). The title is the first Markdown
  heading of a `.md` file, else the file name's stem; other files in the folder are skipped.
Blank JSONL lines are skipped; a missing column, an empty text, a line that is not JSON, an unknown
extension and a folder with no .txt/.md file are errors (racq.data.DataError: `file:line: reason`).

Chunking is sentence-aware: whole sentences are packed into passages of at most `chunk_words`
words; the next passage starts with the trailing whole sentences of the previous one that fit in
`overlap_words` (a sentence longer than `chunk_words` is cut into word windows overlapping by
`overlap_words`). Every chunk keeps its document's title.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Iterable, NamedTuple

from racq.data import DataError, Passage

TABLE_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet")
TEXT_SUFFIXES = (".txt", ".md", ".markdown")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])[\"')\]]*\s+")


class Document(NamedTuple):
    title: str
    text: str
    where: str  # "file:line" (or "file") for messages


def _squeeze(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def _check_fields(path, line, row: dict, title_field: str, text_field: str) -> tuple[str, str]:
    for name in (title_field, text_field):
        if name not in row:
            have = ", ".join(map(str, row)) or "none"
            raise DataError(path, line, f"missing column {name!r} (columns: {have}); choose the columns "
                                        f"with --title-field / --text-field")
    title, text = row[title_field], row[text_field]
    title = "" if title is None else title
    for name, value in ((title_field, title), (text_field, text)):
        if not isinstance(value, str):
            raise DataError(path, line, f"column {name!r} is {type(value).__name__}, not text")
    if not text.strip():
        raise DataError(path, line, f"empty text (column {text_field!r})")
    return _squeeze(title), text


def _read_jsonl(path: Path, title_field: str, text_field: str) -> list[Document]:
    docs = []
    with open(path, encoding="utf-8") as fh:
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise DataError(path, lineno, f"not valid JSON ({e})") from None
                if not isinstance(row, dict):
                    raise DataError(path, lineno, f"expected a JSON object, got {type(row).__name__}")
                title, text = _check_fields(path, lineno, row, title_field, text_field)
                docs.append(Document(title, text, f"{path}:{lineno}"))
        except UnicodeDecodeError as e:
            raise DataError(path, None, f"is not UTF-8 text ({e})") from None
    return docs


def _read_csv(path: Path, title_field: str, text_field: str) -> list[Document]:
    docs = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames
            if not header:
                raise DataError(path, 1, "no header row (the file is empty)")
            for name in (title_field, text_field):
                if name not in header:
                    raise DataError(path, 1, f"missing column {name!r} (columns: {', '.join(header)}); choose "
                                             f"the columns with --title-field / --text-field")
            for row in reader:
                line = reader.line_num
                if None in row:
                    raise DataError(path, line, f"{len(header) + len(row[None])} fields but the header has "
                                                f"{len(header)}")
                if not any((v or "").strip() for v in row.values()):
                    continue  # a blank line
                title, text = _check_fields(path, line, row, title_field, text_field)
                docs.append(Document(title, text, f"{path}:{line}"))
    except UnicodeDecodeError as e:
        raise DataError(path, None, f"is not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise DataError(path, None, f"is not valid CSV ({e})") from None
    return docs


def _read_parquet(path: Path, title_field: str, text_field: str) -> list[Document]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(path, None, f"is not a readable Parquet file ({e})") from None
    for name in (title_field, text_field):
        if name not in table.column_names:
            raise DataError(path, None, f"missing column {name!r} (columns: {', '.join(table.column_names)}); "
                                        f"choose the columns with --title-field / --text-field")
    titles, texts = table.column(title_field).to_pylist(), table.column(text_field).to_pylist()
    docs = []
    for i, (title, text) in enumerate(zip(titles, texts), 1):
        if text is None:
            text = ""
        try:
            title, text = _check_fields(path, None, {title_field: title, text_field: text}, title_field, text_field)
        except DataError as e:
            raise DataError(path, None, f"row {i}: {e.reason}") from None
        docs.append(Document(title, text, f"{path} row {i}"))
    return docs


def _read_text_file(path: Path) -> Document:
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(path, None, f"is not UTF-8 text ({e})") from None
    title, lines = path.stem, raw.splitlines()
    if path.suffix.lower() in (".md", ".markdown"):
        kept, found = [], False
        for line in lines:
            m = _HEADING.match(line)
            if m and not found:
                title, found = m.group(1), True
                continue
            kept.append(m.group(1) + "." if m else line)  # later headings: plain sentences
        lines = kept
    text = "\n".join(lines)
    if not text.strip():
        raise DataError(path, 1, "empty text (the file has no text" + (" besides its heading)" if
                                                                       len(lines) < len(raw.splitlines()) else ")"))
    return Document(_squeeze(title), text, str(path))


def _read_folder(path: Path) -> list[Document]:
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES
                   and not any(part.startswith(".") for part in f.relative_to(path).parts))
    if not files:
        raise DataError(path, None, "empty folder: no .txt or .md files in it")
    return [_read_text_file(f) for f in files]


def source_kind(path: str | Path) -> str:
    """'folder', 'jsonl', 'csv' or 'parquet'; DataError for a missing path or an unknown extension."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "no such file or folder")
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(path, None, f"unknown extension {suffix or '(none)'!r}: use .jsonl, .csv, .parquet, "
                                    f"or a folder of .txt/.md files")
    return {".ndjson": "jsonl"}.get(suffix, suffix[1:])


def read_documents(path: str | Path, title_field: str = "title", text_field: str = "text") -> list[Document]:
    """Every document of a corpus file or folder, checked (DataError on the first problem)."""
    path = Path(path)
    kind = source_kind(path)
    if kind == "folder":
        docs = _read_folder(path)
    else:
        docs = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}[kind](path, title_field, text_field)
    if not docs:
        raise DataError(path, None, "no documents in it")
    return docs


# ---------------------------------------------------------------- chunking
def split_sentences(text: str) -> list[str]:
    """Sentences of a text (after . ! ? and their CJK forms, and at blank lines), whitespace squeezed."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        out += [s for s in (_squeeze(x) for x in _SENTENCE_END.split(para.strip())) if s]
    return out


def chunk_text(text: str, chunk_words: int = 120, overlap_words: int = 20) -> list[str]:
    """The text as passages of at most `chunk_words` words, sentence-aware (see the module docstring)."""
    if chunk_words < 1:
        raise ValueError(f"chunk_words must be at least 1, got {chunk_words}")
    if not 0 <= overlap_words < chunk_words:
        raise ValueError(f"overlap_words must be at least 0 and below chunk_words ({chunk_words}), "
                         f"got {overlap_words}")
    units: list[list[str]] = []
    for sent in split_sentences(text):
        words = sent.split()
        if len(words) <= chunk_words:
            units.append(words)
            continue
        step = chunk_words - overlap_words
        for i in range(0, len(words), step):
            units.append(words[i:i + chunk_words])
            if i + chunk_words >= len(words):
                break
    chunks, i = [], 0
    while i < len(units):
        j, n = i, 0
        while j < len(units) and n + len(units[j]) <= chunk_words:
            n += len(units[j])
            j += 1
        chunks.append(" ".join(w for u in units[i:j] for w in u))
        if j >= len(units):
            break
        k, n = j, 0  # the next chunk starts with the trailing sentences that fit in the overlap
        while k - 1 > i and n + len(units[k - 1]) <= overlap_words:
            k -= 1
            n += len(units[k])
        i = k
    return chunks


def chunk_documents(docs: Iterable[Document], chunk_words: int = 120, overlap_words: int = 20) -> list[Passage]:
    """Passages of every document, in order; each keeps its document's title."""
    return [Passage(d.title, chunk) for d in docs for chunk in chunk_text(d.text, chunk_words, overlap_words)]


def read_passages(path: str | Path, title_field: str = "title", text_field: str = "text", chunk_words: int = 120,
                  overlap_words: int = 20) -> tuple[list[Document], list[Passage]]:
    docs = read_documents(path, title_field, text_field)
    return docs, chunk_documents(docs, chunk_words, overlap_words)


__all__ = ["Document", "read_documents", "read_passages", "chunk_text", "chunk_documents", "split_sentences",
           "source_kind"]
