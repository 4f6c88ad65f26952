"""The roofline's arithmetic (which bandwidth, which roof, the fractions) and its GEMM graphs; no server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ttsrec.bench import analysis
from ttsrec.bench.roofline import Roofline, ort_gemm
from ttsrec.bench.row import Row

MIB = 1 << 20


def roofline(**overrides: object) -> Roofline:
    fields = {
        "cache_bytes": 100 * MIB,
        "threads": 2,
        "read_bw_memory": 20e9,
        "memory_buffer_bytes": 256 * MIB,
        "read_bw_cached": {10 * MIB: 60e9, 40 * MIB: 40e9},
        "ort_macs": {"fp32": 100e9, "int8": 1000e9},
        "torch_macs": {"fp32": 150e9, "bf16": 600e9},
    }
    return Roofline(**(fields | overrides))  # type: ignore[arg-type]


def row(mode: str, m: int, batch: int, throughput: float, precision: str = "fp32", p50: float = 500.0) -> Row:
    return Row(mode=mode, m=m, batch=batch, concurrency=1, throughput=throughput, avg_us=p50, p50_us=p50,
               p90_us=p50, p95_us=p50, p99_us=p50, stable=True, client_cpu=100.0, precision=precision)


def test_bandwidth_follows_where_the_weights_sit() -> None:
    r = roofline()
    assert r.bandwidth_for(10 * MIB) == (60e9, "cache")  # measured at that size
    assert r.bandwidth_for(20 * MIB) == (60e9, "cache")  # nearest size below: reads at least as fast
    assert r.bandwidth_for(5 * MIB) == (60e9, "cache")  # nothing below: the nearest above
    assert r.bandwidth_for(100 * MIB) == (40e9, "cache")
    assert r.bandwidth_for(100 * MIB + 1) == (20e9, "memory")  # over the cache
    assert roofline(cache_bytes=0).bandwidth_for(MIB) == (20e9, "memory")  # cache size unknown
    assert roofline(read_bw_cached={}).bandwidth_for(MIB) == (20e9, "memory")  # nothing measured
    # "Fits" the reported cache but reads no faster than memory (a VM's host-sized cache figure):
    assert roofline(read_bw_cached={80 * MIB: 25e9}).bandwidth_for(80 * MIB) == (25e9, "memory")
    floor, bandwidth, where = r.floor_us(40 * MIB)
    assert (bandwidth, where) == (40e9, "cache") and floor == pytest.approx(1e6 * 40 * MIB / 40e9)


def test_roofs_per_precision_and_fractions() -> None:
    r = roofline()
    assert (r.runtime_roof("fp32"), r.hardware_roof("fp32")) == (100e9, 150e9)
    assert (r.runtime_roof("int8"), r.hardware_roof("int8")) == (1000e9, 1000e9)
    assert r.runtime_roof("fp16") == 100e9 and r.hardware_roof("fp16") == 150e9  # fp32 compute on CPU
    faster_bf16 = roofline(torch_macs={"fp32": 150e9, "bf16": 2000e9})
    assert faster_bf16.hardware_roof("int8") == 2000e9  # the fastest reduced-precision kernel at hand
    runtime, hardware = r.fractions(1e6, 10_000, "int8")  # 1 MMAC/row at 10k rows/s = 10 GMAC/s
    assert runtime == pytest.approx(0.01) and hardware == pytest.approx(0.01)
    runtime, hardware = r.fractions(1e6, 10_000, "fp32")
    assert runtime == pytest.approx(0.1) and hardware == pytest.approx(10e9 / 150e9)


def test_rows_carry_fractions_and_the_summary_the_floor() -> None:
    r = roofline()
    rows = [row("inprocess_fused", 2, 1024, 20_000), row("inprocess_fused", 2, 1024, 50_000, "int8"),
            row("fused", 2, 1, 2000, p50=1000.0), row("fused", 8, 1, 500, p50=4000.0)]
    for each in rows:
        analysis.set_roof_fractions(each, 2_000_000, r)
    assert rows[0].macs_per_row == 2_000_000
    assert rows[0].runtime_roof_fraction == pytest.approx(2e6 * 20_000 / 100e9)
    assert rows[1].hardware_roof_fraction == pytest.approx(2e6 * 50_000 / 1000e9)
    unknown = row("fused", 2, 1, 2000)
    analysis.set_roof_fractions(unknown, None, r)
    assert unknown.runtime_roof_fraction is None and unknown.csv_record()["runtime_roof_fraction"] == ""
    assert rows[0].csv_record()["runtime_roof_fraction"] == pytest.approx(0.4, abs=1e-5)  # not rounded to 0.1

    summary = analysis.summarise(rows, [], {2: 20 * MIB, 8: 200 * MIB}, r)
    assert len(summary["compute_roof"]) == 4
    assert summary["compute_roof"][1]["achieved_macs_per_s"] == pytest.approx(1e11)
    small, large = summary["bandwidth_floor"]
    assert (small["m"], small["weights_in"], small["bandwidth_bytes_per_s"]) == (2, "cache", 60e9)
    assert (large["m"], large["weights_in"], large["bandwidth_bytes_per_s"]) == (8, "memory", 20e9)
    assert small["fits_reported_cache"] and not large["fits_reported_cache"]
    assert large["ratio"] == pytest.approx(4000.0 / (1e6 * 200 * MIB / 20e9))
    assert analysis.bandwidth_floor(rows, {2: MIB}, None) == []  # no roofline, no floor

    from ttsrec.bench.report import beaten

    (note,) = beaten(summary)  # M=8 ran at 0.38 of its floor: that floor is no bound
    assert "1 batch-1 row(s) ran below the read-bandwidth floor" in note and "0.38" in note
    rows[0].runtime_roof_fraction = 1.3
    assert "above the runtime roof (up to 1.30)" in beaten(analysis.summarise(rows, [], {}, r))[0]


def test_json_merge_and_markdown() -> None:
    from ttsrec.bench.report import markdown
    from ttsrec.bench.sweep import SweepConfig, SweepResult

    r = roofline()
    other = roofline(read_bw_cached={5 * MIB: 70e9, 10 * MIB: 1.0})
    merged = r.merged([other])
    assert merged.read_bw_cached == {5 * MIB: 70e9, 10 * MIB: 60e9, 40 * MIB: 40e9}  # own sizes kept
    body = json.loads(json.dumps(merged.to_dict()))
    assert body["read_bw_cached"][str(5 * MIB)] == 70e9
    assert body["roofs"]["int8"] == {"runtime_macs_per_s": 1000e9, "hardware_macs_per_s": 1000e9}

    rows = [row("inprocess_fused", 2, 1024, 20_000), row("fused", 2, 1, 2000, p50=1000.0)]
    for each in rows:
        analysis.set_roof_fractions(each, 2_000_000, r)
    result = SweepResult(config=SweepConfig(modes=["fused", "inprocess"]), rows=rows, shard_rows=[],
                         roofline=r, weight_bytes={2: 20 * MIB}, accuracy=[], manifest=None, notes={},
                         metadata={"machine": {"cpu_model": "test cpu", "usable_cores": 2}})
    assert result.to_json()["roofline"]["ort_macs"]["int8"] == 1000e9
    text = markdown(result)
    assert "Roofline measured in this run" in text and "| torch bf16 matmul | 600 GMAC/s |" in text
    assert "| inprocess_fused | fp32 | 2 | 1024 | 1 | 2.00 | 40.0 | 40.0 % | 26.7 % |" in text
    assert "| fused | fp32 | 2 | 21.0 | cache | 60.0 |" in text


def test_int8_gemm_graph_is_valid_and_exact() -> None:
    """The runtime's int8 roof times a real MatMulInteger (uint8 × int8 → int32): check its product."""
    session, feed = ort_gemm("int8", n=64, threads=1)
    (out,) = session.run(None, {"x": feed["x"]})
    assert out.dtype == np.int32
    assert np.array_equal(out, feed["x"].astype(np.int32) @ feed["w"].astype(np.int32))
    session, feed = ort_gemm("fp32", n=64, threads=1)
    (out,) = session.run(None, {"x": feed["x"]})
    np.testing.assert_allclose(out, feed["x"] @ feed["w"], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):
        ort_gemm("bf16", n=8)
