"""The leaderboard's numbers, as plain data and text: what `racq rate` prints and the Leaderboard
screen shows (the screen only formats them).

    racq rate                                   # text tables
    racq rate --json

    from racq.annotation.standings import leaderboard, format_text
    print(format_text(leaderboard(open_db())))

From the effective votes (racq.store.effective_votes: undo rows and undone votes removed):
win rates (tie and both_bad = half a win; skip = no game), Bradley-Terry log-strengths with a
percentile bootstrap 95% CI over votes and ranks that stages share where their CIs overlap (Chatbot
Arena's rule, rating.shared_ranks), the votes per stage pair (the ranking is provisional while a pair
has fewer than `min_pair_votes`: provisional_notice), the pairwise win matrix, votes per annotator, inter-annotator
agreement on items two or more people judged (Cohen's kappa for two annotators, Fleiss' for more),
each annotator's share of 'left' among their left/right votes (sides are random, so ~0.5 is
unbiased; exact binomial test), and the automatic faithfulness score per stage (mean option support
of the stage's pool candidates, racq.store.scores) with its rank agreement (Kendall's tau, Spearman)
with the human Bradley-Terry order; beside it their usefulness (racq.scoring.usefulness.stage_usefulness: useful &
grounded and covers >= 1 interpretation over candidates whose query has AmbigNQ's human interpretations,
>= 2 distinct options over all). All statistics come from racq.annotation.rating.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from itertools import combinations

from racq.annotation import rating
from racq.config import MIN_PAIR_VOTES
from racq.store import Store, effective_votes
from racq.store.scores import scored_questions, stage_scores
from racq.scoring.usefulness import stage_usefulness

AUTO_METRIC = "option_support"  # higher = more of the question's options found in its passages


def ranking(votes: list[dict], *, n_boot: int = 1000, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(Bradley-Terry rows best first, votes per pair of ranked stages): the ranking both the full
    leaderboard and the published rank-only view show, so the two always agree."""
    bt = rating.bradley_terry(votes, n_boot=n_boot, seed=seed)
    return bt, rating.pair_votes(votes, stages=[r["stage"] for r in bt])


def leaderboard(db: Store, *, n_boot: int = 1000, seed: int = 0, scorer: str | None = None,
                min_pair_votes: int = MIN_PAIR_VOTES) -> dict:
    """Every number of the leaderboard as JSON-ready data (see the module docstring)."""
    votes = effective_votes(db)
    bt, pairs = ranking(votes, n_boot=n_boot, seed=seed)
    order = [r["stage"] for r in bt]
    m = rating.win_matrix(votes, stages=order)
    auto = stage_scores(db, scorer)
    # usefulness of the same scored candidates (their stored options), beside faithfulness
    key = next(iter(auto.values()))["scorer"] if auto else None
    useful = stage_usefulness(scored_questions(db, key)) if key else {}
    per = defaultdict(Counter)
    for v in votes:
        per[v["annotator"]][v["outcome"]] += 1
    annotators = [{"annotator": a, "votes": sum(c.values()), **{o: c[o] for o in rating.LEFT_SCORE},
                   "skip": c["skip"]} for a, c in sorted(per.items())]
    human = {r["stage"]: r["rating"] for r in bt}
    auto_main = {s: a[AUTO_METRIC] for s, a in auto.items() if a.get(AUTO_METRIC) is not None}
    data = {"n_votes": len(votes), "n_games": sum(1 for v in votes if v["outcome"] != "skip"),
            "win_rates": rating.win_rates(votes), "bradley_terry": bt,
            "matrix": {"stages": m["stages"], "wins": m["wins"].tolist(), "games": m["games"].tolist()},
            "annotators": annotators, "agreement": rating.agreement(votes),
            "position_bias": rating.position_bias(votes), "auto": auto, "auto_metric": AUTO_METRIC,
            "useful": useful,
            "auto_vs_human": rating.ranking_agreement(auto_main, human),
            "pair_votes": pairs, "min_pair_votes": min_pair_votes,
            "thin_pairs": thin_pairs(pairs, min_pair_votes)}
    data["provisional"] = bool(data["thin_pairs"])
    data["notice"] = provisional_notice(data)  # plain text; the app formats its own with md_esc
    return data


def thin_pairs(pairs: list[dict], min_pair_votes: int) -> list[dict]:
    """The pairs of rating.pair_votes with fewer than `min_pair_votes` votes: while any is left, the
    ranking is provisional."""
    return [p for p in pairs if p["votes"] < min_pair_votes]


def provisional_notice(data: dict, name=str) -> str:
    """'' when every pair of ranked stages has at least data["min_pair_votes"] votes, else the notice
    naming each thin pair with its votes (admins and `racq rate` only: counts leak votes; the
    published ranking says just "provisional"). `name` formats stage names (md_esc in the app)."""
    thin = data.get("thin_pairs") or []
    if not thin:
        return ""
    each = ", ".join(f"the pair {name(p['pair'][0])}–{name(p['pair'][1])} has {p['votes']} "
                     f"vote{'' if p['votes'] == 1 else 's'}" for p in thin)
    return (f"The ranking is provisional: {each} (fewer than {data['min_pair_votes']}"
            f"{' each' if len(thin) > 1 else ''}).")


# ------------------------------------------------------------------ tables (headers, rows)
def _f(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def stage_table(data: dict) -> tuple[list[str], list[list]]:
    """One row per stage: human rank (shared where the 95% intervals overlap, rating.shared_ranks),
    games, win rate, Elo with its CI, and the automatic scores. Stages with scores but no votes yet
    (a new round) come last."""
    headers = ["rank", "stage", "games", "win rate", "Elo", "Elo 95% CI", "option support",
               "hallucination rate", "PARENT F1", "scored", *USEFUL_HEADERS]
    rows = []
    seen = set()
    for r in data["bradley_terry"]:
        st = r["stage"]
        seen.add(st)
        a = data["auto"].get(st, {})
        rows.append([r["rank"], st, r["games"], _f(data["win_rates"][st]["win_rate"]), round(r["elo"]),
                     f"{round(r['elo_low'])}–{round(r['elo_high'])}", _f(a.get("option_support")),
                     _f(a.get("hallucinated")), _f(a.get("parent_f1")), a.get("n", 0),
                     *_useful_cells(data, st)])
    for st, a in data["auto"].items():
        if st not in seen:
            rows.append(["–", st, 0, "–", "–", "–", _f(a.get("option_support")), _f(a.get("hallucinated")),
                         _f(a.get("parent_f1")), a.get("n", 0), *_useful_cells(data, st)])
    return headers, rows


# Shares over the stage's scored pool candidates; the first two only over queries with AmbigNQ's human
# interpretations (racq.scoring.usefulness.stage_usefulness), counted in "with interpretations".
USEFUL_HEADERS = ["useful & grounded", "covers ≥ 1 interpretation", "with interpretations", "≥ 2 distinct options"]


def _useful_cells(data: dict, stage: str) -> list:
    u = (data.get("useful") or {}).get(stage, {})
    return [_f(u.get("useful_grounded")), _f(u.get("covers_any")), u.get("n_interp", 0), _f(u.get("distinct_options"))]


def matrix_table(data: dict) -> tuple[list[str], list[list]]:
    """Row stage's points against column stage / games between them (a tie gives each 0.5)."""
    m = data["matrix"]
    stages = m["stages"]
    rows = []
    for i, s in enumerate(stages):
        row = [s]
        for j in range(len(stages)):
            n = m["games"][i][j]
            row.append("" if i == j else "–" if not n else f"{m['wins'][i][j] / n:.2f} ({int(n)})")
        rows.append(row)
    return ["row beats column"] + stages, rows


def annotator_table(data: dict) -> tuple[list[str], list[list]]:
    headers = ["annotator", "votes", "left", "right", "tie", "both bad", "skip", "left share",
               "left 95% CI", "p (left = 0.5)", "side bias"]
    rows = []
    for a in data["annotators"]:
        b = data["position_bias"].get(a["annotator"])
        bias = ([_f(b["share_left"]), f"{_f(b['ci_low'])}–{_f(b['ci_high'])}", _f(b["p_value"], 3),
                 "yes" if b["biased"] else "no"] if b else ["–", "–", "–", "–"])
        rows.append([a["annotator"], a["votes"], a["left"], a["right"], a["tie"], a["both_bad"], a["skip"], *bias])
    return headers, rows


def agreement_text(data: dict, name=str) -> str:
    """The agreement and auto-vs-human lines. `name` formats every annotator and metric name (the app
    passes racq.ui.render.md_esc, since this text goes into Markdown there)."""
    ag, avh = data["agreement"], data["auto_vs_human"]
    if ag["method"] is None:
        lines = ["Inter-annotator agreement: no item has two annotators yet."]
    else:
        method = "Cohen's" if ag["method"] == "cohen" else "Fleiss'"
        lines = [f"Inter-annotator agreement: {method} κ = {_f(ag['kappa'])} on {ag['items']} shared items "
                 f"({', '.join(map(name, ag['annotators']))})."]
        # Pairs rebuilt from the names, not split from the "a|b" keys: a name may itself contain "|".
        for a, b in combinations(ag["annotators"], 2):
            p = ag["pairwise"].get(f"{a}|{b}")
            if p:
                lines.append(f"  {name(a)} & {name(b)}: κ = {_f(p['kappa'])} on {p['items']} items")
    if avh["n"] >= 2:
        lines.append(f"Automatic ({name(data['auto_metric'])}) vs human ranking over {avh['n']} stages: "
                     f"Kendall τ = {_f(avh['kendall_tau'])}, Spearman ρ = {_f(avh['spearman'])}.")
    else:
        lines.append("Automatic vs human ranking: needs two stages with both votes and scores.")
    return "\n".join(lines)


def _text_table(headers, rows) -> str:
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def format_text(data: dict) -> str:
    """The leaderboard as plain text tables (what `racq rate` prints)."""
    if not data["n_votes"] and not data["auto"]:
        return "No votes and no scored candidates yet: run `racq pool build`, then vote in the app."
    notice = data["notice"]  # leaderboard() already wrote it
    parts = [f"{data['n_votes']} votes ({data['n_games']} games, skips excluded)", *([notice] if notice else []), "",
             "Stages (Bradley-Terry, 95% bootstrap CI; overlapping intervals share a rank):",
             _text_table(*stage_table(data)), "",
             "Pairwise:", _text_table(*matrix_table(data)), "",
             "Annotators:", _text_table(*annotator_table(data)), "", agreement_text(data)]
    return "\n".join(parts)


def bt_figure(data: dict):
    """A matplotlib Figure: each stage's Elo-scale rating with its 95% bootstrap CI, best on top."""
    from matplotlib.figure import Figure  # no pyplot: safe in Gradio's worker threads

    bt = data["bradley_terry"]
    fig = Figure(figsize=(6, 0.5 + 0.45 * max(len(bt), 1)), layout="constrained")
    ax = fig.add_subplot()
    if not bt:
        ax.text(0.5, 0.5, "no votes yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    rows = list(reversed(bt))
    y = list(range(len(rows)))
    elo = [r["elo"] for r in rows]
    err = [[r["elo"] - r["elo_low"] for r in rows], [r["elo_high"] - r["elo"] for r in rows]]
    ax.errorbar(elo, y, xerr=err, fmt="o", capsize=4, color="#1f6feb")
    ax.axvline(1000, color="#999", lw=0.8, ls="--")
    # parse_math off: a stage name is text; "$...$" in it must not turn into mathtext
    ax.set_yticks(y, [f"{r['stage']} ({r['games']})" for r in rows], parse_math=False)
    ax.set_xlabel("Bradley–Terry rating, Elo scale (95% bootstrap CI); (games)")
    return fig
