"""Benchmark records in one shape, and the split every machine agrees on.

    from racq.data import load_examples
    test = load_examples(["paqa", "cambignq"], split="test")

Split rule (documented in data/README.md): a record's *split key* is its topic (the TREC topic for
ClariQ/Qulac/ClariQ-FKw, the normalised query for the AmbigNQ-based sets, so the same question in
PaQa and CAmbigNQ lands in one split). sha256(key) mod 100 gives a bucket: 0-19 `test`, 20-59 `t1`
(SFT and query-only training), 60-99 `t2` (preference pairs). No topic is in two splits, and the
split never depends on file order, the machine or the Python hash seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from racq.config import DATA_DIR
from racq.data.core import (LOADERS, SPLITS, DataError, Example, Passage, clean_text, jsonl_rows,  # noqa: F401
                            normalise_query, open_text, query_topic, register, split_of)  # (re-exported)
# The loader modules register their datasets in LOADERS when imported; they import racq.data.core only.
from racq.data.rac import PASSAGE_DATASETS  # noqa: F401  (registers paqa, cambignq)

try:  # registered by racq/data/clariq.py when present
    from racq.data import clariq  # noqa: F401
except ImportError:  # pragma: no cover
    pass


def iter_examples(datasets: Iterable[str] | None = None, data_dir: Path | None = None) -> Iterator[Example]:
    data_dir = Path(data_dir or DATA_DIR)
    for name in datasets or LOADERS:
        if name not in LOADERS:
            raise ValueError(f"unknown dataset {name!r}; known: {', '.join(LOADERS)}")
        yield from LOADERS[name](data_dir)


def load_examples(datasets: Iterable[str] | None = None, split: str | None = None,
                  data_dir: Path | None = None, limit: int | None = None, data_file: str | Path | None = None,
                  index=None) -> list[Example]:
    """Examples of the given datasets (all by default), optionally one split, in file order.

    With `data_file`, the rows of that file in the generic format (racq.data.generic, docs/data-format.md)
    instead of the shipped datasets (`datasets` is then ignored); `index` is the index its `passage_ids`
    point into (a loaded racq.retrieval.Index, or racq.retrieval.named_loader(name): loaded when a row needs
    it). Training, pairs, `racq eval` and `racq data stats` all read through here."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    if data_file:
        from racq.data.generic import load_data_file

        source: Iterable[Example] = load_data_file(data_file, index or None)
    else:
        source = iter_examples(datasets, data_dir)
    out = [ex for ex in source if split is None or ex.split == split]
    return out[:limit] if limit else out
