"""Which members `tts-eval` compares: run dirs (one group each) and loose checkpoints (grouped by folder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsrec.errors import UserError
from ttsrec.models.checkpoint import LoadedMember, load_members
from ttsrec.train.runfile import RUN_FILE, load_run, run_checkpoints


@dataclass
class MemberGroup:
    """Members evaluated together (one curve in the report)."""

    name: str
    members: list[LoadedMember]
    run: dict[str, Any] = field(default_factory=dict)
    """The run.json of a run dir ({} for loose checkpoints)."""

    @property
    def backbones(self) -> list[str]:
        return [m.backbone for m in self.members]

    @property
    def homogeneous(self) -> bool:
        return len(set(self.backbones)) == 1


def collect_groups(sources: list[Path]) -> list[MemberGroup]:
    """Load every member once; all of them must share one feature map (else a one-line error)."""
    if not sources:
        raise UserError("give at least one run dir or checkpoint")
    named: dict[str, list[Path]] = {}
    runs: dict[str, dict[str, Any]] = {}
    loose: dict[Path, str] = {}
    for src in map(Path, sources):
        if src.is_dir():
            name = _unique(src.resolve().name or "run", named)
            named[name] = run_checkpoints(src)
            runs[name] = load_run(src) if (src / RUN_FILE).is_file() else {}
        elif src.is_file():
            folder = src.resolve().parent
            if folder not in loose:
                loose[folder] = _unique(folder.name or "checkpoints", named)
                named[loose[folder]] = []
            named[loose[folder]].append(src)
        else:
            raise UserError(f"not found: {src}")
    flat = [p for paths in named.values() for p in paths]
    loaded = iter(load_members(flat))
    return [MemberGroup(name, [next(loaded) for _ in paths], runs.get(name, {}))
            for name, paths in named.items()]


def _unique(name: str, taken: dict[str, Any]) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    return out
