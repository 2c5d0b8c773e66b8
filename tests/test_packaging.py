"""`pip install .` gives a racq that imports: the wheel declares the runtime stack and a [test]
extra, and the pinned lock of `make` (requirements*.txt) stays inside the declared ranges."""
from __future__ import annotations

import ast
import importlib.metadata as md
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

RUNTIME = ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "gguf", "gradio",
           "faiss-cpu", "sentence-transformers", "sqlite-utils", "typer", "pyyaml", "numpy"]
TEST_TOOLS = ["pytest", "playwright", "pytest-playwright"]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _declared(reqs: list[str]) -> dict[str, Requirement]:
    out = {}
    for line in reqs:
        r = Requirement(line)
        out[canonicalize_name(r.name)] = r
    return out


def _pins(name: str) -> tuple[dict[str, Version], list[str]]:
    """{package: pinned version} of one requirements file, and the files it includes with -r."""
    pins, includes = {}, []
    for raw in (ROOT / name).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r"):
            includes.append(line[2:].strip())
            continue
        r = Requirement(line)
        (spec,) = r.specifier  # a lock pins exactly one version
        assert spec.operator == "==", f"{name}: {line!r} is not a pin"
        pins[canonicalize_name(r.name)] = Version(spec.version)
    return pins, includes


@pytest.fixture(scope="module")
def metadata(tmp_path_factory):
    # Build from a copy so the test leaves no build/ or *.egg-info in the checkout.
    src = tmp_path_factory.mktemp("src")
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    shutil.copytree(ROOT / "racq", src / "racq", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "-w", str(out), str(src)],
                   check=True, timeout=120)
    (whl,) = out.glob("racq-*.whl")
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        ep = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        return Parser().parsestr(z.read(meta).decode()), z.read(ep).decode(), names


def test_wheel_declares_runtime_dependencies(metadata):
    msg, _, _ = metadata
    reqs = [Requirement(r) for r in msg.get_all("Requires-Dist") or []]
    runtime = {canonicalize_name(r.name): r for r in reqs if r.marker is None}
    missing = [p for p in RUNTIME if canonicalize_name(p) not in runtime]
    assert not missing, f"Requires-Dist lacks {missing}"
    assert runtime["torch"].specifier.contains("2.13.0") and not runtime["torch"].specifier.contains("3.0")
    for name, r in runtime.items():
        assert r.specifier, f"{name} has no version range"


def test_wheel_has_test_extra(metadata):
    msg, _, _ = metadata
    assert "test" in (msg.get_all("Provides-Extra") or [])
    reqs = [Requirement(r) for r in msg.get_all("Requires-Dist") or []]
    extra = {canonicalize_name(r.name) for r in reqs
             if r.marker is not None and r.marker.evaluate({"extra": "test"})
             and not r.marker.evaluate({"extra": ""})}
    assert set(TEST_TOOLS) <= extra
    runtime = {canonicalize_name(r.name) for r in reqs if r.marker is None}
    assert not runtime & set(TEST_TOOLS), "test tools must not be runtime dependencies"


def test_wheel_has_every_subpackage_and_the_script(metadata):
    _, entry_points, names = metadata
    assert "racq = racq.cli:main" in entry_points
    for init in (ROOT / "racq").rglob("__init__.py"):
        rel = init.relative_to(ROOT).as_posix()
        assert rel in names, f"{rel} is not in the wheel"


def test_lock_pins_lie_inside_the_declared_ranges():
    project = _project()
    ranges = _declared(project["dependencies"])
    pins, includes = _pins("requirements.txt")
    assert not includes
    assert set(pins) == set(ranges), (
        f"pinned but not declared: {sorted(set(pins) - set(ranges))}; "
        f"declared but not pinned: {sorted(set(ranges) - set(pins))}")
    bad = {n: f"{v} not in {ranges[n].specifier}" for n, v in pins.items()
           if not ranges[n].specifier.contains(v, prereleases=True)}
    assert not bad, bad


def test_test_lock_is_the_app_lock_plus_the_test_extra():
    test_ranges = _declared(_project()["optional-dependencies"]["test"])
    pins, includes = _pins("requirements-test.txt")
    assert includes == ["requirements.txt"]
    assert set(pins) == set(test_ranges) == {canonicalize_name(p) for p in TEST_TOOLS}
    app_pins, _ = _pins("requirements.txt")
    assert not set(app_pins) & set(TEST_TOOLS), "requirements.txt (make demo) must not install test tools"
    for n, v in pins.items():
        assert test_ranges[n].specifier.contains(v), f"{n} {v} not in {test_ranges[n].specifier}"


def test_every_third_party_import_is_declared():
    """A module that racq imports but does not declare works in .venv and breaks `pip install .`."""
    mods = set()
    for f in (ROOT / "racq").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    dists = md.packages_distributions()
    declared = set(_declared(_project()["dependencies"]))
    undeclared = {}
    for m in sorted(mods - set(sys.stdlib_module_names) - {"racq"}):
        owners = {canonicalize_name(d) for d in dists.get(m, [])}
        if not owners & declared:
            undeclared[m] = sorted(owners) or "not installed"
    assert not undeclared, f"imported but not in pyproject dependencies: {undeclared}"
