"""The house's limits (issue 11): a thin CLI, short functions, few parameters, imports that
point down (no cycles), and the device half free of torch, timm and training."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edgeface_cam", "training")
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 12
MAX_CLI_LINES = 500

pytestmark = pytest.mark.device


def _modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``package``."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    return [n for n in names if n not in ("self", "cls")]


ALL = {name: path for pkg in PACKAGES for name, path in _modules(pkg).items()}


def test_the_cli_is_thin():
    lines = (ROOT / "edgeface_cam" / "cli.py").read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_CLI_LINES


@pytest.mark.parametrize("module", sorted(ALL))
def test_functions_are_short_and_take_few_parameters(module):
    tree = ast.parse(ALL[module].read_text(encoding="utf-8"))
    long = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines)" for f in _functions(tree)
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    wide = [f"{f.name} ({len(_parameters(f))} parameters)" for f in _functions(tree)
            if len(_parameters(f)) > MAX_PARAMETERS]
    assert not long and not wide, f"{module}: {long + wide}"


def _is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":`` (runs only as a script, where the module is __main__) or
    ``if TYPE_CHECKING:`` (never runs)."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
        return True
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__")


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``module`` imports, at any depth of its code (lazy imports count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip = {id(n) for top in ast.walk(tree) if _is_main_guard(top) for n in ast.walk(top)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if base in known:
                out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
    out.discard(module)
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_in_the_device_half():
    modules = _modules("edgeface_cam")
    graph = {m: _imports(m, p, set(modules)) for m, p in modules.items()}
    # A package's __init__ re-exporting its parts is not a cycle with those parts' imports of
    # each other, but a part importing its own package (the __init__) is.
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_device_half_never_imports_the_training_half():
    modules = _modules("edgeface_cam")
    for m, p in modules.items():
        text = p.read_text(encoding="utf-8")
        for banned in ("torch", "timm", "training"):
            assert f"import {banned}" not in text and f"from {banned}" not in text, (m, banned)
