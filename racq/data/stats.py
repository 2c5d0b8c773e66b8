"""Record and topic counts per dataset and split (what `racq data stats` prints).

    python -c "from racq.data.stats import dataset_stats, format_stats; print(format_stats(dataset_stats()))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from racq.data import LOADERS, SPLITS, load_examples


def dataset_stats(data_dir: Path | None = None, datasets: Iterable[str] | None = None,
                  data_file: str | Path | None = None, index=None) -> list[dict]:
    """One row {dataset, split, records, topics} per dataset (all registered by default) and split.

    With `data_file`: per `dataset` label of that file (every row is checked on the way)."""
    examples = load_examples(datasets, data_dir=data_dir, data_file=data_file, index=index)
    rows = []
    for name in dict.fromkeys(e.dataset for e in examples) if data_file else datasets or LOADERS:
        for split in SPLITS:
            chosen = [ex for ex in examples if ex.dataset == name and ex.split == split]
            rows.append({"dataset": name, "split": split, "records": len(chosen),
                         "topics": len({ex.topic_id for ex in chosen})})
    return rows


def format_stats(rows: list[dict]) -> str:
    """A plain-text table of dataset_stats() rows: records (topics) per split, plus a total column.

    The total counts topics per dataset, so it is the sum over splits (no topic is in two splits).
    """
    by_name: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_name.setdefault(row["dataset"], {})[row["split"]] = row
    header = ["dataset", *SPLITS, "total"]
    lines = [header]
    for name, splits in by_name.items():
        cells = [splits.get(s, {"records": 0, "topics": 0}) for s in SPLITS]
        total = {k: sum(c[k] for c in cells) for k in ("records", "topics")}
        lines.append([name, *(f"{c['records']} ({c['topics']})" for c in [*cells, total])])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
            for line in lines]
    return "\n".join(text) + "\nrecords (topics) per split; a topic is never in two splits."
