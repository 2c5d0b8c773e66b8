"""The two prompts of RAC and the answer clean-up, shared by training, pairs, evaluation and the app.

- passage prompt  p(question | query, passages): instruction, `User Query:`, `Passages:`,
  `Clarifying Question:` — the RAC authors' layout, wrapped in the model's chat template when it has one;
- query-only prompt p(question | query): the same without passages (the "hallucinating" model);
- `extract_question`: keep the first question, cut after the first "?".

Passages are trimmed to a token budget each (top-k after ranking), because prompt length is the main
cost of generation on a CPU.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

from racq.data import Passage
# trim lives with the evidence it cuts; importable from here as before
from racq.evidence import block, prompt_passages, trim  # noqa: F401

INSTRUCTION = (
    "You help a search engine. The user's query is ambiguous. Using only the passages, ask the user "
    "ONE short clarifying question that offers the interpretations the passages support.")
QUERY_ONLY_INSTRUCTION = (
    "You help a search engine. The user's query is ambiguous. Ask the user ONE short clarifying "
    "question that offers possible interpretations.")


def format_passages(passages: Sequence[Passage], top_k: int, passage_tokens: int, tokenizer=None,
                    evidence: str = "lead", query: str = "") -> str:
    """The prompt's numbered passage lines, the evidence chosen by racq.evidence (`lead`: top_k heads)."""
    return block(prompt_passages(query, passages, tokenizer, top_k, passage_tokens, evidence))


def passage_prompt_messages(query: str, passages: Sequence[Passage], tokenizer=None, top_k: int = 3,
                            passage_tokens: int = 64, evidence: str = "lead") -> list[dict]:
    """Chat messages for p(question | query, passages). `passages` are already ranked (for `mmr`
    evidence: all of them, not just the top_k)."""
    user = (f"User Query: {query.strip()}\n"
            f"Passages:\n{format_passages(passages, top_k, passage_tokens, tokenizer, evidence, query)}\n"
            f"Clarifying Question:")
    return [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": user}]


def query_prompt_messages(query: str) -> list[dict]:
    """Chat messages for p(question | query): no passages, so it invents options (by design)."""
    user = f"User Query: {query.strip()}\nClarifying Question:"
    return [{"role": "system", "content": QUERY_ONLY_INSTRUCTION}, {"role": "user", "content": user}]


def base_opener(prompt: str, openers: Sequence[str]) -> str:
    """The base stage's reply opener for this prompt: one of `openers` chosen by a stable hash of the
    prompt text (the same prompt always gets the same opener, on every machine), "" when none. One
    constant opener would fingerprint base in a blind pair; a hash spreads them evenly over queries."""
    if not openers:
        return ""
    return openers[int(hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12], 16) % len(openers)]


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render(messages: list[dict], tokenizer, use_chat_template: bool = True) -> str:
    """Prompt text ready for generation: the chat template with the assistant turn opened, or plain text."""
    if use_chat_template and has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + " "


_PREFIX = re.compile(r"^\s*(?:clarifying\s+question\s*:|question\s*:|assistant\s*:)\s*", re.I)


def extract_question(text: str) -> str:
    """The model's answer as one question: drop a leading label, quotes and whitespace; cut after the
    first "?". Text without a "?" keeps its first line, so the caller can tell and retry."""
    text = _PREFIX.sub("", text.strip())
    text = text[: text.index("?") + 1] if "?" in text else text.split("\n")[0]
    return re.sub(r"\s+", " ", text).strip().strip("\"'“”‘’`*").strip()
