"""racq.annotation.rating on synthetic vote rows and textbook examples with published answers."""

import math

import numpy as np
import pytest

from racq.annotation import rating


def vote(left, right, outcome, annotator="a", item=0, lc=1, rc=2):
    return {"annotator": annotator, "item_id": item, "left_candidate_id": lc, "right_candidate_id": rc,
            "left_stage": left, "right_stage": right, "outcome": outcome}


def synthetic(strength: dict, n: int, seed: int, tie_share: float = 0.1):
    """Votes from a true Bradley-Terry model; sides random, a share of ties."""
    rng = np.random.default_rng(seed)
    stages = list(strength)
    out = []
    for k in range(n):
        a, b = rng.choice(len(stages), 2, replace=False)
        left, right = stages[a], stages[b]
        p_left = 1 / (1 + math.exp(strength[right] - strength[left]))
        u = rng.random()
        outcome = "tie" if u < tie_share else ("left" if rng.random() < p_left else "right")
        out.append(vote(left, right, outcome, item=k))
    return out


def test_win_rates_count_ties_as_half_and_skip_nothing():
    votes = [vote("sft", "base", "left"), vote("base", "sft", "tie"), vote("sft", "base", "both_bad"),
             vote("base", "sft", "left"), vote("base", "sft", "skip")]
    wr = rating.win_rates(votes)
    assert wr["sft"] == {"wins": 1, "losses": 1, "ties": 2, "games": 4, "win_rate": 0.5}
    assert wr["base"]["games"] == 4 and wr["base"]["win_rate"] == 0.5
    m = rating.win_matrix(votes)
    assert m["stages"] == ["base", "sft"]
    np.testing.assert_allclose(m["wins"], [[0, 2], [2, 0]])
    np.testing.assert_allclose(m["wins"] + m["wins"].T, m["games"])


def test_undo_rows_are_refused():
    with pytest.raises(ValueError, match="effective"):
        rating.win_rates([vote("a", "b", "undo")])


def test_bradley_terry_recovers_the_true_strengths():
    truth = {"base": -1.0, "sft": -0.3, "aligned": 0.2, "aligned-r1": 0.5, "aligned-r2": 1.2}
    rows = rating.bradley_terry(synthetic(truth, 4000, seed=1, tie_share=0.0), n_boot=200, seed=0)
    assert [r["stage"] for r in rows] == sorted(truth, key=truth.get, reverse=True)
    centred = {s: v - np.mean(list(truth.values())) for s, v in truth.items()}
    for r in rows:
        assert r["ci_low"] <= r["rating"] <= r["ci_high"]
        assert abs(r["rating"] - centred[r["stage"]]) < 0.15
    inside = sum(r["ci_low"] <= centred[r["stage"]] <= r["ci_high"] for r in rows)
    assert inside >= 4  # 95% intervals: all five is expected, one miss is allowed
    assert rows[0]["rank"] == 1 and rows[0]["elo"] > 1000 > rows[-1]["elo"]


def test_bradley_terry_order_survives_ties():
    # Ties drawn regardless of strength pull every rating towards 0 (half a win each), not the order.
    truth = {"base": -1.0, "sft": -0.3, "aligned": 0.2, "aligned-r1": 0.5, "aligned-r2": 1.2}
    rows = rating.bradley_terry(synthetic(truth, 4000, seed=3, tie_share=0.2), n_boot=0)
    assert [r["stage"] for r in rows] == sorted(truth, key=truth.get, reverse=True)


def test_bootstrap_is_reproducible_and_narrows_with_more_votes():
    truth = {"a": 0.0, "b": 0.5, "c": 1.0}
    few, many = synthetic(truth, 150, seed=2), synthetic(truth, 3000, seed=2)
    one, two = rating.bradley_terry(few, n_boot=100, seed=7), rating.bradley_terry(few, n_boot=100, seed=7)
    assert one == two
    width = lambda rows: np.mean([r["ci_high"] - r["ci_low"] for r in rows])  # noqa: E731
    assert width(rating.bradley_terry(many, n_boot=100)) < width(one) / 2


def test_bradley_terry_stays_finite_for_an_unbeaten_stage():
    votes = [vote("best", "worst", "left", item=k) for k in range(20)]
    rows = rating.bradley_terry(votes, n_boot=50)
    assert rows[0]["stage"] == "best" and all(math.isfinite(r["rating"]) for r in rows)


def test_shared_ranks_follow_arenas_rule():
    # rank = 1 + the number of stages whose lower bound is above this stage's upper bound
    assert rating.shared_ranks([(2.0, 3.0), (0.0, 1.0), (0.5, 1.5)]) == [1, 2, 2]
    assert rating.shared_ranks([(0.0, 1.0), (0.9, 2.0), (1.5, 3.0)]) == [2, 1, 1]  # a chain of overlaps
    assert rating.shared_ranks([(3.0, 3.0), (1.0, 1.0), (1.0, 1.0), (0.0, 0.0)]) == [1, 2, 2, 4]  # points
    assert rating.shared_ranks([]) == []


def test_stages_whose_intervals_overlap_share_a_rank():
    """'top' clearly beats 'a' and 'b'; 'a' and 'b' split evenly: ranks 1, 2, 2 from the seeded bootstrap,
    where point estimates alone would rank them 1, 2, 3."""
    votes = []
    for other in ("a", "b"):
        votes += [vote("top", other, "left")] * 27 + [vote(other, "top", "left")] * 3
    votes += [vote("a", "b", "left")] * 16 + [vote("a", "b", "right")] * 14
    rows = rating.bradley_terry(votes, n_boot=500, seed=3)
    by = {r["stage"]: r for r in rows}
    assert by["top"]["ci_low"] > max(by["a"]["ci_high"], by["b"]["ci_high"])          # apart
    assert by["a"]["ci_low"] <= by["b"]["ci_high"] and by["b"]["ci_low"] <= by["a"]["ci_high"]  # overlap
    assert [(r["stage"], r["rank"]) for r in rows] == [("top", 1), ("a", 2), ("b", 2)]
    assert [r["rank"] for r in rows] == rating.shared_ranks([(r["ci_low"], r["ci_high"]) for r in rows])
    assert rows == rating.bradley_terry(votes, n_boot=500, seed=3)  # seeded: the same ranks every time
    # Without the bootstrap the intervals are points, and the ranks the plain order of the estimates.
    assert [(r["stage"], r["rank"]) for r in rating.bradley_terry(votes, n_boot=0)] == [("top", 1), ("a", 2),
                                                                                          ("b", 3)]


def test_pair_votes_count_games_per_pair_including_unplayed_ones():
    votes = [vote("x", "y", "left"), vote("y", "x", "tie"), vote("x", "y", "skip"), vote("y", "z", "both_bad")]
    assert rating.pair_votes(votes) == [{"pair": ["x", "z"], "votes": 0}, {"pair": ["y", "z"], "votes": 1},
                                        {"pair": ["x", "y"], "votes": 2}]  # skips are not games
    assert rating.pair_votes(votes, stages=["z", "y"]) == [{"pair": ["z", "y"], "votes": 1}]
    assert rating.pair_votes([]) == []


def test_cohen_kappa_known_answers():
    labels = ["first", "second", "tie", "both_bad", "first"]
    assert rating.cohen_kappa(labels, labels) == 1.0
    # Wikipedia "Cohen's kappa" worked example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> 0.4
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert rating.cohen_kappa(a, b) == pytest.approx(0.4)
    # Systematic disagreement on two balanced categories is -1.
    assert rating.cohen_kappa(["x", "y"] * 5, ["y", "x"] * 5) == pytest.approx(-1.0)


def test_fleiss_kappa_wikipedia_example():
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert rating.fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)
    assert rating.fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == 1.0


def test_agreement_sees_through_left_right_swaps():
    votes, rng = [], np.random.default_rng(0)
    for item in range(30):
        winner = int(rng.integers(2))  # 0: candidate 10*item+1 wins, 1: candidate 10*item+2 wins
        cands = (10 * item + 1, 10 * item + 2)
        for who in ("ana", "ben"):
            lc, rc = cands if rng.random() < 0.5 else cands[::-1]
            outcome = "left" if lc == cands[winner] else "right"
            votes.append(vote("x", "y", outcome, annotator=who, item=item, lc=lc, rc=rc))
    out = rating.agreement(votes)
    assert out["method"] == "cohen" and out["kappa"] == 1.0 and out["items"] == 30
    # A third annotator who always picks the lower id: Fleiss over three, pairwise Cohen per pair.
    votes += [vote("x", "y", "left", annotator="cat", item=i, lc=10 * i + 1, rc=10 * i + 2) for i in range(30)]
    out = rating.agreement(votes)
    assert out["method"] == "fleiss" and set(out["pairwise"]) == {"ana|ben", "ana|cat", "ben|cat"}
    assert out["pairwise"]["ana|ben"]["kappa"] == 1.0
    labels = {}
    for v in votes:
        labels.setdefault(v["item_id"], []).append(rating.item_label(v))
    table = [[labs.count(c) for c in ("first", "second", "tie", "both_bad")] for labs in labels.values()]
    assert out["kappa"] == pytest.approx(rating.fleiss_kappa(table))
    assert out["kappa"] < 1.0


def test_skips_do_not_count_for_agreement():
    votes = [vote("x", "y", "skip", annotator="ana", item=1), vote("x", "y", "left", annotator="ben", item=1)]
    assert rating.agreement(votes)["items"] == 0


def test_binomial_test_and_bias_detection():
    assert rating.binom_test(9, 10) == pytest.approx(22 / 1024)
    assert rating.binom_test(5, 10) == pytest.approx(1.0)
    votes = ([vote("x", "y", "left", annotator="lefty")] * 80 + [vote("x", "y", "right", annotator="lefty")] * 20
             + [vote("x", "y", "left", annotator="fair")] * 52 + [vote("x", "y", "right", annotator="fair")] * 48
             + [vote("x", "y", "tie", annotator="fair")] * 30)
    bias = rating.position_bias(votes)
    assert bias["lefty"]["share_left"] == 0.8 and bias["lefty"]["biased"] and bias["lefty"]["p_value"] < 1e-6
    assert bias["lefty"]["ci_low"] > 0.5
    assert bias["fair"]["n"] == 100 and not bias["fair"]["biased"]
    assert bias["fair"]["ci_low"] < 0.5 < bias["fair"]["ci_high"]


def test_ranking_agreement_known_values():
    same = rating.ranking_agreement({"a": 1, "b": 2, "c": 3}, {"a": 10, "b": 20, "c": 30, "d": 0})
    assert same["n"] == 3 and same["kendall_tau"] == 1.0 and same["spearman"] == pytest.approx(1.0)
    rev = rating.ranking_agreement({"a": 1, "b": 2, "c": 3}, {"a": 3, "b": 2, "c": 1})
    assert rev["kendall_tau"] == -1.0 and rev["spearman"] == pytest.approx(-1.0)
    # With a tie: tau-b = 7/sqrt(90), Spearman on average ranks = 8/sqrt(95) (scipy gives the same).
    x, y = [1, 2, 3, 4, 5], [5, 6, 7, 8, 7]
    assert rating.kendall_tau(x, y) == pytest.approx(7 / math.sqrt(90))
    assert rating.spearman(x, y) == pytest.approx(8 / math.sqrt(95))
    assert math.isnan(rating.ranking_agreement({"a": 1}, {"a": 2})["spearman"])
