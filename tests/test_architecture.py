"""Structural checks over racq/ (issue #14): where SQL lives, import cycles,
private names across modules, file and function length.

Pure `ast` over the source files: nothing in racq/ is imported, so the checks
run in well under a second and cannot be dodged by an import inside a function
(the module graph counts every import statement, wherever it sits)."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "racq"
MAX_FILE_LINES = 400
MAX_FUNC_LINES = 60
# a word-bounded SQL verb; strings outside racq/store/ that contain one are
# queries that belong behind the store's functions
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b")


def _files():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


MODULES = {_module_name(p): p for p in _files()}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve_from(name: str, node: ast.ImportFrom) -> str | None:
    """The absolute module a `from ... import` reads from (relative imports
    resolved against the importing module's package)."""
    if node.level == 0:
        return node.module
    base = name.split(".") if _is_package(name) else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _owner(dotted: str) -> str | None:
    """The racq module a dotted name lives in: the longest prefix that is a file."""
    parts = dotted.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in MODULES:
            return cand
        parts.pop()
    return None


def _imports(name: str, tree: ast.Module):
    """(target module, node) for every import of a racq module in `tree`,
    including the ones inside functions."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _owner(alias.name)
                if target:
                    yield target, node
        elif isinstance(node, ast.ImportFrom):
            src = _resolve_from(name, node)
            if not src or (src != "racq" and not src.startswith("racq.")):
                continue
            for alias in node.names:
                sub = f"{src}.{alias.name}"
                # `from racq.x import y` with y a submodule is an edge to racq.x.y
                target = sub if sub in MODULES else _owner(src)
                if target:
                    yield target, node


def _graph() -> dict[str, set[str]]:
    graph = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _ in _imports(name, _parse(path)):
            if target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of size > 1 (or a self loop), via networkx
    when it is there, else Tarjan's algorithm."""
    try:
        import networkx as nx
    except ImportError:
        nx = None
    if nx is not None:
        g = nx.DiGraph()
        g.add_nodes_from(graph)
        g.add_edges_from((a, b) for a, bs in graph.items() for b in bs)
        comps = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
        return sorted(comps)
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return sorted(comps)


def _cycle_edges(graph, comp):
    members = set(comp)
    return [f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in members]


def test_sql_only_in_store():
    bad = []
    for path in _files():
        if path.relative_to(PKG).parts[0] == "store":
            continue
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if SQL.search(node.value):
                    first = node.value.strip().splitlines()[0][:60]
                    bad.append(f"{_rel(path)}:{node.lineno}: {first!r}")
    assert not bad, "SQL outside racq/store/:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = _graph()
    comps = list(_cycles(graph))
    msg = "\n\n".join(
        "cycle among " + ", ".join(c) + ":\n  " + "\n  ".join(_cycle_edges(graph, c))
        for c in comps
    )
    assert not comps, "import cycles between racq modules:\n" + msg


def test_graph_sees_hidden_and_submodule_imports():
    """The graph builder itself: an import inside a function is an edge, and
    `from racq.x import y` with y a submodule is an edge to racq.x.y."""
    src = (
        "from racq.store import db\n"
        "def f():\n"
        "    import racq.config\n"
        "    from racq import store\n"
    )
    targets = {t for t, _ in _imports("racq.fake", ast.parse(src))}
    assert {"racq.store.db", "racq.config", "racq.store"} <= targets


def test_no_private_imports_across_modules():
    bad = []
    for name, path in MODULES.items():
        for node in ast.walk(_parse(path)):
            if not isinstance(node, ast.ImportFrom):
                continue
            src = _resolve_from(name, node)
            if not src or (src != "racq" and not src.startswith("racq.")):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and src != name:
                    bad.append(f"{_rel(path)}:{node.lineno}: from {src} import {alias.name}")
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


def test_file_length():
    bad = []
    for path in _files():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_FILE_LINES:
            bad.append(f"{_rel(path)}: {n} lines")
    assert not bad, f"files over {MAX_FILE_LINES} lines:\n" + "\n".join(bad)


def _long_ok(lines: list[str], node) -> bool:
    """A `# long:` comment with a reason on the def line or the line above."""
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    cands = {node.lineno, first - 1, node.lineno - 1}
    for ln in cands:
        if 1 <= ln <= len(lines):
            m = re.search(r"#\s*long:\s*(\S.*)", lines[ln - 1])
            if m:
                return True
    return False


def test_function_length():
    bad = []
    for path in _files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(_parse(path)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            n = node.end_lineno - first + 1
            if n > MAX_FUNC_LINES and not _long_ok(lines, node):
                bad.append(f"{_rel(path)}:{node.lineno}: {node.name} ({n} lines)")
    assert not bad, (
        f"functions over {MAX_FUNC_LINES} lines (split them, or put `# long: reason` "
        "on the def line or the line above):\n" + "\n".join(bad)
    )


# Import direction (docs/architecture.md): each module sits in one layer and imports only its own layer or
# the ones below. The most specific prefix decides a module's layer; a module in no layer fails the test,
# so a new module is placed on purpose.
LAYERS = [
    ("foundation", ["racq", "racq.config", "racq.files"]),
    ("data and models", ["racq.data", "racq.models", "racq.embedders", "racq.decoding", "racq.tiny"]),
    ("retrieval, scoring, prompts", ["racq.retrieval", "racq.scoring", "racq.evidence", "racq.prompts",
                                     "racq.corpus"]),
    ("generation and the query path", ["racq.generate", "racq.fastgen", "racq.multilora", "racq.drafting", "racq.attention",
                                       "racq.kvcache", "racq.vllmclient", "racq.vllmserve", "racq.coverage",
                                       "racq.service", "racq.queries", "racq.bestof"]),
    ("store and training", ["racq.store", "racq.train"]),
    ("evaluation and human feedback", ["racq.eval", "racq.annotation"]),
    ("the app", ["racq.ui"]),
    ("the command line", ["racq.cli"]),
]


def _layer(module: str) -> int | None:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if module == p or (p != "racq" and module.startswith(p + ".")):  # "racq": the package itself
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    return best and best[0]


def test_imports_point_down_the_layers():
    graph = _graph()
    unplaced = sorted(m for m in graph if _layer(m) is None)
    assert not unplaced, f"modules in no layer of LAYERS (place them): {unplaced}"
    up = [f"{a} ({LAYERS[_layer(a)][0]}) imports {b} ({LAYERS[_layer(b)][0]})"
          for a, targets in sorted(graph.items()) for b in sorted(targets) if _layer(b) > _layer(a)]
    assert not up, "imports from a higher layer:\n  " + "\n  ".join(up)


def test_layer_check_sees_an_upward_import():
    assert _layer("racq.scoring.options") < _layer("racq.eval.run") < _layer("racq.cli.ask")
    assert _layer("racq.data.core") == _layer("racq.data") and _layer("racq.nothing_here") is None
