"""A study: one YAML file + one database. The file says what annotators see (guidelines, skip reasons,
the text on the vote buttons) and how items are served (overlap, reveal after the vote); `db` is the
study's own database, so two studies never mix their votes.

    racq app --study annotations/study.example.yaml
    python app.py --study my-study.yaml

    from racq.annotation.study import load_study
    study = load_study("annotations/study.example.yaml")   # StudyConfig, or StudyError naming file and key

Every key is optional (the defaults are the app's behaviour without a study file); an unknown key, a
wrong type, an empty skip-reason list or a guidelines file that is not there is a StudyError listing
every problem as `FILE: KEY: what is wrong`, raised before the app starts. Relative paths (guidelines,
db) are read from the study file's folder, so a study folder can be moved as a whole.

Button labels are display text only: a vote is stored as its fixed outcome (left, right, tie,
both_bad; racq.store.VOTE_OUTCOMES), whatever its button said, so studies with different labels
rate and export alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from racq.config import REPO_ROOT, helpfield
from racq.store.votes import MAX_SKIP_REASON_CHARS, WITHDRAWN

GUIDELINES = REPO_ROOT / "annotations" / "guidelines.md"
SKIP_REASONS = ["passages do not help", "I do not understand the query", "questions say the same thing",
                "cannot judge / other"]
# stored outcome -> the text on its button (the screen appends the key, e.g. " [1]")
OUTCOME_LABELS = {"left": "Left is better", "right": "Right is better", "tie": "Both good / tie",
                  "both_bad": "Both bad"}
MAX_LABEL_CHARS = 60  # a button label; longer ones wrap the vote row


class StudyError(ValueError):
    """A study file is unusable; the message names the file and each bad key."""


@dataclass
class StudyConfig:
    name: str = helpfield("", "The study's name, shown above the Annotate sign-in (empty: none).")
    guidelines: str = helpfield(str(GUIDELINES), "Markdown file of the annotation guidelines, one click away "
                                                 "on the Annotate screen (relative: from the study file's folder).")
    skip_reasons: list[str] = helpfield(SKIP_REASONS, "Reasons an annotator picks from to skip an item (at "
                                                      f"least one, each 1-{MAX_SKIP_REASON_CHARS} characters, "
                                                      "no repeats); stored with the skip.")
    outcome_labels: dict[str, str] = helpfield(OUTCOME_LABELS, "Text of the vote buttons per stored outcome "
                                                               "(left, right, tie, both_bad); keys left out "
                                                               "keep their default. Display only: the vote is "
                                                               "stored as the outcome.")
    overlap: float = helpfield(0.2, "Share (0-1) of annotated items that the sampler gets a second annotator "
                                    "for (agreement); it targets a share of doubly judged items, not a number "
                                    "of annotators per item.")
    reveal_after_vote: bool = helpfield(True, "After a vote, show which stages wrote the two questions (the "
                                              "annotator then never sees those two questions again).")
    db: str = helpfield("", "This study's database: one per study (relative: from the study file's folder; "
                            "empty: <study file name>.db beside the study file).")

    def label(self, outcome: str) -> str:
        """The button text of `outcome` ('skip' -> 'skipped'; an unknown outcome as it is stored)."""
        return {**OUTCOME_LABELS, **self.outcome_labels, "skip": "skipped"}.get(outcome, outcome)

    def guidelines_text(self) -> str:
        try:
            return Path(self.guidelines).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            # only the default can be missing here: a study's file is checked when it is loaded
            return f"Guidelines are missing ({self.guidelines})."


FIELDS = {f.name: f for f in dataclasses.fields(StudyConfig)}


def _text(value, what: str = "text") -> str | None:
    """What is wrong with `value` as one non-empty line of text, or None."""
    if not isinstance(value, str):
        return f"expected {what}, got {_kind(value)}"
    if not value.strip():
        return f"expected {what}, got an empty string"
    return None


def _kind(value) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _check_reasons(value) -> str | None:
    if not isinstance(value, list):
        return f"expected a list of texts, got {_kind(value)}"
    if not value:
        return "the list is empty: annotators need at least one reason to skip an item"
    for i, reason in enumerate(value):
        if bad := _text(reason):
            return f"entry {i + 1}: {bad}"
        if len(reason) > MAX_SKIP_REASON_CHARS:
            return f"entry {i + 1} has {len(reason)} characters; the store keeps at most {MAX_SKIP_REASON_CHARS}"
        if reason == WITHDRAWN:
            return f"entry {i + 1} is the reason the app itself records for withdrawn items; pick another text"
    if len(set(value)) < len(value):
        return "lists a reason twice"
    return None


def _check_labels(value) -> str | None:
    if not isinstance(value, dict):
        return f"expected a mapping of outcome -> button text, got {_kind(value)}"
    unknown = sorted(str(k) for k in value if k not in OUTCOME_LABELS)
    if unknown:
        return f"unknown outcome(s) {', '.join(unknown)}; the outcomes are {', '.join(OUTCOME_LABELS)}"
    for outcome, label in value.items():
        if bad := _text(label, "the button text"):
            return f"{outcome}: {bad}"
        if len(label) > MAX_LABEL_CHARS:
            return f"{outcome}: {len(label)} characters; at most {MAX_LABEL_CHARS} fit on a button"
    shown = {**OUTCOME_LABELS, **value}.values()
    if len({s.strip().casefold() for s in shown}) < len(OUTCOME_LABELS):
        return f"two buttons would read the same: {', '.join(shown)}"
    return None


def _check_path(key: str, value, folder: Path) -> tuple[object, str | None]:
    if bad := _text(value, "a file path"):
        return value, bad
    path = (folder / Path(value).expanduser()).resolve()
    if key == "db":
        return str(path), f"{path} is a folder; name the database file" if path.is_dir() else None
    if not path.is_file():
        return value, f"{path} is not a file" if path.exists() else f"{path} does not exist"
    try:
        path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return value, f"{path} cannot be read as UTF-8 text ({e})"
    return str(path), None


def _check_overlap(value) -> tuple[object, str | None]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value, f"expected a number from 0 to 1, got {_kind(value)}"
    return float(value), None if 0.0 <= value <= 1.0 else f"must be within [0, 1], got {value}"


def _check_name(value) -> str | None:
    return None if isinstance(value, str) else f"expected text, got {_kind(value)}"


def _check_flag(value) -> str | None:
    return None if isinstance(value, bool) else f"expected true or false, got {_kind(value)}"


CHECKS = {"name": _check_name, "skip_reasons": _check_reasons, "outcome_labels": _check_labels,
          "reveal_after_vote": _check_flag}


def _check(key: str, value, folder: Path) -> tuple[object, str | None]:
    """(the value to use, what is wrong with it or None) for one key of a study file."""
    if key in ("guidelines", "db"):
        return _check_path(key, value, folder)
    if key == "overlap":
        return _check_overlap(value)
    bad = CHECKS[key](value)
    if key == "outcome_labels" and not bad:
        value = {**OUTCOME_LABELS, **{k: v.strip() for k, v in value.items()}}
    return value, bad


def load_study(path: str | Path) -> StudyConfig:
    """The study in `path` (see the module docstring); StudyError listing every problem otherwise."""
    path = Path(path).expanduser()
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise StudyError(f"{path}: cannot read the study file ({e})") from None
    except yaml.YAMLError as e:
        raise StudyError(f"{path}: not valid YAML: {e}") from None
    loaded = {} if loaded is None else loaded
    if not isinstance(loaded, dict):
        raise StudyError(f"{path}: expected a mapping of study settings, got {type(loaded).__name__}")
    folder = path.resolve().parent
    if loaded.get("db") == "":
        del loaded["db"]  # empty means the default, as the field's help says
    values, problems = {}, []
    for key, value in loaded.items():
        if key not in FIELDS:
            problems.append(f"{path}: {key}: unknown key; the keys are {', '.join(FIELDS)}")
            continue
        values[key], bad = _check(key, value, folder)
        if bad:
            problems.append(f"{path}: {key}: {bad}")
    if problems:
        raise StudyError("\n".join(problems))
    values.setdefault("db", str(folder / f"{path.stem}.db"))
    return StudyConfig(**values)
