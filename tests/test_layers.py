"""The package layering holds: every import points down (or within its own package), so there is no
package cycle, and only the CLI draws on the terminal (the libraries report through `Reporter`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ttsrec"

LAYERS: list[set[str]] = [
    {"errors"},
    {"utils"},
    {"repository"},  # Triton's formats: names, config.pbtxt, merge graphs, manifest
    {"ensemble"},  # the ensemble vocabulary: order, merges, metrics, sessions, modes, run folders
    {"data"},
    {"models"},
    {"train"},
    {"evaluate", "export", "serve", "client"},  # the stages, none importing another
    {"deploy"},  # generations: export into a served repository, rollout against running servers
    {"bench"},  # drives servers and clients
    {"experiments"},  # drive several stages (train + eval, export + bench)
    {"cli"},
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(line, module) of every absolute or relative import in a file, function-level ones included."""
    rel = path.relative_to(SRC)
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["ttsrec", *rel.parts[:-1]][: len(rel.parts) - node.level + 1]
                found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
            else:
                found.append((node.lineno, node.module or ""))
    return found


SOURCES = sorted(SRC.rglob("*.py"))


def test_every_package_has_a_layer() -> None:
    packages = {_package(p) for p in SOURCES} - {"__init__"}
    assert packages <= set(RANK), f"give these packages a layer: {sorted(packages - set(RANK))}"


def _upward(own: str, imports: list[tuple[int, str]]) -> list[str]:
    """Imports of another package at the same layer or above."""
    return [f"line {line}: {module}" for line, module in imports
            if module.startswith("ttsrec.") and (target := module.split(".")[1]) != own
            and RANK.get(target, len(LAYERS)) >= RANK[own]]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    own = _package(path)
    if own == "__init__":
        return
    upward = _upward(own, _imports(path))
    assert not upward, f"{own} (layer {RANK[own]}) imports a peer or a layer above: {upward}"


@pytest.mark.parametrize("path", [p for p in SOURCES if _package(p) != "cli"],
                         ids=lambda p: str(p.relative_to(SRC)))
def test_only_the_cli_draws_on_the_terminal(path: Path) -> None:
    drawing = [f"line {line}: {module}" for line, module in _imports(path)
               if module == "rich" or module.startswith(("rich.", "typer"))]
    assert not drawing, f"libraries report through ttsrec.utils.report.Reporter, not {drawing}"


def test_the_rule_catches_what_it_should() -> None:
    """Function-level and relative imports count; a peer stage, the CLI and an unknown package are up."""
    probe = SRC / "data" / "probe.py"
    imports = [(2, "ttsrec.cli.common"), (3, "ttsrec.export.writer"), (4, "ttsrec.data.split"),
               (5, "ttsrec.errors"), (6, "ttsrec.newthing")]
    assert _upward("data", imports) == ["line 2: ttsrec.cli.common", "line 3: ttsrec.export.writer",
                                        "line 6: ttsrec.newthing"]
    assert _upward("export", [(1, "ttsrec.evaluate.run"), (2, "ttsrec.ensemble.merge")]) == [
        "line 1: ttsrec.evaluate.run"]
    code = "from . import split\n\ndef f():\n    from ..cli.common import console\n"
    relative = _imports(probe, code)
    assert relative == [(1, "ttsrec.data"), (4, "ttsrec.cli.common")]
    assert _upward("data", relative) == ["line 4: ttsrec.cli.common"]


# -- no import cycle inside a package -----------------------------------------------------------------------


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = ["ttsrec", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SOURCES}


def _targets(module: str, names: list[str], known: set[str]) -> list[str]:
    """The modules an import statement depends on: `from pkg import sub` loads the module `pkg.sub` (a
    package being initialised still gives its submodules); `from pkg import name` reads `name` from `pkg`
    itself (its `__init__`), as `import pkg.mod` and `from pkg.mod import name` read `pkg.mod`."""
    subs = [f"{module}.{name}" for name in names if f"{module}.{name}" in known]
    reads_module = len(subs) < len(names) or not names
    return [*subs, *([module] if reads_module and module in known else [])]


def _import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """module -> the ttsrec modules it imports (module-level and function-level), from each file's text."""
    known = set(MODULES) | set(sources)
    graph: dict[str, set[str]] = {}
    for name, text in sources.items():
        path = MODULES.get(name) or SRC.joinpath(*name.split(".")[1:]).with_suffix(".py")
        edges: set[str] = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                edges.update(t for alias in node.names for t in _targets(alias.name, [], known))
            elif isinstance(node, ast.ImportFrom):
                (_, module), = _imports(path, ast.unparse(ast.Module([node], [])))
                edges.update(_targets(module, [alias.name for alias in node.names], known))
        graph[name] = {t for t in edges if t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module, as one cycle through it (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while (top := stack.pop()) != node:
                group.append(top)
            if group:
                groups.append([node, *group])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, set(group), min(group)) for group in groups]


def _one_cycle(graph: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside the group (breadth first)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        step = []
        for node in frontier:
            for nxt in sorted(graph.get(node, set()) & group):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    step.append(nxt)
        frontier = step
    return [start]


PACKAGES = sorted({_package(p) for p in SOURCES if (SRC / _package(p)).is_dir()})


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_a_package(package: str) -> None:
    """Function-level imports count too: a cycle hidden in a function is still a cycle."""
    prefix = f"ttsrec.{package}"
    inside = {name: path.read_text() for name, path in MODULES.items()
              if name == prefix or name.startswith(prefix + ".")}
    graph = {name: {t for t in edges if t in inside} for name, edges in _import_graph(inside).items()}
    cycles = _cycles(graph)
    assert not cycles, f"import cycles inside {package}/: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_rule_catches_module_and_function_level_cycles() -> None:
    probe = {
        "ttsrec.data.a": "from ttsrec.data import b\n",  # a submodule imported by name
        "ttsrec.data.b": "def f():\n    from .c import x\n",  # function level, relative
        "ttsrec.data.c": "import ttsrec.data.a\n",
        "ttsrec.data.d": "from ttsrec.data.a import thing\n",  # into the cycle, not part of it
    }
    graph = _import_graph(probe)
    assert graph["ttsrec.data.a"] == {"ttsrec.data.b"} and graph["ttsrec.data.b"] == {"ttsrec.data.c"}
    assert _cycles({k: v & set(probe) for k, v in graph.items()}) == [
        ["ttsrec.data.a", "ttsrec.data.b", "ttsrec.data.c", "ttsrec.data.a"]]
    assert _cycles({"x": {"y"}, "y": set()}) == []
