"""Reference metrics against the gold question: known answers.

    HF_HUB_OFFLINE=1 .venv/bin/pytest -q tests/test_metrics.py
"""

from __future__ import annotations

import pytest

from racq.scoring.metrics import METRICS, reference_scores, reference_scores_batch

GOLD = "Are you looking for the men's or women's World Rapid Chess Championship in Riyadh in 2017?"


def test_identical_strings_score_top():
    s = reference_scores(GOLD, GOLD)
    assert set(s) == set(METRICS)
    assert s["rouge1"] == s["rouge2"] == s["rougeL"] == 1.0
    assert s["bleu"] == pytest.approx(100.0)
    assert s["embed_sim"] == pytest.approx(1.0, abs=1e-4)


def test_disjoint_strings_score_zero():
    # No shared token, not even "?" (sacreBLEU counts punctuation).
    s = reference_scores("Banana bread tastes sweet", "Which chairman: 4th, 3rd, or 2nd?")
    assert s["rouge1"] == s["rouge2"] == s["rougeL"] == 0.0
    assert s["bleu"] == 0.0
    assert s["embed_sim"] < 0.5


def test_partial_overlap_sits_between():
    s = reference_scores("Are you looking for the men's championship?", GOLD)
    assert 0 < s["rougeL"] < 1 and 0 < s["bleu"] < 100
    para = reference_scores("Do you mean the female or male rapid chess title won in Riyadh in 2017?", GOLD)
    off = reference_scores("Do you mean the 2017 film about a shark?", GOLD)
    assert para["embed_sim"] > off["embed_sim"]  # the embedding sees paraphrase, not just shared words


def test_empty_prediction_scores_zero():
    assert reference_scores("", GOLD) == {m: 0.0 for m in METRICS}
    assert reference_scores("   ", GOLD)["embed_sim"] == 0.0


def test_batch_matches_single_and_checks_lengths():
    preds = [GOLD, "Which one: the film or the book?", ""]
    golds = [GOLD, "Which version: the film, or the book?", GOLD]
    batch = reference_scores_batch(preds, golds)
    for p, g, row in zip(preds, golds, batch):
        single = reference_scores(p, g)
        assert row.keys() == single.keys()
        for k in METRICS:
            assert row[k] == pytest.approx(single[k], abs=1e-5)
    with pytest.raises(ValueError, match="2 predictions but 1 gold"):
        reference_scores_batch(["a", "b"], ["a"])
