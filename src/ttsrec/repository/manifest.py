"""`tts_manifest.json`: what a repository holds and how it was checked, for people and tools.

Members (backbone, seed, cost, checkpoint sha256, parity figures), the M list, the flavour and
serving options, library versions; the bench and the client read it instead of guessing.
"""

from __future__ import annotations

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
