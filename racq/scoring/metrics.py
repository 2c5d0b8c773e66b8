"""Reference metrics: a predicted clarifying question against the gold question.

    from racq.scoring.metrics import reference_scores, reference_scores_batch
    reference_scores("Do you mean the film?", "Do you mean the film or the book?")
    # {'rouge1': ..., 'rouge2': ..., 'rougeL': ..., 'bleu': ..., 'embed_sim': ...}

- rouge1 / rouge2 / rougeL: ROUGE F-measure in [0, 1] (Google's rouge-score, Porter stemming on).
- bleu: sentence BLEU in [0, 100] (sacreBLEU defaults with exponential smoothing, one reference).
- embed_sim: cosine of the two questions' embeddings from the local sentence-transformer (MiniLM by
  default), in [-1, 1]. It is an embedding similarity, not BERTScore.
An empty prediction scores 0 on every metric (its embedding would otherwise be a constant vector).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer

from racq.config import DEFAULT_EMBEDDER

METRICS = ("rouge1", "rouge2", "rougeL", "bleu", "embed_sim")
_ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def _lexical(prediction: str, gold: str) -> dict[str, float]:
    rouge = _ROUGE.score(gold, prediction)  # (target, prediction)
    return {"rouge1": rouge["rouge1"].fmeasure, "rouge2": rouge["rouge2"].fmeasure,
            "rougeL": rouge["rougeL"].fmeasure,
            "bleu": float(sacrebleu.sentence_bleu(prediction, [gold]).score)}


def reference_scores_batch(predictions: Sequence[str], golds: Sequence[str], embedder=None,
                           embedder_name: str = DEFAULT_EMBEDDER) -> list[dict[str, float]]:
    """reference_scores for many pairs; the embeddings are computed in one batch."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} gold questions")
    preds = [(p or "").strip() for p in predictions]
    refs = [(g or "").strip() for g in golds]
    out = [_lexical(p, g) if p and g else {m: 0.0 for m in METRICS[:4]} for p, g in zip(preds, refs)]
    live = [i for i, (p, g) in enumerate(zip(preds, refs)) if p and g]
    sims = np.zeros(len(preds), dtype=np.float64)
    if live:
        if embedder is None:
            from racq.models import load_embedder
            embedder = load_embedder(embedder_name)
        texts = [preds[i] for i in live] + [refs[i] for i in live]
        vecs = np.asarray(embedder.encode(texts, batch_size=64, convert_to_numpy=True,
                                          normalize_embeddings=True, show_progress_bar=False))
        a, b = vecs[:len(live)], vecs[len(live):]
        sims[live] = np.clip((a * b).sum(axis=1), -1.0, 1.0)
    for row, s in zip(out, sims):
        row["embed_sim"] = float(s)
    return out


def reference_scores(prediction: str, gold: str, embedder=None) -> dict[str, float]:
    """ROUGE-1/2/L F, sentence BLEU and embedding cosine of one prediction against its gold question."""
    return reference_scores_batch([prediction], [gold], embedder)[0]
