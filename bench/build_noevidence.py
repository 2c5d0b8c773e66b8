"""Build data/ambignq/noevidence.jsonl.gz: ambiguous AmbigNQ *train* queries that share no topic with the
shipped corpus (the PaQa + CAmbigNQ passages `racq index build` embeds), for the no-evidence evaluation
(bench/bench_noevidence.py) and, as a separate disjoint sample, for calibrating racq.coverage.

    .venv/bin/python bench/build_noevidence.py --ambignq ../shared/data/ambignq/train_light.json

The rule (`topic_overlap`; it looks at the whole corpus, never at retrieval, so the set is independent of
the coverage signal it tests). An AmbigNQ train question with a `multipleQAs` annotation is kept only when
1. it is not a query of any shipped record (normalised as racq.data.normalise_query);
2. no answer of any of its interpretations occurs, as a phrase of normalised tokens (racq.scoring.options.
   norm_tokens: lower-case, stemmed, numbers folded), in any corpus passage text or title -- answers made
   only of numbers (years, counts) are not checked: a bare "1987" names no topic and is in every corpus;
3. no bigram of its content words (racq.scoring.options.content_tokens, adjacent after stopwords are dropped) is
   a bigram of content words of any passage text or title ("simpson 1", "1 air": a topic's names and its
   fixed phrases);
4. no passage title (its parenthetical dropped, >= 1 non-number content word) has all its content words
   in the query ("Zanzibar (archipelago)" in "what is the capital of zanzibar"): one-word topics slip
   past rule 3.
The questions kept are shuffled with `--seed`; the first `--n` form split "eval" and the next `--n-calib`
split "calibration". Each line is {key, id, question, annotations, split}, `annotations` every
multipleQAs annotation's qaPairs unchanged (racq.scoring.usefulness.load_interpretations reads the file). The
gzip has a fixed mtime: the same input gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
from pathlib import Path
from typing import Iterable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from racq.config import DATA_DIR  # noqa: E402
from racq.data import Passage, normalise_query  # noqa: E402
from racq.scoring.options import content_tokens, is_number, norm_tokens  # noqa: E402

OUT = DATA_DIR / "ambignq" / "noevidence.jsonl.gz"
_PAREN = re.compile(r"\([^)]*\)")


class CorpusVocab:
    """What rule 2-4 look up: the corpus as one string of normalised tokens, its content bigrams, and the
    content-word sets of its titles."""

    def __init__(self, passages: Iterable[Passage]):
        texts, self.bigrams, titles = [], set(), set()
        for p in passages:
            for field in (p.title, p.text):
                if not field:
                    continue
                texts.append(" ".join(norm_tokens(field)))
                ct = content_tokens(field)
                self.bigrams.update(zip(ct, ct[1:]))
            title = frozenset(content_tokens(_PAREN.sub(" ", p.title or "")))
            if any(not is_number(t) for t in title):
                titles.add(title)
        self.text = " | " + " | ".join(texts) + " | "  # phrases never run across two fields
        self.titles = titles

    def has_phrase(self, text: str) -> bool:
        toks = norm_tokens(text)
        return bool(toks) and f" {' '.join(toks)} " in self.text


def answers_of(item: dict) -> list[str]:
    return [a for ann in item["annotations"] if ann["type"] == "multipleQAs"
            for qa in ann["qaPairs"] for ans in qa["answer"] for a in ans.split("|") if a.strip()]


def topic_overlap(query: str, answers: Sequence[str], vocab: CorpusVocab) -> str | None:
    """Why the query shares a topic with the corpus (rules 2-4 of the module docstring), or None."""
    for a in answers:
        ct = content_tokens(a)
        if ct and not all(is_number(t) for t in ct) and vocab.has_phrase(a):
            return f"answer {a!r} is in the corpus"
    ct = content_tokens(query)
    for bg in zip(ct, ct[1:]):
        if bg in vocab.bigrams:
            return f"bigram {' '.join(bg)!r} is in the corpus"
    qset = set(ct)
    for title in vocab.titles:
        if title <= qset:
            return f"title words {sorted(title)} are in the query"
    return None


def select(items: Sequence[dict], vocab: CorpusVocab, shipped: set[str]) -> tuple[list[dict], dict]:
    """The ambiguous items that pass every rule, and how many each rule dropped."""
    kept, why = [], {"not ambiguous": 0, "shipped query": 0, "answer": 0, "bigram": 0, "title": 0}
    seen = set()
    for item in items:
        key = normalise_query(item["question"])
        if not any(a["type"] == "multipleQAs" for a in item["annotations"]) or key in seen:
            why["not ambiguous"] += 1
            continue
        seen.add(key)
        if key in shipped:
            why["shipped query"] += 1
            continue
        reason = topic_overlap(item["question"], answers_of(item), vocab)
        if reason:
            why[reason.split()[0]] += 1
            continue
        kept.append(item)
    return kept, why


def record(item: dict, split: str) -> dict:
    anns = [[{"question": qa["question"], "answer": qa["answer"]} for qa in a["qaPairs"]]
            for a in item["annotations"] if a["type"] == "multipleQAs"]
    return {"key": normalise_query(item["question"]), "id": item["id"], "question": item["question"],
            "annotations": anns, "split": split}


def build(ambignq: Path, out: Path, n: int = 120, n_calib: int = 150, seed: int = 11,
          passages: Sequence[Passage] | None = None, shipped: set[str] | None = None) -> dict:
    if passages is None or shipped is None:
        from racq.data import PASSAGE_DATASETS, load_examples
        from racq.retrieval import build_corpus

        exs = load_examples(PASSAGE_DATASETS)
        passages = build_corpus(exs) if passages is None else passages
        shipped = {normalise_query(e.query) for e in exs} if shipped is None else shipped
    vocab = CorpusVocab(passages)
    items = json.loads(Path(ambignq).read_text(encoding="utf-8"))
    kept, why = select(items, vocab, shipped)
    kept.sort(key=lambda it: it["id"])  # file order must not matter, only the seed
    random.Random(seed).shuffle(kept)
    rows = [record(it, "eval") for it in kept[:n]] + [record(it, "calibration") for it in kept[n:n + n_calib]]
    out.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as fh:
        fh.write(body.encode("utf-8"))
    return {"items": len(items), "passages": len(passages), "passed": len(kept), "dropped": why,
            "eval": min(n, len(kept)), "calibration": max(0, min(n_calib, len(kept) - n))}


def load(path: str | Path = OUT, split: str = "eval") -> list[dict]:
    """The records of one split ("eval" or "calibration") of a file this script wrote."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [r for r in map(json.loads, fh) if r["split"] == split]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ambignq", type=Path, required=True, help="AmbigNQ light JSON (train_light.json)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--n", type=int, default=120, help="queries in the eval split")
    ap.add_argument("--n-calib", type=int, default=150, help="queries in the calibration split (disjoint)")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)
    print(json.dumps(build(args.ambignq, args.out, args.n, args.n_calib, args.seed)))


if __name__ == "__main__":
    main()
