"""The Feedback screen (admins only): train a DPO round on the human votes, then add the new stage's
questions to the pool. The buttons call the same functions as the CLI:

    racq train dpo --from-votes --synthetic-weight 0.3     # = the Train button (racq.annotation.retrain.train_round)
    racq pool build --existing                             # = the "Add ... to the pool" button

Context (racq.ui.AppContext): ctx.db, ctx.cfg, ctx.train_cfg, ctx.asker(), ctx.load_stage(name),
ctx.jobs (racq.ui.jobs.Jobs), ctx.is_admin(request). Who is an admin: the user signed in on this page
(AppContext.user) has role 'admin' in the annotators table. The check runs on the server in every
handler, not only in the layout.

A round or a pool build is a server-side job (ctx.jobs, one at a time): its worker thread trains, then
loads the new stage into the running app itself (ctx.load_stage), so a closed or reloaded page loses
nothing. The handlers only watch it: generators that poll it twice a second for the bar and the log.
Pressing a button while a job runs re-attaches to it; opening the tab (or Refresh) shows the current
or last job's log and result.
"""

from __future__ import annotations

import html
import time
from typing import Callable

import gradio as gr  # at module level: the handlers' `gr.Request` hints must resolve for Gradio to inject it

from racq.config import TrainConfig
from racq.store import list_rounds
from racq.ui.jobs import Job

POLL_S = 0.5


def is_admin(ctx, request) -> bool:
    """The one admin check: the user signed in on this page (Annotate tab) has role 'admin'."""
    return ctx.is_admin(request)


def train_config(ctx) -> TrainConfig:
    """ctx.train_cfg, or ctx.cfg when it is a TrainConfig, else the defaults; then the app's own base
    model and adapters folder (ctx.cfg.base_model / adapters_dir, e.g. an AppConfig) win, so the new
    stage lands where the app looks for stages."""
    import dataclasses

    app = getattr(ctx, "cfg", None)
    cfg = getattr(ctx, "train_cfg", None)
    if not isinstance(cfg, TrainConfig):
        cfg = app if isinstance(app, TrainConfig) else TrainConfig()
    if app is not cfg:
        over = {k: str(getattr(app, k)) for k in ("base_model", "adapters_dir") if getattr(app, k, None)}
        cfg = dataclasses.replace(cfg, **over)
    return cfg


def summary_md(ctx) -> str:
    from racq.annotation.retrain import usable_pairs

    db = ctx.db
    s = usable_pairs(db)
    ex = s["excluded"]
    rounds = list_rounds(db)
    lines = [f"**{s['pairs']} usable human pairs** ({s['new_pairs']} with votes no finished round has used). "
             f"Not usable: {ex['tie']} tie, {ex['both_bad']} both bad, {ex['skip']} skipped votes, "
             f"{s['conflicting_items']} items where annotators disagree."]
    if rounds:
        lines.append("Rounds: " + "; ".join(f"#{r['id']} {r['stage']} ({r['status']})" for r in rounds[-5:]))
    return "\n\n".join(lines)


def _bar(job: Job | None) -> str:
    if job is None:
        return ""
    total = max(job.total, 1)
    return (f'<div id="feedback-progress"><progress value="{min(job.step, total)}" max="{total}" '
            f'style="width:100%"></progress><div>{html.escape(job.kind)}: {job.status} — step {job.step}/'
            f'{job.total or "?"}</div></div>')


def job_message(job: Job | None) -> str:
    """What the screen says about a job: working, failed (why), or its result. A pure function of the
    job, so a page opened after the job ended shows the same as the page that started it."""
    if job is None:
        return ""
    if job.status == "running":
        return f"Working… (a {job.kind} job is running on the server; this page may close)"
    if job.status == "failed":
        return f"**Failed:** {job.error}"
    r = job.result or {}
    if job.kind == "pool":
        return f"Pool updated: {r.get('candidates_new', 0)} new questions, {r.get('items_new', 0)} new pairs."
    loaded = (f" It could not be loaded into the running app ({r['load_error']}); restart the app to see it."
              if r.get("load_error") else f" {r.get('loaded', '')}.")
    return (f"**New stage `{r['stage']}`** (round #{r['round_id']}, {r['n_human_pairs']} human + "
            f"{r['n_synthetic_pairs']} synthetic pairs).{loaded} Next: add its questions to the pool "
            f"(button below, or `racq pool build --existing`) so annotators can compare it.")


def _watch(job: Job, kind: str):
    """Yield (bar, log, message) until the job ends, then once more with its result."""
    while job.status == "running":
        yield _bar(job), job.text(), job_message(job)
        time.sleep(POLL_S)
    message = job_message(job)
    if job.kind != kind:
        message = f"A {job.kind} job was running and has ended ({job.status}); press the button again. {message}"
    yield _bar(job), job.text(), message


def round_job(ctx, cfg: TrainConfig, weight: float) -> Callable[[Job], dict]:
    """The round job: train, then load the new stage into this app (in the worker thread, not in a
    page's handler: the round must land in the app even when no page is open)."""
    from racq.annotation.retrain import train_round

    def run(j: Job) -> dict:
        result = train_round(cfg, ctx.db_path, weight, progress=j.on_event)
        try:
            result["loaded"] = ctx.load_stage(result["stage"])
            j.log(result["loaded"])
        except Exception as e:  # noqa: BLE001 - the round itself is done; say why the app lacks it
            result["load_error"] = f"{type(e).__name__}: {e}"
            j.log(f"the new stage could not be loaded into the app: {result['load_error']}")
        return result

    return run


def pool_job(ctx) -> Callable[[Job], dict]:
    """The pool job: the newest finished round's stage, loaded here if it is not yet (a round trained
    by the CLI in another process), then its questions for every query already in the pool."""
    from racq.annotation.pool import build_pool

    def run(j: Job) -> dict:
        db = ctx.db
        done = [r["stage"] for r in list_rounds(db) if r["status"] == "done"]
        if not done:
            raise RuntimeError("no finished training round yet: train one first")
        stage = done[-1]
        try:
            j.log(ctx.load_stage(stage))
        except Exception as e:  # noqa: BLE001 - build_pool names the cause (broken adapter, not on disk)
            j.log(f"could not load stage {stage}: {type(e).__name__}: {e}")
        j.log(f"adding questions of stage {stage} for the queries in the pool")
        return build_pool(db, n=10**9, stages=[stage], asker=ctx.asker(), existing=True,
                          progress=j.on_pool, adapters_dir=ctx.cfg.adapters_dir)

    return run


def train_updates(ctx, weight: float, request=None):
    """The Train button: start (or re-attach to) a round; yields (bar, log, message)."""
    if not is_admin(ctx, request):
        yield "", "", "Only an admin can train a round."
        return
    yield from _watch(ctx.jobs.start("round", round_job(ctx, train_config(ctx), float(weight))), "round")


def pool_updates(ctx, request=None):
    """The pool button: generate the newest stage's questions for the queries already in the pool."""
    if not is_admin(ctx, request):
        yield "", "", "Only an admin can build the pool."
        return
    yield from _watch(ctx.jobs.start("pool", pool_job(ctx)), "pool")


def screen_state(ctx, request=None) -> tuple[str, str, str, str]:
    """(summary, bar, log, message) for a page opened now: the counts and the current or last job."""
    if request is not None and not is_admin(ctx, request):
        return "This screen is for admins: sign in as an admin on the Annotate tab.", "", "", ""
    job = ctx.jobs.current()
    return summary_md(ctx), _bar(job), job.text() if job else "", job_message(job)


def build(ctx) -> dict:
    """Lay the screen out in the current Blocks/Tab; returns the components and the refresher."""
    gr.Markdown("Train a new alignment round on the annotators' votes (admins only). Each round starts "
                "from `aligned` with `sft` as the DPO reference and becomes a new stage `aligned-rN`.")
    summary = gr.Markdown(elem_id="feedback-summary")
    refresh = gr.Button("Refresh", variant="secondary")
    weight = gr.Slider(0.0, 0.9, value=0.0, step=0.05, label="Share of synthetic pairs in the training set",
                       info="0 = human pairs only; synthetic pairs come from the run folder's pairs.jsonl")
    train = gr.Button("Train a new round", variant="primary", elem_id="feedback-train")
    bar = gr.HTML()
    log = gr.Textbox(label="Log", lines=10, max_lines=20, interactive=False, elem_id="feedback-log")
    message = gr.Markdown(elem_id="feedback-message")
    pool = gr.Button("Add the newest stage's questions to the pool", elem_id="feedback-pool")

    def on_refresh(request: gr.Request = None):
        return screen_state(ctx, request)

    def on_summary(request: gr.Request = None):
        return screen_state(ctx, request)[0]

    def on_train(w, request: gr.Request):
        yield from train_updates(ctx, w, request)

    def on_pool(request: gr.Request):
        yield from pool_updates(ctx, request)

    everything = [summary, bar, log, message]
    refresh.click(on_refresh, None, everything, api_name="feedback_summary")
    train.click(on_train, weight, [bar, log, message], api_name="train_round").then(on_summary, None, summary)
    pool.click(on_pool, None, [bar, log, message], api_name="pool_build")
    return {"refresh": on_refresh, "refresh_outputs": everything, "summary": summary, "train": train,
            "pool": pool, "outputs": [bar, log, message]}
