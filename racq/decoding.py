"""Decoding guards against a small model's loops and repeated options (GenConfig.no_repeat_ngram_size).

    from racq.decoding import guard_processors
    procs = guard_processors(GenConfig(no_repeat_ngram_size=4), prompt_len=enc["input_ids"].shape[1])

`NewTextNoRepeatNGram` bans any n-gram the reply has already produced ("the one who sings the song, or
the one who sings the song", "Greenland, Greenland, Greenland"). Unlike transformers' own
`no_repeat_ngram_size` it looks at the generated tokens only: the stock processor also bans n-grams of
the prompt, so a question could no longer copy a title or a date from its passages -- exactly what a
grounded option needs. The n-gram bookkeeping is transformers' NoRepeatNGramLogitsProcessor, run on the
reply's slice of the sequence.
"""

from __future__ import annotations

from transformers import LogitsProcessor
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

from racq.config import GenConfig


class NewTextNoRepeatNGram(LogitsProcessor):
    def __init__(self, size: int, prompt_len: int):
        self.inner, self.start = NoRepeatNGramLogitsProcessor(size), prompt_len

    def __call__(self, input_ids, scores):
        return self.inner(input_ids[:, self.start:], scores)


def guard_processors(gen: GenConfig, prompt_len: int) -> list[LogitsProcessor]:
    """The logits processors GenConfig's guards ask for ([] when none is on)."""
    return [NewTextNoRepeatNGram(gen.no_repeat_ngram_size, prompt_len)] if gen.no_repeat_ngram_size > 0 else []
