"""The shape every record takes (Example, Passage), the split rule, the text helpers the loaders share,
and the loader registry. Imports nothing else of racq.data, so the loaders (rac, clariq, generic) and
racq.retrieval read these without importing the package that imports them (racq.data re-exports all).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator


SPLITS = ("test", "t1", "t2")


class DataError(ValueError):
    """A data file could not be read; the message names the file, the line and the reason."""

    def __init__(self, path, line: int | None, reason: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path, self.line, self.reason = str(path), line, reason


@dataclass(frozen=True)
class Passage:
    title: str
    text: str

    @property
    def pid(self) -> str:
        """Content hash: the same passage gets the same id wherever it appears."""
        return hashlib.sha1(f"{self.title}\n{self.text}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Example:
    query: str
    gold_question: str
    passages: tuple[Passage, ...]
    dataset: str
    topic_id: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def split(self) -> str:
        return split_of(self.topic_id)


_ESCAPES = re.compile(r"\\+(['\"])")


def clean_text(text: str) -> str:
    """Drop the stray backslash escapes (`Obama\\'s`) of ClariQ/Qulac and squeeze whitespace."""
    text = _ESCAPES.sub(r"\1", text or "")
    return re.sub(r"\s+", " ", text).strip()


def normalise_query(query: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", clean_text(query).lower()).strip()


def query_topic(query: str) -> str:
    """The split key of a record without a topic of its own: its normalised query."""
    return f"q:{normalise_query(query)}"


def split_of(topic_key: str) -> str:
    bucket = int(hashlib.sha256(topic_key.encode()).hexdigest(), 16) % 100
    return "test" if bucket < 20 else "t1" if bucket < 60 else "t2"


def open_text(path: Path):
    """Open a data file as text, gzip or plain, whichever exists (`x.jsonl` or `x.jsonl.gz`)."""
    path = Path(path)
    if not path.exists() and path.with_name(path.name + ".gz").exists():
        path = path.with_name(path.name + ".gz")
    if not path.exists():
        raise DataError(path, None, "file not found (is the repository's data/ folder complete?)")
    if path.suffix == ".gz":
        return _Text(gzip.open(path, "rt", encoding="utf-8"), path)
    return _Text(open(path, encoding="utf-8"), path)


class _Text:
    """A data file's text (iterate lines or read()). A corrupt or truncated gzip, or bytes that are not
    UTF-8, raise DataError naming the file instead of a bare BadGzipFile/EOFError/UnicodeDecodeError."""

    _BROKEN = (UnicodeDecodeError, EOFError, OSError, zlib.error)  # gzip.BadGzipFile is an OSError

    def __init__(self, fh, path: Path):
        self._fh, self._path, self._lines = fh, path, 0

    def _error(self, e: Exception) -> DataError:
        what = ("is not UTF-8 text" if isinstance(e, UnicodeDecodeError) else "is truncated or not a valid gzip "
                "file" if self._path.suffix == ".gz" else "cannot be read")
        # Text is decoded in blocks, so the failing byte may lie a few lines past the last line read.
        return DataError(self._path, None, f"{what} ({e}); {self._lines} lines were read before it")

    def __iter__(self):
        return self

    def __next__(self) -> str:
        try:
            line = next(self._fh)
        except self._BROKEN as e:
            raise self._error(e) from None
        self._lines += 1
        return line

    def read(self, size: int = -1) -> str:
        try:
            return self._fh.read(size)
        except self._BROKEN as e:
            raise self._error(e) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def jsonl_rows(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) of every non-blank line of a JSONL file (gzip or plain, via open_text);
    a line that is not JSON raises DataError naming it."""
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, lineno, f"not valid JSON ({e.msg} at column {e.colno})") from None


# name -> loader(data_dir) yielding Examples. Loader modules register themselves below.
LOADERS: dict[str, Callable[[Path], Iterable[Example]]] = {}


def register(name: str):
    def wrap(fn):
        LOADERS[name] = fn
        return fn
    return wrap
