"""Rating statistics over pairwise votes: win rates, Bradley-Terry with bootstrap CIs and shared ranks
where the CIs overlap, votes per stage pair, inter-annotator agreement (Cohen's / Fleiss' kappa),
left/right position bias, and auto-vs-human ranking agreement.

    from racq.store import open_db, effective_votes
    from racq.annotation import rating
    votes = effective_votes(open_db())
    rating.bradley_terry(votes)          # [{stage, rating, ci_low, ci_high, elo, ...}] best first
    rating.agreement(votes); rating.position_bias(votes)
    rating.pair_votes(votes)             # [{pair: [a, b], votes}] fewest first: is the ranking provisional?
    rating.ranking_agreement(auto_scores, {r["stage"]: r["rating"] for r in rating.bradley_terry(votes)})

Pure functions on plain vote rows (dicts) with keys: annotator, item_id, left_candidate_id,
right_candidate_id, left_stage, right_stage, outcome. Pass EFFECTIVE votes (undo rows raise here,
because undone votes would otherwise be silently counted). Scoring: 'left'/'right' = a win for that
side, 'tie' and 'both_bad' = half a win each (neither is preferred), 'skip' = not a game. numpy only.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Iterable, Mapping, Sequence

import numpy as np

from racq.scoring.agreement import cohen_kappa

LEFT_SCORE = {"left": 1.0, "right": 0.0, "tie": 0.5, "both_bad": 0.5}
ELO_SCALE = 400.0 / math.log(10.0)  # Elo points per unit of log-strength


def _games(votes: Iterable[Mapping]) -> list[tuple[str, str, float]]:
    """(left_stage, right_stage, left's score) per vote that is a game."""
    out = []
    for v in votes:
        outcome = v["outcome"]
        if outcome == "undo":
            raise ValueError(f"vote {v.get('id')} is an undo row: pass effective votes (store.effective_votes)")
        if outcome == "skip":
            continue
        if outcome not in LEFT_SCORE:
            raise ValueError(f"unknown outcome {outcome!r}")
        if v["left_stage"] != v["right_stage"]:
            out.append((v["left_stage"], v["right_stage"], LEFT_SCORE[outcome]))
    return out


# ------------------------------------------------------------------ win rates
def win_rates(votes: Iterable[Mapping]) -> dict[str, dict]:
    """Per stage: wins, losses, ties (tie + both_bad), games and win_rate = (wins + ties/2) / games."""
    out: dict[str, dict] = {}
    for left, right, s in _games(votes):
        for stage, score in ((left, s), (right, 1.0 - s)):
            r = out.setdefault(stage, {"wins": 0, "losses": 0, "ties": 0, "games": 0})
            r["games"] += 1
            r["wins" if score == 1.0 else "losses" if score == 0.0 else "ties"] += 1
    for r in out.values():
        r["win_rate"] = (r["wins"] + 0.5 * r["ties"]) / r["games"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["win_rate"]))


def win_matrix(votes: Iterable[Mapping], stages: Sequence[str] | None = None) -> dict:
    """{"stages": [...], "wins": W, "games": N}: W[i, j] = points of stage i against stage j (a tie gives
    each 0.5), N[i, j] = games between them; W + W.T == N."""
    games = _games(votes)
    stages = list(stages) if stages is not None else sorted({s for g in games for s in g[:2]})
    index = {s: k for k, s in enumerate(stages)}
    wins = np.zeros((len(stages), len(stages)))
    n = np.zeros_like(wins)
    for left, right, s in games:
        if left in index and right in index:
            i, j = index[left], index[right]
            wins[i, j] += s
            wins[j, i] += 1.0 - s
            n[i, j] += 1
            n[j, i] += 1
    return {"stages": stages, "wins": wins, "games": n}


# ------------------------------------------------------------------ Bradley-Terry
def _bt_fit(wins: np.ndarray, games: np.ndarray, prior: float, iters: int = 10000, tol: float = 1e-9) -> np.ndarray:
    """MM algorithm (Hunter 2004) on a batch of matrices (..., S, S); returns centred log-strengths.

    `prior` adds that many virtual tied games between every two stages: it keeps a stage that never
    lost (or never won) finite and gently pulls sparse estimates towards equal strength.
    """
    s = wins.shape[-1]
    off = 1.0 - np.eye(s)
    w = wins + 0.5 * prior * off
    n = games + prior * off
    total_wins = w.sum(-1)
    p = np.ones(wins.shape[:-1])
    for _ in range(iters):
        denom = (n / (p[..., :, None] + p[..., None, :])).sum(-1)
        new = total_wins / np.maximum(denom, 1e-300)
        new = new / np.exp(np.log(np.maximum(new, 1e-300)).mean(-1, keepdims=True))
        done = np.max(np.abs(np.log(new) - np.log(p))) < tol
        p = new
        if done:
            break
    theta = np.log(p)
    return theta - theta.mean(-1, keepdims=True)


def bradley_terry(votes: Iterable[Mapping], *, n_boot: int = 1000, seed: int = 0, ci: float = 0.95,
                  prior: float = 1.0) -> list[dict]:
    """Bradley-Terry ratings with bootstrap CIs (votes resampled with replacement, fixed seed).

    Returns one dict per stage, best first: stage, games, rating (log-strength, mean 0), ci_low,
    ci_high (percentile interval), elo / elo_low / elo_high (1000 + 400*rating/ln 10), and rank:
    shared when intervals overlap (shared_ranks, Chatbot Arena's rule; with n_boot=0 the intervals
    are points and the ranks follow the estimates). P(i beats j) = 1 / (1 + exp(rating_j - rating_i)).
    """
    games = _games(votes)
    stages = sorted({s for g in games for s in g[:2]})
    if not stages:
        return []
    index = {s: k for k, s in enumerate(stages)}
    S = len(stages)
    li = np.array([index[g[0]] for g in games])
    ri = np.array([index[g[1]] for g in games])
    score = np.array([g[2] for g in games])

    def matrices(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """idx (B, n) resampled game indices -> wins, games of shape (B, S, S) via one bincount each."""
        B = idx.shape[0]
        base = np.repeat(np.arange(B) * S * S, idx.shape[1])
        l, r, sc = li[idx].ravel(), ri[idx].ravel(), score[idx].ravel()
        size = B * S * S
        w = (np.bincount(base + l * S + r, sc, size) + np.bincount(base + r * S + l, 1.0 - sc, size))
        n = np.bincount(base + l * S + r, None, size) + np.bincount(base + r * S + l, None, size)
        return w.reshape(B, S, S), n.reshape(B, S, S).astype(float)

    point = _bt_fit(*matrices(np.arange(len(games))[None, :]), prior)[0]
    lo = hi = point
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        boots = []
        for start in range(0, n_boot, 200):  # chunks bound memory at 200 x S x S matrices
            idx = rng.integers(0, len(games), size=(min(200, n_boot - start), len(games)))
            boots.append(_bt_fit(*matrices(idx), prior))
        boots = np.concatenate(boots)
        alpha = (1.0 - ci) / 2.0
        lo, hi = np.quantile(boots, alpha, axis=0), np.quantile(boots, 1.0 - alpha, axis=0)
    counts = np.bincount(li, minlength=S) + np.bincount(ri, minlength=S)
    rows = [{"stage": st, "games": int(counts[k]), "rating": float(point[k]), "ci_low": float(lo[k]),
             "ci_high": float(hi[k]), "elo": 1000 + ELO_SCALE * float(point[k]),
             "elo_low": 1000 + ELO_SCALE * float(lo[k]), "elo_high": 1000 + ELO_SCALE * float(hi[k])}
            for k, st in enumerate(stages)]
    for r, rank in zip(rows, shared_ranks([(r["ci_low"], r["ci_high"]) for r in rows])):
        r["rank"] = rank
    # Best first: by rank, then by rating within a shared rank (as Arena's table sorts). Ranks only
    # grow down the list, even when a wide interval gives a lower-rated stage the better rank.
    rows.sort(key=lambda r: (r["rank"], -r["rating"]))
    return rows


def shared_ranks(intervals: Sequence[tuple[float, float]]) -> list[int]:
    """Ranks from confidence intervals [(low, high), ...], in the same order: stages whose intervals
    overlap share a rank. This is Chatbot Arena's rule (lmsys FastChat's leaderboard): a stage's rank
    is 1 + the number of stages whose lower bound is above this stage's upper bound, i.e. that are
    better beyond the uncertainty. With point intervals (low == high, no bootstrap) it is the plain
    competition ranking of the estimates (equal values share a rank)."""
    return [1 + sum(1 for low, _ in intervals if low > high) for _, high in intervals]


def pair_votes(votes: Iterable[Mapping], stages: Sequence[str] | None = None) -> list[dict]:
    """Games (votes that are not skips) per pair of stages: [{"pair": [a, b], "votes": n}, ...] over
    every pair of `stages` (default: the stages that have games), including pairs never compared
    (0); fewest first, then by name."""
    games = _games(votes)
    stages = list(stages) if stages is not None else sorted({s for g in games for s in g[:2]})
    count: dict[frozenset, int] = {}
    for left, right, _ in games:
        key = frozenset((left, right))
        count[key] = count.get(key, 0) + 1
    out = [{"pair": [a, b], "votes": count.get(frozenset((a, b)), 0)} for a, b in combinations(stages, 2)]
    return sorted(out, key=lambda p: (p["votes"], p["pair"]))


# ------------------------------------------------------------------ agreement
def fleiss_kappa(counts) -> float:
    """Fleiss' kappa from an items x categories matrix of rating counts. Items may have different
    numbers of raters (each needs two or more): P_i uses each item's own n_i, category shares pool
    all ratings; with a constant n this is exactly Fleiss (1971)."""
    x = np.asarray(counts, dtype=float)
    n = x.sum(1)
    if x.ndim != 2 or len(x) == 0 or (n < 2).any():
        raise ValueError("need an items x categories count matrix with at least 2 ratings per item")
    p_i = ((x * x).sum(1) - n) / (n * (n - 1))
    p_j = x.sum(0) / n.sum()
    pbar, pe = p_i.mean(), float((p_j ** 2).sum())
    if pbar == 1.0:
        return 1.0
    return float((pbar - pe) / (1.0 - pe))


def item_label(vote: Mapping) -> str | None:
    """A vote's label independent of which side was shown left: 'first'/'second' = the candidate with
    the lower/higher id won, 'tie', 'both_bad'; None for a skip."""
    o = vote["outcome"]
    if o in ("tie", "both_bad"):
        return o
    if o not in ("left", "right"):
        return None
    winner = vote["left_candidate_id"] if o == "left" else vote["right_candidate_id"]
    return "first" if winner == min(vote["left_candidate_id"], vote["right_candidate_id"]) else "second"


def agreement(votes: Iterable[Mapping]) -> dict:
    """Agreement on items that two or more annotators labelled (skips excluded).

    Returns {"method": "cohen"|"fleiss"|None, "kappa", "items", "annotators", "pairwise"}: Cohen's
    kappa when exactly two annotators overlap, Fleiss' kappa over all overlapped items when more do;
    "pairwise" maps "a|b" to {"kappa", "items"} for every pair of annotators sharing an item.
    """
    labels: dict = {}
    for v in votes:
        if v["outcome"] == "undo":
            raise ValueError("pass effective votes (store.effective_votes), not undo rows")
        lab = item_label(v)
        if lab is not None:
            labels.setdefault(v["item_id"], {})[v["annotator"]] = lab
    shared = {i: d for i, d in labels.items() if len(d) >= 2}
    people = sorted({a for d in shared.values() for a in d})
    pairwise = {}
    for a, b in combinations(people, 2):
        both = [d for d in shared.values() if a in d and b in d]
        if both:
            pairwise[f"{a}|{b}"] = {"kappa": cohen_kappa([d[a] for d in both], [d[b] for d in both]),
                                    "items": len(both)}
    out = {"method": None, "kappa": float("nan"), "items": len(shared), "annotators": people,
           "pairwise": pairwise}
    if len(people) == 2:
        out.update(method="cohen", kappa=pairwise[f"{people[0]}|{people[1]}"]["kappa"])
    elif len(people) > 2:
        cats = ["first", "second", "tie", "both_bad"]
        table = [[sum(1 for lab in d.values() if lab == c) for c in cats] for d in shared.values()]
        out.update(method="fleiss", kappa=fleiss_kappa(table))
    return out


# ------------------------------------------------------------------ position bias
def binom_test(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test: P(outcomes at most as likely as k | n, p)."""
    if n == 0:
        return 1.0
    ks = np.arange(n + 1)
    logpmf = (math.lgamma(n + 1) - np.array([math.lgamma(i + 1) + math.lgamma(n - i + 1) for i in ks])
              + ks * math.log(p) + (n - ks) * math.log1p(-p))
    pmf = np.exp(logpmf)
    return float(min(1.0, pmf[pmf <= pmf[k] * (1 + 1e-7)].sum()))


def wilson_ci(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    phat = k / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def position_bias(votes: Iterable[Mapping], alpha: float = 0.05) -> dict[str, dict]:
    """Per annotator: share of 'left' among their 'left'/'right' votes, Wilson 95% CI, exact binomial
    p-value against 0.5, and biased = p < alpha. (Sides are randomised, so an unbiased annotator sits
    near 0.5.)"""
    counts: dict[str, list[int]] = {}
    for v in votes:
        if v["outcome"] in ("left", "right"):
            c = counts.setdefault(v["annotator"], [0, 0])
            c[0] += v["outcome"] == "left"
            c[1] += 1
    out = {}
    for name, (k, n) in sorted(counts.items()):
        p = binom_test(k, n)
        lo, hi = wilson_ci(k, n)
        out[name] = {"left": k, "n": n, "share_left": k / n, "ci_low": lo, "ci_high": hi,
                     "p_value": p, "biased": p < alpha}
    return out


# ------------------------------------------------------------------ ranking agreement
def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean of their positions."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denom) if denom else float("nan")


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (tie-corrected)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    i, j = np.triu_indices(len(x), 1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    denom = math.sqrt((n0 - (dx == 0).sum()) * (n0 - (dy == 0).sum()))
    return float((dx * dy).sum() / denom) if denom else float("nan")


def ranking_agreement(auto: Mapping[str, float], human: Mapping[str, float]) -> dict:
    """How well an automatic per-stage score orders the stages like the humans do (higher = better in
    both). Uses the stages present in both; returns {"stages", "n", "kendall_tau", "spearman"}."""
    stages = sorted(set(auto) & set(human))
    x, y = [auto[s] for s in stages], [human[s] for s in stages]
    if len(stages) < 2:
        return {"stages": stages, "n": len(stages), "kendall_tau": float("nan"), "spearman": float("nan")}
    return {"stages": stages, "n": len(stages), "kendall_tau": kendall_tau(x, y), "spearman": spearman(x, y)}
