"""How well one set of labels agrees with another: Cohen's kappa (two raters, any categories) and a
binary metric flag against human labels (accuracy, kappa, precision, recall, confusion counts).

    from racq.scoring.agreement import agreement, cohen_kappa
    agreement(labels=[1, 0, 1, 0], flags=[1, 0, 0, 0])["kappa"]    # 0.5
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def cohen_kappa(a: Sequence, b: Sequence) -> float:
    """Cohen's kappa of two raters' labels on the same items (1.0 when they agree on every item)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"need two equally long, non-empty label lists (got {len(a)} and {len(b)})")
    cats = sorted(set(a) | set(b), key=str)
    k = {c: i for i, c in enumerate(cats)}
    m = np.zeros((len(cats), len(cats)))
    for x, y in zip(a, b):
        m[k[x], k[y]] += 1
    m /= m.sum()
    po, pe = np.trace(m), float(m.sum(1) @ m.sum(0))
    if po == 1.0:
        return 1.0  # perfect agreement, even when a single category makes pe = 1 too
    return float((po - pe) / (1.0 - pe))


def agreement(labels: Sequence[int], flags: Sequence[int]) -> dict:
    """Accuracy, Cohen's kappa and the confusion counts of a binary metric flag against binary labels
    (1 = unfaithful/hallucinated)."""
    y, f = [int(v) for v in labels], [int(v) for v in flags]
    if len(y) != len(f) or not y:
        raise ValueError(f"need equally long, non-empty label and flag lists (got {len(y)} and {len(f)})")
    tp = sum(a == 1 and b == 1 for a, b in zip(y, f))
    tn = sum(a == 0 and b == 0 for a, b in zip(y, f))
    fp = sum(a == 0 and b == 1 for a, b in zip(y, f))
    fn = sum(a == 1 and b == 0 for a, b in zip(y, f))
    return {"n": len(y), "accuracy": (tp + tn) / len(y), "kappa": cohen_kappa(y, f),
            "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
            "tp": tp, "tn": tn, "fp": fp, "fn": fn}
