"""`tts-data prepare --executor ray`: the shard jobs of each pass as Ray tasks, over a cluster or a local
instance, writing the same bytes as the local path (`shard` holds the work; this module only schedules).

Every node must read the inputs and the output's parent folder at the same paths (shared storage: NFS,
a mounted bucket), as the tasks write their caches and rows into the run's temp folder there. A task
whose worker dies (crash, OOM kill, lost node) is retried by Ray (`max_retries`); its rerun rewrites the
same bytes. A bad input found by a task is the same one-line `UserError` as locally; anything else that
still fails after the retries is a `RuntimeFailure` naming the shard. On any failure the tasks still
running are cancelled before the temp folder goes, so nothing half-written remains.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ttsrec.data.shard import (
    FAIL_ONCE_ENV,
    CountJob,
    EncodeJob,
    ProcessStats,
    ReadJob,
    ShardCounts,
    ShardRead,
    count_shard,
    encode_shard,
    read_shard,
)
from ttsrec.errors import RuntimeFailure, UserError
from ttsrec.utils.ray_cluster import connect
from ttsrec.utils.report import Board, Task


class RayRunner:
    """Submits every shard of a pass at once; Ray runs as many as the cluster has CPUs for."""

    def __init__(self, address: str | None, workers: int | None, max_retries: int) -> None:
        self.address, self.max_retries, self.started_here = address, max_retries, False
        self.start_seconds = 0.0
        self.workers = workers or 0

    def __enter__(self) -> RayRunner:
        import ray

        started = time.perf_counter()
        self.started_here = connect(self.address, self.workers or None)
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self.start_seconds = time.perf_counter() - started
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started_here:
            import ray

            ray.shutdown()

    def read(self, jobs: list[ReadJob], board: Board) -> list[ShardRead]:
        task = board.task("pass 1/2 read (ray)", total=sum(j.shard.nbytes for j in jobs))
        return self._map(read_shard, [(j,) for j in jobs], [str(j.shard.file) for j in jobs],
                         lambda j: task.update(advance=jobs[j].shard.nbytes))

    def count(self, jobs: list[CountJob]) -> list[ShardCounts]:
        return self._map(count_shard, [(j,) for j in jobs], [f"shard {j.index}" for j in jobs])

    def encode(self, jobs: list[EncodeJob], vocab: list[list[str]], board: Board) -> list[ProcessStats]:
        import ray

        task: Task = board.task("pass 2/2 encode (ray)", total=len(jobs))
        shared = ray.put(vocab)  # once in the object store, not once per task
        return self._map(encode_shard, [(j, shared) for j in jobs], [f"shard {j.index}" for j in jobs],
                         lambda _: task.update(advance=1))

    def _map(self, fn: Callable[..., Any], args: list[tuple[Any, ...]], names: list[str],
             done: Callable[[int], None] | None = None) -> list[Any]:
        """Run `fn(*a)` for each `a` as a task; results in order. Ctrl-C or a failure cancels the rest."""
        import ray

        options: dict[str, Any] = {"num_cpus": 1, "max_retries": self.max_retries, "retry_exceptions": False}
        if os.environ.get(FAIL_ONCE_ENV):  # tests: reach workers started before the variable was set
            options["runtime_env"] = {"env_vars": {FAIL_ONCE_ENV: os.environ[FAIL_ONCE_ENV]}}
        remote = ray.remote(fn).options(**options)
        pending: dict[Any, int] = {}
        results: list[Any] = [None] * len(args)
        try:
            for i, a in enumerate(args):
                pending[remote.remote(*a)] = i
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    i = pending.pop(ref)
                    results[i] = self._get(ref, names[i])
                    if done:
                        done(i)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
        return results

    def _get(self, ref: Any, name: str) -> Any:
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, UserError | RuntimeFailure):
                raise err.cause from None
            raise RuntimeFailure(f"{name}: {_last_line(err)}") from None
        except ray.exceptions.RayError as err:
            raise RuntimeFailure(f"{name}: failed after {self.max_retries} retries "
                                 f"({_last_line(err)})") from None


def _last_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:200]
