"""`train_distilled`: a run of students trained on a teacher run's merged logit (`tts-train --distill-from`).

The run-level half of distillation: checks the flags, loads the teacher, writes (or reuses) its cached
training-row logits and hands the students to `train_members` with `options.distill` set. The member-level
half (the teacher term of the loss, the batches) is train/distill.py, which train/member.py imports; this
module imports both, nothing imports it but the CLI, so train/ has no import cycle.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ttsrec.errors import UserError
from ttsrec.train.distill import (
    CACHE_PREFIX,
    SHARED_PREFIX,
    _cache_rows,
    cache_key,
    load_teacher,
    student_hparams,
    teacher_metrics,
    write_teacher_logits,
)
from ttsrec.train.options import TrainOptions
from ttsrec.train.run import train_members
from ttsrec.utils.report import SILENT, Reporter
from ttsrec.utils.threads import torch_threads


def train_distilled(data_dir: Path, members_spec: str, out: Path, distill_from: Path | None, *,
                    m: int | None = None, alpha: float | None = None, temperature: float | None = None,
                    width_mult: float | None = None, calibrate: bool | None = None,
                    cache_dir: Path | None = None, options: TrainOptions | None = None,
                    force: bool = False, resume: bool = False, group: bool = False,
                    series: list[int] | None = None, threads: int | None = None, device: str = "cpu",
                    reporter: Reporter = SILENT, **train_kwargs: Any) -> Path:
    """Train the student(s) of `members_spec` on the merged logit of run `distill_from` into run `out`.

    The student run is a normal run (any `train_members` keyword passes through); the teacher's logits
    are cached in `cache_dir` (kept, shared by later students of the same teacher and data) or, by
    default, in a temp file in `out` that is removed when the run completes. `calibrate`: the teacher's
    probability is sigmoid(a * logit + b) with (a, b) fitted on the validation split (briefly trained
    members are under-confident, so their raw merged probability is nearly constant). Returns `out`.
    """
    from ttsrec.data.prepared import PreparedData
    from ttsrec.models import parse_members
    from ttsrec.train.device import resolve_device
    from ttsrec.train.runfile import prepare_out

    alpha, temperature, width_mult = _checked(distill_from, m, alpha, temperature, width_mult, calibrate,
                                              cache_dir, group or bool(series))
    assert distill_from is not None  # _checked refused None
    options = options or TrainOptions()
    data = PreparedData(Path(data_dir))
    teacher = load_teacher(Path(distill_from), data, m)
    seeds = train_kwargs.get("seeds")
    if isinstance(seeds, list) and len(seeds) == 1:
        seeds = seeds[0]  # one value is a base seed, as in train_members
    pairs = parse_members(members_spec, seeds=seeds)
    hparams, inherited = student_hparams([b for b, _ in pairs], teacher, options, width_mult,
                                         data.feature_map.num_fields)
    rows = data.num_rows("train") if options.train_limit is None else min(data.num_rows("train"),
                                                                           options.train_limit)
    key = cache_key(teacher, data, rows)
    out = Path(out)
    if out.resolve() == Path(teacher["run"]):
        raise UserError(f"--out {out} is the teacher run; the student needs its own run folder")
    shared = cache_dir is not None
    name = f"{SHARED_PREFIX if shared else CACHE_PREFIX}m{teacher['m']}_{key}.npy"
    cache = (Path(cache_dir) if shared else out).resolve() / name
    started = time.perf_counter()
    teacher_device = "cpu" if train_kwargs.get("executor") == "ray" else resolve_device(device)
    with torch_threads(threads):  # validation and test: the record (and the calibration), read only
        report = teacher_metrics(teacher["models"], data, options.valid_limit, device=teacher_device)
    scale, offset = report.pop("calibration") if calibrate else (1.0, 0.0)
    distill = {"run": teacher["run"], "m": teacher["m"], "members": teacher["files"],
               "backbones": teacher["backbones"], "feature_map_hash": teacher["feature_map_hash"],
               "alpha": alpha, "temperature": temperature, "width_mult": width_mult,
               "calibration": {"scale": scale, "offset": offset, "fitted_on": "valid"} if calibrate else None,
               "hparams_from": inherited, "rows": rows, "key": key, "cache": str(cache)}
    report.pop("calibration", None)
    options = replace(options, hparams=hparams, distill=distill)

    prepare_out(out, force=force, resume=resume)  # before the cache lands in it; train_members then resumes
    reused = _teacher_cache(teacher, data, rows, cache, teacher_device, threads, reporter)
    teacher_s = round(time.perf_counter() - started, 3)
    fitted = f", calibrated {scale:.2f} * logit {offset:+.3f}" if calibrate else ""
    reporter.note(f"teacher M={teacher['m']}: valid AUC {report['valid']['auc']:.4f}, test AUC "
                  f"{report['test']['auc']:.4f} ({'cached' if reused else 'new'} logits, {teacher_s:.1f} s"
                  f"{fitted})")
    del teacher["models"]
    extra = {"distilled_from": {**distill, "teacher_metrics": report, "teacher_time_s": teacher_s}}
    train_members(data_dir, members_spec, out, options=options, resume=True, force=False, group=False,
                  threads=threads, device=device, reporter=reporter, extra=extra, **train_kwargs)
    if not shared:
        cache.unlink(missing_ok=True)
    return out


def _checked(distill_from: Path | None, m: int | None, alpha: float | None, temperature: float | None,
             width_mult: float | None, calibrate: bool | None, cache_dir: Path | None,
             grouped: bool) -> tuple[float, float, float]:
    """The flags' values with their defaults (alpha 0.5, T 1, width 1), or one-line refusals."""
    flags = {"--distill-m": m, "--distill-alpha": alpha, "--distill-temperature": temperature,
             "--width-mult": width_mult, "--distill-calibrate": calibrate or None,
             "--distill-cache": cache_dir}
    if distill_from is None:
        given = next(flag for flag, value in flags.items() if value is not None)
        raise UserError(f"{given} needs --distill-from RUN (the teacher run)")
    alpha = 0.5 if alpha is None else float(alpha)
    temperature = 1.0 if temperature is None else float(temperature)
    width_mult = 1.0 if width_mult is None else float(width_mult)
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"--distill-alpha must be within 0..1, got {alpha}")
    if not temperature > 0:
        raise UserError(f"--distill-temperature must be > 0, got {temperature}")
    if not width_mult > 0:
        raise UserError(f"--width-mult must be > 0, got {width_mult}")
    if grouped:
        raise UserError("--distill-from trains independent students; it does not combine with --group or "
                        "--group-series")
    return alpha, temperature, width_mult


def _teacher_cache(teacher: dict[str, Any], data, rows: int, cache: Path, device: str, threads: int | None,
                   reporter: Reporter) -> bool:
    """Write the teacher's training-row logits to `cache` unless a complete one is there (True: reused)."""
    with torch_threads(threads):
        if cache.is_file() and _cache_rows(cache) == rows:
            return True
        reporter.note(f"teacher: mean logit of {teacher['m']} member(s) of {teacher['run']} on "
                      f"{rows:,} training rows")
        write_teacher_logits(teacher["models"], data, rows, cache, device=device)
    return False
