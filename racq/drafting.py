"""Prompt-lookup guesses for the joint engine's decode steps (racq.multilora, ModelConfig.draft_tokens).

    from racq.drafting import draft
    guess = draft(row, rows, k=3, history=earlier_replies)   # up to 3 token ids to check in the next pass

A guess costs little on a CPU (one pass over 3 rows x 4 tokens is about a quarter dearer than 3 x 1) and
the stages copy titles, the query, each other and their own earlier questions' shapes, so a question
takes about a third fewer passes (bench/README.md). The engine keeps a guess only where it equals the
row's own choice, so guesses never change the text.
"""

from __future__ import annotations

from typing import Sequence

# Finished replies kept as guessing material for later queries (racq.drafting.draft): the stages ask in
# the same few shapes ("Do you want to know about the ... or the ...?"), so an earlier reply often holds
# the next few tokens. On 16 t2 queries in a row it saved ~1 decode pass in 10 (bench/README.md run 5).
HISTORY_REPLIES = 64


def draft(row: dict, rows: list[dict], k: int, history: Sequence[list[int]] = ()) -> list[int]:
    """Up to k tokens guessed to follow ROW's text (prompt lookup): what followed the latest earlier
    occurrence of its last 3, else 2, else 1 tokens, looked up first in the other stages' replies (the
    stages often ask alike), then in its own prompt and reply (questions copy titles and the query), then
    in earlier queries' replies, newest first (HISTORY, the shapes the stages ask in)."""
    if k <= 0:
        return []
    seq = row["ids"] + row["new"]
    sources = [o["new"] for o in rows if o is not row] + [seq[:-1]] + list(reversed(history))
    for g in (3, 2, 1):
        if len(seq) <= g:
            continue
        tail = seq[-g:]
        for src in sources:
            for i in range(len(src) - g, -1, -1):
                if src[i:i + g] == tail and i + g < len(src):
                    return src[i + g:i + g + k]
    return []
