"""The Feedback screen (admins only): train a DPO round on the human votes, then add the new stage's
questions to the pool. The buttons call the same functions as the CLI:

    racq train dpo --from-votes --synthetic-weight 0.3     # = the Train button (racq.feedback.train_round)
    racq pool build --existing                             # = the "Add ... to the pool" button

Context: racq.ui.AppContext (racq/ui/__init__.py), or any object with these parts. Used here:
ctx.db_path, ctx.cfg, ctx.asker(), and when present ctx.reload_stages() (after a round, so Explore
shows the new stage), ctx.is_admin(request) or ctx.role(request), ctx.train_cfg (a TrainConfig).
Who is an admin: ctx says so; else the signed-in Gradio user (request.username) has role 'admin' in
the annotators table; else cfg.admin is true. The check runs on the server in every handler, not only in the layout.

One job (a round or a pool build) runs at a time per process, in a worker thread; the handlers are
generators that poll it twice a second for the progress bar and the log, so a reloaded page can
re-attach to a running job by pressing the button again.
"""

from __future__ import annotations

import html
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import gradio as gr  # at module level: the handlers' `gr.Request` hints must resolve for Gradio to inject it

from racq.config import TrainConfig
from racq.store import get_annotator, list_rounds, open_db

POLL_S = 0.5


@dataclass
class Job:
    """A background job with what the screen shows about it."""

    kind: str
    status: str = "running"  # running | done | failed
    step: int = 0
    total: int = 0
    lines: list[str] = field(default_factory=list)
    result: object = None
    error: str | None = None

    def log(self, msg: str) -> None:
        self.lines.append(f"{time.strftime('%H:%M:%S')}  {msg}")
        del self.lines[:-300]

    def on_event(self, ev: dict) -> None:
        """racq.feedback progress events -> bar and log."""
        if ev.get("event") == "message":
            self.log(ev["message"])
            return
        self.step, self.total = ev.get("step", self.step), ev.get("max_steps") or self.total
        if ev.get("event") == "log" and ev.get("loss") is not None:
            self.log(f"step {self.step}/{self.total}  loss {ev['loss']:.4f}")

    def on_pool(self, done: int, total: int, msg: str) -> None:
        self.step, self.total = done, total
        self.log(msg)


_JOB: Job | None = None
_GUARD = threading.Lock()


def start(kind: str, fn: Callable[[Job], object]) -> Job:
    """Run fn(job) in a daemon thread unless a job is running (then that job is returned)."""
    global _JOB
    with _GUARD:
        if _JOB is not None and _JOB.status == "running":
            return _JOB
        job = _JOB = Job(kind)

    def run():
        try:
            job.result = fn(job)
            job.status = "done"
        except Exception as e:  # noqa: BLE001 - shown on the screen; the round is marked failed by train_round
            job.error, job.status = f"{type(e).__name__}: {e}", "failed"
            job.log(f"failed: {job.error}")

    threading.Thread(target=run, name=f"racq-{kind}", daemon=True).start()
    return job


def current() -> Job | None:
    return _JOB


def is_admin(ctx, request) -> bool:
    if hasattr(ctx, "is_admin"):
        return bool(ctx.is_admin(request))
    if hasattr(ctx, "role"):
        return ctx.role(request) == "admin"
    user = getattr(request, "username", None)
    if user:
        row = get_annotator(open_db(getattr(ctx, "db_path", None)), user)
        return bool(row and row["role"] == "admin")
    return bool(getattr(getattr(ctx, "cfg", None), "admin", False))


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
    from racq.feedback import usable_pairs

    db = open_db(getattr(ctx, "db_path", None))
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
    label = {"running": "running", "done": "done", "failed": "failed"}[job.status]
    return (f'<div id="feedback-progress"><progress value="{min(job.step, total)}" max="{total}" '
            f'style="width:100%"></progress><div>{html.escape(job.kind)}: {label} — step {job.step}/'
            f'{job.total or "?"}</div></div>')


def _watch(job: Job, finish: Callable[[Job], str]):
    """Yield (bar, log, message) until the job ends, then once more with finish(job)'s message."""
    while job.status == "running":
        yield _bar(job), "\n".join(job.lines), "Working…"
        time.sleep(POLL_S)
    yield _bar(job), "\n".join(job.lines), finish(job)


def train_updates(ctx, weight: float, request=None):
    """The Train button: start (or re-attach to) a round; yields (bar, log, message)."""
    if not is_admin(ctx, request):
        yield "", "", "Only an admin can train a round."
        return
    from racq.feedback import train_round

    cfg = train_config(ctx)
    job = start("round", lambda j: train_round(cfg, getattr(ctx, "db_path", None), float(weight),
                                               progress=j.on_event))

    def finish(j: Job) -> str:
        if j.kind != "round":
            return f"A {j.kind} job was running and has ended ({j.status}); press Train again."
        if j.status == "failed":
            return f"**Failed:** {j.error}"
        stage = j.result["stage"]
        reloaded = ""
        if hasattr(ctx, "reload_stages"):
            try:
                ctx.reload_stages()
                reloaded = " It is loaded: Explore shows it now."
            except Exception as e:  # noqa: BLE001
                reloaded = f" Reloading the stages failed ({e}); restart the app to see it."
        return (f"**New stage `{stage}`** (round #{j.result['round_id']}, {j.result['n_human_pairs']} human + "
                f"{j.result['n_synthetic_pairs']} synthetic pairs).{reloaded} Next: add its questions to "
                f"the pool (button below, or `racq pool build --existing`) so annotators can compare it.")

    yield from _watch(job, finish)


def pool_updates(ctx, request=None):
    """The pool button: generate the newest stage's questions for the queries already in the pool."""
    if not is_admin(ctx, request):
        yield "", "", "Only an admin can build the pool."
        return
    from racq.pool import build_pool

    def run(j: Job):
        db = open_db(getattr(ctx, "db_path", None))
        done = [r["stage"] for r in list_rounds(db) if r["status"] == "done"]
        if not done:
            raise RuntimeError("no finished training round yet: train one first")
        stage = done[-1]
        asker = ctx.asker()
        j.log(f"adding questions of stage {stage} for the queries in the pool")
        return build_pool(db, n=10**9, stages=[stage], asker=asker,
                          existing=True, progress=j.on_pool)

    job = start("pool", run)

    def finish(j: Job) -> str:
        if j.kind != "pool":
            return f"A {j.kind} job was running and has ended ({j.status}); press the button again."
        if j.status == "failed":
            return f"**Failed:** {j.error}"
        r = j.result or {}
        return f"Pool updated: {r.get('candidates_new', 0)} new questions, {r.get('items_new', 0)} new pairs."

    yield from _watch(job, finish)


def build(ctx) -> dict:
    """Lay the screen out in the current Blocks/Tab; returns the components and the summary refresher."""
    gr.Markdown("Train a new alignment round on the annotators' votes (admins only). Each round starts "
                "from `aligned` with `sft` as the DPO reference and becomes a new stage `aligned-rN`.")
    summary = gr.Markdown(elem_id="feedback-summary")
    refresh = gr.Button("Refresh counts", variant="secondary")
    weight = gr.Slider(0.0, 0.9, value=0.0, step=0.05, label="Share of synthetic pairs in the training set",
                       info="0 = human pairs only; synthetic pairs come from the run folder's pairs.jsonl")
    train = gr.Button("Train a new round", variant="primary", elem_id="feedback-train")
    bar = gr.HTML()
    log = gr.Textbox(label="Log", lines=10, max_lines=20, interactive=False, elem_id="feedback-log")
    message = gr.Markdown(elem_id="feedback-message")
    pool = gr.Button("Add the newest stage's questions to the pool", elem_id="feedback-pool")

    def on_summary(request: gr.Request = None):
        if request is not None and not is_admin(ctx, request):
            return "This screen is for admins: sign in as an admin on the Annotate tab."
        return summary_md(ctx)

    def on_train(w, request: gr.Request):
        yield from train_updates(ctx, w, request)

    def on_pool(request: gr.Request):
        yield from pool_updates(ctx, request)

    refresh.click(on_summary, None, summary, api_name="feedback_summary")
    train.click(on_train, weight, [bar, log, message], api_name="train_round").then(on_summary, None, summary)
    pool.click(on_pool, None, [bar, log, message], api_name="pool_build")
    return {"refresh": on_summary, "summary": summary, "train": train, "pool": pool,
            "outputs": [bar, log, message]}
