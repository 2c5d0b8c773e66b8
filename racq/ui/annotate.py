"""Annotate: blind pairwise faithfulness votes. Sign in, read the query and its passages, compare two
clarifying questions, press a key.

    python app.py                 # Annotate tab; racq users add ... turns on tokens

Keys: 1 left better, 2 right better, 3 both good / tie, 4 both bad, S skip (pick a reason first),
U undo (the item on screen stays; the undone item comes back next, or, once its stages were
revealed, goes to another annotator). Guidelines: annotations/guidelines.md (one click away).
A study file (racq.annotation.study, `--study`) sets the guidelines, the skip reasons and the button texts
(ctx.study); the stored outcome of each button never changes.

Blindness: which stage wrote which question lives only in the server-side gr.State (candidate ids)
and in the database; the browser gets the two texts and an opaque per-showing id. The stages are
revealed for an item only after its vote is recorded (cfg.reveal_after_vote), and the vote records
that reveal: the sampler never shows this annotator either of those two questions again.

Double submits: each showing gets a fresh uuid, which is the vote's client_id. The browser sends it
back with the vote; a second click carrying the same id records nothing (the store is idempotent on
client_id, and this session remembers the ids it has already used). Gradio also drops clicks while
the first one is pending. All vote/undo events share one queue slot, so one session's votes are
applied in order; sign-in and sign-out have their own slots ("signin"), so a flood of slow (PBKDF2)
sign-ins never holds up anyone's votes.

Bounds: every value the browser sends is checked before anything is stored (check_vote_inputs, and
again in racq.store): the showing id must look like one the server issued, the rationale is at most
MAX_RATIONALE_CHARS, a skip reason must be one the screen offers (ctx.study.skip_reasons); names
and tokens are bounded in racq.ui.users. Failed sign-ins are throttled per name and per client
address (racq.ui.throttle).
"""

# No `from __future__ import annotations` here: Gradio reads the handlers' `request: gr.Request` hints
# at runtime (typing.get_type_hints), and `gr` is imported inside build().
import re
import time
import uuid

from racq.store import (WITHDRAWN, StoreError, add_annotator, get_annotator, next_item, progress,
                        record_vote, stage_of_candidate, undo_last, votes_for_annotator)
from racq.store.votes import MAX_RATIONALE_CHARS
from racq.annotation.study import SKIP_REASONS
from racq.ui.render import esc, md_esc, message_html, passages_html, table_html
from racq.ui.throttle import SignInGuard
from racq.ui.users import MAX_NAME_CHARS, MAX_TOKEN_CHARS, SignInError, check_sign_in, load_users

# stored outcome, key, elem_id (racq.ui.theme.KEYS maps the keys to the same ids); the button's text
# is the study's label for the outcome plus its key
OUTCOMES = [("left", "1", "vote-left"), ("right", "2", "vote-right"), ("tie", "3", "vote-tie"),
            ("both_bad", "4", "vote-bad")]
KEEP_SHOWINGS = 50  # per session: enough to recognise late double clicks, small enough to forget
SHOWING_ID = re.compile(r"[0-9a-f]{32}")  # what show_next issues (uuid4().hex)
SIGNIN_QUEUE = dict(concurrency_id="signin", concurrency_limit=2)  # apart from the votes' slot


def said(ctx, outcome: str) -> str:
    """An outcome's label as the middle of a sentence ("recorded: left is better"): a capital that only
    starts a sentence is lowered, one that means something ("A is better", "OK") is kept."""
    label = ctx.study.label(outcome)
    return label[0].lower() + label[1:] if label[1:2].islower() else label


def _stages(ctx):
    return ctx.cfg.stages or None


def new_state() -> dict:
    return {"shown": {}, "used": []}  # shown: token -> item showing; used: tokens already submitted


# ---------------------------------------------------------------- pure-ish handlers (return dicts of values)
def sign_in(ctx, users, name: str, token: str, guard: SignInGuard | None = None,
            client: str | None = None) -> dict:
    """{"name", "role"} or raise SignInError; creates the annotator row on first sign-in. guard/client:
    the app's sign-in throttles and the caller's address (see racq.ui.users.check_sign_in)."""
    role = check_sign_in(users, name, token, guard, client)
    name = name.strip()
    try:
        row = get_annotator(ctx.db, name)
        if row is None:
            row = add_annotator(ctx.db, name, role)
    except StoreError as e:
        raise SignInError(str(e)) from None
    return {"name": name, "role": role if users is not None else row["role"]}


def show_next(ctx, user: dict, st: dict) -> dict:
    """The next item for `user`, registered in `st` under a fresh token. Keys: item, left, right,
    shown, progress, redo. Only texts go out; candidate ids stay in `st`."""
    show = next_item(ctx.db, user["name"], overlap=ctx.cfg.overlap, stages=_stages(ctx))
    out = {"progress": progress_html(ctx, user), "redo": False}
    if show is None:
        out.update(item=message_html("Nothing left to annotate: thank you! New candidates appear here "
                                     "when the pool grows."), left="", right="", shown="")
        return out
    token = uuid.uuid4().hex
    st["shown"][token] = {"item_id": show.item_id, "left_id": show.left_id, "right_id": show.right_id,
                          "t": time.monotonic()}
    while len(st["shown"]) > KEEP_SHOWINGS:
        st["shown"].pop(next(iter(st["shown"])))
    item = (f"<div class='racq-label'>Query</div><div class='racq-query'>{esc(show.query)}</div>"
            + passages_html(show.passages))
    out.update(item=item, shown=token, redo=show.redo,
               left=f"<div class='racq-label'>Left [1]</div><div class='racq-cand'>{esc(show.left_text)}</div>",
               right=f"<div class='racq-label'>Right [2]</div><div class='racq-cand'>{esc(show.right_text)}</div>")
    return out


def check_vote_inputs(token, rationale=None, reason=None, refused: str = "not saved",
                      reasons=SKIP_REASONS) -> str | None:
    """What is wrong with the values the browser sent with a vote or an undo, as a message for the
    screen (starting with `refused`); None when they are fine. Runs first, so a bad value stores nothing.
    An empty token is fine here: it means nothing is on screen, which vote/undo answer themselves.
    `reasons`: the skip reasons the screen offers (the study's)."""
    if token and not (isinstance(token, str) and SHOWING_ID.fullmatch(token)):
        return f"{refused}: this page sent an item id the server never issued; reload the page"
    if rationale is not None and not isinstance(rationale, str):
        return f"{refused}: the note must be text"
    if len((rationale or "").strip()) > MAX_RATIONALE_CHARS:
        return (f"{refused}: your note is {len(rationale.strip()):,} characters; at most "
                f"{MAX_RATIONALE_CHARS:,} are kept (shorten it and vote again)")
    if reason not in (None, "", *reasons):
        return f"{refused}: pick one of the offered skip reasons"
    return None


def vote(ctx, user: dict, st: dict, token: str, outcome: str, rationale: str = "", reason: str | None = None):
    """Record one vote for the showing `token`. Returns (recorded: bool, message, reveal html)."""
    if bad := check_vote_inputs(token, rationale, reason, reasons=ctx.study.skip_reasons):
        return False, bad, None
    show = st["shown"].get(token or "")
    if token in st["used"]:
        return False, "already recorded (double click ignored)", None
    if show is None:
        return False, "this item is no longer on screen; it was reloaded", None
    if outcome == "skip" and not reason:
        return False, "pick a reason before skipping (the options under the vote buttons)", None
    elapsed = int((time.monotonic() - show["t"]) * 1000)
    record_vote(ctx.db, token, user["name"], show["item_id"], show["left_id"], show["right_id"], outcome,
                skip_reason=reason if outcome == "skip" else None, rationale=(rationale or "").strip() or None,
                elapsed_ms=elapsed, reveal=ctx.cfg.reveal_after_vote)
    st["used"] = (st["used"] + [token])[-KEEP_SHOWINGS:]
    reveal = None
    if ctx.cfg.reveal_after_vote:
        left, right = (stage_of_candidate(ctx.db, show[k]) for k in ("left_id", "right_id"))
        reveal = (f"<div>Recorded: <b>{esc(said(ctx, outcome))}</b>. That pair was left = <b>{esc(left)}</b>, "
                  f"right = <b>{esc(right)}</b>.</div>")
    what = f"skipped ({reason})" if outcome == "skip" else said(ctx, outcome)
    return True, f"recorded: {what}", reveal


def undo(ctx, user: dict, st: dict, token: str):
    """Undo the user's latest vote (once per showing token). Returns (done, message, back): `back` is
    True when the undone item is the next one to show (it comes back), False when it went elsewhere.

    Once the annotator has seen which stage wrote which question, a second vote would no longer be
    blind: the store withdraws the undone item from them in the same transaction (a 'skip' row with
    reason WITHDRAWN, which undo never takes back) and it goes to other annotators instead."""
    if bad := check_vote_inputs(token, refused="not undone"):
        return False, bad, False
    if token:  # one undo per showing: a double click sends the same token twice
        key = f"undo-{token}"
        if key in st["used"]:
            return False, "already undone (double click ignored)", False
    else:  # nothing on screen (all done): nothing to tie the click to
        key = f"undo-{uuid.uuid4().hex}"
    undone = undo_last(ctx.db, user["name"], client_id=key)
    st["used"] = (st["used"] + [key])[-KEEP_SHOWINGS:]
    if undone is None:
        return False, "nothing to undo", False
    what = said(ctx, undone["outcome"])
    if undone["withdrawn"]:
        return True, (f"undid your vote ({what}). You saw its stages, so that item goes to another "
                      f"annotator rather than back to you"), False
    return True, f"undid your vote ({what}): that item is back", True


def client_host(request) -> str | None:
    """The caller's address as the server sees it (None in-process, where there is no client)."""
    return getattr(getattr(request, "client", None), "host", None) or None


def progress_html(ctx, user: dict) -> str:
    p = progress(ctx.db, user["name"], _stages(ctx))
    skipped = f", {p['skipped']} skipped" if p["skipped"] else ""
    return (f"<div class='racq-progress'><progress value='{p['done']}' max='{max(p['total'], 1)}'></progress>"
            f"<div>{p['done']} / {p['total']} done{skipped}</div></div>")


def my_votes_html(ctx, user: dict, limit: int = 50) -> str:
    """This annotator's own votes only (newest first), undone ones struck through; no stages."""
    rows = votes_for_annotator(ctx.db, user["name"])[:limit]
    if not rows:
        return message_html("no votes yet", "pending")
    return table_html(["when", "query", "left", "right", "vote", "note"],
                      [[r["created_at"], r["query"], r["left_text"], r["right_text"], said(ctx, r["outcome"]),
                        r["skip_reason"] or r["rationale"] or ""] for r in rows],
                      ["racq-undone" if r["undone"] else "" for r in rows])


# ---------------------------------------------------------------- the screen
# One gr.Blocks screen: its components and the events wired to them (the wiring needs every component).
# long: splitting its layout from its wiring is left for issue #14
def build(ctx) -> None:
    """The Annotate screen, built inside the caller's gr.Tab."""
    import gradio as gr

    users = load_users(ctx.cfg.users_file) if ctx.cfg.users_file else None  # a bad file fails at start
    st = gr.State(None)
    with gr.Column(visible=True) as signin_box:
        if ctx.study.name:
            gr.Markdown(f"### {md_esc(ctx.study.name)}", elem_id="ann-study")
        gr.Markdown("Sign in to compare clarifying questions. You only ever see your own votes.")
        with gr.Row():
            name = gr.Textbox(label="Your name", elem_id="ann-name", max_lines=1, scale=3,
                              max_length=MAX_NAME_CHARS)  # max_length binds the browser only; the server checks
            token = gr.Textbox(label="Token", type="password", elem_id="ann-token", max_lines=1,
                               visible=users is not None, scale=3, max_length=MAX_TOKEN_CHARS)
            signin_btn = gr.Button("Sign in", variant="primary", elem_id="ann-signin", scale=1)
        signin_msg = gr.HTML(elem_id="ann-signin-msg")
    with gr.Column(visible=False) as work_box:
        with gr.Row():
            who = gr.HTML(elem_id="ann-who")
            prog = gr.HTML(elem_id="ann-progress")
            signout_btn = gr.Button("Sign out", size="sm", elem_id="ann-signout", scale=0)
        with gr.Accordion("Guidelines: what counts as faithful, and the keys", open=False):
            gr.Markdown(ctx.study.guidelines_text(), elem_id="ann-guidelines")
        item = gr.HTML(elem_id="ann-item")
        with gr.Row(equal_height=True):
            left = gr.HTML(elem_id="ann-left")
            right = gr.HTML(elem_id="ann-right")
        with gr.Row():
            buttons = {o: gr.Button(f"{ctx.study.label(o)} [{key}]", elem_id=eid, variant="secondary")
                       for o, key, eid in OUTCOMES}
        with gr.Row():
            reason = gr.Radio(ctx.study.skip_reasons, value=None, label="Skip reason", elem_id="ann-skip-reason",
                              scale=4)
            skip_btn = gr.Button("Skip [S]", elem_id="vote-skip", scale=1)
            undo_btn = gr.Button("Undo [U]", elem_id="vote-undo", scale=1)
        rationale = gr.Textbox(label="Why? (optional, saved with your next vote)", elem_id="ann-rationale",
                               max_lines=3, max_length=MAX_RATIONALE_CHARS)
        shown = gr.Textbox(visible=False, elem_id="ann-shown")  # opaque id of the showing; no stage in it
        status = gr.HTML(elem_id="ann-status")
        reveal = gr.HTML(elem_id="ann-reveal")
        with gr.Accordion("My votes", open=False):
            mine = gr.HTML(elem_id="ann-mine")

    screen = [st, item, left, right, shown, prog, status, reveal, rationale, reason, mine]
    queue = dict(concurrency_id="annotate", concurrency_limit=1)
    guard = SignInGuard.from_config(ctx.cfg)  # one per app: shared by every session

    def refresh(user, state, message="", reveal_html=None, clear_inputs=True):
        out = show_next(ctx, user, state)
        note = " (the item you undid)" if out["redo"] else ""
        return {st: state, item: out["item"], left: out["left"], right: out["right"], shown: out["shown"],
                prog: out["progress"], status: message_html(message + note) if message or note else "",
                reveal: reveal_html if reveal_html is not None else gr.skip(),
                rationale: "" if clear_inputs else gr.skip(), reason: None if clear_inputs else gr.skip(),
                mine: my_votes_html(ctx, user)}

    def annotate_sign_in(n, t, request: gr.Request):
        try:
            user = sign_in(ctx, users, n, t, guard, client_host(request))
        except SignInError as e:
            return {signin_msg: message_html(str(e), "error"), token: ""}
        ctx.set_user(request, user)
        out = refresh(user, new_state(), reveal_html="")
        role = " (admin)" if user["role"] == "admin" else ""
        out.update({ctx.session: user, signin_box: gr.update(visible=False), work_box: gr.update(visible=True),
                    who: f"<div>Signed in as <b>{esc(user['name'])}</b>{esc(role)}</div>",
                    signin_msg: "", token: ""})
        return out

    def annotate_sign_out(request: gr.Request):
        ctx.set_user(request, None)
        return {ctx.session: None, st: None, signin_box: gr.update(visible=True),
                work_box: gr.update(visible=False), item: "", left: "", right: "", shown: "", reveal: ""}

    def make_vote(outcome):
        def handler(token_, rat, why, user, state):
            if not user or state is None:
                return {status: message_html("sign in first", "error")}
            try:
                ok, msg, rev = vote(ctx, user, state, token_, outcome, rat, why)
            except StoreError as e:
                return {status: message_html(f"not saved: {e}", "error")}
            if not ok:
                bad = "reason" in msg or msg.startswith("not saved")
                return {status: message_html(msg, "error" if bad else "pending")}
            return refresh(user, state, msg, rev)
        handler.__name__ = f"annotate_{outcome}"
        return handler

    def annotate_undo(token_, user, state):
        if not user or state is None:
            return {status: message_html("sign in first", "error")}
        try:
            ok, msg, back = undo(ctx, user, state, token_)
        except StoreError as e:
            return {status: message_html(f"not undone: {e}", "error")}
        if not ok:
            return {status: message_html(msg, "pending")}
        if back or not token_:  # the undone item is next (or the screen was empty): show it
            return refresh(user, state, msg, reveal_html="")
        # The item on screen stays where it is: undoing the previous vote must not swap away what the
        # annotator is reading (and its showing token stays valid for the vote that follows).
        return {prog: progress_html(ctx, user), status: message_html(msg), reveal: "", mine: my_votes_html(ctx, user)}

    sign_outputs = screen + [ctx.session, signin_box, work_box, who, signin_msg, token]
    signin_btn.click(annotate_sign_in, [name, token], sign_outputs, api_name="annotate_sign_in", **SIGNIN_QUEUE)
    name.submit(annotate_sign_in, [name, token], sign_outputs, api_visibility="private", **SIGNIN_QUEUE)
    token.submit(annotate_sign_in, [name, token], sign_outputs, api_visibility="private", **SIGNIN_QUEUE)
    signout_btn.click(annotate_sign_out, None, sign_outputs, api_name="annotate_sign_out", **SIGNIN_QUEUE)
    vote_inputs = [shown, rationale, reason, ctx.session, st]
    for outcome, btn in buttons.items():
        btn.click(make_vote(outcome), vote_inputs, screen, api_name=f"annotate_{outcome}", **queue)
    skip_btn.click(make_vote("skip"), vote_inputs, screen, api_name="annotate_skip", **queue)
    undo_btn.click(annotate_undo, [shown, ctx.session, st], screen, api_name="annotate_undo", **queue)
