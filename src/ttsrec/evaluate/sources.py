"""Which members `tts-eval` compares: run dirs (one group each) and loose checkpoints (grouped by folder)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsrec.ensemble.runs import MEMBER_GLOB, RUN_FILE, SERIES_FILE, load_run, run_checkpoints
from ttsrec.errors import UserError
from ttsrec.models.checkpoint import LoadedMember, load_members


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

    @property
    def joint(self) -> bool:
        """Trained together (`tts-train --group`): evaluated only as a whole, at its own M."""
        return bool(self.run.get("group"))

    @property
    def series(self) -> str:
        """The curve a joint group belongs to: its group-series folder, else 'group runs'."""
        return str(self.run.get("_series", "group runs"))


def member_precision(member: LoadedMember, run: dict[str, Any]) -> str:
    """The precision a member was trained in (`tts-train --precision`): its run.json record, else its
    checkpoint's `train.precision`; files from before the flag were fp32."""
    for record in run.get("members", []):
        if record.get("file") == member.path.name:
            return str(record.get("precision", run.get("precision", "fp32")))
    if run.get("precision"):
        return str(run["precision"])
    import torch

    payload = torch.load(member.path, map_location="cpu", weights_only=True, mmap=True)
    return str((payload.get("train") or {}).get("precision", "fp32"))


def collect_groups(sources: list[Path]) -> list[MemberGroup]:
    """Load every member once; all of them must share one feature map (else a one-line error)."""
    if not sources:
        raise UserError("give at least one run dir or checkpoint")
    named: dict[str, list[Path]] = {}
    runs: dict[str, dict[str, Any]] = {}
    loose: dict[Path, str] = {}
    for src, series in _expand_series(map(Path, sources)):
        if src.is_dir():
            base = src.resolve().name or "run"
            name = _unique(f"{series}-{base}" if series else base, named)
            named[name] = run_checkpoints(src)
            runs[name] = load_run(src) if (src / RUN_FILE).is_file() else {}
            if series:
                runs[name]["_series"] = series
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


def _expand_series(sources) -> list[tuple[Path, str]]:
    """A `tts-train --group-series` folder (series.json, one run dir per M), or any folder that is not a
    run itself but holds run dirs, stands for those runs in order of M; each is its own group (a
    co-trained group is never subsetted)."""
    out: list[tuple[Path, str]] = []
    for src in sources:
        series = src / SERIES_FILE
        if src.is_dir() and series.is_file():
            try:
                runs = json.loads(series.read_text())["runs"]
                ordered = [src / runs[m] for m in sorted(runs, key=int)]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise UserError(f"cannot read {series}: {err}") from err
            out += [(p, src.resolve().name) for p in ordered]
            continue
        is_run = (src / RUN_FILE).is_file() or any(src.glob(MEMBER_GLOB))
        subruns = sorted(p for p in src.iterdir() if (p / RUN_FILE).is_file()) if src.is_dir() else []
        if src.is_dir() and not is_run and subruns:
            sized = sorted(subruns, key=lambda p: (len(load_run(p).get("members", [])), p.name))
            out += [(p, src.resolve().name) for p in sized]
        else:
            out.append((src, ""))
    return out


def _unique(name: str, taken: dict[str, Any]) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    return out
