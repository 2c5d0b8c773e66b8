"""End-to-end: the real app (python app.py) in a subprocess with a tiny model, a small real index and a
pre-filled pool, driven by a real Chromium through pytest-playwright.

    .venv/bin/pytest -q tests/test_ui_browser.py                      # ~1 min
    RACQ_SCREENSHOTS=1 .venv/bin/pytest -q tests/test_ui_browser.py   # also writes docs/screenshots/*.png

Browser tests skip when /usr/bin/chromium (or $E2E_CHROMIUM) is missing; `make browser` installs it.
Never `playwright install`: it downloads browsers this project does not use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from apphelpers import REPO, AppServer, rows

pytest.importorskip("playwright")
from playwright.sync_api import expect  # noqa: E402

# CI machines are small and busy: a 5 s default wait for a server round trip is flaky there.
expect.set_options(timeout=20_000)

CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]
STAGE_WORDS = re.compile(r"\b(base|sft|aligned|uncond)\b", re.I)
INJECT = "<img src=x onerror=alert(1)>"
INJECT2 = "<script>alert('s')</script> ${7*7} {{7*7}}"
ANA_TOKEN, BOB_TOKEN = "ana-secret-token", "bob-secret-token"
N_QUERIES = 6
SKIP_REASON = "passages do not help"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} missing: apt-get install -y --no-install-recommends chromium")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def ui_env(tmp_path_factory, tiny_lm, tiny_adapters):
    """A real index of a few dozen test-split passages (real MiniLM), a pool of 6 one-item queries whose
    query, first passage and one candidate carry HTML/JS, a users file, and the app's YAML config."""
    from racq.data import PASSAGE_DATASETS, Passage, load_examples
    from racq.retrieval import Index, RetrievalConfig
    from racq.store import add_candidate, add_query_with_passages, make_items, open_db
    from racq.ui.users import hash_token

    root = tmp_path_factory.mktemp("ui")
    clean = [e for e in load_examples(PASSAGE_DATASETS, "test")
             if not STAGE_WORDS.search(" ".join([e.query] + [p.title + " " + p.text for p in e.passages]))]
    exs = clean[:N_QUERIES]
    injected = Passage("Injected <b>title</b>", f"This passage holds {INJECT} and {INJECT2} as plain text.")
    rc = RetrievalConfig(index_dir=str(root / "index"))
    Index.build([injected] + [p for e in exs for p in e.passages[:5]], cfg=rc, log=lambda m: None).save(rc.index_dir)

    db_path = root / "racq.db"
    db = open_db(db_path)
    pairs = [("base", "sft"), ("sft", "aligned"), ("base", "aligned")]
    for i, e in enumerate(exs):
        qid = add_query_with_passages(db, f"{e.query} {INJECT}", [injected] + list(e.passages[:2]),
                                      dataset=e.dataset, topic_id=e.topic_id)
        a, b = pairs[i % 3]
        add_candidate(db, qid, a, f"Do you mean {INJECT} or the other one, number {i}?")
        add_candidate(db, qid, b, f"Which meaning of question {i} do you want?")
    assert make_items(db) == N_QUERIES

    users = root / "users.yaml"
    users.write_text(yaml.safe_dump({"ana": {"role": "admin", "token": hash_token(ANA_TOKEN)},
                                     "bob": {"token": hash_token(BOB_TOKEN)}}))
    config = root / "app.yaml"
    config.write_text(yaml.safe_dump({
        "db": str(db_path), "base_model": str(tiny_lm), "adapters_dir": str(tiny_adapters),
        "index_dir": rc.index_dir, "check_index": False, "users_file": str(users),
        "examples": [exs[0].query], "max_new_tokens": 8, "k": 3}))
    return {"root": root, "db": db_path, "config": config, "users": users, "examples": exs,
            "index_dir": Path(rc.index_dir), "tiny_lm": Path(tiny_lm)}


@pytest.fixture(scope="session")
def app(ui_env):
    """`python app.py --config ...` on a free port; yields the base URL."""
    try:
        server = AppServer(ui_env["config"], ui_env["root"] / "app.log").start()
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield server.url
    finally:
        server.stop()


def _votes(db: Path, annotator: str) -> list[dict]:
    return rows(db, "SELECT v.* FROM votes v JOIN annotators a ON a.id = v.annotator_id WHERE a.name = ? "
                    "ORDER BY v.id", [annotator])


def _changed(locator, before: str) -> str:
    """The locator's text once it differs from `before`: the components of one answer may render a
    moment apart, so reading the item as soon as the progress line moved can catch the old one."""
    expect(locator).not_to_have_text(before)
    return locator.inner_text()


def _shoot(page, name: str) -> None:
    if os.environ.get("RACQ_SCREENSHOTS") == "1":
        out = REPO / "docs" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / name), full_page=True)


# ------------------------------------------------------------------ tests
# (Private files on HTTP routes and the blind, idempotent annotate API: tests/test_access.py.)
def test_annotate_with_keyboard(page, app, ui_env):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(app)
    page.get_by_role("tab", name="Annotate").click()
    expect(page.locator("#ann-signin")).to_be_visible()
    static_hits = len(STAGE_WORDS.findall(page.content()))
    page.get_by_label("Your name").fill("ana")
    page.get_by_label("Token").fill("nope")
    page.locator("#ann-signin").click()
    expect(page.locator("#ann-signin-msg")).to_contain_text("unknown name or wrong token")
    page.get_by_label("Token").fill(ANA_TOKEN)
    page.locator("#ann-signin").click()
    progress, item = page.locator("#ann-progress"), page.locator("#ann-item")
    expect(progress).to_contain_text(f"0 / {N_QUERIES} done")
    expect(page.locator("#vote-left")).to_be_visible()

    # Blind: no stage name anywhere on the page before the first vote; injected markup is text.
    panel = page.locator("#tab-annotate")
    assert not STAGE_WORDS.search(panel.inner_html())
    assert not STAGE_WORDS.search(page.locator("body").inner_text())
    # The page's own static text (e.g. the Feedback screen's description, <base href>) may name stages;
    # showing an item must not add a single one anywhere in the HTML.
    assert len(STAGE_WORDS.findall(page.content())) == static_hits
    expect(item).to_contain_text(INJECT)
    expect(item).to_contain_text("${7*7} {{7*7}}")
    expect(page.locator("#ann-left, #ann-right").filter(has_text=INJECT)).to_have_count(1)
    assert page.locator("img[src='x'], #tab-annotate script").count() == 0
    _shoot(page, "annotate.png")

    first = item.inner_text()
    page.keyboard.press("1")
    expect(progress).to_contain_text(f"1 / {N_QUERIES} done")
    second = _changed(item, first)
    expect(page.locator("#ann-reveal")).to_contain_text("left =")
    rationale = page.get_by_label("Why? (optional, saved with your next vote)")
    rationale.press_sequentially("passage 1 says so")  # a digit typed in a text box is not a vote
    rationale.blur()
    expect(progress).to_contain_text(f"1 / {N_QUERIES} done")
    page.keyboard.press("2")
    expect(progress).to_contain_text(f"2 / {N_QUERIES} done")
    third = _changed(item, second)
    page.keyboard.press("3")
    expect(progress).to_contain_text(f"3 / {N_QUERIES} done")
    fourth = _changed(item, third)
    page.keyboard.press("u")
    # the stages of the undone vote were revealed: it is withdrawn from ana (a skip), not shown again
    expect(page.locator("#ann-status")).to_contain_text("goes to another annotator")
    expect(progress).to_contain_text(f"3 / {N_QUERIES} done, 1 skipped")
    assert item.inner_text() == fourth and fourth != third
    page.keyboard.press("s")  # no reason picked yet: nothing recorded
    expect(page.locator("#ann-status")).to_contain_text("pick a reason")
    page.get_by_label(SKIP_REASON).check()
    page.keyboard.press("S")
    expect(progress).to_contain_text(f"4 / {N_QUERIES} done, 2 skipped")
    page.locator("#vote-bad").dblclick()
    expect(progress).to_contain_text(f"5 / {N_QUERIES} done")
    # Wait on state, not time: annotate events share one FIFO queue slot, so once a later event has
    # answered, a second click of the double click has been handled too (and must have recorded nothing).
    page.keyboard.press("s")  # no reason picked: answers "pick a reason" and records nothing
    expect(page.locator("#ann-status")).to_contain_text("pick a reason")
    expect(progress).to_contain_text(f"5 / {N_QUERIES} done")

    rows = _votes(ui_env["db"], "ana")
    assert [r["outcome"] for r in rows] == ["left", "right", "tie", "undo", "skip", "skip", "both_bad"]
    assert rows[1]["rationale"] == "passage 1 says so"
    assert rows[3]["undoes_vote_id"] == rows[2]["id"]
    assert rows[4]["item_id"] == rows[2]["item_id"] and rows[4]["skip_reason"].startswith("withdrawn")
    assert rows[5]["item_id"] != rows[2]["item_id"] and rows[5]["skip_reason"] == SKIP_REASON
    assert len({r["client_id"] for r in rows}) == len(rows)
    assert all(r["elapsed_ms"] is not None and r["elapsed_ms"] >= 0 for r in rows
               if r["outcome"] != "undo" and not (r["skip_reason"] or "").startswith("withdrawn"))
    assert dialogs == [] and page.locator("img[src='x']").count() == 0

    if (REPO / "racq" / "ui" / "leaderboard.py").exists():
        from racq.annotation.standings import leaderboard
        from racq.store import open_db

        page.get_by_role("tab", name="Leaderboard").click()
        n = leaderboard(open_db(ui_env["db"]), n_boot=10)["n_votes"]
        assert n >= 4  # ana's effective votes: left, right, the skip and both bad
        expect(page.locator("#leaderboard-summary")).to_contain_text(f"{n} votes", timeout=30_000)
    assert dialogs == []


def test_explore_fills_stage_cards(page, app, ui_env):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(app)
    query, ask = page.get_by_label("Query"), page.locator("#explore-ask")
    status, cards = page.locator("#explore-status"), page.locator("#explore-cards")
    query.fill("   ")
    ask.click()
    expect(status).to_contain_text("the query is empty")

    query.fill(ui_env["examples"][0].query)
    ask.click()
    expect(status).to_contain_text("3 stages", timeout=90_000)
    scored = 0
    for stage in ("base", "sft", "aligned"):
        card = cards.locator(f".racq-card[data-stage='{stage}']")
        expect(card.locator("h4")).to_have_text(stage)
        question = card.locator(".racq-question").inner_text().strip()
        assert question and "generating" not in question, f"{stage} card is empty"
        if "produced no question" not in question:  # a random tiny model may stop at once
            expect(card.locator(".racq-metrics").first).to_contain_text("option support")
            # usefulness beside it: a PaQa/CAmbigNQ query has AmbigNQ's human interpretations
            useful = card.locator(".racq-useful")
            expect(useful).to_contain_text("distinct options")
            expect(useful).to_contain_text(re.compile(r"names \d+ of [1-9]\d* interpretations?.*useful & grounded"))
            scored += 1
    assert scored >= 1
    expect(page.locator("#explore-passages li")).to_have_count(3)
    _shoot(page, "explore.png")

    query.fill("Injected title: this passage holds an image as plain text")
    ask.click()
    expect(page.locator("#explore-passages")).to_contain_text(INJECT, timeout=90_000)
    expect(status).to_contain_text("3 stages", timeout=90_000)
    expect(page.locator("#explore-passages")).to_contain_text("Injected <b>title</b>")
    assert page.locator("img[src='x']").count() == 0 and dialogs == []


# A card in the "generating" state and its partial text's length, if longer than `n` (for `stage`, or
# any stage when it is empty): what the page shows while tokens stream in.
GROWING = """([stage, n]) => {
  for (const b of document.querySelectorAll('#explore-cards .racq-body[data-state="generating"]')) {
    const c = b.closest('.racq-card'), t = (b.querySelector('.racq-partial') || {}).innerText || '';
    if ((!stage || c.dataset.stage === stage) && t.length > n) return [c.dataset.stage, t.length];
  }
  return false;
}"""


def test_explore_card_text_grows_while_its_stage_generates(page, ui_env, monkeypatch):
    """Token streaming seen in the browser: the tiny model answers in milliseconds, so the server waits
    after each token (racq.fastgen.SLOW_TOKENS_ENV, a test-only hook); the test waits on the DOM only."""
    from racq.fastgen import SLOW_TOKENS_ENV

    monkeypatch.setenv(SLOW_TOKENS_ENV, "0.4")
    cfg = yaml.safe_load(ui_env["config"].read_text())
    config = ui_env["root"] / "slow-tokens.yaml"
    config.write_text(yaml.safe_dump({**cfg, "max_new_tokens": 12, "score": False}))
    with AppServer(config, ui_env["root"] / "slow-tokens.log") as server:
        page.goto(server.url)
        page.get_by_label("Query").fill("who sang the song angel")
        page.locator("#explore-ask").click()
        stage, n = page.wait_for_function(GROWING, arg=["", 0], timeout=90_000).json_value()
        expect(page.locator("#explore-status")).to_contain_text(f"generating {stage}")
        # the same card, still generating, with more text than before
        longer = page.wait_for_function(GROWING, arg=[stage, n], timeout=30_000).json_value()
        assert longer[0] == stage and longer[1] > n
        # the cards stay in display order while they fill
        assert page.locator(".racq-card").evaluate_all("cs => cs.map(c => c.dataset.stage)") == \
            ["base", "sft", "aligned"]
        expect(page.locator("#explore-status")).to_contain_text("3 stages", timeout=90_000)
        expect(page.locator(".racq-card .racq-body[data-state='done']")).to_have_count(3)


def test_explore_says_when_the_corpus_does_not_cover_the_query(page, app, ui_env):
    """No evidence, no options (racq.coverage): a query far from every passage gets the notice above the
    passages and in the status; a query of the corpus does not."""
    from racq.coverage import NOTICE

    page.goto(app)
    query, ask = page.get_by_label("Query"), page.locator("#explore-ask")
    query.fill("how many moons does neptune have")
    ask.click()
    expect(page.locator("#explore-status")).to_contain_text("3 stages", timeout=90_000)
    expect(page.locator("#explore-status .racq-nocoverage")).to_contain_text(NOTICE)
    expect(page.locator("#explore-passages .racq-nocoverage")).to_be_visible()
    _shoot(page, "explore-no-evidence.png")
    before = page.locator("#explore-status").inner_text()
    query.fill(ui_env["examples"][0].query)
    ask.click()
    _changed(page.locator("#explore-status"), before)  # the new query's answer, not the old one's
    expect(page.locator("#explore-status")).to_contain_text("3 stages", timeout=90_000)
    expect(page.locator(".racq-nocoverage")).to_have_count(0)
