"""The one reader of a `tts-train` run folder: every stage that takes "a run" (export, eval, the
experiments) gets its member checkpoints from here, in member order (run.json's, else file names), so
the same members get the same positions everywhere. `ttsrec.train.runfile` writes what this reads.

A run folder holds `run.json` (format `ttsrec.run/1`) and `member_XX_<backbone>_s<seed>.pt`; a
`--group-series` folder holds `series.json` and one run folder per M.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttsrec.errors import UserError

RUN_FORMAT = "ttsrec.run/1"
RUN_FILE = "run.json"
SERIES_FILE = "series.json"
SERIES_FORMAT = "ttsrec.series/1"
MEMBER_GLOB = "member_*.pt"


def load_run(run_dir: Path) -> dict[str, Any]:
    """The parsed `run.json` of a run folder; a one-line error when it is missing or not one."""
    path = Path(run_dir) / RUN_FILE
    try:
        run = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from err
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
        raise UserError(f"{path} is not a ttsrec run file (expected format {RUN_FORMAT})")
    return run


def run_checkpoints(run_dir: Path) -> list[Path]:
    """The member checkpoints of a run folder in member order (run.json's, else file names)."""
    run_dir = Path(run_dir)
    if (run_dir / RUN_FILE).is_file():
        files = [run_dir / m["file"] for m in load_run(run_dir).get("members", [])]
        files = [f for f in files if f.is_file()]
    else:
        files = sorted(run_dir.glob(MEMBER_GLOB))
    if not files:
        raise UserError(f"{run_dir} holds no member checkpoints ({MEMBER_GLOB})")
    return files


def expand_checkpoints(paths: Sequence[Path | str]) -> list[Path]:
    """Files as given; a folder (a `tts-train` run) stands for its members in member order."""
    files: list[Path] = []
    for path in map(Path, paths):
        files.extend(run_checkpoints(path) if path.is_dir() else [path])
    if not files:
        raise UserError("no checkpoints given")
    if len({f.resolve() for f in files}) != len(files):
        raise UserError("the same checkpoint is given twice")
    return files


def run_data_dir(folder: Path) -> Path | None:
    """The prepared data folder a run's `run.json` names, if it records one."""
    if not (Path(folder) / RUN_FILE).is_file():
        return None
    try:
        data_dir = json.loads((Path(folder) / RUN_FILE).read_text()).get("data", {}).get("dir")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return Path(data_dir) if isinstance(data_dir, str) else None
