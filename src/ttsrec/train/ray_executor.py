"""`--executor ray`: each member is a Ray task; the driver writes every returned checkpoint and run.json.

The prepared data must sit on a path every node can read (shared storage: NFS, a mounted bucket); the
checkpoint travels back through Ray's object store, so the run dir only needs to exist on the driver.
Failed tasks are retried by Ray (`max_retries`, also on Python exceptions); a member that still fails is
reported by index and the others are kept. Ctrl-C cancels the tasks that have not finished.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ttsrec.errors import RuntimeFailure
from ttsrec.train.member import MemberJob, train_member
from ttsrec.utils.atomic import atomic_write_bytes
from ttsrec.utils.ray_cluster import connect

FAIL_ONCE_ENV = "TTSREC_TEST_FAIL_ONCE"
"""Tests only: a marker-file path; the first attempt that finds it missing creates it and raises."""


def _train_remote(job: MemberJob) -> tuple[dict[str, Any], bytes]:
    """Runs on a Ray worker: train into a private temp file and return (record, checkpoint bytes)."""
    import torch

    marker = os.environ.get(FAIL_ONCE_ENV)
    if marker and not Path(marker).exists():
        Path(marker).write_text("failed once\n")
        raise RuntimeError(f"injected first-attempt failure ({FAIL_ONCE_ENV})")
    if job.device.startswith("cuda"):
        job = replace(job, device="cuda:0")  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
    torch.set_num_threads(max(1, int(float(os.environ.get("OMP_NUM_THREADS", "1")))))
    with tempfile.TemporaryDirectory(prefix="ttsrec-ray-") as tmp:
        local = replace(job, path=str(Path(tmp) / Path(job.path).name))
        record = train_member(local)
        return record, Path(local.path).read_bytes()


def run_on_ray(todo: list[MemberJob], finished: Callable[[dict[str, Any]], None], *, address: str | None,
               max_retries: int, cpus_per_member: float, gpus_per_member: float,
               on_done: Callable[[int], None] | None = None) -> None:
    """Submit every member, record each as it returns; raise `RuntimeFailure` naming the members that
    failed after their retries (the finished ones are already written)."""
    import ray

    started_here = connect(address)
    remote = ray.remote(num_cpus=cpus_per_member, num_gpus=gpus_per_member, max_retries=max_retries,
                        retry_exceptions=True)(_train_remote)
    if os.environ.get(FAIL_ONCE_ENV):  # tests: the driver's setting reaches workers started before it
        remote = remote.options(runtime_env={"env_vars": {FAIL_ONCE_ENV: os.environ[FAIL_ONCE_ENV]}})
    pending: dict[Any, MemberJob] = {}
    failures: dict[int, str] = {}
    try:
        for job in todo:  # inside the try: a Ctrl-C while submitting cancels what was submitted
            pending[remote.remote(job)] = job
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in done:
                job = pending.pop(ref)
                try:
                    record, payload = ray.get(ref)
                except ray.exceptions.RayError as err:
                    failures[job.index] = str(err).strip().splitlines()[-1][:200]
                    continue
                atomic_write_bytes(Path(job.path), payload)
                finished(record)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
    if failures:
        shown = "; ".join(f"member {i}: {msg}" for i, msg in sorted(failures.items()))
        raise RuntimeFailure(f"{len(failures)} member(s) failed after {max_retries} retries ({shown})")
