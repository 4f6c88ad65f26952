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
