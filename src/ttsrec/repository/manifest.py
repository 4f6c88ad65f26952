"""`tts_manifest.json`: what a repository holds and how it was checked, for people and tools.

Members (backbone, seed, cost, checkpoint sha256, parity figures), the M list, the flavour and
serving options, library versions; the bench and the client read it instead of guessing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ttsrec.errors import UserError
from ttsrec.repository import naming
from ttsrec.utils.versions import library_versions as versions_of

FORMAT = "ttsrec.repository/1"
SHARDS_FORMAT = "ttsrec.shards/1"
_PACKAGES = ("ttsrec", "torch", "onnx", "onnxruntime-gpu", "onnxruntime", "onnxconverter-common",
             "tritonclient", "nvidia-pytriton", "numpy")


def library_versions() -> dict[str, str]:
    """The versions a manifest records."""
    return versions_of(_PACKAGES)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(root: Path, skip: tuple[str, ...]) -> dict[str, str]:
    """The manifest's "files": sha256 of every file under `root` (relative posix path -> hex), except the
    top-level `skip` names; `ttsrec.serve.repo_check.verify_files` checks a repository against it."""
    hashes = {}
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in skip or "__pycache__" in path.parts:
            continue
        hashes[rel] = file_sha256(path)
    return hashes


def read_manifest(repo: Path) -> dict[str, Any]:
    """The manifest of an exported repository (a `UserError` if the folder is not one)."""
    return _read(Path(repo) / naming.MANIFEST_FILE, FORMAT, "exported repository (run tts-export)")


def read_shards(root: Path) -> dict[str, Any]:
    """`shards.json` of a `tts-export --shards K` output."""
    return _read(Path(root) / naming.SHARDS_FILE, SHARDS_FORMAT, "sharded export (tts-export --shards K)")


def _read(path: Path, fmt: str, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path.parent} is not an {what}: {path.name} is missing")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(body, dict) or body.get("format") != fmt:
        raise UserError(f"{path} is not a {fmt} file")
    return body
