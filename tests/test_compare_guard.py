"""bench/compare_guard.py: the retry policy takes the guarded question exactly where the guard-free one
repeats an option, and two runs of different examples are refused."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(folder: Path, rows: list[tuple[str, dict]]) -> Path:
    folder.mkdir()
    with open(folder / "per_example.jsonl", "w", encoding="utf-8") as fh:
        for i, (query, scores) in enumerate(rows):
            for stage in ("gold", "sft"):
                fh.write(json.dumps({"example": i, "dataset": "paqa", "stage": stage, "query": query,
                                     "scores": scores}) + "\n")
    return folder


def _compare(off: Path, on: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "bench" / "compare_guard.py"), str(off), str(on)],
                          capture_output=True, text=True, timeout=120)


def test_retry_takes_the_guarded_question_only_where_an_option_repeats(tmp_path):
    s = lambda rep, hal, use: {"repeats_option": rep, "hallucinated": hal, "useful_grounded": use}  # noqa: E731
    off = _run(tmp_path / "off", [("q0", s(1, 0, 0)), ("q1", s(0, 0, 1)), ("q2", s(0, 0, 0)), ("q3", s(1, 0, 0))])
    on = _run(tmp_path / "on", [("q0", s(0, 1, 0)), ("q1", s(0, 1, 0)), ("q2", s(0, 1, 0)), ("q3", s(0, 0, 1))])
    out = _compare(off, on)
    assert out.returncode == 0, out.stderr
    cells = {line.split("|")[3].strip(): [c.strip() for c in line.split("|")[5:-1]]
             for line in out.stdout.splitlines() if "| sft |" in line}
    # columns: rougeL grounded hallucinated repeats_option useful_grounded ... (absent ones read nan)
    assert cells["off"][2:5] == ["0.0", "50.0", "25.0"]
    assert cells["on"][2:5] == ["75.0", "0.0", "25.0"]
    assert cells["retry"][2:5] == ["25.0", "0.0", "50.0"]  # q0, q3 from on; q1, q2 kept from off


def test_runs_of_different_examples_are_refused(tmp_path):
    off = _run(tmp_path / "off", [("q0", {"repeats_option": 0})])
    on = _run(tmp_path / "on", [("another query", {"repeats_option": 0})])
    out = _compare(off, on)
    assert out.returncode != 0 and "different query" in out.stderr
