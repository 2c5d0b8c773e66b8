"""Explore: type a query, see the retrieved passages and one clarifying question per stage, side by side,
each with its faithfulness scores, the passage sentence that supports each option it offers, and its
usefulness (distinct options; the query's human interpretations it names, when AmbigNQ has them).

    python app.py        # then open the Explore tab (the default)

API (named endpoint, streams stage by stage):
    from gradio_client import Client
    Client("http://127.0.0.1:7860/").predict("who played wolverine", 3, api_name="/explore_ask")

The handler is a generator over one `Asker.ask_stream` call (racq.service: the query is cleaned and
retrieved once, every stage generated and scored there): the passages show first, then each stage's card
fills word by word while it is generated (marked "generating…"), in display order; stages not started
yet say "waiting…". A stage that fails shows its error while the others still answer. With
AppConfig.best_of > 1 (racq.bestof) a card says "picking the best of N" after its greedy reply and then
which candidate was kept.
"""

import time

import gradio as gr  # at module level, no postponed annotations: Gradio must resolve `request: gr.Request`

from racq.coverage import NOTICE
from racq.service import BadQuery, clean_query
from racq.store import is_pool_query
from racq.ui.render import esc, mark_words, message_html, passages_html

METRICS = [("option_support", "option support", "{:.2f}"), ("hallucinated", "hallucinated", None),
           ("novel_content", "novel content", "{:.2f}"), ("parent_f1", "PARENT F1", "{:.2f}"),
           ("nli_min", "NLI min", "{:.2f}")]


def stages_to_ask(ctx, asker) -> list[str]:
    """Loaded stages plus the ones that failed to load (shown as errors), limited to cfg.stages. A stage
    that cfg.stages names but that has no adapter folder at all is shown as an error too, not dropped."""
    names = list(asker.stages) + [s for s in getattr(asker.stage_model, "errors", {}) if s not in asker.stages]
    names += [s for s in ctx.cfg.stages if s not in names]
    return [s for s in names if not ctx.cfg.stages or s in ctx.cfg.stages]


def _missing(ctx, asker, stage: str) -> bool:
    return stage not in asker.stages and stage not in getattr(asker.stage_model, "errors", {})


def _option_html(opt: dict, passages: list[dict]) -> str:
    from racq.scoring.options import norm_word

    text = esc(opt.get("text", ""))
    if not opt.get("supported"):
        return f"<li class='bad'>{text} <span class='racq-support'>not found in the passages</span></li>"
    pi = opt.get("passage_index")
    title = passages[pi]["title"] if pi is not None and pi < len(passages) else ""
    sentence = mark_words(opt.get("sentence", ""), opt.get("core", []), norm_word)
    how = esc(opt.get("how") or "")
    where = f"passage {pi + 1}" if pi is not None else "a passage"
    return (f"<li class='ok'>{text} <span class='racq-support'>{esc(where)} <b>{esc(title)}</b> ({how}): "
            f"…{sentence}…</span></li>")


def useful_html(use: dict) -> str:
    """The card's usefulness line (racq.scoring.usefulness.card_usefulness): distinct options always; the human
    interpretations it names and useful & grounded when the query has interpretations (AmbigNQ's)."""
    n = use.get("n_distinct", 0)
    flags = [w for k, w in (("repeats_option", "repeats an option"), ("echoes_query", "echoes the query"))
             if use.get(k)]
    cells = [f"<span>distinct options: <b>{n}</b>{''.join(f' ({w})' for w in flags)}</span>"]
    if use.get("coverage") is not None:
        m, of = len(use.get("covered") or []), use.get("n_interpretations", 0)
        cells.append(f"<span>names <b>{m} of {of}</b> interpretation{'' if of == 1 else 's'}</span>")
        ug = use.get("useful_grounded")
        cells.append(f"<span>useful &amp; grounded: <b>{'–' if ug is None else 'yes' if ug else 'no'}</b></span>")
    else:
        cells.append("<span>no human interpretations of this query to compare with</span>")
    return f"<div class='racq-metrics racq-useful'><span class='racq-label'>usefulness</span> {''.join(cells)}</div>"


def best_of_html(best: dict) -> str:
    """Which candidate racq.bestof kept, and what the greedy question was when it was not kept."""
    n, kept = best.get("n", 0), best.get("kept", 0)
    if not kept:
        return f"<div class='racq-bestof'>best of {n}: the greedy question was kept</div>"
    greedy = (best.get("candidates") or [""])[0]
    return (f"<div class='racq-bestof'>best of {n}: sample {kept} of {n - 1} was kept; the greedy question was: "
            f"<i>{esc(greedy)}</i></div>")


def _card(stage: str, state: str, body: str) -> str:
    # the state on the body: waiting / generating / done / error, for styling and browser tests
    return (f"<div class='racq-card' data-stage='{esc(stage)}'><h4>{esc(stage)}</h4>"
            f"<div class='racq-body' data-state='{state}'>{body}</div></div>")


def card_html(stage: str, card: dict | None, passages: list[dict]) -> str:
    """A stage's card: None = not started ("waiting…"); {"partial": text} = being generated;
    {"error": ...}; else the final {"question", "scores"|"score_error"}."""
    if card is None:
        return _card(stage, "waiting", message_html("waiting…", "pending"))
    if "error" in card:
        return _card(stage, "error", message_html(f"unavailable: {card['error']}", "error"))
    if "partial" in card:
        doing = (f"picking the best of {card['picking']}: sampling and scoring…" if card.get("picking")
                 else "generating…")
        return _card(stage, "generating", f"<div class='racq-question racq-partial'>{esc(card['partial'])}</div>"
                                          + message_html(doing, "pending"))
    q = card.get("question") or ""
    body = [f"<div class='racq-question'>{esc(q) if q else message_html('(the model produced no question)', 'pending')}</div>"]
    scores = card.get("scores")
    if scores:
        cells = []
        for key, label, fmt in METRICS:
            if key in scores:
                val = scores[key]
                shown = ("yes" if val else "no") if fmt is None else fmt.format(val)
                cells.append(f"<span>{esc(label)}: <b>{esc(shown)}</b></span>")
        body.append(f"<div class='racq-metrics'>{''.join(cells)}</div>")
        if card.get("useful"):
            body.append(useful_html(card["useful"]))
        opts = scores.get("options") or []
        if opts:
            body.append("<div class='racq-label'>Options offered</div><ul class='racq-options'>"
                        + "".join(_option_html(o, passages) for o in opts) + "</ul>")
        else:
            body.append("<div class='racq-metrics'>no options offered</div>")
    elif card.get("score_error"):
        body.append(message_html(f"scores unavailable: {card['score_error']}", "error"))
    if card.get("best_of"):
        body.append(best_of_html(card["best_of"]))
    raw = (card.get("unguarded") or {}).get("question")
    if raw:  # racq.coverage replaced the model's question: show what it asked and why it is not shown
        body.append(f"<div class='racq-guard'>{esc(card.get('guard', ''))}; the model asked: "
                    f"<i>{esc(raw)}</i></div>")
    return _card(stage, "done", "".join(body))


def cards_html(stages: list[str], cards: dict, passages: list[dict]) -> str:
    return "<div class='racq-cards'>" + "".join(card_html(s, cards.get(s), passages) for s in stages) + "</div>"


def coverage_html(cov: dict | None) -> str:
    """The no-evidence notice (racq.coverage): empty when the corpus covers the query."""
    if not cov or cov.get("covered", True):
        return ""
    return (f"<div class='racq-nocoverage'><b>{esc(NOTICE)}</b> ({esc(cov.get('why', ''))}): "
            "the passages below are about something else, so the stages offer only options these passages "
            "support, or ask a generic question.</div>")


POOL_HIDDEN = ("This query is in the annotation pool. Explore names the stage behind each question, so it "
               "answers pool queries for admins only while annotation runs; judge it on the Annotate tab.")


def run_query(ctx, query, k, hide_pool: bool = False):
    """Generator of (status, passages_html, cards_html): one update per step, stage by stage.
    hide_pool: refuse queries of the annotation pool (they would unblind the asker's votes)."""
    t0 = time.perf_counter()
    try:
        query, notes = clean_query(query)
    except BadQuery as e:
        yield message_html(str(e), "error"), "", ""
        return
    if hide_pool and is_pool_query(ctx.db, query):
        yield message_html(POOL_HIDDEN, "error"), "", ""
        return
    k = max(1, min(int(k or ctx.cfg.k), ctx.cfg.k_max))
    if not ctx.asker_loaded:
        yield message_html("loading the models (first query only)…", "pending"), "", ""
    try:
        asker = ctx.asker()
    except Exception as e:  # noqa: BLE001 - e.g. the base model or the index is missing
        yield message_html(f"the models could not be loaded: {type(e).__name__}: {e}", "error"), "", ""
        return
    stages = stages_to_ask(ctx, asker)
    # a stage named in the settings with no adapter folder at all: this screen says where it looked
    cards: dict = {s: {"error": f"no adapter for this stage in {ctx.cfg.adapters_dir}"}
                   for s in stages if _missing(ctx, asker, s)}
    passages: list[dict] = []
    coverage = None
    note = "".join(f" ({esc(n)})" for n in notes)

    def update(status):
        return (status, coverage_html(coverage) + passages_html(passages, ctx.cfg.prompt_k),
                cards_html(stages, cards, passages))

    events = asker.ask_stream(query, k=k, stages=[s for s in stages if s not in cards],
                              score=getattr(asker, "scorer", None) is not None, gen=ctx.cfg.gen_config())
    try:
        for ev in events:
            kind, stage = ev["event"], ev.get("stage")
            if kind == "passages":
                passages, coverage = ev["passages"], ev.get("coverage")
            elif kind in ("start", "token", "picking"):
                cards[stage] = {"partial": ev.get("text", ""), "picking": ev.get("n") if kind == "picking" else 0}
                i = stages.index(stage)
                yield update(message_html(f"generating {stage} ({i + 1}/{len(stages)})…", "pending"))
                continue
            elif kind == "stage":
                cards[stage] = {k_: ev[k_] for k_ in ("error", "question", "scores", "score_error", "useful",
                                                       "guard", "unguarded", "best_of") if k_ in ev}
            else:
                continue
            yield update(message_html("generating…", "pending"))
    except BadQuery as e:
        yield message_html(str(e), "error"), "", ""
        return
    except Exception as e:  # noqa: BLE001 - e.g. retrieval failed: every unanswered card says why
        for s in stages:
            if s not in cards or "partial" in cards[s]:
                cards[s] = {"error": f"{type(e).__name__}: {e}"}
    secs = time.perf_counter() - t0
    yield update(coverage_html(coverage)
                 + f"<div>{len(stages)} stages, {len(passages)} passages, {secs:.1f} s{note}</div>")


def build(ctx) -> None:
    """The Explore screen, built inside the caller's gr.Tab."""
    cfg = ctx.cfg
    with gr.Row():
        query = gr.Textbox(label="Query", placeholder="e.g. who played wolverine", elem_id="explore-query",
                           scale=5, max_lines=2)
        k = gr.Slider(1, cfg.k_max, value=min(cfg.k, cfg.k_max), step=1, label="Passages (k)",
                      elem_id="explore-k", scale=2)
        ask = gr.Button("Ask", variant="primary", elem_id="explore-ask", scale=1)
    if cfg.examples:
        gr.Examples([[e] for e in cfg.examples], inputs=[query], label="Example queries (test split)")
    status = gr.HTML(elem_id="explore-status")
    cards = gr.HTML(elem_id="explore-cards")
    passages = gr.HTML(elem_id="explore-passages")

    def explore_ask(q, kk, request: gr.Request):
        # with sign-in on, only an admin sees stage names for pool queries (annotators would be unblinded);
        # without it roles are advisory and Explore answers everything
        yield from run_query(ctx, q, kk, hide_pool=bool(cfg.users_file) and not ctx.is_admin(request))

    # One generation at a time: the stages share one model whose active adapter is global state (and
    # on a CPU, parallel generations only slow each other down). Other queries wait in Gradio's queue.
    one = dict(concurrency_limit=1, concurrency_id="generate")
    ask.click(explore_ask, [query, k], [status, passages, cards], api_name="explore_ask", **one)
    query.submit(explore_ask, [query, k], [status, passages, cards], api_visibility="private", **one)
