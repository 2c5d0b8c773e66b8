"""Exports of the annotators' votes: TRL preference files (the store's pair rows -> prompt/chosen/rejected
rows) and raw vote files, each with an optional dataset card (racq.annotation.datacard).

    from racq.annotation.prefs import export_prefs, export_votes
    export_votes(open_db(), "runs/votes.csv", card="runs/README.md")   # every raw vote row + a dataset card
    export_prefs(open_db(), "runs/prefs.jsonl", tokenizer=tok)   # conversational when tok has a chat template
    export_prefs(open_db(), "runs/prefs.parquet", format="parquet", conversational=False)
    export_prefs(open_db(), "runs/prefs.jsonl", card="runs/README.md")   # + a dataset card (racq.annotation.datacard)

TRL's explicit-prompt preference format: `prompt`, `chosen`, `rejected`. Conversational: `prompt` is the
message list from racq.prompts.passage_prompt_messages, `chosen`/`rejected` are one assistant message
each. Plain: `prompt` is the string racq.prompts.render gives (the chat template with the assistant
turn opened when the tokenizer has one, else the plain text), `chosen`/`rejected` are strings.
Lineage columns ride along: item_id, query_id, dataset, topic_id, vote_ids, annotators, chosen_stage,
rejected_stage, chosen_candidate_id, rejected_candidate_id. Which votes give a row:
racq.store.preference_pairs; the rows and the card's facts come from one snapshot
(racq.store.export.prefs_snapshot). This lives outside racq.store because the store returns rows and
never formats prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from racq.annotation.datacard import render_card, write_card
from racq.prompts import has_chat_template, passage_prompt_messages, render
from racq.store import Store
from racq.store.export import format_of, prefs_snapshot, votes_snapshot, write_rows

LINEAGE = ("item_id", "query_id", "dataset", "topic_id", "vote_ids", "annotators", "chosen_stage", "rejected_stage",
           "chosen_candidate_id", "rejected_candidate_id")


def trl_rows(pairs: Iterable[dict], tokenizer=None, *, conversational: bool = False, top_k: int = 3,
             passage_tokens: int = 64) -> list[dict]:
    """TRL preference rows (plus the LINEAGE columns) from preference pair rows. The prompt is the exact
    one generation used (racq.prompts), so training sees what the stages were prompted with."""
    rows = []
    for p in pairs:
        messages = passage_prompt_messages(p["query"], list(p["passages"]), tokenizer=tokenizer,
                                           top_k=top_k, passage_tokens=passage_tokens)
        if conversational:
            row = {"prompt": messages,
                   "chosen": [{"role": "assistant", "content": p["chosen"]}],
                   "rejected": [{"role": "assistant", "content": p["rejected"]}]}
        else:
            row = {"prompt": render(messages, tokenizer), "chosen": p["chosen"], "rejected": p["rejected"]}
        row.update({k: p[k] for k in LINEAGE})
        rows.append(row)
    return rows


def export_prefs(db: Store, path: str | Path, format: str | None = None, tokenizer=None, *,
                 conversational: bool | None = None, top_k: int = 3, passage_tokens: int = 64,
                 stages: Iterable[str] | None = None, unused_only: bool = False,
                 card: str | Path | None = None) -> int:
    """Write the preference pairs as TRL preference rows; returns the number of rows written.

    format: 'jsonl', 'parquet' or 'csv' (default: from the file suffix). conversational: message lists
    (default: True exactly when `tokenizer` has a chat template). top_k/passage_tokens go to the
    prompt builder; stages/unused_only go to preference_pairs. card: also write a dataset card there
    (racq.annotation.datacard.card_path(path) picks the usual place).
    """
    path = Path(path)
    format = format_of(path, format)
    conversational = has_chat_template(tokenizer) if conversational is None else conversational
    pairs, facts = prefs_snapshot(db, stages=stages, unused_only=unused_only)
    rows = trl_rows(pairs, tokenizer, conversational=conversational, top_k=top_k, passage_tokens=passage_tokens)
    write_rows(rows, path, format)
    if card is not None:
        write_card(card, render_card("prefs", path, format, rows, facts, db_name=db.path.name,
                                     filters={"stages": sorted(stages) if stages else None,
                                              "unused_only": unused_only}))
    return len(rows)


def export_votes(db: Store, path: str | Path, format: str | None = None, *, card: str | Path | None = None) -> int:
    """Write every raw vote row (undo rows included, oldest first); returns the number of rows.
    card: also write a dataset card there."""
    path = Path(path)
    format = format_of(path, format)
    rows, facts = votes_snapshot(db)
    write_rows(rows, path, format)
    if card is not None:
        write_card(card, render_card("votes", path, format, rows, facts, db_name=db.path.name, filters={}))
    return len(rows)


__all__ = ["export_prefs", "export_votes", "trl_rows", "LINEAGE"]
