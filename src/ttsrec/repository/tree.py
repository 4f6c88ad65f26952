"""A text tree of an exported repository (shown at the end of `tts-export`): one line per model."""

from __future__ import annotations

from pathlib import Path


def layout_tree(root: Path) -> str:
    """Model folders as one line each (their files, ONNX sizes), other folders (shards) expanded."""
    root = Path(root)
    return "\n".join([str(root), *_lines(root, "")])


def _lines(folder: Path, indent: str) -> list[str]:
    entries = sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name))
    lines: list[str] = []
    for k, path in enumerate(entries):
        last = k == len(entries) - 1
        branch, below = ("└── ", "    ") if last else ("├── ", "│   ")
        if path.is_dir() and (path / "config.pbtxt").is_file():
            files = "  ".join(_describe(f, path) for f in _entries(path))
            lines.append(f"{indent}{branch}{path.name}/  {files}")
        elif path.is_dir():
            lines.append(f"{indent}{branch}{path.name}/")
            lines.extend(_lines(path, indent + below))
        else:
            lines.append(f"{indent}{branch}{path.name} {size(path.stat().st_size)}")
    return lines


def _entries(model_dir: Path) -> list[Path]:
    """Files under a model folder, plus empty folders (an ensemble's `1/`)."""
    return sorted(p for p in model_dir.rglob("*") if "__pycache__" not in p.parts
                  and (p.is_file() or not any(p.iterdir())))


def _describe(path: Path, model_dir: Path) -> str:
    name = path.relative_to(model_dir).as_posix()
    if path.is_dir():
        return f"{name}/"
    return f"{name} {size(path.stat().st_size)}" if "model.onnx" in name else name


def size(num_bytes: int) -> str:
    """Decimal units, as `ls -h --si` and rich print them: 1.2 MB."""
    value = float(num_bytes)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
