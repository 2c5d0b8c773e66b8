"""Offline faithfulness of a clarifying question to the passages it was generated from.

One interface for the app, the DPO pair filter and the report:

    from racq.scoring.faithfulness import Scorer, score
    s = score("who won the world cup", passages, "Do you mean the men's or the women's World Cup?")
    s["option_support"], s["hallucinated"], s["parent_f1"]

Scores (all keys always present unless said otherwise):
- Option grounding, the main metric. Options are extracted by racq.scoring.options (rules and limits in its
  docstring). An option is *supported* when
  * lexically: every core token of the option occurs in one passage unit (a sentence, or a window of
    `window_words` words where the passage has no sentence punctuation, as PaQa's do; the passage title
    counts as part of every unit) -> how="lexical"; or at least `lexical_coverage` of them do -> how=
    "lexical-partial";
  * or semantically: the cosine between the option in its frame (see `option_in_frame`) and the best
    passage unit (both embedded with the local sentence-transformer) is >= `semantic_threshold`
    -> how="semantic". The threshold was calibrated on real questions with
    bench/calibrate_option_threshold.py (figures in FaithfulnessConfig's help): MiniLM separates
    present from plausible-but-absent options only moderately (ROC AUC 0.86), so the threshold is set
    for 5% false support and the semantic path catches clear paraphrases (movie/film, TV show/television
    programme), not loose ones (actress/portrays).
  * or, for an option that is only an answer type ("the date, or the time?": year, date, day, time,
    number, percentage, decade), by a unit that holds a value of that type -> how="answer-type".
  In all cases every number/year of the option must be in that unit: embeddings are poor at numbers
  and a wrong year is the commonest hallucination.
  `options` lists {text, core, supported, how, passage_index, sentence, similarity} (passage_index is
  None and sentence "" when unsupported; similarity is the best cosine, None when every option of the
  question was found lexically, since then nothing is embedded); `n_options`; `option_support` =
  share of supported options, 1.0 when the question offers no option (nothing to hallucinate: the
  report must also show the share of questions with options so that option-less questions cannot
  game it); `hallucinated` = 1 if any option is unsupported, else 0.
- `novel_content`: share of the question's content tokens found in neither the query nor the passages
  (0.0 for a question without content tokens).
- PARENT-style (`parent_precision`, `parent_recall`, `parent_f1`): table-only PARENT (Dhingra et al.
  2019, word-overlap entailment; as RAC adapted it, but the table holds only the query and the passages,
  never the gold question). Table records: capitalised spans, maximal runs of content tokens (cut to
  <= 4 tokens) and numbers, from the query and every passage title and text. Precision: for n = 1..4,
  the mean over the question's content n-grams of the share of their tokens in the table; geometric mean
  over the orders present. Recall: mean over records of LCS(record, question) / len(record) -- small in
  absolute terms (one question cannot cover ten passages), so compare it only on the same passages.
- NLI (AlignScore-style), only when `nli_model` is set: `nli_question` (max over passage chunks of
  P(entailment) of the question's body), `nli_options` (the same per option in its frame), `nli_min`
  (min over the options; nli_question when there is none), `nli_hallucinated` (nli_min <
  `nli_threshold`). Without a model the dict has
  no nli_* keys and `skipped` says so -- never a made-up number.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from racq.config import DEFAULT_EMBEDDER, helpfield
from racq.data import Passage
from racq.scoring.options import (Option, content_tokens, extract_options, is_content, is_number, norm_tokens,
                          split_question)


@dataclass
class FaithfulnessConfig:
    embedder: str = helpfield(DEFAULT_EMBEDDER, "Sentence-transformer for the semantic option check.")
    use_semantic: bool = helpfield(True, "Also accept options by embedding similarity (False: lexical only).")
    semantic_threshold: float = helpfield(
        0.76, "Cosine (option in frame vs best passage unit) at which an option counts as supported. "
              "0.76 = 5% false support on plausible foreign options, 47% on present ones (ROC AUC 0.86; "
              "bench/calibrate_option_threshold.py, 120 training-split questions, top-3 passages).")
    lexical_coverage: float = helpfield(0.75, "Share of an option's core tokens that one unit must hold "
                                              "for partial lexical support (all tokens: full support).")
    unit_words: int = helpfield(40, "Sentences longer than this many words are cut into windows.")
    window_words: int = helpfield(24, "Window length (words) for unpunctuated passages.")
    window_stride: int = helpfield(12, "Window stride (words); overlap keeps neighbouring words together.")
    parent_max_n: int = helpfield(4, "Highest n-gram order in PARENT precision.")
    cache_size: int = helpfield(4096, "Passages whose units/embeddings are kept in memory.")
    nli_model: str | None = helpfield(None, "Local sequence-classification NLI model folder; None = skip NLI.")
    nli_threshold: float = helpfield(0.5, "P(entailment) below which an option/question is hallucinated.")
    nli_chunk_words: int = helpfield(200, "Passage chunk length (words) for NLI premises.")
    nli_max_length: int = helpfield(512, "Token limit of one premise+hypothesis pair.")


@dataclass(frozen=True)
class Unit:
    text: str
    tokens: frozenset


_SENT = re.compile(r"(?<=[.!?;])\s+")
_MONTH = r"(?:january|february|march|april|may|june|july|august|september|october|november|december)"
# An option that is only an answer type ("the date, or the time?") is supported by a unit that holds
# a value of that type, not by the word itself.
ANSWER_TYPES = {t: re.compile(p, re.I) for t, p in {
    "year": r"\b(?:1\d|20)\d\d\b",
    "date": rf"\b{_MONTH}\s+\d{{1,2}}\b|\b\d{{1,2}}\s+{_MONTH}\b|\b\d{{1,2}}/\d{{1,2}}/\d{{2,4}}\b",
    "day": r"\b(?:mon|tues|wednes|thurs|fri|satur|sun)day\b|" rf"\b{_MONTH}\s+\d{{1,2}}\b|\b\d{{1,2}}\s+{_MONTH}\b",
    "time": r"\b\d{1,2}(?::\d\d)?\s*[ap]\.?m\b|\b\d{1,2}:\d\d\b|o'clock",
    "number": r"\b\d+\b", "count": r"\b\d+\b", "amount": r"\b\d+\b", "total": r"\b\d+\b",
    "percentag": r"\d\s*(?:%|percent)", "decad": r"\b\d{3}0s\b",
}.items()}
_CAP_SPAN = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:(?:of|the|and|de|la|von|van|for)\s+)*[A-Z0-9][\w'’-]*)*")


def split_units(passage: Passage, unit_words: int = 40, window_words: int = 24, stride: int = 12) -> list[Unit]:
    """Sentences of a passage, long/unpunctuated ones cut into overlapping word windows."""
    title = set(norm_tokens(passage.title))
    pieces = []
    for sent in _SENT.split(passage.text.strip()):
        ws = sent.split()
        if len(ws) <= unit_words:
            pieces.append(" ".join(ws))
            continue
        for start in range(0, max(len(ws) - window_words, 0) + stride, stride):
            chunk = ws[start:start + window_words]
            if chunk:
                pieces.append(" ".join(chunk))
            if start + window_words >= len(ws):
                break
    return [Unit(p, frozenset(norm_tokens(p)) | title) for p in pieces if p]


def option_in_frame(option: Option, query: str) -> str:
    """What the semantic check embeds: the option, then the query as its frame."""
    return f"{option.text} ({query.rstrip('?').strip()})"


# ---------------------------------------------------------------- PARENT-style
def fact_table(query: str, passages: Sequence[Passage], max_len: int = 4) -> list[tuple[str, ...]]:
    """Records (token tuples) from the query and the passages; see the module docstring."""
    records: dict[tuple[str, ...], None] = {}
    for text in [query] + [t for p in passages for t in (p.title, p.text)]:
        for m in _CAP_SPAN.finditer(text):
            rec = tuple(content_tokens(m.group()))
            if rec:
                records[rec] = None
        run: list[str] = []
        for tok in norm_tokens(text) + [""]:
            if tok and is_content(tok):
                run.append(tok)
                if is_number(tok):
                    records[(tok,)] = None
                continue
            for i in range(0, len(run), max_len):
                records[tuple(run[i:i + max_len])] = None
            run = []
    return list(records)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def parent_scores(question: str, table: list[tuple[str, ...]], max_n: int = 4) -> dict[str, float]:
    toks = content_tokens(question)
    if not toks or not table:
        return {"parent_precision": 0.0, "parent_recall": 0.0, "parent_f1": 0.0}
    vocab = {t for rec in table for t in rec}
    logs = []
    for n in range(1, max_n + 1):
        grams = [toks[i:i + n] for i in range(len(toks) - n + 1)]
        if not grams:
            break
        p_n = sum(sum(t in vocab for t in g) / n for g in grams) / len(grams)
        logs.append(math.log(max(p_n, 1e-9)))
    precision = math.exp(sum(logs) / len(logs))
    recall = sum(_lcs(rec, toks) / len(rec) for rec in table) / len(table)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"parent_precision": precision, "parent_recall": recall, "parent_f1": f1}


# ---------------------------------------------------------------- NLI (optional)
class NLIScorer:
    """P(entailment) from a local sequence-classification model (premise = passage chunk)."""

    def __init__(self, model_dir: str, max_length: int = 512, chunk_words: int = 200, batch_size: int = 16):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from racq.models import check_model_dir

        path = check_model_dir(model_dir, "NLI model")
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        labels = {int(i): str(name).lower() for i, name in (self.model.config.id2label or {}).items()}
        found = [i for i, name in labels.items() if name.startswith("entail")]
        if len(found) != 1:
            raise ValueError(f"{path}: config.id2label {labels} has no single 'entailment' label; "
                             "give an NLI model whose labels name entailment")
        # Never ask for more positions than the model has (a small local model may have 128).
        limits = [max_length, getattr(self.model.config, "max_position_embeddings", None) or max_length,
                  self.tok.model_max_length if self.tok.model_max_length < 10**6 else max_length]
        self.entail_index, self.max_length = found[0], min(limits)
        self.chunk_words, self.batch_size, self._torch = chunk_words, batch_size, torch

    def chunks(self, passages: Sequence[Passage]) -> list[str]:
        out = []
        for p in passages:
            ws = p.text.split()
            for start in range(0, max(len(ws), 1), self.chunk_words):
                body = " ".join(ws[start:start + self.chunk_words])
                out.append(f"{p.title}. {body}" if p.title else body)
        return [c for c in out if c.strip(". ")]

    def entailment(self, premises: list[str], hypotheses: list[str]) -> list[float]:
        """For each hypothesis, the max over premises of P(entailment)."""
        if not premises:
            return [0.0] * len(hypotheses)
        pairs = [(p, h) for h in hypotheses for p in premises]
        probs = []
        with self._torch.no_grad():
            for i in range(0, len(pairs), self.batch_size):
                batch = pairs[i:i + self.batch_size]
                enc = self.tok([p for p, _ in batch], [h for _, h in batch], truncation="longest_first",
                               max_length=self.max_length, padding=True, return_tensors="pt")
                logits = self.model(**enc).logits.float()
                probs += logits.softmax(-1)[:, self.entail_index].tolist()
        n = len(premises)
        return [max(probs[k * n:(k + 1) * n]) for k in range(len(hypotheses))]


# ---------------------------------------------------------------- the scorer
class Scorer:
    """Scores questions against passages; passage units and embeddings are cached by passage pid."""

    def __init__(self, config: FaithfulnessConfig | None = None, embedder=None, nli: NLIScorer | None = None):
        self.config = config or FaithfulnessConfig()
        self._embedder = embedder
        self._nli = nli
        self._cache: OrderedDict[str, tuple[list[Unit], np.ndarray | None]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def embedder(self):
        if self._embedder is None:
            from racq.models import load_embedder
            self._embedder = load_embedder(self.config.embedder)
        return self._embedder

    @property
    def nli(self) -> NLIScorer | None:
        if self._nli is None and self.config.nli_model:
            c = self.config
            self._nli = NLIScorer(c.nli_model, c.nli_max_length, c.nli_chunk_words)
        return self._nli

    def _embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        vecs = self.embedder.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                                    show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)

    def units(self, passage: Passage, embed: bool = False) -> tuple[list[Unit], np.ndarray | None]:
        """A passage's units (and their embeddings when `embed`), cached by pid."""
        c, pid = self.config, passage.pid
        with self._lock:
            units, vecs = self._cache.get(pid) or (None, None)
        if units is None:
            units = split_units(passage, c.unit_words, c.window_words, c.window_stride)
        if embed and vecs is None:
            prefix = f"{passage.title}. " if passage.title else ""
            vecs = self._embed([prefix + u.text for u in units])
        with self._lock:  # the app scores from several threads
            old = self._cache.get(pid)
            self._cache[pid] = (units, vecs if vecs is not None else (old[1] if old else None))
            self._cache.move_to_end(pid)
            while len(self._cache) > c.cache_size:
                self._cache.popitem(last=False)
        return units, vecs

    def check_options(self, query: str, passages: Sequence[Passage], options: list[Option]) -> list[dict]:
        c = self.config
        per_passage = [self.units(p)[0] for p in passages]
        rows = []
        for opt in options:
            core, nums = set(opt.core), {t for t in opt.core if is_number(t)}
            best = (0.0, None, None)
            for pi, units in enumerate(per_passage):
                for u in units:
                    if not nums <= u.tokens:
                        continue
                    cov = len(core & u.tokens) / len(core)
                    if cov > best[0]:
                        best = (cov, pi, u.text)
            how = "lexical" if best[0] == 1.0 else "lexical-partial" if best[0] >= c.lexical_coverage else None
            if how is None and len(core) == 1 and opt.core[0] in ANSWER_TYPES:
                pattern = ANSWER_TYPES[opt.core[0]]
                hit = next(((pi, u.text) for pi, units in enumerate(per_passage) for u in units
                            if pattern.search(u.text)), None)
                if hit:
                    how, best = "answer-type", (1.0, *hit)
            rows.append({"text": opt.text, "core": list(opt.core), "supported": how is not None, "how": how,
                         "passage_index": best[1] if how else None, "sentence": best[2] if how else "",
                         "similarity": None})
        # Embeddings only when lexical evidence is missing somewhere (the common case needs none).
        if c.use_semantic and passages and any(not r["supported"] for r in rows):
            vecs = [self.units(p, embed=True)[1] for p in passages]
            flat = [(pi, u) for pi, units in enumerate(per_passage) for u in units]
            if flat:
                unit_vecs = np.concatenate([v for v in vecs if v is not None and len(v)])
                sims = self._embed([option_in_frame(o, query) for o in options]) @ unit_vecs.T
                for row, opt, srow in zip(rows, options, sims):
                    nums = {t for t in opt.core if is_number(t)}
                    order = np.argsort(-srow)
                    ok = [k for k in order if nums <= flat[k][1].tokens]
                    row["similarity"] = float(srow[order[0]])
                    if not row["supported"] and ok and srow[ok[0]] >= c.semantic_threshold:
                        pi, u = flat[ok[0]]
                        row.update(supported=True, how="semantic", passage_index=pi, sentence=u.text,
                                   similarity=float(srow[ok[0]]))
        return rows

    def score(self, query: str, passages: Sequence[Passage], question: str) -> dict:
        passages = list(passages)
        options = extract_options(question, query)
        rows = self.check_options(query, passages, options)
        n = len(rows)
        out: dict = {"options": rows, "n_options": n,
                     "option_support": sum(r["supported"] for r in rows) / n if n else 1.0,
                     "hallucinated": int(any(not r["supported"] for r in rows))}
        known = set(norm_tokens(query)).union(*(u.tokens for p in passages for u in self.units(p)[0]))
        toks = content_tokens(question)
        out["novel_content"] = sum(t not in known for t in toks) / len(toks) if toks else 0.0
        out.update(parent_scores(question, fact_table(query, passages), self.config.parent_max_n))
        out["skipped"] = []
        nli = self.nli
        if nli is None:
            out["skipped"].append("nli: no nli_model configured")
        else:
            head, body, _ = split_question(question)
            hyps = [(body or head or question)] + [option_in_frame(o, query) for o in options]
            scores = nli.entailment(nli.chunks(passages), hyps)
            out["nli_question"], out["nli_options"] = scores[0], scores[1:]
            out["nli_min"] = min(scores[1:] or scores[:1])  # the options; the question when it has none
            out["nli_hallucinated"] = int(out["nli_min"] < self.config.nli_threshold)
            for row, s in zip(rows, scores[1:]):
                row["nli"] = s
        return out

    def score_many(self, items: Sequence[tuple[str, Sequence[Passage], str]]) -> list[dict]:
        return [self.score(q, ps, question) for q, ps, question in items]


_DEFAULT: Scorer | None = None


def score(query: str, passages: Sequence[Passage], question: str) -> dict:
    """`Scorer().score(...)` with one process-wide default scorer (default settings)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Scorer()
    return _DEFAULT.score(query, passages, question)
