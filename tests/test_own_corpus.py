"""The README's "Use your own corpus and model" section, run as written: its commands are read from
README.md (between `<!-- own-corpus:begin -->` and `<!-- own-corpus:end -->`) and run with the real
`racq` CLI in a folder holding a few Markdown files, a tiny random model and its adapters.

    PYTHONPATH=$PWD .venv/bin/pytest -q tests/test_own_corpus.py      # ~1-2 min: one process per command

Each ```bash line is one command run through bash; `racq app ...` is served (tests/apphelpers.py
AppServer) and an annotator signs in and votes over Gradio's REST route. The ```text block is the
queries file the `--queries` command names. RACQ_BASE_MODEL / RACQ_ADAPTERS_DIR point at the tiny
model, RACQ_CACHE_DIR (named indexes, the model registry) and RACQ_DB at this test's folder.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from apphelpers import REPO, AppServer, Rest, rows, shown_token

BEGIN, END = "<!-- own-corpus:begin -->", "<!-- own-corpus:end -->"
DOCS = {"router.md": "# Zorblax router\n\nTo reset the Zorblax router, hold the red button for ten seconds. "
                     "The lights blink twice when it restarts.\n",
        "kettle.md": "# Quillfeather kettle\n\nThe Quillfeather kettle boils water in ninety seconds. "
                     "Descale it every month with vinegar.\n",
        "garden.md": "# Moonbean garden\n\nPlant the moonbean seeds in spring, a hand apart, in full sun.\n"}
TITLES = {"Zorblax router", "Quillfeather kettle", "Moonbean garden"}


def readme_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "the README section markers must appear once each"
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", section, flags=re.S | re.M)


def commands(section: str) -> list[str]:
    """Every line of the section's bash blocks, in order (one command a line, no continuations)."""
    out = [line.strip() for block in blocks(section, "bash") for line in block.splitlines()]
    out = [c for c in out if c and not c.startswith("#")]
    assert out and not any(c.endswith("\\") for c in out), out
    return out


def _titles(output: str) -> list[str]:
    """The titles of `racq ask`'s passage lines: "[1] (0.712) Title: text"."""
    return [line.split(") ", 1)[1].split(": ", 1)[0] for line in output.splitlines() if re.match(r"\[\d+\] \(", line)]


def test_readme_commands_run_end_to_end(tmp_path, tiny_lm, tiny_adapters):
    section = readme_section()
    cmds = commands(section)
    work = tmp_path / "work"
    (work / "my-docs").mkdir(parents=True)
    for name, text in DOCS.items():
        (work / "my-docs" / name).write_text(text, encoding="utf-8")
    (queries_text,) = blocks(section, "text")
    queries_file = next(shlex.split(c)[shlex.split(c).index("--queries") + 1] for c in cmds if "--queries" in c)
    (work / queries_file).write_text(queries_text, encoding="utf-8")
    shutil.copytree(tiny_lm, work / "my-model")  # "your own model": a folder named in `racq models add`
    shutil.copytree(tiny_adapters, tmp_path / "adapters")
    db = tmp_path / "racq.db"
    bin_dir = Path(sys.executable).parent  # the venv's `racq` script comes first on PATH
    assert (bin_dir / "racq").exists(), f"no racq script beside {sys.executable}: pip install -e ."
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "RACQ_BASE_MODEL": str(tiny_lm), "RACQ_ADAPTERS_DIR": str(tmp_path / "adapters"),
           "RACQ_CACHE_DIR": str(tmp_path / "cache"), "RACQ_DB": str(db), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}

    outputs, voted = {}, False
    for cmd in cmds:
        if cmd.startswith("racq app"):
            voted = _annotate(cmd, work, env, tmp_path, db)
            continue
        res = subprocess.run(["bash", "-c", cmd], cwd=work, env={**os.environ, **env}, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
        outputs.setdefault(cmd, res.stdout)

    asks = [c for c in cmds if c.startswith("racq ask")]
    assert len(asks) == 2 and any("--base-model mymodel" in c for c in asks), asks
    for c in asks:  # both models retrieve from this corpus only, and ask one question per stage
        titles = _titles(outputs[c])
        assert titles and set(titles) <= TITLES and titles[0] == "Zorblax router", outputs[c]
        assert "sft:" in outputs[c] and "aligned:" in outputs[c], outputs[c]
    listed = next(out for c, out in outputs.items() if c.startswith("racq models list"))
    assert re.search(rf"mymodel\s+llama\s+{re.escape(str((work / 'my-model').resolve()))}", listed), listed
    assert "mine" in next(out for c, out in outputs.items() if c.startswith("racq index list"))

    # the pool: the file's three distinct queries (the fourth line repeats the first), this corpus's passages
    queries = rows(db, "SELECT id, text, dataset, topic_id FROM queries ORDER BY id")
    assert sorted(q["text"] for q in queries) == sorted(
        ["how do I reset the router", "how long does the kettle take to boil", "when do I plant the moonbean seeds"])
    assert {q["dataset"] for q in queries} == {"custom"} and all(re.fullmatch(r"q-[0-9a-f]{10}", q["topic_id"])
                                                                 for q in queries)
    titles = {r["title"] for r in rows(db, "SELECT p.title FROM passages p")}
    assert titles and titles <= TITLES, titles
    assert rows(db, "SELECT COUNT(*) AS n FROM items")[0]["n"] > 0
    assert '"duplicates": 1' in next(out for c, out in outputs.items() if "--queries" in c)
    assert voted


def _annotate(cmd: str, work: Path, env: dict, tmp_path: Path, db: Path) -> bool:
    """Serve the README's `racq app ...` line; an annotator signs in, is shown a pool item of the
    custom queries, votes, and the vote is in the SQLite file."""
    argv = shlex.split(cmd)
    with AppServer(None, tmp_path / "app.log", command=[shutil.which("racq", path=env["PATH"]), *argv[1:]],
                   extra_args=["--set", "preload=false"], cwd=work, env=env) as app:
        rest, session = Rest(app.url), uuid.uuid4().hex
        out = rest.call("annotate_sign_in", ["ana", ""], session)
        token = shown_token(out)
        assert token, out
        shown = " ".join(v for v in out if isinstance(v, str))
        assert any(q in shown for q in ("reset the router", "kettle take to boil", "moonbean seeds")), shown
        rest.call("annotate_left", [token, "", None], session)
        rest.close()
    votes = rows(db, "SELECT v.outcome, q.dataset FROM votes v JOIN items i ON i.id = v.item_id "
                     "JOIN queries q ON q.id = i.query_id")
    assert votes == [{"outcome": "left", "dataset": "custom"}], votes
    return True
