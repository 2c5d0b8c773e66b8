"""CI-sized load run: bench/bench_votes.py --short as a subprocess (32 annotators voting through the real
app for ~8 s, without and with a users file, and with a wrong-token sign-in flood; then the bare store
from 32 threads). Asserts that no acknowledged vote is lost or stored twice, that every sign-in went
through, and that the file is intact; the timings are the bench's to print, not this test's to judge.

    .venv/bin/pytest -q tests/test_load_short.py        # ~2 min
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from apphelpers import APP_ENV, REPO


def test_32_annotators_lose_and_duplicate_no_vote(tmp_path, tiny_lm):
    out = tmp_path / "votes.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_votes.py"), "--short", "--annotators", "32",
                           "--tiny-lm", str(tiny_lm), "--workdir", str(tmp_path / "work"), "--json", str(out)],
                          cwd=REPO, env=dict(os.environ, **APP_ENV), capture_output=True, text=True, timeout=400)
    report = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    result = json.loads(out.read_text())
    assert result["annotators"] == 32
    for path in ("app", "app_tokens", "app_flood", "store"):
        r = result[path]
        assert r["votes"] > 0, (path, report)
        assert (r["lost"], r["duplicated"], r["unacknowledged"], r["errors"]) == (0, 0, 0, 0), (path, r)
        assert r["integrity"] == "ok"
        if path != "store":
            assert r["signin"]["n"] == 32, (path, r["signin"])
    assert result["app_flood"]["flood_signin"]["n"] > 0
