"""Annotation under load: N simulated annotators (threads) sign in and vote through the REAL app (python
app.py in a subprocess, over Gradio's REST route), against the bare store path (racq.store.record_vote
called directly from the same number of threads) measured in the same run. Then every acknowledged vote
is looked up in the database by its client id: it must be there exactly once.

    .venv/bin/python bench/bench_votes.py                 # 32 annotators, 30 s of voting per app run
    .venv/bin/python bench/bench_votes.py --short         # ~8 s windows (tests/test_load_short.py runs this)
    .venv/bin/python bench/bench_votes.py --annotators 64 --seconds 20 --json /tmp/votes.json
    .venv/bin/python bench/bench_votes.py --no-tokens     # only the run without a users file

Three app runs, each on a fresh server and pool: no users file (sign-in by name); a users file (every
sign-in verifies a PBKDF2 token, 200k iterations); the users file again while `--flood` extra clients
keep signing in with wrong tokens for unknown names during the voting window (what a token guesser
does; the per-client throttle is off in that run, as if they came from many addresses). Sign-in is
timed when all annotators sign in at once (p50/p90), and the flood's sign-ins while the votes go on.

The app gets a tiny random model folder (racq.tiny) and a pre-built pool of synthetic items in a temp
database; the model is not loaded (preload off: Explore is not part of this bench, and a loading model
would only steal CPU from the voting). Each vote is one full round trip: POST /gradio_api/call/annotate_*,
then the result stream, i.e. record the vote, reveal the stages, pick and render the next item, progress,
and the annotator's own votes. Exit status 1 when an acknowledged vote is missing or duplicated.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from apphelpers import (AppServer, Rest, integrity, rows, shown_token, synthetic_pool, write_config,  # noqa: E402
                        write_users)

OUTCOMES = ("left", "right", "tie", "both_bad")


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 100 values is the 99th)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def summary(acked: int, seconds: float, lat: list[float]) -> dict:
    return {"votes": acked, "seconds": round(seconds, 2), "votes_per_s": round(acked / seconds, 1),
            "p50_ms": round(pct(lat, 50) * 1000, 1), "p90_ms": round(pct(lat, 90) * 1000, 1),
            "p99_ms": round(pct(lat, 99) * 1000, 1)}


def check_db(db: Path, acked: list[str]) -> dict:
    """lost: acknowledged but absent; duplicated: a client id stored more than once (or acknowledged twice);
    unacknowledged: stored although the client never got the acknowledgement."""
    stored = {r["client_id"]: r["n"] for r in rows(db, "SELECT client_id, COUNT(*) AS n FROM votes GROUP BY client_id")}
    ack = set(acked)
    return {"lost": len(ack - set(stored)),
            "duplicated": sum(n > 1 for n in stored.values()) + (len(acked) - len(ack)),
            "unacknowledged": len(set(stored) - ack), "integrity": integrity(db)}


# ------------------------------------------------------------------ through the app
def app_config(work: Path, tag: str, tiny_lm: Path, annotators: int, n_queries: int, tokens: bool,
               flood: int) -> tuple[Path, Path, dict[str, str]]:
    """(config, db, {name: token in clear}) for one app run; tokens empty without a users file."""
    from racq.store import open_db

    db = work / f"{tag}.db"
    synthetic_pool(open_db(db), n_queries)
    names = [f"annotator-{k:03d}" for k in range(annotators)]
    clear = {n: f"token-{uuid.uuid4().hex[:16]}" for n in names} if tokens else {}
    settings = dict(db=db, base_model=tiny_lm, adapters_dir=work / "adapters", index_dir=work / "index",
                    check_index=False, preload=False, score=False)
    if tokens:
        settings["users_file"] = write_users(work / f"{tag}-users.yaml", {n: ("annotator", t) for n, t in clear.items()})
    if flood:
        settings["signin_max_failures_per_client"] = 0  # the flood stands for many addresses
    return write_config(work / f"{tag}.yaml", **settings), db, clear


def run_app(work: Path, tiny_lm: Path, annotators: int, seconds: float, n_queries: int, tag: str = "app",
            tokens: bool = False, flood: int = 0) -> dict:
    config, db, clear = app_config(work, tag, tiny_lm, annotators, n_queries, tokens, flood)
    acked: list[str] = []
    lat: list[float] = []
    signin_lat: list[float] = []
    flood_lat: list[float] = []
    errors: list[str] = []
    exhausted = [0]
    lock = threading.Lock()
    at_once = threading.Barrier(annotators, timeout=300)  # all sign in together: the sign-in figures are under load
    ready = threading.Barrier(annotators + 1, timeout=300)  # a thread that never arrives breaks it, no hang
    go, window = threading.Event(), {}

    def annotator(k: int) -> None:
        rng, session, name = random.Random(k), uuid.uuid4().hex, f"annotator-{k:03d}"
        token = None
        at_once.wait()
        try:
            t0 = time.perf_counter()
            token = shown_token(rest.call("annotate_sign_in", [name, clear.get(name, "")], session))
            signin_lat.append(time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - counted and shown
            errors.append(f"sign-in: {e}")
        if token is None:
            errors.append(f"sign-in refused for {name}")
        ready.wait()
        go.wait()
        while token and time.monotonic() < window["end"]:
            t0 = time.perf_counter()
            try:
                out = rest.call(f"annotate_{rng.choice(OUTCOMES)}", [token, "", None], session)
            except Exception as e:  # noqa: BLE001 - an unacknowledged vote: may or may not be stored
                errors.append(f"vote: {e}")
                return
            dt = time.perf_counter() - t0
            status = next((v for v in out if isinstance(v, str) and "recorded: " in v), "")
            if not status or "already" in status:
                errors.append(f"vote not recorded: {status[:200]}")
                return
            with lock:
                acked.append(token)
                lat.append(dt)
            token = shown_token(out)
        if not token:
            exhausted[0] += 1

    def intruder() -> None:
        """Wrong tokens for never-seen names, back to back, for as long as the votes go on."""
        go.wait()
        while time.monotonic() < window["end"]:
            t0 = time.perf_counter()
            try:
                out = rest.call("annotate_sign_in", [f"intruder-{uuid.uuid4().hex[:8]}", "guess"], uuid.uuid4().hex)
            except Exception as e:  # noqa: BLE001 - counted and shown
                errors.append(f"flood sign-in: {e}")
                return
            flood_lat.append(time.perf_counter() - t0)
            if "unknown name or wrong token" not in json.dumps(out):
                errors.append(f"flood sign-in: {json.dumps(out)[:200]}")

    with AppServer(config, work / f"{tag}.log") as app:
        rest = Rest(app.url)
        side = [threading.Thread(target=intruder, daemon=True) for _ in range(flood)]
        for t in side:
            t.start()
        elapsed = run_window(annotator, annotators, ready, go, window, seconds)  # after everyone signed in
        for t in side:
            t.join()
        rest.close()
    out = summary(len(acked), elapsed, lat) | check_db(db, acked)
    out |= {"tokens": tokens, "flood": flood, "signin": latency(signin_lat), "flood_signin": latency(flood_lat),
            "errors": len(errors), "first_errors": errors[:3], "annotators_out_of_items": exhausted[0]}
    return out


def latency(values: list[float]) -> dict:
    ms = lambda p: round(pct(values, p) * 1000, 1) if values else None  # noqa: E731 - JSON has no NaN
    return {"n": len(values), "p50_ms": ms(50), "p90_ms": ms(90)}


# ------------------------------------------------------------------ the baseline: the store alone
def run_store(work: Path, annotators: int, seconds: float, n_queries: int) -> dict:
    from racq.store import add_annotator, open_db, record_vote

    store = open_db(work / "store.db")
    synthetic_pool(store, n_queries)
    items = rows(store.path, "SELECT id, cand_a, cand_b FROM items ORDER BY id")
    names = [f"annotator-{k:03d}" for k in range(annotators)]
    for n in names:
        add_annotator(store, n)
    acked: list[str] = []
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(annotators + 1, timeout=300)  # a thread that never arrives breaks it, no hang
    go, window = threading.Event(), {}

    def annotator(k: int) -> None:
        rng = random.Random(k)
        mine = items[:]
        rng.shuffle(mine)
        ready.wait()
        go.wait()
        for it in mine:
            if time.monotonic() >= window["end"]:
                return
            left, right = (it["cand_a"], it["cand_b"]) if rng.random() < 0.5 else (it["cand_b"], it["cand_a"])
            cid = uuid.uuid4().hex
            t0 = time.perf_counter()
            try:
                record_vote(store, cid, names[k], it["id"], left, right, rng.choice(OUTCOMES))
            except Exception as e:  # noqa: BLE001
                errors.append(str(e))
                return
            with lock:
                acked.append(cid)
                lat.append(time.perf_counter() - t0)

    elapsed = run_window(annotator, annotators, ready, go, window, seconds)
    return summary(len(acked), elapsed, lat) | check_db(store.path, acked) | {"errors": len(errors),
                                                                             "first_errors": errors[:3]}



def run_window(annotator, annotators: int, ready, go, window: dict, seconds: float) -> float:
    """Start one thread per annotator, open the timed window once all are ready, wait; seconds taken."""
    threads = [threading.Thread(target=annotator, args=(k,), daemon=True) for k in range(annotators)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.monotonic()
    window["end"] = start + seconds
    go.set()
    for t in threads:
        t.join()
    return time.monotonic() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotators", type=int, default=32)
    p.add_argument("--seconds", type=float, default=30.0, help="voting window through the app")
    p.add_argument("--short", action="store_true", help="an ~8 s window (CI)")
    p.add_argument("--queries", type=int, default=80, help="pool size: 3 items per query")
    p.add_argument("--tiny-lm", help="an existing tiny model folder (default: build one in the work dir)")
    p.add_argument("--workdir", help="keep the databases and the app log here (default: a temp dir)")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--no-tokens", action="store_true", help="skip the two runs with a users file")
    p.add_argument("--flood", type=int, default=4, help="wrong-token sign-in clients in the flood run")
    args = p.parse_args(argv)
    seconds = 8.0 if args.short else args.seconds
    work = Path(args.workdir or tempfile.mkdtemp(prefix="racq-bench-votes-"))
    work.mkdir(parents=True, exist_ok=True)
    for f in work.glob("*.db*"):
        f.unlink()  # a fresh pool every run
    tiny_lm = Path(args.tiny_lm) if args.tiny_lm else work / "tiny-lm"
    if not (tiny_lm / "config.json").exists():
        from racq.tiny import make_tiny_lm

        make_tiny_lm(tiny_lm)

    runs = {"app": run_app(work, tiny_lm, args.annotators, seconds, args.queries)}
    if not args.no_tokens:
        runs["app_tokens"] = run_app(work, tiny_lm, args.annotators, seconds, args.queries, "app_tokens", True)
        runs["app_flood"] = run_app(work, tiny_lm, args.annotators, seconds, args.queries, "app_flood", True,
                                    args.flood)
    store = run_store(work, args.annotators, min(seconds, 10.0), args.queries)
    report(args, work, runs, store)
    app = runs["app"]
    ratio = app["votes_per_s"] / store["votes_per_s"] if store["votes_per_s"] else float("nan")
    result = {"annotators": args.annotators, **runs, "store": store, "ratio": round(ratio, 4)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    bad = any(r["lost"] or r["duplicated"] or r["integrity"] != "ok" for r in (*runs.values(), store))
    return 1 if bad else 0


LABELS = {"app": "app, no users file", "app_tokens": "app, users file", "app_flood": "app, users file + flood"}


def report(args, work: Path, runs: dict, store: dict) -> None:
    """The printed tables: votes per path, then sign-in latency per run."""
    print(f"{args.annotators} annotators, pool of {args.queries * 3} items, work dir {work}")
    print(f"{'votes: path':<30}{'votes':>7}{'votes/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'lost':>6}"
          f"{'dup':>5}{'errors':>8}")
    for name, r in [*((LABELS[k], r) for k, r in runs.items()), ("store.record_vote (baseline)", store)]:
        print(f"{name:<30}{r['votes']:>7}{r['votes_per_s']:>9}{r['p50_ms']:>9}{r['p90_ms']:>9}{r['p99_ms']:>9}"
              f"{r['lost']:>6}{r['duplicated']:>5}{r['errors']:>8}")
    print(f"\n{'sign-in':<52}{'n':>6}{'p50 ms':>9}{'p90 ms':>9}")
    for key, r in runs.items():
        rows_ = [(f"{LABELS[key]}: {args.annotators} at once", r["signin"])]
        if r["flood"]:
            rows_.append((f"{LABELS[key]}: {r['flood']} flooders while voting", r["flood_signin"]))
        for name, s in rows_:
            print(f"{name:<52}{s['n']:>6}{s['p50_ms']:>9}{s['p90_ms']:>9}")
    app = runs["app"]
    ratio = app["votes_per_s"] / store["votes_per_s"] if store["votes_per_s"] else float("nan")
    integ = "/".join(r["integrity"] for r in (*runs.values(), store))
    out_of_items = "/".join(str(r["annotators_out_of_items"]) for r in runs.values())
    print(f"app / store throughput: {ratio:.3f}  (integrity {integ}; annotators out of items {out_of_items})")
    for r in (*runs.values(), store):
        for e in r["first_errors"]:
            print("error:", e)


if __name__ == "__main__":
    sys.exit(main())
