"""The Leaderboard screen: human ranking of the stages beside their automatic faithfulness.

    python app.py            # tab "Leaderboard"; the numbers are also `racq rate`

The context object this screen (and racq/ui/feedback.py) assumes -- the app shell passes one to every
screen's `build(ctx)`:

    class Ctx(Protocol):
        cfg: object                      # app settings; feedback.py reads cfg.admin (bool) as a fallback
        db_path: str | Path | None       # the annotation database (None = racq.config.DB_PATH)
        def asker(self) -> Asker: ...    # racq.service.Asker, loaded lazily on first call
        def stages(self) -> list[str]: ...          # stage names loaded now
        # used by feedback.py (racq.ui.AppContext has them):
        def load_stage(self, name) -> str: ...      # attach a freshly trained stage to the loaded model
        jobs: racq.ui.jobs.Jobs                     # the app's server-side background job
        def is_admin(self, request) -> bool: ...    # or role(request) -> "admin" | "annotator"

Everything shown is computed by racq.leaderboard from racq.rating; this module only lays it out.
The Refresh button is also the API endpoint `/leaderboard` (gradio_client: predict(api_name="/leaderboard")).
"""

from __future__ import annotations

from racq.leaderboard import agreement_text, annotator_table, bt_figure, leaderboard, matrix_table, stage_table
from racq.store import open_db

INTRO = ("Human ranking of the stages from blind pairwise votes (Bradley–Terry with 95% bootstrap "
         "intervals; ties and 'both bad' count half a win, skips not at all), next to the automatic "
         "faithfulness score of each stage's pool questions.")


def _frame(headers, rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=headers)


def refresh(db_path=None, n_boot: int = 1000):
    """(summary markdown, figure, stages table, win matrix, annotators table, agreement markdown)."""
    data = leaderboard(open_db(db_path), n_boot=n_boot)
    if data["n_votes"]:
        summary = f"**{data['n_votes']} votes** ({data['n_games']} games; skips are not games)."
    else:
        summary = "**No votes yet.** Vote on the Annotate screen; the table shows automatic scores meanwhile."
    agreement = agreement_text(data).replace("\n  ", "\n- ").replace("\n", "\n\n")
    return (summary, bt_figure(data), _frame(*stage_table(data)), _frame(*matrix_table(data)),
            _frame(*annotator_table(data)), agreement)


def build(ctx) -> dict:
    """Lay the screen out in the current Blocks/Tab; returns {"refresh": fn, "outputs": [...], "button"}
    so the shell can also fill it on page load (demo.load(handle["refresh"], None, handle["outputs"]))."""
    import gradio as gr

    gr.Markdown(INTRO)
    button = gr.Button("Refresh", elem_id="leaderboard-refresh", variant="secondary")
    summary = gr.Markdown(elem_id="leaderboard-summary")
    plot = gr.Plot(label="Bradley–Terry rating (Elo scale, 95% bootstrap CI)")
    stages = gr.Dataframe(label="Stages: human rating and automatic faithfulness", interactive=False,
                          elem_id="leaderboard-stages")
    matrix = gr.Dataframe(label="Pairwise: row's win rate against column (games)", interactive=False)
    annotators = gr.Dataframe(label="Annotators: votes and left/right bias", interactive=False)
    agreement = gr.Markdown(elem_id="leaderboard-agreement")
    outputs = [summary, plot, stages, matrix, annotators, agreement]

    def on_refresh():
        return refresh(getattr(ctx, "db_path", None))

    button.click(on_refresh, None, outputs, api_name="leaderboard")
    return {"refresh": on_refresh, "outputs": outputs, "button": button}
