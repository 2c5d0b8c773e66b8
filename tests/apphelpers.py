"""Running the real app for tests and benches: a synthetic pool, a users file, a YAML config, `python app.py`
in a subprocess on a free port, and a small client for Gradio's REST route.

    from apphelpers import AppServer, Rest, synthetic_pool, write_config
    db = open_db(tmp / "racq.db"); synthetic_pool(db, 10)
    with AppServer(write_config(tmp / "app.yaml", db=str(db.path), preload=False), tmp / "app.log") as app:
        rest = Rest(app.url)
        sign_in = rest.call("annotate_sign_in", ["ana", ""], session="s1")

Why the raw REST route (POST /gradio_api/call/<api>, then GET .../<event_id>) and not gradio_client: each
simulated annotator needs its own Gradio session (the signed-in user and the showings live in per-session
gr.State), one shared httpx client serves any number of threads, and it answers in ~20 ms where
gradio_client's polling adds ~100 ms per call (shared/notes/browser-testing.md). The JSON it returns is
exactly what any client of the app receives, so tests scan it for leaks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
STAGES = ("base", "sft", "aligned")
STAGE_WORDS = re.compile(r"\b(base|sft|aligned(?:-r\d+)?|uncond)\b", re.I)
APP_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "TOKENIZERS_PARALLELISM": "false",
           "RACQ_SAMPLER_SEED": "20251"}  # the app's sampler draws replayably (racq/store/candidates.py)


@contextlib.contextmanager
def one_torch_thread():
    """torch on one thread for the duration: on a small machine shared with a training run, two contending
    OpenMP threads made each tiny-model call ~8x slower than one thread (0.6 s against 0.08 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def until(what: str, fn, timeout: float = 240.0, every: float = 0.2):
    """fn()'s first truthy value, polled until `timeout` (then fail saying what was awaited): tests wait
    on state, never on a fixed sleep. `every` is only the gap between polls: it decides how soon a held
    state is seen, never whether a test passes."""
    import pytest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    """A port that was free a moment ago. Racy by nature (another process may take it before our server
    binds it): AppServer.start and serve retry with a new port when the bind fails."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What a server that lost the port race prints or raises (uvicorn's bind error, Gradio's port scan).
PORT_TAKEN = re.compile(r"address already in use|Errno 98|Cannot find empty port", re.I)
START_TRIES = 5


def adapter_hash(stage: str) -> str:
    """A fixed, recognisable 12-hex adapter hash per stage (tests scan payloads for it)."""
    import hashlib

    return hashlib.sha256(f"adapter-{stage}".encode()).hexdigest()[:12]


def synthetic_pool(db, n_queries: int, stages=STAGES) -> int:
    """n_queries queries (two passages each) with one distinct candidate per stage, no stage word in any
    text, a recognisable adapter hash on each candidate; returns the number of items made."""
    from racq.data import Passage
    from racq.store import add_candidate, add_query_with_passages, make_items

    for q in range(n_queries):
        ps = [Passage(f"Topic {q}", f"Topic {q} has two meanings: the river and the city."),
              Passage("Other", f"A second passage about topic {q}.")]
        qid = add_query_with_passages(db, f"what is topic {q}", ps, [0.9, 0.5], dataset="paqa", topic_id=str(q))
        for j, s in enumerate(stages):
            add_candidate(db, qid, s, f"Do you mean the river or the city of topic {q}, variant {j}?",
                          adapter_hash=adapter_hash(s), decoding={"do_sample": False})
    return make_items(db)


def write_users(path: Path, users: dict[str, tuple[str, str]]) -> Path:
    """users: {name: (role, token in clear)} -> a users file of salted hashes."""
    from racq.ui.users import hash_token

    path.write_text(yaml.safe_dump({n: {"role": r, "token": hash_token(t)} for n, (r, t) in users.items()}))
    return path


def write_config(path: Path, **settings) -> Path:
    path.write_text(yaml.safe_dump({k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}))
    return path


class AppServer:
    """`python app.py --config CONFIG --port PORT` in a subprocess; start() waits for HTTP 200.

    command: another way to start the app that takes --config/--port/--set, e.g. a README line
    `racq app --index mine` as an argv list (default: python app.py); config=None passes no --config.
    cwd and env (added to APP_ENV) are where and with what it runs (default: the repository root)."""

    def __init__(self, config: Path | None, log: Path, port: int | None = None, extra_args=(), command=None,
                 cwd: Path = REPO, env: dict | None = None):
        self.config, self.log_path, self.port = config and Path(config), Path(log), port or free_port()
        self._port_given = port is not None  # a port the caller chose is never swapped for another
        self.extra_args, self.proc, self._log = list(extra_args), None, None
        self.command, self.cwd, self.env = list(command or [sys.executable, "app.py"]), cwd, dict(env or {})
        self.url = f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 120) -> "AppServer":
        """Start the app and wait until *our* process answers: it must still be running and its /config
        must carry the per-server nonce title we passed (a 200 from some other server on a port we lost
        the race for is not ours). If the port was taken, start again on a fresh one."""
        import uuid

        env = {**os.environ, **APP_ENV, **self.env}
        for attempt in range(1, START_TRIES + 1):
            self.nonce = f"racq-test-{uuid.uuid4().hex}"
            self.url = f"http://127.0.0.1:{self.port}/"
            self._log = open(self.log_path, "a")
            self._log.write(f"--- AppServer.start: port {self.port}, try {attempt}\n")
            self._log.flush()
            log_from = self.log_path.stat().st_size  # this try's output starts here (bytes)
            # --set title=<nonce> last, so neither the config file nor extra_args can override it
            config = ["--config", str(self.config)] if self.config else []
            self.proc = subprocess.Popen([*self.command, *config, "--port", str(self.port), *self.extra_args,
                                          "--set", f"title={self.nonce}"],
                                         cwd=self.cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
            deadline, other = time.monotonic() + timeout, None
            while True:
                if self.proc.poll() is not None:
                    self._log.close()
                    mine = self.log_path.read_bytes()[log_from:].decode(errors="replace")
                    if PORT_TAKEN.search(mine) and not self._port_given and attempt < START_TRIES:
                        self.port = free_port()
                        break  # lost the port race: a fresh port, a fresh process
                    raise RuntimeError(f"app exited ({self.proc.returncode}):\n{mine[-3000:]}")
                try:
                    with urllib.request.urlopen(self.url + "config", timeout=2) as r:
                        title = json.loads(r.read()).get("title") if r.status == 200 else None
                    if title == self.nonce and self.proc.poll() is None:
                        return self
                    other = title  # someone else's server on this port: ours will fail to bind and exit
                except (OSError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    who = f" (port {self.port} answered as {other!r}, not us)" if other else ""
                    raise RuntimeError(f"app did not answer within {timeout:.0f} s{who}:\n{self.log()[-3000:]}")
                try:  # the gap before the next probe, cut short if our process exits (checked at the loop's top)
                    self.proc.wait(timeout=0.3)
                except subprocess.TimeoutExpired:
                    pass
        raise AssertionError("unreachable")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed by the app."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self._log and not self._log.closed:
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@contextlib.contextmanager
def serve(demo):
    """Serve an in-process gr.Blocks (racq.ui.build_app) on a free loopback port, as racq.ui.launch
    would (queue, no SSR, errors not shown); yields its URL. For tests that reach into demo.racq_context.
    A port taken between free_port() and the bind ("Cannot find empty port", an OSError) is retried."""
    demo.queue(default_concurrency_limit=4)
    for attempt in range(1, START_TRIES + 1):
        try:
            demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), ssr_mode=False,
                        quiet=True, show_error=False, mcp_server=False)
            break
        except OSError as e:
            if attempt == START_TRIES or not PORT_TAKEN.search(str(e)):
                raise
    try:
        yield demo.local_url
    finally:
        demo.close()


class CallFailed(RuntimeError):
    pass


class Rest:
    """Gradio's REST route with an explicit session per caller. Thread-safe (one httpx pool)."""

    def __init__(self, url: str, timeout: float = 120):
        import httpx

        self.base = url.rstrip("/") + "/gradio_api/"
        self.http = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=200,
                                                                      max_keepalive_connections=200))

    def events(self, api: str, data: list, session: str | None = None) -> tuple[list[tuple[str, object]], str]:
        """([(event, data), ...], raw body of both responses). Raises CallFailed on an HTTP error."""
        body = {"data": data} | ({"session_hash": session} if session else {})
        # json.dumps escapes to ASCII, so even a lone surrogate ("\ud800") goes out as a JSON client would send it
        r = self.http.post(self.base + f"call/{api}", content=json.dumps(body).encode(),
                           headers={"content-type": "application/json"})
        if r.status_code != 200:
            raise CallFailed(f"POST call/{api}: HTTP {r.status_code} {r.text[:300]}")
        raw = r.text
        r = self.http.get(self.base + f"call/{api}/{r.json()['event_id']}")
        if r.status_code != 200:
            raise CallFailed(f"GET call/{api}: HTTP {r.status_code} {r.text[:300]}")
        raw += r.text
        out, event = [], None
        for line in r.text.splitlines():
            if line.startswith("event: "):
                event = line[7:].strip()
            elif line.startswith("data: ") and event not in (None, "heartbeat"):
                out.append((event, json.loads(line[6:])))
        return out, raw

    def call(self, api: str, data: list, session: str | None = None):
        """The final data of a call (a list of outputs). Raises CallFailed on an 'error' event."""
        out, _ = self.events(api, data, session)
        if not out:
            raise CallFailed(f"{api}: no answer")
        event, value = out[-1]
        if event != "complete":
            raise CallFailed(f"{api}: {event}: {value}")
        return value

    def close(self) -> None:
        self.http.close()


def shown_token(outputs) -> str | None:
    """The opaque per-showing id (a 32-hex uuid) among an annotate call's outputs."""
    for v in outputs:
        if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{32}", v):
            return v
    return None


def rows(db: Path, sql: str, params=()) -> list[dict]:
    """Plain sqlite3 reads, independent of racq.store (what is really in the file)."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, params)]


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
