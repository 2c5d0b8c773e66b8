"""Exports: TRL preference data from the votes, and every raw vote row.

    from racq.store import open_db, export_prefs, export_votes
    export_prefs(open_db(), "runs/prefs.jsonl", tokenizer=tok)   # conversational when tok has a chat template
    export_prefs(open_db(), "runs/prefs.parquet", format="parquet", conversational=False)
    export_votes(open_db(), "runs/votes.jsonl")

TRL's explicit-prompt preference format: `prompt`, `chosen`, `rejected`. Conversational: `prompt` is the
message list from racq.prompts.passage_prompt_messages, `chosen`/`rejected` are one assistant message
each. Plain: `prompt` is the string racq.prompts.render gives (the chat template with the assistant
turn opened when the tokenizer has one, else the plain text), `chosen`/`rejected` are strings.
Lineage columns ride along: item_id, query_id, dataset, topic_id, vote_ids, annotators, chosen_stage,
rejected_stage, chosen_candidate_id, rejected_candidate_id. Which votes give a row: preference_pairs.
Files are written to a temporary name and renamed, so a failed export never leaves a half file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from racq.store.db import Store, StoreError
from racq.store.votes import all_votes, preference_pairs

FORMATS = ("jsonl", "parquet")


def _write(rows: list[dict], path: Path, format: str) -> None:
    if format not in FORMATS:
        raise StoreError(f"format must be one of {FORMATS}, got {format!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if format == "jsonl":
            with open(tmp, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _format_of(path: Path, format: str | None) -> str:
    return format or ("parquet" if path.suffix == ".parquet" else "jsonl")


def export_prefs(db: Store, path: str | Path, format: str | None = None, tokenizer=None, *,
                 conversational: bool | None = None, top_k: int = 3, passage_tokens: int = 64,
                 stages: Iterable[str] | None = None, unused_only: bool = False) -> int:
    """Write the preference pairs as TRL preference rows; returns the number of rows written.

    format: 'jsonl' or 'parquet' (default: from the file suffix). conversational: message lists
    (default: True exactly when `tokenizer` has a chat template). top_k/passage_tokens go to the
    prompt builder; stages/unused_only go to preference_pairs.
    """
    # Imported here so the store loads without the prompt module; the prompt text is the exact one
    # generation used (racq.prompts.render), so training sees what the stages were prompted with.
    from racq.prompts import has_chat_template, passage_prompt_messages, render

    path = Path(path)
    conversational = has_chat_template(tokenizer) if conversational is None else conversational
    rows = []
    for p in preference_pairs(db, stages=stages, unused_only=unused_only):
        messages = passage_prompt_messages(p["query"], list(p["passages"]), tokenizer=tokenizer,
                                           top_k=top_k, passage_tokens=passage_tokens)
        if conversational:
            row = {"prompt": messages,
                   "chosen": [{"role": "assistant", "content": p["chosen"]}],
                   "rejected": [{"role": "assistant", "content": p["rejected"]}]}
        else:
            row = {"prompt": render(messages, tokenizer), "chosen": p["chosen"], "rejected": p["rejected"]}
        row.update({k: p[k] for k in ("item_id", "query_id", "dataset", "topic_id", "vote_ids", "annotators",
                                      "chosen_stage", "rejected_stage", "chosen_candidate_id",
                                      "rejected_candidate_id")})
        rows.append(row)
    _write(rows, path, _format_of(path, format))
    return len(rows)


def export_votes(db: Store, path: str | Path, format: str | None = None) -> int:
    """Write every raw vote row (undo rows included, oldest first); returns the number of rows."""
    path = Path(path)
    rows = all_votes(db)
    _write(rows, path, _format_of(path, format))
    return len(rows)
