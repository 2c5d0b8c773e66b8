"""Loaders for the RAC authors' PaQa test and CAmbigNQ dev files (records with Wikipedia passages).

PaQa: `Passage` is a Python-literal list of "# Title\\nText" strings. CAmbigNQ: `Passage` is one
lower-cased string "[# title text, # title text, ...]" with no title/text separator, so the title
is left empty and the whole chunk is the text.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from racq.config import DATA_DIR
from racq.data.core import DataError, Example, Passage, clean_text, jsonl_rows, query_topic, register


def _paqa_passages(raw: str) -> list[Passage]:
    items = ast.literal_eval(raw)
    if not isinstance(items, list):
        raise ValueError("Passage is not a list")
    out = []
    for item in items:
        head, _, body = str(item).partition("\n")
        title = head.lstrip("#").strip() if head.startswith("#") else ""
        text = body if title else str(item)
        out.append(Passage(clean_text(title), clean_text(text)))
    return out


def _cambignq_passages(raw: str) -> list[Passage]:
    raw = raw.strip()
    if not (raw.startswith("[") and raw.endswith("]")):
        raise ValueError("Passage is not a bracketed list")
    chunks = re.split(r"(?:^|,\s)#\s", raw[1:-1])
    return [Passage("", clean_text(c)) for c in chunks if c.strip()]


def _load(path: Path, dataset: str, parse) -> list[Example]:
    out = []
    for lineno, row in jsonl_rows(path):
        if not isinstance(row, dict):
            raise DataError(path, lineno, "expected a JSON object")
        missing = [k for k in ("topic", "question", "Passage") if not isinstance(row.get(k), str)]
        if missing:
            raise DataError(path, lineno, f"missing or non-text field(s): {', '.join(missing)}")
        try:
            passages = parse(row["Passage"])
        except (ValueError, SyntaxError) as e:
            raise DataError(path, lineno, f"cannot parse Passage: {e}") from None
        query = clean_text(row["topic"])
        if not query:
            raise DataError(path, lineno, "empty topic (query)")
        out.append(Example(query=query, gold_question=clean_text(row["question"]),
                           passages=tuple(p for p in passages if p.text), dataset=dataset,
                           topic_id=query_topic(query)))
    return out


@register("paqa")
def load_paqa(data_dir: Path) -> list[Example]:
    return _load(Path(data_dir) / "rac" / "paqa_test.jsonl.gz", "paqa", _paqa_passages)


@register("cambignq")
def load_cambignq(data_dir: Path) -> list[Example]:
    return _load(Path(data_dir) / "rac" / "cambignq_dev.jsonl.gz", "cambignq", _cambignq_passages)


# Datasets whose records carry passages (the training pool and the shipped corpus).
PASSAGE_DATASETS = ("paqa", "cambignq")


def passage_examples(data_dir: Path | None = None) -> list[Example]:
    """Every record of the PASSAGE_DATASETS (the shipped corpus's source), without the loader registry."""
    data_dir = Path(data_dir or DATA_DIR)
    return [*load_paqa(data_dir), *load_cambignq(data_dir)]
