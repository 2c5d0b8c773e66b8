"""Study files (racq.annotation.study, `--study`): a valid one changes what the real app serves (guidelines, skip
reasons, button labels, its own database, no reveal), and every kind of bad file is refused before a
server starts, naming the file and the key.

    .venv/bin/pytest -q tests/test_study.py        # ~20 s, most of it the app starting
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apphelpers import (APP_ENV, REPO, STAGE_WORDS, AppServer, CallFailed, Rest, rows, shown_token, synthetic_pool,
                        write_config)
from racq.store import open_db
from racq.annotation.study import OUTCOME_LABELS, SKIP_REASONS, StudyConfig, StudyError, load_study
from racq.ui import AppConfig, annotate, apply_study

GUIDE = "# Pilot guidelines\n\nPrefer the question whose options **all** appear in the passages (marker 7f3a).\n"
LABELS = {"left": "A is better", "right": "B is better", "tie": "Tie", "both_bad": "Both bad"}
REASONS = ["off topic", "too long to read"]


def _study(folder: Path, text: str, name: str = "study.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "guide.md").write_text(GUIDE, encoding="utf-8")
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _components(url: str) -> dict[str, dict]:
    """elem_id -> props of every component in the page config the browser gets."""
    with urllib.request.urlopen(url + "config", timeout=10) as r:
        config = json.loads(r.read())
    return {c["props"]["elem_id"]: c["props"] for c in config["components"] if c.get("props", {}).get("elem_id")}


def test_a_study_file_sets_what_the_served_app_shows_and_where_votes_go(tmp_path):
    folder = tmp_path / "pilot"
    study = _study(folder, "name: Pilot study\nguidelines: guide.md\n"
                           f"skip_reasons: {json.dumps(REASONS)}\noutcome_labels: {json.dumps(LABELS)}\n"
                           "overlap: 0.0\nreveal_after_vote: false\ndb: votes/pilot.db\n")
    db = folder / "votes" / "pilot.db"  # relative to the study file, not to the cwd
    synthetic_pool(open_db(db), 3)
    config = write_config(tmp_path / "app.yaml", adapters_dir=tmp_path / "adapters", base_model=tmp_path / "no-model",
                          check_index=False, preload=False)  # no db here: the study owns it
    with AppServer(config, tmp_path / "app.log", extra_args=["--study", str(study)]) as app:
        comps = _components(app.url)
        assert {k: comps[f"vote-{k.replace('both_', '')}"]["value"] for k in LABELS} == {
            o: f"{LABELS[o]} [{key}]" for o, key in zip(LABELS, "1234")}
        assert [c[0] for c in comps["ann-skip-reason"]["choices"]] == REASONS
        assert "marker 7f3a" in comps["ann-guidelines"]["value"]
        assert "Faithful" not in comps["ann-guidelines"]["value"]  # not the default guidelines
        assert "Pilot study" in comps["ann-study"]["value"]

        rest, session = Rest(app.url), uuid.uuid4().hex
        token = shown_token(rest.call("annotate_sign_in", ["ana", ""], session))
        out = json.dumps(rest.call("annotate_left", [token, "", None], session))
        assert "recorded: A is better" in out  # the label as is: "A" is not lowered
        assert not STAGE_WORDS.search(out)  # reveal_after_vote: false
        token = shown_token(json.loads(out))
        with pytest.raises(CallFailed, match=r"not in the list of choices: \['off topic', 'too long to read'\]"):
            rest.call("annotate_skip", [token, "", SKIP_REASONS[0]], session)  # a default this study lacks
        out = json.dumps(rest.call("annotate_skip", [token, "", REASONS[1]], session))
        assert f"recorded: skipped ({REASONS[1]})" in out
        token = shown_token(json.loads(out))
        assert "recorded: tie" in json.dumps(rest.call("annotate_tie", [token, "", None], session))
        rest.close()
    votes = rows(db, "SELECT outcome, skip_reason FROM votes ORDER BY id")
    assert votes == [{"outcome": "left", "skip_reason": None}, {"outcome": "skip", "skip_reason": REASONS[1]},
                     {"outcome": "tie", "skip_reason": None}]  # stored outcomes, whatever the buttons said
    assert rows(db, "SELECT COUNT(*) AS n FROM reveals")[0]["n"] == 0
    # the server's own check (racq.ui.annotate.vote) uses the study's reasons too, not the defaults
    assert "skip reasons" in annotate.check_vote_inputs(None, None, SKIP_REASONS[0], reasons=REASONS)
    assert annotate.check_vote_inputs(None, None, REASONS[0], reasons=REASONS) is None


def test_a_study_without_db_gets_its_own_database_beside_it(tmp_path):
    study = load_study(_study(tmp_path / "s", "outcome_labels: {tie: Same}\n", name="pilot-2.yaml"))
    assert study.db == str((tmp_path / "s" / "pilot-2.db").resolve())
    assert study.outcome_labels == {**OUTCOME_LABELS, "tie": "Same"}  # left out: the defaults
    assert study.skip_reasons == SKIP_REASONS and study.overlap == 0.2 and study.reveal_after_vote is True
    cfg, same = apply_study(AppConfig(study=str(tmp_path / "s" / "pilot-2.yaml")))
    assert cfg.db == study.db and same == study
    # no study: the app's own settings, as before
    cfg = AppConfig(db=str(tmp_path / "x.db"), overlap=0.5)
    assert apply_study(cfg) == (cfg, StudyConfig(db=cfg.db, overlap=0.5, reveal_after_vote=True))
    shipped = load_study(REPO / "annotations" / "study.example.yaml")
    assert Path(shipped.guidelines) == REPO / "annotations" / "guidelines.md" and shipped.name


BAD = [  # (study file text, the key the error names, a fragment of what it says)
    ("colour: red\n", "colour", "unknown key; the keys are name, guidelines"),
    ("guidelines: missing.md\n", "guidelines", "missing.md does not exist"),
    ("guidelines: .\n", "guidelines", "is not a file"),
    ("skip_reasons: []\n", "skip_reasons", "the list is empty"),
    ("skip_reasons: one reason\n", "skip_reasons", "expected a list of texts, got str"),
    ("skip_reasons: [ok, 3]\n", "skip_reasons", "entry 2: expected text, got int"),
    ("skip_reasons: [ok, ok]\n", "skip_reasons", "lists a reason twice"),
    (f"skip_reasons: [{'x' * 201}]\n", "skip_reasons", "201 characters; the store keeps at most 200"),
    ("outcome_labels: [A, B]\n", "outcome_labels", "expected a mapping of outcome -> button text, got list"),
    ("outcome_labels: {up: Up}\n", "outcome_labels", "unknown outcome(s) up; the outcomes are left, right"),
    ("outcome_labels: {left: ''}\n", "outcome_labels", "left: expected the button text, got an empty string"),
    ("outcome_labels: {left: Same, right: same}\n", "outcome_labels", "two buttons would read the same"),
    ("overlap: lots\n", "overlap", "expected a number from 0 to 1, got str"),
    ("overlap: true\n", "overlap", "expected a number from 0 to 1, got bool"),
    ("overlap: 1.5\n", "overlap", "must be within [0, 1], got 1.5"),
    ("reveal_after_vote: 'no'\n", "reveal_after_vote", "expected true or false, got str"),
    ("name: 3\n", "name", "expected text, got int"),
    ("db: .\n", "db", "is a folder; name the database file"),
    ("db: 7\n", "db", "expected a file path, got int"),
]


@pytest.mark.parametrize("text,key,fragment", BAD, ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(BAD)])
def test_each_bad_study_file_is_refused_naming_file_and_key(tmp_path, text, key, fragment):
    path = _study(tmp_path, text)
    with pytest.raises(StudyError) as e:
        load_study(path)
    assert str(e.value).startswith(f"{path}: {key}: ") and fragment in str(e.value), str(e.value)


def test_a_file_that_is_no_study_at_all_says_so(tmp_path):
    for text, says in (("a: [1\n", "not valid YAML"), ("- a\n- b\n", "expected a mapping of study settings, got list")):
        with pytest.raises(StudyError, match=says):
            load_study(_study(tmp_path, text))
    with pytest.raises(StudyError, match="cannot read the study file"):
        load_study(tmp_path / "none.yaml")
    # every problem at once, one line each, so one edit fixes the file
    path = _study(tmp_path, "skip_reasons: []\noverlap: 2\nshade: x\n")
    with pytest.raises(StudyError) as e:
        load_study(path)
    assert [line.split(": ")[1] for line in str(e.value).splitlines()] == ["skip_reasons", "overlap", "shade"]


def test_study_settings_set_twice_are_refused(tmp_path):
    path = _study(tmp_path, "overlap: 0.5\n")
    with pytest.raises(StudyError, match=r"overlap \(the study: 0.5, the app settings: 0.9\).*set them there"):
        apply_study(AppConfig(study=str(path), overlap=0.9))
    with pytest.raises(StudyError, match="db "):
        apply_study(AppConfig(study=str(path), db=str(tmp_path / "other.db")))
    assert apply_study(AppConfig(study=str(path), overlap=0.5))[0].overlap == 0.5  # the same value is no clash


def test_app_py_and_racq_app_stop_on_a_bad_study_before_serving(tmp_path, monkeypatch):
    path = _study(tmp_path, "skip_reasons: []\ndb: never.db\n")
    out = subprocess.run([sys.executable, "app.py", "--study", str(path), "--port", "1"], cwd=REPO,
                         env={**os.environ, **APP_ENV}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and f"error: {path}: skip_reasons: the list is empty" in out.stderr, out.stderr
    from racq.cli import app
    import racq.ui

    def served(*a, **kw):  # reaching the server is the failure this test looks for
        raise AssertionError("the app was launched with a bad study file")

    monkeypatch.setattr(racq.ui, "launch", served)
    result = CliRunner().invoke(app, ["app", "--study", str(path)])
    assert result.exit_code == 2 and "skip_reasons: the list is empty" in result.output, result.output
    assert not (tmp_path / "never.db").exists()  # nothing was created for a study that did not start
