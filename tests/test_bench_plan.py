"""Sweep steps without a server: planning, what is read from sources, one point's row, the result's JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ttsrec.bench.config import SweepConfig
from ttsrec.bench.measure import Latency, Measurement, MeasureSettings, Window
from ttsrec.bench.plan import Point, m_values, plan, served_m_values, shard_m, unsharded_ms
from ttsrec.bench.result import SweepResult, combine
from ttsrec.bench.roofline import Roofline
from ttsrec.bench.row import Row
from ttsrec.bench.runner import row_of, use_perf_analyzer
from ttsrec.bench.server_info import ServedInfo
from ttsrec.bench.server_stats import ServerTimes
from ttsrec.bench.sources import Sources
from ttsrec.bench.targets import Target
from ttsrec.errors import UserError

LOCAL = {"member_00", "member_01", "ensemble_m1", "ensemble_m2", "fused_m1", "fused_m2"}


def cfg(modes: list[str], **fields: object) -> SweepConfig:
    return SweepConfig(modes=modes, **fields)  # type: ignore[arg-type]


def test_rows_in_order_mode_m_batch_concurrency() -> None:
    points = plan(cfg(["ensemble", "inprocess"], batches=[1, 64], concurrencies=[1, 4]), None, LOCAL, None)
    assert len(points) == 3 * 2 * 2 * 2  # ensemble, inprocess_members, inprocess_fused × M × b × c
    assert points[:4] == [Point("ensemble", 1, b, c) for b in (1, 64) for c in (1, 4)]
    assert [p.mode for p in points[8:16:4]] == ["inprocess_members", "inprocess_fused"]
    assert {p.m for p in points} == {1, 2} and str(points[-1]) == "inprocess_fused M=2 batch=64 c=4"
    assert unsharded_ms(points) == [1, 2]


def test_m_values_come_from_the_server_and_in_process_rows_need_them_locally() -> None:
    served = {"fused_m2", "fused_m4", "ensemble_m8", "ensemble_mx", "member_00"}
    assert served_m_values(served) == {2, 4, 8}
    assert m_values(cfg(["fused"], url="h:1"), served, None) == [2, 4, 8]
    assert m_values(cfg(["fused"], url="h:1"), served, LOCAL) == [2, 4, 8]  # the server decides
    assert m_values(cfg(["fused", "inprocess"], url="h:1"), served, LOCAL) == [2]  # and the local copy
    assert m_values(cfg(["sharded"], shard_urls=["h:2"]), served, LOCAL) == []  # the export's own M
    assert m_values(cfg(["fused"], m_list=[2, 1]), None, LOCAL) == [2, 1]  # as asked, in that order


def test_missing_m_values_and_models_are_one_line_errors() -> None:
    with pytest.raises(UserError, match=r"^M=4, 8 not in h:1 \(it has M = 1, 2\)$"):
        plan(cfg(["fused"], url="h:1", m_list=[1, 4, 8]), {"fused_m1", "fused_m2"}, None, None)
    with pytest.raises(UserError, match=r"^M=3 not in model_repository \(it has M = 1, 2\)$"):
        plan(cfg(["ensemble"], m_list=[3]), None, LOCAL, None)
    with pytest.raises(UserError, match=r"^h:1 has no ensemble_mM or fused_mM models$"):
        plan(cfg(["fused"], url="h:1"), {"member_00"}, None, None)
    no_fused = LOCAL - {"fused_m1", "fused_m2"}
    message = r"--mode fused needs fused_m1, which model_repository does not have \(exported with --no-fused"
    with pytest.raises(UserError, match=message):
        plan(cfg(["fused"]), None, no_fused, None)
    with pytest.raises(UserError, match="--mode inprocess needs fused_m1"):  # the fused graph, locally
        plan(cfg(["inprocess"], url="h:1"), {"ensemble_m1", "fused_m1"}, no_fused, None)
    with pytest.raises(UserError, match="--mode ensemble needs ensemble_m2, which h:1"):  # served, not local
        plan(cfg(["ensemble"], url="h:1", m_list=[2]), {"fused_m2", "ensemble_m1"}, LOCAL, None)


def test_sharded_points_take_m_from_the_shards() -> None:
    sharded = cfg(["fused", "sharded"], shard_urls=["h:2", "h:3"], batches=[1, 8], m_list=[1])
    points = plan(sharded, None, LOCAL, 4)
    assert [p for p in points if p.mode == "sharded"] == [Point("sharded", 4, b, 1) for b in (1, 8)]
    assert unsharded_ms(points) == [1]
    assert plan(cfg(["sharded"], shard_urls=["h:2"]), None, None, None) == []  # before the shards answer
    configs = [
        {"ensemble_scheduling": {"step": [{"model_name": "member_00"}, {"model_name": "member_03"},
                                          {"model_name": "mean"}]}},
        {"ensemble_scheduling": {"step": [{"model_name": "member_01"}]}},
        {},  # a shard that is one model, not an ensemble
    ]
    assert shard_m(configs) == 4


def test_sources_without_a_local_copy_use_the_served_configs() -> None:
    info = ServedInfo(precision="int8", weight_bytes={2: 100, 4: 400}, features=39)
    src = Sources(repo=None, served={"fused_m2"}, served_info=info, core_sets=None, pool=np.zeros((1, 39)),
                  url="h:1")
    assert (src.precision, src.source, src.fmap, src.local) == ("int8", "h:1", None, None)
    assert src.weight_bytes([2, 3]) == {2: 100} and src.macs_per_row(2) is None
    assert Sources(None, None, None, None, np.zeros((1, 1)), "h:1").precision == "fp32"


def _target(mode: str = "fused", url: str | None = "h:1", pids: list[int] | None = None) -> Target:
    def times(before: object, after: object) -> ServerTimes:
        return ServerTimes(10.0, 5.0, 50.0, 5.0)

    return Target(mode=mode, m=2, model="fused_m2", make_load=lambda b: None, protocol="grpc", url=url,
                  server_times=times, server_pids=pids or [])


def test_engine_choice_per_row() -> None:
    one, big = Point("fused", 2, 1, 1), Point("fused", 2, 256, 4)
    assert not use_perf_analyzer("native", _target(), one)
    assert use_perf_analyzer("perf_analyzer", _target(), big)
    assert not use_perf_analyzer("perf_analyzer", _target(url=None), one)  # in-process rows
    assert not use_perf_analyzer("perf_analyzer", _target("sharded"), one)  # its own client
    assert not use_perf_analyzer("auto", _target(), big)  # auto: batch 1 only


def test_a_native_measurement_becomes_a_row() -> None:
    lat = Latency(avg=100.0, p50=90.0, p90=120.0, p95=130.0, p99=150.0)
    windows = [Window(10, 2.0, 5.0, lat) for _ in range(4)]
    result = Measurement(concurrency=2, batch=8, throughput=40.0, latency=lat, stable=True, windows=windows,
                         requests=30, client_cpu=12.0, server_before=("s0", 1.0), server_after=("s1", 4.0))
    row = row_of(_target(pids=[123]), Point("fused", 2, 8, 2), result)
    assert (row.mode, row.m, row.batch, row.concurrency, row.model) == ("fused", 2, 8, 2, "fused_m2")
    assert (row.throughput, row.p50_us, row.p99_us, row.windows, row.requests) == (40.0, 90.0, 150.0, 4, 30)
    assert row.server_cpu == pytest.approx(100.0 * 3.0 / 6.0)  # over the last three windows' seconds
    assert (row.server_queue_us, row.server_compute_infer_us) == (10.0, 50.0)
    assert row.network_us == pytest.approx(100.0 - 70.0)
    assert row_of(_target(), Point("fused", 2, 8, 2), result).server_cpu is None  # not a server we started


def _row(precision: str, m: int = 2) -> Row:
    return Row(mode="fused", m=m, batch=1, concurrency=1, throughput=1000.0, avg_us=500.0, p50_us=500.0,
               p90_us=900.0, p95_us=900.0, p99_us=1000.0, stable=True, client_cpu=1.0, precision=precision,
               repository=f"repo_{precision}")


def _roofline(cached: dict[int, float]) -> Roofline:
    return Roofline(cache_bytes=1 << 25, threads=2, read_bw_memory=25e9, memory_buffer_bytes=1 << 26,
                    read_bw_cached=cached, ort_macs={"fp32": 1e11, "int8": 1e12},
                    torch_macs={"fp32": 1e11, "bf16": 5e11})


def _result(precision: str, roofline: Roofline | None = None) -> SweepResult:
    config = cfg(["fused"], repository=Path(f"repo_{precision}"), batches=[1], engine="auto")
    return SweepResult(config=config, rows=[_row(precision)], shard_rows=[], roofline=roofline,
                       weight_bytes={2: 4_000_000}, accuracy=[{"m": 2, "auc": 0.7}], manifest=None,
                       notes={"usable_cores": 2}, metadata={"machine": {"cpu_model": "test"}})


def test_result_json_says_what_was_asked() -> None:
    body = json.loads(json.dumps(_result("fp32", _roofline({})).to_json()))
    assert body["machine"] == {"cpu_model": "test"} and body["roofline"]["read_bw_memory"] == 25e9
    config = body["config"]
    assert config["modes"] == ["fused"] and config["repository"] == "repo_fp32" and config["engine"] == "auto"
    assert config["shards_repository"] is None and config["inputs"] == "random valid ids from the feature map"
    assert config["measurement"] == vars(MeasureSettings())
    assert body["dense_weight_bytes_per_m"] == {"2": 4_000_000}
    assert body["dense_weight_bytes_per_repository"] is None
    assert [r["precision"] for r in body["rows"]] == ["fp32"] and body["shard_rows"] == []
    assert body["summary"]["bandwidth_floor"][0]["precision"] == "fp32"


def test_combine_keeps_rows_sources_and_merges_rooflines() -> None:
    one = _result("fp32")
    assert combine([one]) is one
    both = combine([_result("fp32", _roofline({1 << 20: 60e9})), _result("int8", _roofline({1 << 21: 50e9}))])
    assert [r.precision for r in both.rows] == ["fp32", "int8"] and len(both.accuracy) == 2
    assert both.notes == {"repositories": ["repo_fp32", "repo_int8"], "usable_cores": 2}
    assert set(both.weight_bytes_by_source) == {"repo_fp32", "repo_int8"}
    assert both.roofline is not None and both.roofline.read_bw_cached == {1 << 20: 60e9, 1 << 21: 50e9}
    assert combine([_result("fp32"), _result("int8")]).roofline is None
    assert both.to_json()["dense_weight_bytes_per_repository"]["repo_int8"] == {2: 4_000_000}


def test_a_new_mode_is_one_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mode is its unit in `bench.modes.MODES`: the config takes its name and the plan lays out its rows
    and checks its models, with nothing else changed."""
    from ttsrec.bench import modes

    class Probe(modes.TritonMode):
        name = "probe"  # type: ignore[assignment]
        min_m = 2

        def model(self, m: int) -> str:
            return f"fused_m{m}"

    monkeypatch.setitem(modes.MODES, "probe", Probe())
    points = plan(cfg(["probe", "fused"], batches=[1]), None, LOCAL, None)
    assert points == [Point("probe", 2, 1, 1), Point("fused", 1, 1, 1), Point("fused", 2, 1, 1)]
    assert modes.mode_of_row("probe").main_server and "probe" in modes.served_rows()  # type: ignore[union-attr]
    with pytest.raises(UserError, match="--mode probe needs fused_m2"):
        plan(cfg(["probe"]), None, {"ensemble_m2", "fused_m1"}, None)
