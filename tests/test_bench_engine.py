"""The measurement engine, perf_analyzer plumbing and derived figures: fast, no server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from ttsrec.bench import analysis, perf_analyzer
from ttsrec.bench.load import AsyncLoad, ThreadLoad
from ttsrec.bench.measure import Latency, MeasureSettings, Window, is_stable, measure
from ttsrec.bench.roofline import Roofline
from ttsrec.bench.row import PA_COLUMNS, Row
from ttsrec.bench.server_stats import critical_path, model_times, parse_statistics
from ttsrec.cli.bench import parse_concurrency, parse_int_list
from ttsrec.errors import RuntimeFailure, UserError

FAST = MeasureSettings(window_ms=150, stability_pct=50.0, max_trials=6, warmup_requests=3)


def test_latency_percentiles_are_nearest_rank() -> None:
    lat = Latency.of(np.arange(1, 101) * 1000)  # 1..100 µs
    assert (lat.p50, lat.p90, lat.p95, lat.p99) == (50.0, 90.0, 95.0, 99.0)
    assert lat.avg == pytest.approx(50.5)
    assert lat.metric(None) == lat.avg and lat.metric(99) == 99.0


def test_stability_needs_three_close_windows() -> None:
    settings = MeasureSettings(stability_pct=10.0)

    def w(tput: float, lat: float) -> Window:
        return Window(10, 1.0, tput, Latency(lat, lat, lat, lat, lat))

    assert not is_stable([w(100, 10), w(100, 10)], settings)
    assert is_stable([w(50, 99), w(100, 10), w(105, 10.5), w(100, 10)], settings)
    assert not is_stable([w(100, 10), w(120, 10), w(100, 10)], settings)
    assert not is_stable([w(100, 10), w(100, 12), w(100, 10)], settings)
    assert (
        is_stable([w(100, 10), w(100, 12), w(100, 10)], MeasureSettings(stability_pct=10.0, percentile=None))
        is False
    )


def test_thread_load_keeps_n_requests_in_flight() -> None:
    """A 5 ms service at concurrency 4 and batch 8: Little's law ties throughput to latency."""
    load = ThreadLoad(lambda k: time.sleep(0.005))
    result = measure(load, concurrency=4, batch=8, settings=FAST, label="sleep")
    assert result.latency.p50 >= 5000  # µs: never faster than the service
    little = 4 * 8 / (result.latency.avg / 1e6)  # rows/s if 4 requests are always in flight
    assert 0.7 * little < result.throughput < 1.3 * little
    assert result.latency.p50 <= result.latency.p99
    assert len(result.windows) >= 3 and result.requests > 0
    assert result.client_cpu < 50  # sleeping threads cost (almost) no CPU


def test_async_load_and_snapshots_bracket_the_reported_windows() -> None:
    async def setup():
        async def send(k: int) -> None:
            await asyncio.sleep(0.002)

        async def close() -> None:
            return None

        return send, close

    calls = []

    def snapshot() -> int:
        calls.append(1)
        return len(calls)

    result = measure(
        AsyncLoad(setup), concurrency=8, batch=1, settings=FAST, snapshot=snapshot, label="async"
    )
    assert result.latency.p50 >= 2000
    assert 0.7 < result.throughput * result.latency.avg / 1e6 / 8 < 1.3  # 8 always in flight
    assert result.server_after - result.server_before == 3  # three windows apart


def test_failing_requests_become_one_line_errors() -> None:
    def send(k: int) -> None:
        raise RuntimeError("model 'x' is not ready\nsecond line")

    with pytest.raises(RuntimeFailure, match=r"request failed: model 'x' is not ready$"):
        measure(ThreadLoad(send), 2, 1, FAST, label="broken")

    def refused(k: int) -> None:
        raise UserError("bad shape")

    with pytest.raises(UserError, match=r"request failed: bad shape$"):
        measure(ThreadLoad(refused), 1, 1, FAST, label="refused")


# -- perf_analyzer -----------------------------------------------------------------------------------

PA_CSV = """Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,\
Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,\
p50 latency,p90 latency,p95 latency,p99 latency
4,1053.2,20,450,310,15,2800,12,9,3500,4900,5600,7900
1,965.1,18,300,40,14,640,10,8,980,1500,1700,2010
"""


def test_parse_perf_analyzer_csv() -> None:
    rows = perf_analyzer.parse_csv(
        PA_CSV, mode="ensemble", m=4, batch=1, protocol="grpc", model="ensemble_m4"
    )
    assert [r.concurrency for r in rows] == [1, 4]  # perf_analyzer does not sort its rows
    first = rows[0]
    assert first.throughput == pytest.approx(965.1)
    assert (first.p50_us, first.p99_us) == (980, 2010)
    assert first.server_queue_us == 40 and first.server_compute_infer_us == 640
    assert first.avg_us == pytest.approx(18 + 300 + 40 + 14 + 640 + 10 + 8)
    assert first.engine == "perf_analyzer" and first.mode == "ensemble" and first.m == 4
    assert list(first.csv_record())[3 : 3 + len(PA_COLUMNS)] == list(PA_COLUMNS)


def test_parse_rejects_a_foreign_csv() -> None:
    with pytest.raises(RuntimeFailure, match="lacks columns"):
        perf_analyzer.parse_csv("a,b\n1,2\n", mode="fused", m=1, batch=1, protocol="grpc", model="fused_m1")


def test_perf_analyzer_input_data_is_valid_json_of_rows() -> None:
    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    body = json.loads(json.dumps(perf_analyzer.input_data(ids)))
    assert body == {
        "data": [{"feat_ids": {"content": list(range(i * 4, i * 4 + 4)), "shape": [4]}} for i in range(3)]
    }


def test_perf_analyzer_command_uses_its_flags(tmp_path) -> None:
    settings = MeasureSettings(
        window_ms=2000, stability_pct=25, max_trials=7, percentile=95, warmup_requests=10
    )
    cmd = perf_analyzer.command(
        "pa",
        "ensemble_m8",
        "127.0.0.1:8001",
        "grpc",
        64,
        4,
        settings,
        tmp_path / "in.json",
        tmp_path / "out.csv",
    )
    text = " ".join(cmd)
    for part in (
        "-m ensemble_m8",
        "-u 127.0.0.1:8001",
        "-i grpc",
        "-b 64",
        "--concurrency-range 4:4",
        "-p 2000",
        "-s 25",
        "--max-trials 7",
        "--percentile 95",
        "--warmup-request-count 10",
        f"--input-data {tmp_path / 'in.json'}",
        f"-f {tmp_path / 'out.csv'}",
    ):
        assert part in text


def test_missing_perf_analyzer_is_a_one_line_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("TTSREC_PERF_ANALYZER", str(tmp_path / "absent"))
    with pytest.raises(UserError, match="perf_analyzer is not installed"):
        perf_analyzer.find_perf_analyzer()


def test_perf_analyzer_is_found_in_the_install_cache(monkeypatch, tmp_path) -> None:
    binary = tmp_path / "bin" / "perf_analyzer"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.delenv("TTSREC_PERF_ANALYZER", raising=False)
    monkeypatch.setenv("TTSREC_PERF_ANALYZER_DIR", str(tmp_path))
    assert perf_analyzer.find_perf_analyzer() == str(binary)


# -- server statistics and derived figures -----------------------------------------------------------


def _stats(counts: dict[str, tuple[int, int, int]]) -> dict:
    """name -> (count, queue ns, infer ns), in the gRPC as_json shape (int64 as strings)."""
    return {
        "model_stats": [
            {
                "name": name,
                "version": "1",
                "inference_stats": {
                    "success": {"count": str(c), "ns": "0"},
                    "queue": {"count": str(c), "ns": str(q)},
                    "compute_input": {"count": str(c), "ns": "0"},
                    "compute_infer": {"count": str(c), "ns": str(i)},
                    "compute_output": {"count": str(c), "ns": "0"},
                },
            }
            for name, (c, q, i) in counts.items()
        ]
    }


def test_server_times_are_deltas_and_ensembles_take_the_critical_path() -> None:
    before = parse_statistics(_stats({"member_00": (10, 0, 0), "member_01": (10, 0, 0), "merge": (10, 0, 0)}))
    after = parse_statistics(
        _stats(
            {
                "member_00": (20, 10_000, 50_000),
                "member_01": (20, 20_000, 90_000),
                "merge": (20, 1_000, 5_000),
            }
        )
    )
    one = model_times(before, after, "member_00")
    assert (one.queue, one.compute_infer) == (1.0, 5.0)  # µs per request
    path = critical_path(before, after, ["member_00", "member_01"], ["merge"])
    assert path.queue == pytest.approx(2.1) and path.compute_infer == pytest.approx(9.5)
    assert model_times(before, after, "missing") is None


def memory_only(bandwidth: float) -> Roofline:
    """A roofline with no cache: every floor reads from memory at `bandwidth`."""
    return Roofline(cache_bytes=0, threads=2, read_bw_memory=bandwidth, memory_buffer_bytes=1 << 28,
                    read_bw_cached={}, ort_macs={"fp32": 1e11, "int8": 1e12},
                    torch_macs={"fp32": 1e11, "bf16": 5e11})


def _row(mode: str, m: int, batch: int, conc: int, tput: float, p50: float = 100.0, model: str = "") -> Row:
    return Row(
        mode=mode,
        m=m,
        batch=batch,
        concurrency=conc,
        throughput=tput,
        avg_us=p50,
        p50_us=p50,
        p90_us=p50,
        p95_us=p50,
        p99_us=p50,
        stable=True,
        client_cpu=1.0,
        model=model,
    )


def test_summary_figures() -> None:
    rows = [
        _row("ensemble", 1, 256, 4, 16000),
        _row("ensemble", 16, 256, 4, 800),
        _row("fused", 16, 256, 4, 900),
        _row("inprocess_fused", 16, 256, 4, 1000),
        _row("fused", 16, 1, 1, 100, p50=3000),
        _row("sharded", 4, 1, 1, 100, p50=2500),
    ]
    shards = [
        _row("shard", 4, 1, 1, 100, p50=2000, model="a"),
        _row("shard", 4, 1, 1, 100, p50=2200, model="b"),
    ]
    summary = analysis.summarise(rows, shards, {16: 160_000_000}, memory_only(25e9))
    (eff,) = summary["scaling_efficiency"]
    assert eff["efficiency"] == pytest.approx(16 * 800 / 16000)
    (ratio,) = summary["serving_ratio"]
    assert ratio["best_mode"] == "fused" and ratio["ratio"] == pytest.approx(0.9)
    (floor,) = summary["bandwidth_floor"]
    assert floor["floor_us"] == pytest.approx(6400) and floor["ratio"] == pytest.approx(3000 / 6400)
    assert floor["weights_in"] == "memory"
    (fan,) = summary["fanout_overhead"]
    assert fan["overhead_us"] == pytest.approx(300) and fan["slowest_shard"] == "b"


# -- command line ------------------------------------------------------------------------------------


def test_list_and_range_parsing() -> None:
    assert parse_concurrency("1:8:2") == [1, 3, 5, 7]  # linear, as perf_analyzer
    assert parse_concurrency("2:4") == [2, 3, 4]
    assert parse_concurrency("1,2,4,8") == [1, 2, 4, 8]
    assert parse_int_list("1, 64,256", "-b") == [1, 64, 256]
    for bad in ("0:4", "4:1", "a:b", "1:2:3:4"):
        with pytest.raises(UserError):
            parse_concurrency(bad)
    with pytest.raises(UserError):
        parse_int_list("1,x", "-b")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mode", "turbo"], "unknown mode turbo"),
        (["--concurrency-range", "8:1"], "--concurrency-range"),
        (["-b", "0"], "-b/--batch-size"),
        (["--engine", "perf_analyzer", "--mode", "fused"], "perf_analyzer is not installed"),
        (["--repository", "no/such/repo", "--mode", "fused"], "model repository not found"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str, tmp_path) -> None:
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "TTSREC_PERF_ANALYZER": str(tmp_path / "none")}
    done = subprocess.run(
        [sys.executable, "-m", "ttsrec.cli.bench", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len([ln for ln in done.stderr.splitlines() if ln.strip()]) <= 2


def test_reports_from_rows(tmp_path) -> None:
    import polars as pl

    from ttsrec.bench.report import markdown, plot, write_csv
    from ttsrec.bench.sweep import SweepConfig, SweepResult
    from ttsrec.utils.atomic import write_json

    rows = [
        _row(mode, m, b, 1, 1000.0 / m, p50=100.0 * m)
        for mode in ("fused", "inprocess_fused")
        for m in (1, 2, 4)
        for b in (1, 64)
    ]
    result = SweepResult(
        config=SweepConfig(modes=["fused", "inprocess"]),
        rows=rows,
        shard_rows=[],
        roofline=memory_only(25e9),
        weight_bytes={1: 10_000_000, 2: 20_000_000, 4: 40_000_000},
        accuracy=[{"m": 1, "model": "fused_m1", "rows": 10, "auc": 0.7, "logloss": 0.5}],
        manifest=None,
        notes={},
    )
    write_csv(tmp_path / "r.csv", rows)
    frame = pl.read_csv(tmp_path / "r.csv")
    assert frame.columns[:4] == ["mode", "m", "batch", "Concurrency"] and frame.height == len(rows)
    write_json(tmp_path / "r.json", result.to_json(), default=str)
    body = json.loads((tmp_path / "r.json").read_text())
    assert body["summary"]["bandwidth_floor"][0]["floor_us"] == pytest.approx(400.0)
    plot(tmp_path / "r.png", rows)
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    text = markdown(result)
    assert "| fused | fp32 | native | 4 | 64 | 1 | 250 |" in text
    assert "Scaling efficiency" in text and "| 0.7000 |" in text


# -- precision, frontier, budget ------------------------------------------------------------------------


def _acc_row(mode: str, m: int, precision: str, throughput: float, p99_us: float) -> Row:
    return Row(mode=mode, m=m, batch=1, concurrency=1, throughput=throughput, avg_us=p99_us / 2,
               p50_us=p99_us / 2, p90_us=p99_us, p95_us=p99_us, p99_us=p99_us, stable=True, client_cpu=1.0,
               precision=precision, repository=f"repo_{precision}")


def test_frontier_and_budget_pick_the_best_auc_within_the_p99_budget(tmp_path) -> None:
    from ttsrec.bench.frontier import best_within, frontier_points, plot_frontier

    rows = [
        _acc_row("fused", 1, "fp32", 1000, 800),
        _acc_row("fused", 8, "fp32", 300, 3000),
        _acc_row("fused", 8, "int8", 700, 1500),
        _acc_row("fused", 16, "int8", 400, 2500),
    ]
    accuracy = [
        {"m": 1, "repository": "repo_fp32", "auc": 0.70},
        {"m": 8, "repository": "repo_fp32", "auc": 0.75},
        {"m": 8, "repository": "repo_int8", "auc": 0.7499},
        {"m": 16, "repository": "repo_int8", "auc": 0.76},
    ]
    points = frontier_points(rows, accuracy)
    assert len(points) == 4 and {p["precision"] for p in points} == {"fp32", "int8"}
    (best,) = best_within(points, budget_ms=2.0)
    assert (best["m"], best["precision"]) == (8, "int8")  # M=8 fp32 and M=16 int8 break the budget
    (best,) = best_within(points, budget_ms=2.6)
    assert (best["m"], best["precision"]) == (16, "int8")
    assert best_within(points, budget_ms=0.5) == []
    plot_frontier(tmp_path / "f.png", points)
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_combined_run_keeps_each_precisions_summary_apart() -> None:
    from ttsrec.bench.sweep import SweepConfig, SweepResult, combine

    def result(precision: str, p50: float) -> SweepResult:
        row = _acc_row("fused", 2, precision, 1000, p50 * 2)
        return SweepResult(config=SweepConfig(modes=["fused"]), rows=[row], shard_rows=[],
                           roofline=memory_only(25e9), accuracy=[], manifest=None, notes={},
                           weight_bytes={2: 4_000_000 if precision == "fp32" else 1_000_000})

    both = combine([result("fp32", 400.0), result("int8", 150.0)])
    assert [r.precision for r in both.rows] == ["fp32", "int8"]
    floors = {e["precision"]: e for e in both.summary["bandwidth_floor"]}
    assert floors["fp32"]["weight_bytes"] == 4_000_000 and floors["int8"]["weight_bytes"] == 1_000_000
    assert floors["int8"]["p50_us"] == 150.0
