"""A rich tree of an exported repository (printed at the end of `tts-export`): one line per model."""

from __future__ import annotations

from pathlib import Path

from rich.filesize import decimal
from rich.tree import Tree


def layout_tree(root: Path) -> Tree:
    """Model folders as one line each (their files and sizes), other folders (shards) expanded."""
    root = Path(root)
    tree = Tree(f"[bold]{root}[/]")
    _fill(tree, root)
    return tree


def _fill(node: Tree, folder: Path) -> None:
    for path in sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name)):
        if path.is_dir() and (path / "config.pbtxt").is_file():
            node.add(f"[cyan]{path.name}/[/]  " + "  ".join(_describe(f, path) for f in _entries(path)))
        elif path.is_dir():
            _fill(node.add(f"[cyan]{path.name}/[/]"), path)
        else:
            node.add(f"{path.name} [dim]{decimal(path.stat().st_size)}[/]")


def _entries(model_dir: Path) -> list[Path]:
    """Files under a model folder, plus empty folders (an ensemble's `1/`)."""
    return sorted(p for p in model_dir.rglob("*") if "__pycache__" not in p.parts
                  and (p.is_file() or not any(p.iterdir())))


def _describe(path: Path, model_dir: Path) -> str:
    name = path.relative_to(model_dir).as_posix()
    if path.is_dir():
        return f"{name}/"
    return f"{name} [dim]{decimal(path.stat().st_size)}[/]" if "model.onnx" in name else name
