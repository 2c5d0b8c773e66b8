"""One training round at a time across processes, and rounds that outlive their process: the round
lease in the database (real child processes that take it, then release it or get SIGKILLed), stale
'running' rounds marked failed at start-up and before the next round, and jobs that never stay
'running' after a BaseException.

    PYTHONPATH=$PWD .venv/bin/pytest -q tests/test_rounds.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid

import pytest
from typer.testing import CliRunner

from apphelpers import APP_ENV, REPO, synthetic_pool, until
from racq.cli import app
from racq.config import TrainConfig
from racq.annotation.retrain import FeedbackError, train_round
from racq.store import (ROUND_LEASE, LeaseHeld, acquire_lease, add_annotator, fail_stale_rounds, get_lease,
                        get_round, held_lease, list_rounds, open_db, record_vote, release_lease, renew_lease)
from racq.store.leases import LeaseLost

# A child process that takes the round lease (and, with "round", records a running round under it),
# prints what it holds, then waits for a line on stdin before releasing: readiness through a pipe.
CHILD = """
import json, sys
from racq.store import open_db, acquire_lease, release_lease, record_round
db = open_db(sys.argv[1])
lease = acquire_lease(db, "round")
rid = record_round(db, "aligned-r1", "aligned", runner=lease.holder) if sys.argv[2] == "round" else None
print(json.dumps({"pid": lease.pid, "host": lease.host, "holder": lease.holder, "round_id": rid}), flush=True)
sys.stdin.readline()
release_lease(db, lease)
print("released", flush=True)
"""


@pytest.fixture
def child(tmp_path):
    """start(db_path, what) -> (Popen, what it holds); every child is gone after the test."""
    procs = []

    def start(db_path, what="lease"):
        env = dict(os.environ, **APP_ENV, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db_path), what], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        procs.append(proc)
        line = proc.stdout.readline()  # blocks until the child holds the lease (or has died: "")
        assert line, f"child failed: {proc.stderr.read()}"
        return proc, json.loads(line)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()


@pytest.fixture
def voted(tmp_path):
    """A database of 3 queries x 3 stages, every item voted 'left' by ana: 9 usable pairs."""
    db = open_db(tmp_path / "racq.db")
    synthetic_pool(db, 3)
    add_annotator(db, "ana")
    with db.read() as c:
        items = [(r["id"], r["cand_a"], r["cand_b"]) for r in c.query("SELECT * FROM items ORDER BY id")]
    for i, a, b in items:
        record_vote(db, uuid.uuid4().hex, "ana", i, a, b, "left")
    return db


@pytest.fixture
def fake_training(tmp_path, tiny_adapters, monkeypatch):
    """A TrainConfig on a copy of the tiny adapters with DPO replaced by a copy of `aligned` (these tests
    are about the round's bookkeeping; tests/test_feedback.py trains for real)."""
    adapters = tmp_path / "adapters"
    shutil.copytree(tiny_adapters, adapters)

    def fake(cfg, files, start, reference, name, extra_manifest, callbacks):
        shutil.copytree(adapters / "aligned", adapters / name)
        (adapters / name / "manifest.json").write_text(json.dumps({"metrics": {"steps": 0}, **extra_manifest}))
        return adapters / name

    monkeypatch.setattr("racq.train.dpo.train_dpo", fake)
    return adapters


def _cfg(tmp_path, tiny_lm, adapters) -> TrainConfig:
    return TrainConfig(base_model=str(tiny_lm), adapters_dir=str(adapters), run_dir=str(tmp_path / "run"))


# ------------------------------------------------------------------ the lease
def test_two_processes_one_wins_the_round_lease(tmp_path, child, voted, tiny_lm, fake_training):
    db = voted
    proc, held = child(db.path)
    with pytest.raises(LeaseHeld) as refused:
        acquire_lease(db, ROUND_LEASE)
    msg = str(refused.value)
    assert f"pid {held['pid']} on host {socket.gethostname()}" in msg and "since 20" in msg, msg
    assert refused.value.holder["holder"] == held["holder"]
    # the same refusal through a round, in the API and the CLI; nothing is recorded
    with pytest.raises(FeedbackError, match=f"another training round is running: .*pid {held['pid']}"):
        train_round(_cfg(tmp_path, tiny_lm, fake_training), db)
    result = CliRunner().invoke(app, ["train", "dpo", "--from-votes", "--db", str(db.path), "--set",
                                      f"base_model={tiny_lm}", "--set", f"adapters_dir={fake_training}"])
    assert result.exit_code == 1 and f"pid {held['pid']}" in result.output, result.output
    assert list_rounds(db) == []

    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "released" and proc.wait(timeout=30) == 0
    mine = acquire_lease(db, ROUND_LEASE)  # free again: the parent takes it
    assert get_lease(db, ROUND_LEASE)["holder"] == mine.holder and release_lease(db, mine)
    assert get_lease(db, ROUND_LEASE) is None


def test_a_lease_is_free_once_it_expires_or_its_holder_is_killed(tmp_path, child):
    db = open_db(tmp_path / "racq.db")
    first = acquire_lease(db, "x", ttl_s=0)  # expires at once: nobody renewed it
    assert get_lease(db, "x")["free"].startswith("expired")
    second = acquire_lease(db, "x")
    with pytest.raises(LeaseLost):
        renew_lease(db, first)  # the old holder learns it lost the lease
    assert not release_lease(db, first) and get_lease(db, "x")["holder"] == second.holder
    assert release_lease(db, second)

    with held_lease(db, "x", every_s=0.05) as lease:  # the heartbeat renews while the block runs
        beat = get_lease(db, "x")["heartbeat_at"]
        until("a renewal", lambda: get_lease(db, "x")["heartbeat_at"] > beat, timeout=60, every=0.01)
        assert get_lease(db, "x")["holder"] == lease.holder
    assert get_lease(db, "x") is None  # released on the way out

    proc, held = child(db.path)
    with pytest.raises(LeaseHeld):
        acquire_lease(db, ROUND_LEASE)
    os.kill(proc.pid, signal.SIGKILL)  # no handler runs: the row stays, but its pid is gone
    proc.wait(timeout=30)
    row = get_lease(db, ROUND_LEASE)
    assert row["holder"] == held["holder"] and row["free"] == f"pid {held['pid']} on host {held['host']} no longer exists"
    release_lease(db, acquire_lease(db, ROUND_LEASE))  # taken at once, without waiting for the TTL


# ------------------------------------------------------------------ stale rounds
def _killed_mid_round(child, db) -> dict:
    """A child that takes the lease and records a running round, SIGKILLed: what it held."""
    proc, held = child(db.path, "round")
    assert fail_stale_rounds(db) == []  # while it lives, its round is really running
    assert get_round(db, held["round_id"])["status"] == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return held


def test_a_round_of_a_killed_process_is_marked_failed_at_app_start(tmp_path, child):
    from racq.ui import AppConfig, make_context

    db = open_db(tmp_path / "racq.db")
    held = _killed_mid_round(child, db)
    assert get_round(db, held["round_id"])["status"] == "running"  # nobody has looked yet
    make_context(AppConfig(db=str(db.path), adapters_dir=str(tmp_path), preload=False, check_index=False))
    rnd = get_round(db, held["round_id"])
    assert rnd["status"] == "failed" and rnd["finished_at"]
    assert rnd["metrics"]["error"] == (f"the process that ran it (pid {held['pid']} on host {held['host']}) "
                                       f"stopped before the round finished")


def test_a_round_of_a_killed_process_is_marked_failed_before_the_next_round(tmp_path, child, voted, tiny_lm,
                                                                           fake_training):
    db = voted
    held = _killed_mid_round(child, db)
    result = CliRunner().invoke(app, ["train", "dpo", "--from-votes", "--db", str(db.path), "--set",
                                      f"base_model={tiny_lm}", "--set", f"adapters_dir={fake_training}",
                                      "--set", f"run_dir={tmp_path / 'run'}"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"round {held['round_id']} (aligned-r1) marked failed: the process that ran it (pid {held['pid']}" in result.output
    old, new = list_rounds(db)
    assert (old["id"], old["status"]) == (held["round_id"], "failed") and "stopped before" in old["metrics"]["error"]
    assert (new["stage"], new["status"]) == ("aligned-r1", "done") and new["runner"].split(":")[1] == str(os.getpid())
    assert get_lease(db, ROUND_LEASE) is None  # released after the round


# ------------------------------------------------------------------ jobs end as done or failed
class Stop(BaseException):
    """Not an Exception: what KeyboardInterrupt or SystemExit look like to the job runner."""


@pytest.mark.parametrize("exc", [Stop("pulled the plug"), KeyboardInterrupt(), SystemExit(3)])
def test_a_job_never_stays_running_after_a_base_exception(exc):
    from racq.ui.jobs import Jobs

    def boom(job):
        job.log("started")
        raise exc

    jobs = Jobs()
    job = jobs.start("round", boom)
    assert job.wait(timeout=60) and job.status == "failed" and type(exc).__name__ in job.error
    assert "started" in job.text() and jobs.current() is job
    assert jobs.start("pool", lambda j: "ok") is not job  # a failed job does not block the next one


def test_a_round_interrupted_by_a_base_exception_fails_everywhere(tmp_path, voted, tiny_lm, tiny_adapters,
                                                                 monkeypatch):
    from types import SimpleNamespace

    from racq.ui.feedback import round_job
    from racq.ui.jobs import Jobs

    adapters = tmp_path / "adapters"
    shutil.copytree(tiny_adapters, adapters)

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr("racq.train.dpo.train_dpo", interrupted)
    job = Jobs().start("round", round_job(SimpleNamespace(db_path=voted.path), _cfg(tmp_path, tiny_lm, adapters), 0.0))
    assert job.wait(timeout=60) and job.status == "failed" and "KeyboardInterrupt" in job.error
    (rnd,) = list_rounds(voted)
    assert rnd["status"] == "failed" and "KeyboardInterrupt" in rnd["metrics"]["error"]
    assert get_lease(voted, ROUND_LEASE) is None  # the next round may start
