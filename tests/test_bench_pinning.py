"""`tts-bench --pin-cores`: core-set planning without a server, then real pinned shard servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ttsrec.bench import pinning
from ttsrec.bench.row import Row
from ttsrec.bench.sweep import Sweep, SweepConfig
from ttsrec.errors import UserError
from ttsrec.export.writer import ExportConfig
from ttsrec.serve.server import parse_cpu_list, process_cpus

SHORT = "-p 200 --max-trials 3 -s 90 --warmup-request-count 5"


def test_core_sets_split_the_usable_cores_evenly() -> None:
    assert pinning.core_sets(2, [0, 1]) == [[0], [1]]
    assert pinning.core_sets(3, range(8)) == [[0, 1], [2, 3], [4, 5]]  # cores // K each, the rest unused
    assert pinning.core_sets(2, [7, 3, 5]) == [[3], [5]]  # the ids this process may use, in order
    assert pinning.core_sets(1, [4, 5]) == [[4, 5]]
    assert pinning.core_sets(1) == [sorted(os.sched_getaffinity(0))]  # default: this process's cores
    with pytest.raises(UserError, match="3 shard servers need at least 3 cores"):
        pinning.core_sets(3, [0, 1])
    with pytest.raises(UserError):
        pinning.core_sets(0, [0, 1])


def test_cpu_list_format() -> None:
    assert parse_cpu_list("0-2,5\n") == [0, 1, 2, 5]
    assert parse_cpu_list("3") == [3]
    assert process_cpus(os.getpid()) == sorted(os.sched_getaffinity(0))
    assert process_cpus(2**22 + 12345) is None  # no such process


def _row(mode: str, p50: float, p99: float, model: str = "", batch: int = 1) -> Row:
    return Row(mode=mode, m=2, batch=batch, concurrency=1, throughput=1.0, avg_us=p50, p50_us=p50,
               p90_us=p99, p95_us=p99, p99_us=p99, stable=True, client_cpu=0.0, requests=10, windows=3,
               model=model)


def test_compare_takes_the_slowest_shard_alone_as_the_one_server() -> None:
    rows = [_row("sharded", 1200.0, 3000.0), _row("sharded", 5e3, 9e3, batch=64), _row("fused", 1.0, 2.0)]
    shard_rows = [_row("shard", 1000.0, 2000.0, "shard 0"), _row("shard", 900.0, 2500.0, "shard 1")]
    (entry,) = pinning.compare(rows, shard_rows, cores_per_server=1)  # batch 64 has no shard rows
    assert entry["shards"] == 2 and entry["cores_per_server"] == 1 and entry["single_server"] == "shard 0"
    assert entry["single_p50_us"] == 1000.0 and entry["single_p99_us"] == 2000.0
    assert entry["p50_ratio"] == pytest.approx(1.2) and entry["fanout_overhead_us"] == pytest.approx(200.0)


def test_intra_op_threads_are_read_from_the_configs(tmp_path: Path) -> None:
    for name, threads in (("member_00", 1), ("fused_sum", 3)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.pbtxt").write_text(
            f'parameters {{\n  key: "intra_op_threads"\n  value {{\n    string_value: "{threads}"\n  }}\n}}\n'
        )
    assert pinning.intra_op_threads(tmp_path) == 3
    notes = pinning.plan_notes([[0], [1]], [tmp_path])
    assert notes["cores_per_server"] == 1 and "time-share" in notes["warning"]


def test_pin_cores_needs_servers_it_starts(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--pin-cores needs --mode sharded"):
        Sweep(SweepConfig(modes=["ensemble"], pin_cores=True, repository=tmp_path))
    with pytest.raises(UserError, match="--pin-cores needs --mode sharded"):
        Sweep(SweepConfig(modes=["sharded"], pin_cores=True, shard_urls=["127.0.0.1:1"], repository=tmp_path))


# -- real servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(member_checkpoints: list[Path], prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Path:
    from ttsrec.export import export_repository

    root = tmp_path_factory.mktemp("pinning")
    return export_repository(member_checkpoints[:2], root / "shards", config=ExportConfig(shards=2),
                             data=prepared_dir)


@pytest.mark.slow
def test_server_and_its_stubs_run_on_the_given_cores(shards: Path) -> None:
    from ttsrec.serve import TritonServer

    before = os.sched_getaffinity(0)
    last = max(before)
    with pytest.raises(UserError, match="not a non-empty subset"):
        TritonServer(shards / "shard_00", cpus=[last + 1000])
    with TritonServer(shards / "shard_00", cpus=[last]) as server:
        seen = server.affinity()
        stubs = server.stub_pids()
        assert stubs and set(seen) == {server.pid, *stubs}
        assert all(process_cpus(pid) == [last] for pid in seen)  # read from /proc, not from our own record
        tasks = list(Path(f"/proc/{server.pid}/task").iterdir())  # every thread of the server, too
        assert all(parse_cpu_list(_allowed(t / "status")) == [last] for t in tasks)
    assert os.sched_getaffinity(0) == before  # the launching thread got its own cores back


def _allowed(status: Path) -> str:
    line = next(x for x in status.read_text().splitlines() if x.startswith("Cpus_allowed_list:"))
    return line.split(":", 1)[1]


def _bench(args: str, cwd: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    cmd = [*prefix, sys.executable, "-m", "ttsrec.cli.bench", *args.split()]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=400)


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two pinned shard servers need two cores")
def test_pin_cores_rows_and_affinity(shards: Path, tmp_path: Path) -> None:
    base = f"--mode sharded --repository {shards / 'shard_00'} --shards-repository {shards} --pin-cores"
    done = _bench(f"{base} -b 1,64 {SHORT} --json {tmp_path}/r.json --markdown {tmp_path}/r.md", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    pinned = report["notes"]["pinning"]
    sets = pinning.core_sets(2)
    assert pinned["core_sets"] == sets and pinned["cores_per_server"] == len(sets[0])
    for shard, cpus in zip(pinned["affinity"], sets, strict=True):
        assert shard["cpus"] == cpus and shard["stub_pids"]  # servers and stubs checked while running
    entries = report["summary"]["parallel_servers"]
    assert sorted(e["batch"] for e in entries) == [1, 64]
    for e in entries:
        assert e["shards"] == 2 and e["sharded_p50_us"] > 0 and e["single_p50_us"] > 0
        assert e["fanout_overhead_us"] == pytest.approx(e["sharded_p50_us"] - e["single_p50_us"])
    assert len(report["shard_rows"]) == 4  # each shard alone, at both batch sizes
    assert "Parallel servers (--pin-cores)" in (tmp_path / "r.md").read_text()

    one_core = _bench(f"{base} -b 1 {SHORT}", tmp_path, prefix=("taskset", "-c", str(sets[0][0])))
    assert one_core.returncode == 2 and "need at least 2 cores" in one_core.stderr
    assert len(one_core.stderr.strip().splitlines()) == 1
