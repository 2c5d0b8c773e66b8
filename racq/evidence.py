"""Which evidence goes into the passage prompt, at a fixed token budget (PromptConfig.evidence).

    from racq.evidence import prompt_passages
    shown = prompt_passages(query, ranked_passages, tokenizer, top_k=3, passage_tokens=64, evidence="mmr")
    # -> the Passage objects exactly as the prompt shows them (title, trimmed/selected text)

- `lead` (the shipped adapters were trained on it): the top_k ranked passages, the first
  passage_tokens tokens of each;
- `mmr`: sentence units (or word windows for unpunctuated passages, as the faithfulness scorer splits
  them) from ALL the ranked passages, chosen greedily, MMR-style, over content words: score =
  lam * relevance + (1 - lam) * novelty, relevance = share of the query's content words in the unit
  (title included) plus a small prior for the top passages, novelty = share of the unit's words not yet
  shown (a sentence naming a new year, team or version beats a re-phrasing). Units are added
  while the block stays within the token length of `lead`'s block for the same query (equal budget, so
  a prompt never gets longer), then shown grouped by passage in rank order, units joined by " ... ".
  Why: the interpretations of an ambiguous query sit in different sentences, often of lower-ranked
  passages, while lead's 64-token heads repeat the top passage's topic sentence. Measured
  (bench/bench_evidence.py, docs/eval/test-usefulness-report.md): at this budget it moves the evidence
  ceiling and the gold grounding by no more than the noise, because the own passages themselves lack
  most gold options (every own passage, whole, grounds the gold question 17-40 % of the time); so
  `lead` stays the default, and `mmr` is kept as the setting to retrain with once better passages
  (retrieval over a corpus that holds the interpretations) exist. An embedding-scored MMR (MiniLM
  cosines for relevance and redundancy) was tried on t2 too and did no better. An oracle that reads
  the interpretations (bench only) fits the evidence for >= 2 readings in ~70 tokens as often as every
  passage whole does (~80 %): the budget is not binding, the selection signal is.
"""

from __future__ import annotations

from typing import Sequence

from racq.data import Passage

EVIDENCE_MODES = ("lead", "mmr")
MMR_LAMBDA = 0.5      # relevance vs redundancy (chosen on t2 with bench/bench_evidence.py)
RANK_PRIOR = 0.05     # relevance bonus per rank step towards the top passage
JOINER = " ... "


def _ntok(text: str, tokenizer) -> int:
    if tokenizer is None:
        return max(1, round(len(text.split()) / 0.75))
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def trim(text: str, budget: int, tokenizer=None) -> str:
    """Cut `text` to about `budget` tokens (exactly, with a tokenizer; ~0.75 words a token without)."""
    if budget <= 0:
        return ""
    if tokenizer is None:
        words = text.split()
        keep = max(1, int(budget * 0.75))
        return text if len(words) <= keep else " ".join(words[:keep]) + " ..."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= budget:
        return text
    return tokenizer.decode(ids[:budget], skip_special_tokens=True).rstrip() + " ..."


def block(passages: Sequence[Passage]) -> str:
    """The prompt's passage block: one numbered line per passage."""
    return "\n".join((f"[{i}] {p.title}: " if p.title else f"[{i}] ") + p.text for i, p in enumerate(passages, 1))


def lead(passages: Sequence[Passage], top_k: int, passage_tokens: int, tokenizer=None) -> list[Passage]:
    return [Passage(p.title, trim(p.text, passage_tokens, tokenizer)) for p in list(passages)[:top_k]]


def mmr(query: str, passages: Sequence[Passage], budget: int, tokenizer=None, lam: float = MMR_LAMBDA) -> list[Passage]:
    """Sentence units of all `passages` (ranked) chosen by lexical MMR within `budget` tokens."""
    from racq.scoring.faithfulness import split_units
    from racq.scoring.options import content_tokens, is_content

    qtok = set(content_tokens(query))
    cands = []  # (passage rank, unit order, text, content tokens)
    for r, p in enumerate(passages):
        for k, u in enumerate(split_units(p)):
            toks = {t for t in u.tokens if is_content(t)}
            if toks:
                cands.append((r, k, u.text, toks))
    rel = {i: (len(qtok & c[3]) / len(qtok) if qtok else 0.0) + RANK_PRIOR * max(0, 3 - c[0]) / 3
           for i, c in enumerate(cands)}
    # cost of a unit = its tokens + a joiner; a passage's first unit also pays its "[i] title: " head
    cost = {i: _ntok(c[2], tokenizer) + 2 for i, c in enumerate(cands)}
    head = {r: _ntok(f"[{r + 1}] {p.title}: ", tokenizer) for r, p in enumerate(passages)}
    chosen: list[int] = []
    used, shown, seen = 0, set(), set(qtok)
    while True:
        best, best_score = None, None
        for i, c in enumerate(cands):
            if i in chosen or used + cost[i] + (0 if c[0] in shown else head[c[0]]) > budget:
                continue
            new = len(c[3] - seen) / len(c[3])  # share of the unit's words not shown yet
            score = lam * rel[i] + (1 - lam) * new
            if best_score is None or score > best_score:
                best, best_score = i, score
        if best is None:
            break
        chosen.append(best)
        used += cost[best] + (0 if cands[best][0] in shown else head[cands[best][0]])
        shown.add(cands[best][0])
        seen |= cands[best][3]
    out = _group([cands[j] for j in chosen], passages)
    while chosen and _ntok(block(out), tokenizer) > budget:  # the estimate is close, the check exact
        chosen.pop()
        out = _group([cands[j] for j in chosen], passages)
    return out


def _group(units, passages: Sequence[Passage]) -> list[Passage]:
    by: dict[int, list] = {}
    for u in sorted(units, key=lambda u: (u[0], u[1])):
        by.setdefault(u[0], []).append(u[2])
    return [Passage(passages[r].title, JOINER.join(texts)) for r, texts in by.items()]


def prompt_passages(query: str, passages: Sequence[Passage], tokenizer=None, top_k: int = 3,
                    passage_tokens: int = 64, evidence: str = "lead") -> list[Passage]:
    """The passages exactly as the prompt shows them (module docstring); `passages` are ranked."""
    if evidence not in EVIDENCE_MODES:
        raise ValueError(f"evidence must be one of {', '.join(EVIDENCE_MODES)}, not {evidence!r}")
    head = lead(passages, top_k, passage_tokens, tokenizer)
    if evidence == "lead" or not passages:
        return head
    return mmr(query, passages, _ntok(block(head), tokenizer), tokenizer)
