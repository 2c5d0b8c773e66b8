"""The Leaderboard screen: human ranking of the stages beside their automatic faithfulness and usefulness.

    python app.py            # tab "Leaderboard"; the numbers are also `racq rate`

Who sees what, decided on the server in the handler for every call (the layout only starts hidden):
- No users file (auth off, a single trusted machine): everyone sees the full leaderboard.
- With a users file: admins see everything. Annotators and signed-out visitors see at most the stage
  ranking (rank and stage name; "provisional" without counts while a stage pair has fewer than
  `min_pair_votes` votes), and only when the app runs with `publish_ranking: true`; otherwise
  a line saying it is not published. Vote and game counts, intervals, the win matrix, per-annotator
  tables and agreement move with every vote: diffing them around one's own vote would tell which
  stage pair one judged and how the others vote. The published view's ranks are the admins' ones
  (shared where the bootstrap intervals overlap); its one other bit, "provisional", changes only when
  the last thin stage pair reaches `min_pair_votes` (or a new stage arrives), and never says which
  pair or how many votes.

Takes the app's AppContext (racq/ui/__init__.py): ctx.db, ctx.cfg (users_file, publish_ranking,
min_pair_votes) and ctx.is_admin(request). The numbers come from racq.annotation.standings (racq.annotation.rating);
names that go into Markdown pass through racq.ui.render.md_esc, and the tables keep Gradio's "str"
datatype, which the browser renders as text. The Refresh button is also the API endpoint
`/leaderboard` (gradio_client: predict(api_name="/leaderboard")): the same handler, so the same rules.
"""

from __future__ import annotations

import gradio as gr  # at module level: the handler's `gr.Request` hint must resolve for Gradio to inject it

from racq.config import MIN_PAIR_VOTES
from racq.annotation.standings import (agreement_text, annotator_table, bt_figure, leaderboard, matrix_table, ranking,
                              provisional_notice, stage_table, thin_pairs)
from racq.store import effective_votes
from racq.ui.render import md_esc

INTRO = ("Human ranking of the stages from blind pairwise votes (Bradley–Terry with 95% bootstrap "
         "intervals; stages whose intervals overlap share a rank; ties and 'both bad' count half a win, "
         "skips not at all), next to the automatic faithfulness score of each stage's pool questions and "
         "their usefulness: useful & grounded and covers ≥ 1 interpretation over pool queries with human "
         "interpretations (AmbigNQ's; counted in 'with interpretations'), ≥ 2 distinct options over all.")
NOT_PUBLISHED = "The stage ranking is not published yet: an admin publishes it once a round of votes is in."
RANKING = ("**Stage ranking** from everyone's blind votes, best first; stages the votes cannot yet tell "
           "apart share a rank. Counts, intervals and per-annotator numbers are for admins.")
# No number in it: how many votes a pair lacks would tell annotators about the others' votes.
PROVISIONAL = ("**Provisional**: some pairs of stages have too few votes yet for a firm ranking.")
NO_RANKING = "**No ranking yet**: the stages have no votes."
STAGES_LABEL = "Stages: human rating, automatic faithfulness and usefulness"
RANKING_LABEL = "Stage ranking (best first)"


def _frame(headers, rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=headers)


def access(ctx, request) -> str:
    """What this caller may see: "all", "ranking" or "nothing"."""
    if not ctx.cfg.users_file or ctx.is_admin(request):
        return "all"
    return "ranking" if ctx.cfg.publish_ranking else "nothing"


def full_view(data: dict) -> tuple:
    """(summary markdown, figure, stages table, win matrix, annotators table, agreement markdown)."""
    if data["n_votes"]:
        summary = f"**{data['n_votes']} votes** ({data['n_games']} games; skips are not games)."
        notice = provisional_notice(data, name=md_esc)
        if notice:
            summary += f"\n\n**{notice}**"
    else:
        summary = "**No votes yet.** Vote on the Annotate screen; the table shows automatic scores meanwhile."
    agreement = agreement_text(data, name=md_esc).replace("\n  ", "\n- ").replace("\n", "\n\n")
    return (summary, bt_figure(data), _frame(*stage_table(data)), _frame(*matrix_table(data)),
            _frame(*annotator_table(data)), agreement)


def ranking_rows(db, n_boot: int = 1000, min_pair_votes: int = MIN_PAIR_VOTES) -> tuple[list[list], bool]:
    """([rank, stage] best first, provisional). The ranks are the admins' ones: the same bootstrap
    (same n_boot, same seed), so stages whose 95% intervals overlap share a rank here too (a few
    tens of milliseconds for a handful of stages). Only the rank, the stage and whether any pair has
    fewer than `min_pair_votes` votes leave this function: no count, interval or per-annotator number."""
    bt, pairs = ranking(effective_votes(db), n_boot=n_boot)
    return [[r["rank"], r["stage"]] for r in bt], bool(thin_pairs(pairs, min_pair_votes))


def refresh(ctx, request, n_boot: int = 1000) -> list:
    """The six outputs (summary, plot, stages, matrix, annotators, agreement) for this caller."""
    seen = access(ctx, request)
    if seen == "all":
        data = leaderboard(ctx.db, n_boot=n_boot, min_pair_votes=ctx.cfg.min_pair_votes)
        summary, fig, stages, matrix, annotators, agreement = full_view(data)
        return [summary, gr.update(value=fig, visible=True),
                gr.update(value=stages, label=STAGES_LABEL, visible=True), gr.update(value=matrix, visible=True),
                gr.update(value=annotators, visible=True), gr.update(value=agreement, visible=True)]
    if seen == "ranking":
        rows, provisional = ranking_rows(ctx.db, n_boot=n_boot, min_pair_votes=ctx.cfg.min_pair_votes)
        summary = (RANKING + (f"\n\n{PROVISIONAL}" if provisional else "")) if rows else NO_RANKING
        stages = gr.update(value=_frame(["rank", "stage"], rows), label=RANKING_LABEL, visible=bool(rows))
    else:
        summary, stages = NOT_PUBLISHED, gr.update(value=None, visible=False)
    # Emptied, not only hidden: this browser may still hold the view of an admin who signed out.
    hidden = [gr.update(value=None, visible=False) for _ in range(3)]
    return [summary, hidden[0], stages, hidden[1], hidden[2], gr.update(value="", visible=False)]


def build(ctx) -> dict:
    """Lay the screen out in the current Blocks/Tab; returns {"refresh": fn, "outputs": [...], "button"}
    (the shell fills the screen when its tab is selected, racq.ui._refresh_on_select)."""
    shown = not ctx.cfg.users_file  # with sign-in, counts start hidden until the server knows who asks
    gr.Markdown(INTRO)
    button = gr.Button("Refresh", elem_id="leaderboard-refresh", variant="secondary")
    # latex off: nothing here is maths, and a "$$" in a name must stay text
    summary = gr.Markdown(elem_id="leaderboard-summary", latex_delimiters=[])
    plot = gr.Plot(label="Bradley–Terry rating (Elo scale, 95% bootstrap CI)", visible=shown)
    # The tables keep datatype "str": Gradio renders such cells (and headers) as text, never markup.
    stages = gr.Dataframe(label=STAGES_LABEL, interactive=False, elem_id="leaderboard-stages", visible=shown)
    matrix = gr.Dataframe(label="Pairwise: row's win rate against column (games)", interactive=False,
                          elem_id="leaderboard-matrix", visible=shown)
    annotators = gr.Dataframe(label="Annotators: votes and left/right bias", interactive=False,
                              elem_id="leaderboard-annotators", visible=shown)
    agreement = gr.Markdown(elem_id="leaderboard-agreement", latex_delimiters=[], visible=shown)
    outputs = [summary, plot, stages, matrix, annotators, agreement]

    def on_refresh(request: gr.Request):
        return refresh(ctx, request)

    button.click(on_refresh, None, outputs, api_name="leaderboard")
    return {"refresh": on_refresh, "outputs": outputs, "button": button}
