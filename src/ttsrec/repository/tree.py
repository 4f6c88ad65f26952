"""A rich tree of an exported repository (printed at the end of `tts-export`)."""

from __future__ import annotations

from pathlib import Path

from rich.filesize import decimal
from rich.tree import Tree


def layout_tree(root: Path, max_depth: int = 4) -> Tree:
    """Folders first, then files with their sizes; `model.onnx` folders (external data) included."""
    root = Path(root)
    tree = Tree(f"[bold]{root}[/]")
    _fill(tree, root, max_depth)
    return tree


def _fill(node: Tree, folder: Path, depth: int) -> None:
    entries = sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name))
    for path in entries:
        if path.is_dir():
            child = node.add(f"[cyan]{path.name}/[/]")
            if depth > 1:
                _fill(child, path, depth - 1)
        else:
            node.add(f"{path.name} [dim]{decimal(path.stat().st_size)}[/]")
