"""The RACQ web app: Explore (stages side by side), Annotate (blind pairwise votes), and, when their
modules are present, Leaderboard and Feedback training.

    python app.py                                  # http://127.0.0.1:7860 (make demo does this)
    python app.py --port 7861 --db /tmp/racq.db --config my-app.yaml
    python app.py --study annotations/study.example.yaml    # a study: its guidelines, labels, database

    from racq.ui import AppConfig, build_app
    demo = build_app(AppConfig(db="/tmp/racq.db"))  # a gr.Blocks; launch(cfg) adds the hotkeys

Every screen is a module with `build(ctx)`, called inside its gr.Tab. `ctx` is an AppContext:
    ctx.cfg (AppConfig), ctx.db (racq.store.Store), ctx.db_path,
    ctx.asker()          the Asker, loaded once on first use (thread-safe), or preloaded at launch
    ctx.stages()         visible stage names on disk (no model load)
    ctx.load_stage(name) a stage trained while the app runs, into the loaded Asker (Explore, the pool)
    ctx.jobs             the app's background job (racq.ui.jobs: a round or a pool build), server-side
    ctx.user(request) / ctx.role(request) / ctx.is_admin(request)   who signed in on Annotate in that
                         browser session (`request`: the handler's gr.Request); ctx.session: same, as gr.State
    ctx.train_cfg        TrainConfig from cfg.train_config, or None
    ctx.study            racq.annotation.study.StudyConfig: guidelines, skip reasons, button labels, study name
                         (its db/overlap/reveal_after_vote are copied into ctx.cfg, which screens read)
A build() may return {"refresh": fn, "refresh_outputs": [...]} (or "outputs"): the shell calls it
when the tab is opened.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from racq.config import DB_PATH, MIN_PAIR_VOTES, GenConfig, ModelConfig, PromptConfig, helpfield
from racq.annotation.study import StudyConfig, StudyError, load_study

log = logging.getLogger(__name__)

# Four queries from the test split of PaQa and CAmbigNQ (never trained on).
EXAMPLES = ["When did the kim family come to power?", "Who died in the movie fast and furious 7?",
            "How many seats in rajya sabha in assam?", "When did the song angel first come out?"]


def _default(cls, name):
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


@dataclass
class AppConfig(ModelConfig):
    """The app's settings: ModelConfig's (base model, adapters, embedder, engine, ...; declared once there)
    and the app's own below."""

    db: str = helpfield(str(DB_PATH), "SQLite file of annotators, candidates and votes (created if missing).")
    cache_size: int = helpfield(256, "Answers kept in memory (query, k, stage adapter, settings, index): the "
                                     "same question again answers at once; 0 = no cache.")
    stages: list[str] = helpfield([], "Stages to show and annotate (empty = every stage on disk).")
    index_dir: str = helpfield("", "Passage index folder (empty = racq.retrieval's default).")
    index: str = helpfield("", "A named index of your own corpus (`racq index build --passages PATH --name NAME`, "
                               "`racq index list`), used as it is and never rebuilt; empty = the shipped corpus.")
    index_root: str = helpfield("", "Folder of the named indexes (empty = $RACQ_INDEX_ROOT or <cache>/indexes).")
    check_index: bool = helpfield(True, "Rebuild the index when the corpus or embedder changed; false = "
                                        "use the index on disk as it is (fast start, tests).")
    k: int = helpfield(3, "Passages retrieved by default in Explore.")
    k_max: int = helpfield(10, "Largest k the Explore slider offers.")
    prompt_k: int = helpfield(_default(PromptConfig, "top_k"), "Passages that go into the prompt.")
    max_new_tokens: int = helpfield(_default(GenConfig, "max_new_tokens"), "Most tokens per question.")
    score: bool = helpfield(True, "Score each question's faithfulness in Explore.")
    best_of: int = helpfield(_default(GenConfig, "best_of"), "Explore and racq ask: keep the best of the greedy "
                                                             "question and best_of - 1 samples by the scorer "
                                                             "(GenConfig.best_of; needs score; 1 = off).")
    preload: bool = helpfield(True, "Load the model in the background at launch (first query is fast).")
    users_file: str = helpfield("", "YAML file of annotators with salted-hashed tokens (see racq.ui.users); "
                                    "empty = anyone signs in with a name.")
    signin_max_failures_per_name: int = helpfield(5, "Failed sign-ins for one name (wrong token or unknown "
                                                     "name) before that name is refused for a while; 0 = no limit.")
    signin_max_failures_per_client: int = helpfield(20, "Failed sign-ins from one client address before it is "
                                                        "refused for a while; 0 = no limit (behind a reverse "
                                                        "proxy every client has the proxy's address).")
    signin_throttle_minutes: float = helpfield(15.0, "Window the sign-in failure limits count over: a throttled "
                                                     "name or address may try again once its oldest counted "
                                                     "failure is this old.")
    overlap: float = helpfield(0.2, "Share of items that get a second annotator (agreement).")
    reveal_after_vote: bool = helpfield(True, "After a vote, show which stages the two questions came from.")
    publish_ranking: bool = helpfield(False, "With a users file: show annotators the stage ranking (rank and "
                                             "stage only) on the Leaderboard; vote counts, per-annotator tables "
                                             "and agreement stay admin-only. No users file: everyone sees all.")
    min_pair_votes: int = helpfield(MIN_PAIR_VOTES, "Leaderboard: while any pair of ranked stages has fewer "
                                                    "votes than this (skips not counted), the ranking is marked "
                                                    "provisional (admins see the pairs, annotators only the word).")
    examples: list[str] = helpfield(EXAMPLES, "Example queries offered under the Explore box.")
    host: str = helpfield("127.0.0.1", "Interface to bind; 0.0.0.0 exposes the app to your network.")
    port: int = helpfield(7860, "Port to serve on.")
    share: bool = helpfield(False, "Gradio share link (needs internet; off by default).")
    train_config: str = helpfield("", "YAML of TrainConfig settings for rounds started on the Feedback "
                                      "screen (empty = defaults with this app's base model and adapters).")
    title: str = helpfield("RACQ: faithful clarifying questions", "Browser tab title.")
    study: str = helpfield("", "A study file (YAML of racq.annotation.study.StudyConfig: guidelines, skip reasons, button "
                               "labels, overlap, reveal_after_vote and its own db); it then owns db, overlap "
                               "and reveal_after_vote. Empty: the defaults and the settings above.")

    def model_config(self) -> ModelConfig:
        return ModelConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig)})

    def prompt_config(self) -> PromptConfig:
        return PromptConfig(top_k=self.prompt_k)

    def gen_config(self) -> GenConfig:
        return GenConfig(max_new_tokens=self.max_new_tokens, best_of=self.best_of)

    def retrieval_config(self):
        from racq.retrieval import RetrievalConfig

        rc = RetrievalConfig(embedder=self.embedder, k=self.k, index=self.index, index_root=self.index_root)
        if self.index_dir:
            rc.index_dir = self.index_dir
        return rc

    def index_folder(self) -> str:
        """The folder the app's index is read from (the named one when `index` is set)."""
        from racq.retrieval import named_index_dir

        rc = self.retrieval_config()
        return str(named_index_dir(rc.index, rc)) if rc.index else rc.index_dir


def load_asker(cfg: AppConfig):
    """The Asker the app uses: base model + adapters, the index, and the faithfulness scorer."""
    from racq import retrieval
    from racq.service import Asker

    rc = cfg.retrieval_config()
    if rc.index:  # a named index: loaded as it is on disk, never rebuilt (check_index does not apply)
        index = retrieval.load_named(rc.index, rc)
    else:
        index = retrieval.load_or_build(rc) if cfg.check_index else retrieval.Index.load(rc.index_dir, cfg=rc)
    # best-of-N picks by the scorer, so it loads it even when Explore does not show scores
    return Asker.load(cfg.model_config(), cfg.prompt_config(), rc, with_scorer=cfg.score or cfg.best_of > 1,
                      index=index, cache_size=cfg.cache_size)


@dataclass
class AppContext:
    """What every screen's build(ctx) gets.

    asker(): the Asker, loaded once on first use (thread-safe); a failed load raises again on the next
    call, so a missing model never kills the annotation screens. stages(): visible stage names on
    disk (no model load). load_stage(name): attach a new adapter to the loaded model in place (no
    restart).
    user(request)/role(request)/is_admin(request): who signed in on the Annotate tab in this browser
    session (server-side; `session` is the same as a gr.State). jobs: the background job runner.
    """

    cfg: AppConfig
    db: object  # racq.store.Store
    study: StudyConfig = field(default_factory=StudyConfig)
    session: object = None  # gr.State: {"name", "role"} after sign-in, else None
    asker_factory: Callable[[], object] | None = None
    _asker: object = field(default=None, repr=False)
    _stages: list[str] | None = field(default=None, repr=False)
    jobs: object = field(default_factory=lambda: _jobs())  # racq.ui.jobs.Jobs
    _users: dict = field(default_factory=dict, repr=False)  # gradio session_hash -> {"name", "role"}
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    # Loading the Asker and attaching a stage to it: its own lock, since attaching waits for a running
    # generation (minutes in a pool build) and sign-ins (set_user, _lock) must not wait with it.
    _load_lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def db_path(self) -> Path:
        return Path(self.db.path)

    @property
    def asker_loaded(self) -> bool:
        return self._asker is not None

    @property
    def train_cfg(self):
        """TrainConfig for feedback rounds: cfg.train_config YAML, else defaults (None lets the screen decide)."""
        if not self.cfg.train_config:
            return None
        from racq.config import TrainConfig, load_config

        return load_config(TrainConfig, self.cfg.train_config)

    def asker(self):
        if self._asker is None:
            with self._load_lock:
                if self._asker is None:
                    self._asker = (self.asker_factory or (lambda: load_asker(self.cfg)))()
        return self._asker

    def stages(self) -> list[str]:
        if self._stages is None:
            self._stages = stage_names(self.cfg)
        return list(self._stages)

    def load_stage(self, name: str) -> str:
        """Make a stage trained while the app runs usable now, whether or not a page is open: the disk
        stage list is re-read and the adapter is attached to the loaded model in place (the other stages
        stay loaded; no restart). Returns what happened; raises when the adapter is broken."""
        with self._load_lock:  # a load in progress finishes first, so it cannot miss the new stage
            self._stages = None
            shown = "Explore shows it now" if not self.cfg.stages or name in self.cfg.stages else (
                f"Explore does not show it: the app's `stages` setting lists only {', '.join(self.cfg.stages)}")
            if self._asker is None:
                return f"Stage {name} will load with the models on first use"
            sm = getattr(self._asker, "stage_model", None)
            if hasattr(sm, "add_stage"):
                added = sm.add_stage(name, Path(self.cfg.adapters_dir) / name)
                if hasattr(self._asker, "refresh"):  # its merged copy, and no cached answers of the old one
                    self._asker.refresh(name)
                return f"Stage {name} {'is loaded' if added else 'was already loaded'}: {shown}"
            if self.asker_factory is not None:  # no in-place attach: rebuild on next use
                self._asker = None
                return f"Stage {name} will load when the models reload on next use"
        raise RuntimeError(f"the app's model cannot take new stages in place ({type(sm).__name__}); "
                           f"restart the app to load {name}")

    # -- who is signed in (set by the Annotate screen)
    def set_user(self, request, user: dict | None) -> None:
        key = getattr(request, "session_hash", None)
        if key:
            with self._lock:
                if user is None:
                    self._users.pop(key, None)
                else:
                    self._users[key] = dict(user)

    def user(self, request) -> dict | None:
        return self._users.get(getattr(request, "session_hash", None) or "")

    def role(self, request) -> str | None:
        u = self.user(request)
        return u["role"] if u else None

    def is_admin(self, request) -> bool:
        return self.role(request) == "admin"


def _jobs():
    from racq.ui.jobs import Jobs

    return Jobs()


def stage_names(cfg: AppConfig) -> list[str]:
    """Visible stages on disk in display order (no model load), limited to cfg.stages when set."""
    from racq.models import list_stages

    names = [s.name for s in list_stages(cfg.adapters_dir)]
    return [s for s in names if s in cfg.stages] if cfg.stages else names


def extra_screens() -> list[tuple[str, Callable, str]]:
    """The tabs after Explore and Annotate: (tab title, build(ctx), elem_id)."""
    from racq.ui import feedback, leaderboard  # these import gradio: only when an app is built

    return [("Leaderboard", leaderboard.build, "tab-leaderboard"),
            ("Feedback training", feedback.build, "tab-feedback")]


def recover_rounds(db) -> list[dict]:
    """At start-up: rounds left 'running' by a process that died (no live holder of the round lease)
    become 'failed' with the reason, instead of showing as running forever."""
    from racq.store import fail_stale_rounds

    stale = fail_stale_rounds(db)
    for r in stale:
        log.warning("round %s (%s) marked failed: %s", r["id"], r["stage"], r["metrics"]["error"])
    return stale


# The settings a study file owns (racq.annotation.study): with --study they come from the file, not the app's settings.
STUDY_SETTINGS = ("db", "overlap", "reveal_after_vote")


def apply_study(cfg: AppConfig) -> tuple[AppConfig, StudyConfig]:
    """(cfg with the study's db, overlap and reveal_after_vote, the StudyConfig). Raises StudyError for a
    bad study file, or when the app's settings also set one of those three to something else (which
    one wins would be a guess). No cfg.study: cfg unchanged and the default study."""
    if not cfg.study:
        return cfg, StudyConfig(db=cfg.db, overlap=cfg.overlap, reveal_after_vote=cfg.reveal_after_vote)
    study = load_study(cfg.study)
    clash = [f"{k} (the study: {getattr(study, k)!r}, the app settings: {getattr(cfg, k)!r})"
             for k in STUDY_SETTINGS if getattr(cfg, k) not in (_default(AppConfig, k), getattr(study, k))]
    if clash:
        raise StudyError(f"{cfg.study}: {'; '.join(clash)}: with a study file these come from the file; "
                         f"set them there and drop them from --db/--set/--config")
    return dataclasses.replace(cfg, **{k: getattr(study, k) for k in STUDY_SETTINGS}), study


def make_context(cfg: AppConfig | None = None, asker=None) -> AppContext:
    from racq.store import open_db

    cfg, study = apply_study(cfg or AppConfig())
    ctx = AppContext(cfg, open_db(cfg.db), study)
    recover_rounds(ctx.db)
    if callable(asker) and not hasattr(asker, "ask"):
        ctx.asker_factory = asker
    elif asker is not None:
        ctx._asker = asker
    return ctx


def build_app(cfg: AppConfig | None = None, asker=None, ctx: AppContext | None = None):
    """The gr.Blocks of the whole app. `asker`: a loaded Asker, or a zero-argument factory for one."""
    import gradio as gr

    from racq.ui import annotate, explore

    ctx = ctx or make_context(cfg, asker)
    with gr.Blocks(title=ctx.cfg.title, analytics_enabled=False) as demo:
        ctx.session = gr.State(None)
        gr.Markdown(f"## {ctx.cfg.title}")
        with gr.Tabs():
            with gr.Tab("Explore", id="explore", elem_id="tab-explore"):
                explore.build(ctx)
            with gr.Tab("Annotate", id="annotate", elem_id="tab-annotate"):
                annotate.build(ctx)
            for title, build_screen, elem_id in extra_screens():
                with gr.Tab(title, id=elem_id.removeprefix("tab-"), elem_id=elem_id) as tab:
                    try:
                        handle = build_screen(ctx)
                    except Exception as e:  # one broken screen must not take annotation down
                        log.exception("screen %s failed to build", title)
                        gr.Markdown(f"This screen failed to load: `{type(e).__name__}: {e}`")
                        continue
                _refresh_on_select(tab, handle)
    demo.racq_context = ctx  # for tests and embedding
    return demo


def _refresh_on_select(tab, handle) -> None:
    """Fill a screen when its tab is opened (not on page load: stage names stay off the page until a
    person asks for them, and the leaderboard's bootstrap only runs when someone looks)."""
    if not isinstance(handle, dict) or not callable(handle.get("refresh")):
        return
    outputs = handle.get("refresh_outputs") or ([handle["summary"]] if "summary" in handle else handle.get("outputs"))
    if outputs:
        tab.select(handle["refresh"], None, outputs, api_visibility="private")


def private_paths(cfg: AppConfig) -> list[str]:
    """Folders and files the web server must never hand out (passed as blocked_paths)."""
    rc = cfg.retrieval_config()
    # The DB file and SQLite's side files, not its folder: a DB in /tmp must not block Gradio's own cache.
    paths = [cfg.db] + [cfg.db + suffix for suffix in ("-wal", "-shm", "-journal")]
    from racq.models import resolve_model

    paths += [str(resolve_model(cfg.base_model)), cfg.adapters_dir, rc.index_dir, cfg.index_folder()]
    if cfg.users_file:
        paths.append(cfg.users_file)
    if cfg.study:
        paths.append(cfg.study)
    return [str(Path(p).expanduser().resolve()) for p in paths if p]


def launch(cfg: AppConfig | None = None, asker=None, **launch_kw):
    """Build and serve the app (blocks until stopped). Gradio 6: head/css go to launch()."""
    from racq.ui.theme import CSS, HOTKEYS_JS

    demo = build_app(cfg or AppConfig(), asker)
    ctx = demo.racq_context
    cfg = ctx.cfg  # with the study's settings applied (its database is a private path too)
    if cfg.preload and not ctx.asker_loaded:
        def _preload():
            try:
                ctx.asker().warm()
            except Exception as e:  # Explore shows the same error when someone asks
                log.warning("model not loaded at start: %s", e)
        threading.Thread(target=_preload, name="racq-preload", daemon=True).start()
    demo.queue(default_concurrency_limit=4)
    kw = dict(server_name=cfg.host, server_port=cfg.port, share=cfg.share, head=HOTKEYS_JS, css=CSS,
              blocked_paths=private_paths(cfg), allowed_paths=[], ssr_mode=False, mcp_server=False,
              show_error=False, run_history=False)  # no copies of votes/rationales kept in the browser
    kw.update(launch_kw)
    return demo.launch(**kw)


__all__ = ["AppConfig", "AppContext", "EXAMPLES", "STUDY_SETTINGS", "apply_study", "build_app", "launch",
           "load_asker", "make_context", "private_paths", "stage_names"]
