"""Dataset cards: the Markdown written beside an export (`racq export prefs|votes` writes one).

    racq export prefs runs/prefs.jsonl        # runs/prefs.jsonl + runs/README.md (the card)

    from racq.annotation.datacard import card_path
    from racq.annotation.prefs import export_votes
    export_votes(db, "runs/votes.csv", card=card_path("runs/votes.csv"))

A card says what a row is and, from the exported rows and the facts racq.store.export.card_facts
read in the same snapshot: counts per stage pair and outcome, the annotators, their agreement
(racq.annotation.rating.agreement, the figure `racq rate` prints), the training rounds and which of the file's
votes and candidates they involve, and where the queries and passages come from with their licence
(passages are checked against RACQ's shipped corpus by content hash; any other passage came from an
own corpus, whose licence only its owner knows).

Where it goes (card_path): README.md beside the export, unless that folder already has a README.md
that is not this export's own card; then <stem>.card.md. A card never overwrites anything else.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from pathlib import Path

from racq.annotation import rating
from racq.files import write_atomic

MARK = "<!-- racq dataset card for {name} -->"
# data/README.md's licence column, per dataset a pool query can come from
DATASET_LICENCES = {
    "paqa": "CC BY-SA (the RAC authors' PaQa file, derived from AmbigNQ, CC BY-SA 3.0, and Wikipedia)",
    "cambignq": "CC BY-SA (the RAC authors' CAmbigNQ file, derived from AmbigNQ, CC BY-SA 3.0, and Wikipedia)",
    "clariq": "no licence file; research use, cite Aliannejadi et al., EMNLP 2021",
    "clariq_fkw": "no licence file; research use, cite Sekulić et al., ICTIR 2021",
    "qulac": "MIT; cite Aliannejadi et al., SIGIR 2019",
    "custom": "your own queries (`racq pool build --queries FILE`): state their source and licence here",
}
SHIPPED_LICENCE = ("CC BY-SA: Wikipedia text carried by the RAC authors' PaQa and CAmbigNQ files (derived "
                   "from AmbigNQ, CC BY-SA 3.0); provenance in RACQ's data/README.md")
OUTCOME_COLUMNS = [("A", "A better"), ("B", "B better"), ("tie", "tie"), ("both_bad", "both bad"),
                   ("skip", "skip")]


def card_path(export_path: str | Path) -> Path:
    """README.md beside the export if free (or this export's own card), else <stem>.card.md."""
    path = Path(export_path)
    readme = path.parent / "README.md"
    try:
        ours = not readme.exists() or MARK.format(name=path.name) in readme.read_text(errors="replace")[:500]
    except OSError:
        ours = False
    return readme if ours else path.with_name(f"{path.stem}.card.md")


def write_card(path: str | Path, text: str) -> Path:
    """Write the card atomically (a temporary name, then renamed)."""
    return write_atomic(path, text)


@functools.lru_cache(maxsize=1)
def shipped_passage_ids() -> frozenset[str]:
    """Content ids of every passage in RACQ's shipped corpus (the PaQa and CAmbigNQ files; ~1 s)."""
    from racq.data import PASSAGE_DATASETS, load_examples

    return frozenset(p.pid for ex in load_examples(PASSAGE_DATASETS) for p in ex.passages)


# ------------------------------------------------------------------ counting the exported rows
def pair_outcomes(votes) -> dict[tuple[str, str], Counter]:
    """(A, B) stage pair in name order -> Counter of 'A' (A's question won), 'B', tie, both_bad, skip,
    undo: sides are random, so a pair's table counts which stage won, not which side."""
    out: dict[tuple[str, str], Counter] = {}
    for v in votes:
        a, b = sorted((v["left_stage"], v["right_stage"]))
        outcome = v["outcome"]
        if outcome in ("left", "right"):
            outcome = "A" if v[f"{outcome}_stage"] == a else "B"
        out.setdefault((a, b), Counter())[outcome] += 1
    return dict(sorted(out.items()))


def _md(text) -> str:
    """A name or value inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def outcome_table(votes, with_undo: bool = False) -> str:
    cols = OUTCOME_COLUMNS + ([("undo", "undo")] if with_undo else [])
    rows = [[f"{a} vs {b}", *(c[k] for k, _ in cols), sum(c.values())]
            for (a, b), c in pair_outcomes(votes).items()]
    if not rows:
        return "No votes."
    return _table(["stage pair (A vs B)", *(name for _, name in cols), "total"], rows)


# ------------------------------------------------------------------ sections
def _header(kind: str, path: Path, format: str, rows: list[dict], db_name: str, filters: dict) -> list[str]:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    what = "human preference pairs" if kind == "prefs" else "raw annotation votes"
    out = [MARK.format(name=path.name), f"# {path.name}: {what} (RACQ)", "",
           f"`{path.name}` ({format}): {len(rows)} rows, exported {now} from the annotation database "
           f"`{db_name}` by `racq export {kind}`."]
    if kind == "prefs":
        out += ["", "One row per item whose annotators chose the same question: TRL's explicit-prompt "
                "preference format (`prompt`, which quotes the query's retrieved passages, `chosen`, "
                "`rejected`) plus lineage columns (item_id, query_id, dataset, topic_id, vote_ids, annotators, "
                "chosen_stage, rejected_stage, chosen/rejected_candidate_id). Ties, both-bad votes and skips "
                "give no row; items whose annotators disagree are left out."]
        used = {k: v for k, v in filters.items() if v}
        if used:
            out += ["", "Filters: " + ", ".join(f"{k} = {v}" for k, v in used.items()) + "."]
    else:
        out += ["", "Every vote row, oldest first: the annotator, the item and its two candidates, the stage "
                "that wrote each side (`left_stage`, `right_stage`), the outcome (left, right, tie, both_bad, "
                "skip, or undo: a row cancelling the vote `undoes_vote_id` names), skip_reason, rationale, "
                "time taken. The votes were blind; this file is not: it names the stages."]
    if format == "csv":
        out += ["", "CSV: list and message columns hold JSON text; an empty cell is a missing value."]
    who = "Annotator names are" if kind == "prefs" else "Annotator names and their notes are"
    out += ["", f"{who} in this file: pseudonymise them before it leaves the team."]
    return out


def _counts(kind: str, rows: list[dict], effective: list[dict]) -> list[str]:
    out = ["", "## Counts per stage pair and outcome", ""]
    if kind == "prefs":
        pairs = Counter((r["chosen_stage"], r["rejected_stage"]) for r in rows)
        votes = Counter()
        for r in rows:
            votes[(r["chosen_stage"], r["rejected_stage"])] += len(r["vote_ids"])
        out += ["Rows of this file:", "", _table(["chosen stage", "rejected stage", "rows", "votes behind them"],
                                                 [[c, r, n, votes[(c, r)]] for (c, r), n in sorted(pairs.items())])
                if pairs else "No rows.", ""]
    else:
        out += ["Rows of this file (votes later undone included, undo rows in their own column):", "",
                outcome_table(rows, with_undo=True), ""]
    out += ["The effective votes of the whole database (undone votes and undo rows removed; what `racq rate` "
            "counts; A/B better = that stage's question won, whichever side it was shown on):", "",
            outcome_table(effective)]
    return out


def _annotators(kind: str, rows: list[dict], effective: list[dict]) -> list[str]:
    in_file = Counter(a for r in rows for a in r["annotators"]) if kind == "prefs" else Counter(
        r["annotator"] for r in rows)
    eff = Counter(v["annotator"] for v in effective)
    skips = Counter(v["annotator"] for v in effective if v["outcome"] == "skip")
    names = sorted(set(in_file) | set(eff))
    col = "rows with their vote" if kind == "prefs" else "rows"
    return ["", "## Annotators", "", _table(["annotator", col, "effective votes", "of them skips"],
                                           [[n, in_file[n], eff[n], skips[n]] for n in names])
            if names else "No annotator has voted."]


def _agreement(effective: list[dict]) -> list[str]:
    a = rating.agreement(effective)
    out = ["", "## Agreement", ""]
    if a["method"] is None:
        return out + ["No item was judged by two annotators yet, so there is no agreement figure."]
    kappa = "n/a" if a["kappa"] != a["kappa"] else f"{a['kappa']:.2f}"  # NaN != NaN
    name = "Cohen's" if a["method"] == "cohen" else "Fleiss'"
    out += [f"{name} κ = {kappa} over {a['items']} items judged by two or more of {len(a['annotators'])} "
            "annotators (skips excluded; racq.annotation.rating.agreement, the figure `racq rate` prints)."]
    if a["pairwise"]:
        out += ["", _table(["annotators", "Cohen's κ", "shared items"],
                           [[k.replace("|", " & "), f"{v['kappa']:.2f}", v["items"]]
                            for k, v in a["pairwise"].items()])]
    return out


def _rounds(kind: str, rows: list[dict], facts: dict) -> list[str]:
    file_votes = {v for r in rows for v in r["vote_ids"]} if kind == "prefs" else {r["id"] for r in rows}
    out = ["", "## Rounds and lineage", ""]
    if facts["rounds"]:
        out += [_table(["round", "stage", "trained from", "status", "finished", "votes it trained on",
                        "of them in this file"],
                       [[r["id"], r["stage"], r["base_stage"], r["status"], r["finished_at"] or "—",
                         len(facts["round_votes"].get(r["id"], [])),
                         len(file_votes & set(facts["round_votes"].get(r["id"], [])))] for r in facts["rounds"]])]
    else:
        out += ["No training round has been recorded in this database (`racq train dpo --from-votes` records one)."]
    sides = ("chosen", "rejected") if kind == "prefs" else ("left", "right")
    made = Counter((r[f"{s}_stage"], facts["candidate_rounds"].get(r[f"{s}_candidate_id"]))
                   for r in rows for s in sides)
    if made:
        out += ["", "Where this file's questions come from (a stage without a round was trained outside the app, "
                "e.g. `racq train all`):", "",
                _table(["stage", "made by round", "candidate appearances"],
                       [[s, "—" if rid is None else rid, n]
                        for (s, rid), n in sorted(made.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0))])]
    return out


def _licence(kind: str, facts: dict) -> list[str]:
    queries = facts["queries"]
    pids = {p for q in queries.values() for p in q["pids"]}
    out = ["", "## Sources and licence", ""]
    datasets = Counter(q["dataset"] or "(none)" for q in queries.values())
    out += ["Queries: " + ("; ".join(f"{n} from {d}: {DATASET_LICENCES.get(d, 'licence unknown: state it here')}"
                                     for d, n in sorted(datasets.items())) or "none") + "."]
    try:
        shipped = len(pids & shipped_passage_ids())
    except Exception as e:  # noqa: BLE001 - the shipped data may be absent (RACQ_DATA_DIR elsewhere)
        out += ["", f"Passages: {len(pids)} distinct; they could not be checked against RACQ's shipped corpus "
                f"({type(e).__name__}: {e}), so their licence is not known here: state it before sharing."]
        return out
    own = len(pids) - shipped
    out += ["", f"Passages: {len(pids)} distinct, retrieved for these queries."]
    if shipped:
        out += [f"{shipped} of them {'is' if shipped == 1 else 'are'} in RACQ's shipped corpus: {SHIPPED_LICENCE}."]
    if own:
        out += [f"{own} {'is' if own == 1 else 'are'} not in RACQ's shipped corpus (an own corpus, `racq index build "
                "--passages`): their licence is that of those documents, which this card cannot know; state it "
                "here before sharing."]
    if kind == "prefs":
        out += ["", "The prompts quote these passages, so this file carries their licence"
                + (" (CC BY-SA is share-alike: a file quoting them is shared under the same licence)." if shipped
                   else ".")]
    else:
        out += ["", "This file holds no passage or question text, only ids; the texts stay in the database."]
    out += ["The clarifying questions were written by the stages named above; votes, skip reasons and notes "
            "were written by the annotators."]
    return out


def render_card(kind: str, path: Path, format: str, rows: list[dict], facts: dict, *, db_name: str = "",
                filters: dict | None = None) -> str:
    """The card's Markdown. kind: 'prefs' or 'votes'; rows: what the export wrote; facts: card_facts."""
    path = Path(path)
    parts = (_header(kind, path, format, rows, db_name, filters or {}), _counts(kind, rows, facts["effective"]),
             _annotators(kind, rows, facts["effective"]), _agreement(facts["effective"]),
             _rounds(kind, rows, facts), _licence(kind, facts))
    return "\n".join(line for part in parts for line in part) + "\n"
