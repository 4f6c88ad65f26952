"""`train_members`: a whole run (independent, parallel or group), resumable, one checkpoint per member."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from queue import Empty
from typing import Any

from ttsrec.ensemble.runs import RUN_FORMAT, SERIES_FILE, SERIES_FORMAT, load_run
from ttsrec.errors import UserError
from ttsrec.train.member import MemberJob, train_group, train_member
from ttsrec.train.options import TrainOptions
from ttsrec.train.progress import TrainProgress, train_progress
from ttsrec.train.runfile import environment, member_filename, now, prepare_out, write_run
from ttsrec.utils.atomic import atomic_write_text
from ttsrec.utils.report import SILENT, Reporter
from ttsrec.utils.threads import torch_threads

_QUEUE: Any = None
_DEVICE = "cpu"


def train_members(data_dir: Path, members_spec: str, out: Path, *, seeds: int | Sequence[int] | None = None,
                  group: bool = False, jobs: int = 1, threads: int | None = None, force: bool = False,
                  resume: bool = False, options: TrainOptions | None = None, reporter: Reporter = SILENT,
                  device: str = "cpu", extra: dict[str, Any] | None = None,
                  executor: str = "local", ray_address: str | None = None, max_retries: int = 2,
                  **option_fields: Any) -> Path:
    """Train the members of `members_spec` on prepared data into `out`; returns `out`.

    Each member's checkpoint is written atomically as soon as it is trained and `run.json` follows, so
    an interrupted run keeps what it finished (`resume=True` continues it). Options are a
    `TrainOptions` or its fields as keywords. `threads`: torch intra-op threads per training process
    (default: this process's setting, or cores // jobs per worker). `device`: cpu | cuda | cuda:N | auto
    (with several GPUs and jobs > 1, each worker process owns one GPU). `extra`: fields added to run.json.
    `executor="ray"`: each member is a Ray task (see train/ray_executor.py), retried `max_retries` times.
    """
    from ttsrec.data.prepared import PreparedData
    from ttsrec.models import parse_members, resolve_hparams

    options = options or TrainOptions(**option_fields)
    device, precision_note = _checked(options, jobs, threads, executor, max_retries, device)
    data = PreparedData(Path(data_dir))
    fmap = data.feature_map
    if isinstance(seeds, Sequence) and len(seeds) == 1:
        seeds = seeds[0]  # one value is a base seed
    pairs = parse_members(members_spec, seeds=seeds)
    options.check_hparams([b for b, _ in pairs])
    for backbone in dict.fromkeys(b for b, _ in pairs):  # bad values fail now, not mid-run
        resolve_hparams(backbone, fmap.num_fields, **options.hparams_for(backbone))
    out = Path(out)
    data_path = str(Path(data_dir).resolve())
    all_jobs = [MemberJob(i, b, s, data_path, str(out / member_filename(i, b, s)), options, device)
                for i, (b, s) in enumerate(pairs)]

    fresh = {"format": RUN_FORMAT, "members_spec": members_spec, "member_list": [list(p) for p in pairs],
             "group": group, "feature_map_hash": fmap.hash, "dataset_id": fmap.dataset_id,
             "data": {"dir": data_path,
                      "rows": {s: data.num_rows(s) for s in ("train", "valid", "test")}},
             "options": options.to_dict(), "device": device, "precision": options.precision,
             "data_order": options.data_order, **(extra or {}), "jobs": jobs, "threads": threads,
             "environment": environment(),
             "members": []}
    prepare_out(out, force=force, resume=resume)
    run = _resumed(out, fresh) if resume else None
    run = run or {**fresh, "started": now()}
    done = {m["index"] for m in run["members"]}
    todo = [j for j in all_jobs if j.index not in done]
    run["status"] = "running"
    run["device"] = device  # a resumed run may continue on another device
    write_run(out, run)

    if precision_note and todo:
        reporter.note(precision_note, "note")
    if group and jobs > 1:
        reporter.note("--jobs is ignored with --group (one optimiser trains all members)", "note")
    started = time.perf_counter()
    try:
        with train_progress(reporter, len(all_jobs), len(done)) as progress:
            _execute(all_jobs, todo, run, out, progress, group=group, jobs=jobs, threads=threads,
                     device=device, executor=executor, ray_address=ray_address, max_retries=max_retries)
    except BaseException as err:
        run["status"] = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        run["error"] = f"{type(err).__name__}: {err}"
        write_run(out, run)
        raise
    run["status"] = "complete"
    run["finished"] = now()
    run["train_time_s"] = round(run.get("train_time_s", 0.0) + time.perf_counter() - started, 3)
    write_run(out, run)
    return out


def _checked(options: TrainOptions, jobs: int, threads: int | None, executor: str, max_retries: int,
             device: str) -> tuple[str, str | None]:
    """Refuse bad run-level arguments before any work; the resolved device and a precision note."""
    from ttsrec.train.device import check_precision, resolve_device

    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    if executor not in ("local", "ray"):
        raise UserError(f"--executor expects local or ray, got {executor!r}")
    if executor == "ray":
        from ttsrec.utils.ray_cluster import require_ray

        require_ray()
    if max_retries < 0:
        raise UserError(f"--max-retries must be >= 0, got {max_retries}")
    device = "cuda" if executor == "ray" and device == "cuda" else resolve_device(device)
    return device, check_precision(options.precision, device)


def _execute(all_jobs: list[MemberJob], todo: list[MemberJob], run: dict[str, Any], out: Path,
             progress: TrainProgress, *, group: bool, jobs: int, threads: int | None, device: str,
             executor: str, ray_address: str | None, max_retries: int) -> None:
    """Train what is left: on Ray, as one group, in this process, or in `jobs` spawned processes."""
    for job in all_jobs:
        progress.label(job.index, f"{job.index:02d} {job.backbone} s{job.seed}")

    def finished(record: dict[str, Any]) -> None:
        run["members"] = sorted([*run["members"], record], key=lambda m: m["index"])
        write_run(out, run)
        progress.member_done(record["index"])

    if executor == "ray" and todo and not group:
        from ttsrec.train.ray_executor import run_on_ray

        gpus = 1.0 if device.startswith("cuda") else 0.0
        run_on_ray(todo, finished, address=ray_address, max_retries=max_retries,
                   cpus_per_member=float(threads or 1), gpus_per_member=gpus)
    elif group and todo:
        with torch_threads(threads):
            _run_group(all_jobs, run, progress, finished)
    elif jobs == 1 or len(todo) <= 1:
        with torch_threads(threads):
            for job in todo:
                finished(train_member(job, on_event=progress.callback(job.index)))
    else:
        _run_parallel(todo, min(jobs, len(todo)), threads, progress, finished, device)


def _resumed(out: Path, fresh: dict[str, Any]) -> dict[str, Any] | None:
    """The previous run.json, if it describes the same run; members whose file vanished are retrained."""
    if not (out / "run.json").is_file():
        return None
    old = load_run(out)
    for key in ("members_spec", "member_list", "group", "feature_map_hash", "options"):
        if old.get(key) != fresh[key]:
            raise UserError(f"cannot resume {out}: its {key} differs from this command's")
    old["members"] = [m for m in old.get("members", []) if (out / m["file"]).is_file()]
    if old["group"] and len(old["members"]) < len(fresh["member_list"]):
        old["members"] = []  # a group is trained as one; a partial group starts over
    old.pop("error", None)
    return old


def _run_group(jobs: list[MemberJob], run: dict[str, Any], progress: TrainProgress, finished) -> None:
    run["members"] = []
    progress.label(-1, f"group of {len(jobs)}")
    records, merged = train_group(jobs, on_event=progress.callback(-1))
    progress.member_done(-1, count=0)
    run["group_metrics"] = merged
    for record in records:
        finished(record)


def _worker_init(queue: Any, threads: int, devices: Any) -> None:
    import torch

    global _QUEUE, _DEVICE
    _QUEUE = queue
    _DEVICE = devices.get()  # each worker process owns one device for its life: one member per GPU at a time
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


def _worker_run(job: MemberJob) -> dict[str, Any]:
    job = replace(job, device=_DEVICE)
    return train_member(job, on_event=lambda kind, **fields: _QUEUE.put((job.index, kind, fields)))


def _run_parallel(todo: list[MemberJob], jobs: int, threads: int | None, progress: TrainProgress,
                  finished, device: str = "cpu") -> None:
    """Members in `jobs` spawned processes sharing the cores; finished ones are recorded even if one fails."""
    from ttsrec.train.device import member_devices

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    devices = ctx.Queue()
    for worker_device in member_devices(device, jobs):
        devices.put(worker_device)
    first_error: BaseException | None = None
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init,
                             initargs=(queue, threads or max(1, cpus // jobs), devices)) as pool:
        pending: set[Future] = {pool.submit(_worker_run, job) for job in todo}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(queue, progress)
                for future in done:
                    if future.cancelled():
                        continue
                    try:
                        finished(future.result())
                    except Exception as err:
                        first_error = first_error or err
                        for other in pending:
                            other.cancel()
        except BaseException:
            for other in pending:
                other.cancel()
            # No public way before Python 3.14 (terminate_workers): stop the running members now.
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            raise
        _drain(queue, progress)
    if first_error is not None:
        raise first_error


def _drain(queue: Any, progress: TrainProgress) -> None:
    while True:
        try:
            key, kind, fields = queue.get_nowait()
        except Empty:
            return
        progress.event(key, kind, fields)


def train_group_series(data_dir: Path, members_spec: str, out: Path, series: Sequence[int], *,
                       seeds: int | Sequence[int] | None = None, force: bool = False, resume: bool = False,
                       **kwargs: Any) -> Path:
    """The official heterogeneous group series: one jointly trained `--group` run of the first M members
    for every M in `series`, each into `out/m<M>/` (run.json `group_series_m: M`), listed in series.json."""
    from ttsrec.models import parse_members

    if isinstance(seeds, Sequence) and len(seeds) == 1:
        seeds = seeds[0]
    pairs = parse_members(members_spec, seeds=seeds)
    series = sorted(set(series))
    if not series or series[0] < 1 or series[-1] > len(pairs):
        raise UserError(f"--group-series needs sizes in 1..{len(pairs)} (the members of --members), "
                        f"got {','.join(map(str, series)) or 'none'}")
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not resume:
        if not force:
            raise UserError(f"{out} already exists (pass --force to replace it or --resume to continue it)")
        foreign = [p.name for p in out.iterdir()
                   if p.name != SERIES_FILE and not (p.is_dir() and p.name.startswith("m"))]
        if foreign:
            raise UserError(f"refusing to wipe {out}: it holds files a group series does not write "
                            f"({foreign[0]})")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {str(m): f"m{m}" for m in series}
    atomic_write_text(out / SERIES_FILE, json.dumps(
        {"format": SERIES_FORMAT, "members_spec": members_spec, "runs": runs}, indent=1) + "\n")
    for m in series:
        first = pairs[:m]
        train_members(data_dir, "+".join(b for b, _ in first), out / runs[str(m)],
                      seeds=[s for _, s in first], group=True, force=force, resume=resume,
                      extra={"group_series_m": m}, **kwargs)
    return out
