"""The deploy state of a repository on disk: its manifest, written last and atomically, and the
leftovers an interrupted `tts-deploy add` may leave (removed before the next command starts)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ttsrec.errors import UserError
from ttsrec.repository import generations as gens
from ttsrec.repository import naming
from ttsrec.repository.manifest import file_hashes, read_manifest, read_shards
from ttsrec.utils.atomic import write_json


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def roots(repo: Path) -> list[Path]:
    """The repositories a deploy touches: `repo` itself, or each shard of a sharded export."""
    repo = Path(repo)
    if (repo / naming.SHARDS_FILE).is_file():
        shards = read_shards(repo)
        return [repo / s["path"] for s in shards["shards"]]
    if not (repo / naming.MANIFEST_FILE).is_file():
        raise UserError(f"{repo} is not an exported repository (no {naming.MANIFEST_FILE}; run tts-export)")
    return [repo]


def save(root: Path, manifest: dict[str, Any]) -> None:
    """The manifest with every file's sha256 recomputed (tts-serve's integrity check), atomically: this
    write is what makes a new generation or a rollout step exist."""
    body = {k: v for k, v in manifest.items() if k != "files"}
    body["files"] = file_hashes(root, skip=(naming.MANIFEST_FILE, "README.md"))
    write_json(Path(root) / naming.MANIFEST_FILE, body)


def load(root: Path) -> dict[str, Any]:
    return read_manifest(root)


def referenced(manifest: dict[str, Any]) -> dict[str, set[int]]:
    """Model folder -> the version folders some generation of `manifest` uses."""
    used: dict[str, set[int]] = {}
    for record in manifest.get(gens.GENERATIONS, []):
        for name, version in record["versions"].items():
            used.setdefault(name, set()).add(int(version))
        for name in record["ensembles"]:
            used.setdefault(name, set()).add(int(record["generation"]))
    return used


def clean_leftovers(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Remove what an interrupted add left: temp folders, version folders and model folders that no
    generation of the manifest names. Returns what was removed."""
    root = Path(root)
    removed: list[str] = []
    if not gens.has_generations(manifest):
        known = {p.name for p in root.iterdir() if (p / "config.pbtxt").is_file()}
        used = {name: {1} for name in known}
    else:
        used = referenced(manifest)
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        temp = path.name.startswith(".") and path.name.endswith(".tmp")
        if temp or path.name not in used:  # a half-placed model folder: no generation names it
            shutil.rmtree(path)
            removed.append(path.name)
            continue
        for sub in sorted(path.iterdir()):
            stale_tmp = sub.name.startswith(".") and sub.name.endswith(".tmp")
            stale_version = sub.name.isdigit() and int(sub.name) not in used[path.name]
            if sub.is_dir() and (stale_tmp or stale_version):
                shutil.rmtree(sub)
                removed.append(f"{path.name}/{sub.name}")
    return removed


def describe(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per generation: number, when made, members (changed ones marked), state."""
    live = gens.live_generation(manifest)
    rollout = manifest.get(gens.ROLLOUT) or {}
    rows = []
    for record in manifest.get(gens.GENERATIONS, []):
        n = record["generation"]
        state = "live" if n == live else "on disk"
        if rollout and n == rollout.get("to") and n != live:
            state = f"rolling out ({rollout.get('step')})"
        rows.append({"generation": n, "created": record.get("created", ""), "state": state,
                     "members": len(record.get("members", [])),
                     "new_members": sum(1 for m in record.get("members", []) if m.get("written")),
                     "models": len(record["versions"]) + len(record["ensembles"]),
                     "bytes_added": record.get("bytes_added", 0)})
    return rows


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
