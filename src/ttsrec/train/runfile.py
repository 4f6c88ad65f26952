"""Writing `run.json` (`ttsrec.ensemble.runs` reads it): what a training run is and how far it got,
rewritten after every finished member.

Fields other stages read (format `ttsrec.run/1`):
- `group` (bool): members trained jointly (one loss on the merged logit).
- `group_series_m` (int | absent): set on each run of a `--group-series` folder: this run is the jointly
  trained group of the first M members of `members_spec`.
- `device` ("cpu", "cuda:0", ...), `precision` ("fp32" | "bf16" | "fp16"), `data_order`
  ("fixed" | "per-seed"): how it was trained; checkpoints record the same under `train`.
- `members[i].still_improving` (bool): its best state was the last validation check of the last epoch
  ("still improving at the epoch cap": more epochs would probably help).
- `members[i].stop_reason`: why it stopped, a key of `train.fit.STOP_REASONS` ("patience",
  "epoch_cap_improving", "epoch_cap"); `group_metrics.stop_reason` for a group. Absent in older runs.

A `--group-series` output folder holds `series.json` (`{"format": "ttsrec.series/1",
"runs": {"<M>": "m<M>"}}`) and one ordinary run dir `m<M>/` (with its own run.json) per M.
"""

from __future__ import annotations

import json
import platform
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ttsrec.ensemble.runs import RUN_FILE
from ttsrec.errors import UserError
from ttsrec.utils.atomic import atomic_write_text
from ttsrec.utils.common import usable_cores


def member_filename(index: int, backbone: str, seed: int) -> str:
    return f"member_{index:02d}_{backbone}_s{seed}.pt"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def environment() -> dict[str, Any]:
    import torch

    return {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpus": usable_cores()}


def write_run(out: Path, run: dict[str, Any]) -> None:
    atomic_write_text(Path(out) / RUN_FILE, json.dumps(run, indent=1) + "\n")


def prepare_out(out: Path, *, force: bool, resume: bool) -> None:
    """Create the run dir; an existing one needs --force (wiped, if it only holds run files) or --resume."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not resume:
        if not force:
            raise UserError(f"{out} already exists (pass --force to replace it or --resume to continue it)")
        foreign = [p.name for p in out.iterdir() if not _is_run_file(p)]
        if foreign:
            raise UserError(f"refusing to wipe {out}: it holds files a run does not write ({foreign[0]})")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _is_run_file(path: Path) -> bool:
    name = path.name
    return path.is_file() and (name == RUN_FILE or name.startswith((".member_", ".run.json"))
                               or (name.startswith("member_") and name.endswith(".pt")))
