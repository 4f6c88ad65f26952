"""The machine's roofline, measured in the same run: what batch-1 latency and any throughput can reach.

- compute roof per precision, twice: dense GEMM through onnxruntime itself (fp32 MatMul, int8
  MatMulInteger with uint8 activations and int8 weights, the kernel family the int8 exports run:
  what this runtime reaches) and through torch matmul in fp32 and bf16 (oneDNN, AMX where the CPU
  has it: the hardware's roof);
- read bandwidth for a buffer twice the last-level cache (memory) and for a buffer of each
  weight size the bench reads per request (M members' dense bytes): re-reading a buffer that fits
  the cache runs at cache speed, so the batch-1 floor uses whichever applies;
- the last-level cache size (sysfs, else lscpu).

A row's achieved fraction of a roof is dense MACs per row × rows/s / roof for its precision.
Everything runs on `usable_cores()` threads, as the in-process fused graph at concurrency 1 does,
and takes a few seconds; the machine part is measured once per process (`measure` caches it).
"""

from __future__ import annotations

import glob
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import psutil

from ttsrec.utils.common import usable_cores
from ttsrec.utils.threads import torch_threads

ORT_GEMM = 1024
"""n of the n×n×n onnxruntime GEMM: the size of a DCNv2 layer at batch 1024."""
TORCH_GEMM = 2048
"""torch's kernels need a larger product to reach their peak (AMX tiles, oneDNN blocking)."""
LARGE_MIN, LARGE_MAX = 256 << 20, 2 << 30
"""The memory buffer: twice the last-level cache (a cyclic read twice the cache's size misses it),
within these bounds and within 1/8 of free memory; faulting its pages in is most of the time taken."""
SECONDS = 0.2
"""Best-of timing window per figure."""
READ_ROUNDS = 3
"""Rounds over the weight sizes, best of each (they are small: a few MB to a few hundred)."""
CACHE_SPEEDUP = 1.5
"""A size counts as read from cache when it reads this much faster than the memory buffer."""


def cache_bytes() -> int:
    """The largest (last-level) cache a core sees, from sysfs; lscpu as a fallback; 0 when unknown.
    In a VM this is what the hypervisor reports, hence the measured bandwidth per size beside it."""
    best = 0
    for index in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(f"{index}/size") as f:
                size = f.read().strip()
        except OSError:
            continue
        match = re.fullmatch(r"(\d+)([KMG]?)", size)
        if match:
            scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2)]
            best = max(best, int(match.group(1)) * scale)
    if best:
        return best
    try:
        text = subprocess.run(["lscpu", "-B"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return max((int(m.group(1)) for m in re.finditer(r"L3 cache:\s+(\d+)", text)), default=0)


def _best_seconds(fn: Callable[[], object], seconds: float = SECONDS, at_least: int = 3) -> float:
    """Fastest of repeated calls after one warm-up: the roof is what the kernel can do, not its average."""
    fn()
    best, deadline, calls = float("inf"), time.perf_counter() + seconds, 0
    while calls < at_least or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        calls += 1
    return best


def read_bandwidth(nbytes: int, threads: int | None = None, seconds: float = SECONDS) -> float:
    """Bytes per second of a streaming read (torch sum over a float32 buffer on `threads` threads),
    best of repeated passes: a buffer that fits the cache stays there between passes, like weights
    between requests."""
    import torch

    with torch_threads(threads or usable_cores()):
        buffer = torch.empty(max(int(nbytes), 1 << 16) // 4, dtype=torch.float32)
        buffer.fill_(1.0)  # fault the pages in on every thread
        best = _best_seconds(buffer.sum, seconds)
        return buffer.numel() * 4 / best


def ort_gemm(
    precision: str, n: int = ORT_GEMM, threads: int | None = None
) -> tuple[Any, dict[str, np.ndarray]]:
    """An onnxruntime session of one n×n×n product and its feed: fp32 MatMul, or int8 MatMulInteger
    (uint8 activations × int8 constant weights → int32, what int8 MatMul nodes run on MLAS)."""
    from onnx import TensorProto, helper, numpy_helper

    from ttsrec.ensemble.session import ort_session

    rng = np.random.default_rng(0)
    if precision == "int8":
        w = rng.integers(-128, 128, (n, n), dtype=np.int8)
        x = rng.integers(0, 256, (n, n), dtype=np.uint8)
        op, x_type, y_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
    elif precision == "fp32":
        w = rng.standard_normal((n, n)).astype(np.float32)
        x = rng.standard_normal((n, n)).astype(np.float32)
        op, x_type, y_type = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT
    else:
        raise ValueError(f"no onnxruntime GEMM for {precision!r}")
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("x", x_type, [n, n])],
        [helper.make_tensor_value_info("y", y_type, [n, n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    session = ort_session(model.SerializeToString(), intra_op_threads=threads or usable_cores())
    return session, {"x": x, "w": w}


def ort_gemm_macs(precision: str, n: int = ORT_GEMM, threads: int | None = None) -> float:
    """MAC/s of onnxruntime's n×n×n product in `precision` (fp32 or int8)."""
    session, feed = ort_gemm(precision, n, threads)
    return float(n) ** 3 / _best_seconds(lambda: session.run(None, {"x": feed["x"]}))


def torch_gemm_macs(dtype: str, n: int = TORCH_GEMM, threads: int | None = None) -> float:
    """MAC/s of an n×n×n torch matmul in fp32 or bf16 (oneDNN; AMX where present)."""
    import torch

    kind = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    with torch_threads(threads or usable_cores()), torch.inference_mode():
        a, b = torch.randn(n, n, dtype=kind), torch.randn(n, n, dtype=kind)
        return float(n) ** 3 / _best_seconds(lambda: a @ b)


@dataclass
class Roofline:
    cache_bytes: int
    """Last-level cache as reported (sysfs/lscpu); 0 when unknown: then nothing counts as cached."""
    threads: int
    read_bw_memory: float
    """Bytes/s reading `memory_buffer_bytes` (twice the cache): weights streamed from DRAM."""
    memory_buffer_bytes: int
    read_bw_cached: dict[int, float]
    """Bytes/s re-reading a buffer of each weight size that fits the cache (size in bytes → rate)."""
    ort_macs: dict[str, float]
    """onnxruntime GEMM MAC/s: fp32, int8 (the runtime's roof)."""
    torch_macs: dict[str, float]
    """torch matmul MAC/s: fp32, bf16 (with ort's, the hardware's roof)."""
    seconds: float = 0.0
    """How long this measurement took (the machine part only the first time in a process)."""
    notes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def measure(cls, weight_bytes: Iterable[int] = (), threads: int | None = None) -> Roofline:
        """The machine part once per process (see `_machine`), then the read rate of each new
        weight size that fits the cache."""
        t0 = time.perf_counter()
        threads = threads or usable_cores()
        machine = _machine(threads)
        cached = dict(machine.read_bw_cached)
        new = sorted(set(int(b) for b in weight_bytes if b > 0) - set(cached))
        sizes = [size for size in new if machine.fits(size)]
        for _ in range(READ_ROUNDS):  # interleaved: a burst of other work on the machine spoils one round
            for size in sizes:
                rate = read_bandwidth(size, threads, SECONDS / 2)
                cached[size] = max(cached.get(size, 0.0), rate)
        machine.read_bw_cached.update(cached)
        return cls(
            cache_bytes=machine.cache_bytes,
            threads=threads,
            read_bw_memory=machine.read_bw_memory,
            memory_buffer_bytes=machine.memory_buffer_bytes,
            read_bw_cached=cached,
            ort_macs=dict(machine.ort_macs),
            torch_macs=dict(machine.torch_macs),
            seconds=time.perf_counter() - t0,
            notes=dict(machine.notes),
        )

    # -- compute ---------------------------------------------------------------------------------

    def runtime_roof(self, precision: str) -> float:
        """onnxruntime's GEMM in the row's precision (fp16 graphs compute in fp32 on CPU)."""
        return self.ort_macs["int8" if precision == "int8" else "fp32"]

    def hardware_roof(self, precision: str) -> float:
        """The fastest kernel at hand for the row's number format: fp32 (and fp16, cast up on CPU)
        rows against the fastest fp32 GEMM; int8 rows against the fastest reduced-precision one."""
        fp32 = max(self.torch_macs["fp32"], self.ort_macs["fp32"])
        if precision == "int8":
            return max(fp32, self.torch_macs["bf16"], self.ort_macs["int8"])
        return fp32

    def fractions(self, macs_per_row: float, rows_per_s: float, precision: str) -> tuple[float, float]:
        """Achieved MAC/s over (the runtime roof, the hardware roof) for the row's precision."""
        achieved = macs_per_row * rows_per_s
        return achieved / self.runtime_roof(precision), achieved / self.hardware_roof(precision)

    # -- bandwidth -------------------------------------------------------------------------------

    def fits(self, nbytes: int) -> bool:
        return 0 < nbytes <= self.cache_bytes

    def bandwidth_for(self, nbytes: int) -> tuple[float, str]:
        """(bytes/s, "cache" or "memory") for re-reading `nbytes` of weights per request: when they
        fit the reported cache, the rate measured at that size (else at the nearest size below it,
        which reads at least as fast and so keeps the floor a floor; else above it), otherwise
        memory's. The label follows the rate, not the reported size: a VM's cache figure can be the
        host's, and a size that reads no faster than memory is in memory, whatever sysfs says."""
        if self.fits(nbytes) and self.read_bw_cached:
            below = [s for s in self.read_bw_cached if s <= nbytes]
            rate = self.read_bw_cached[max(below) if below else min(self.read_bw_cached)]
            return rate, "cache" if rate > CACHE_SPEEDUP * self.read_bw_memory else "memory"
        return self.read_bw_memory, "memory"

    def floor_us(self, nbytes: int) -> tuple[float, float, str]:
        """(floor µs, bytes/s, where) for a request that reads `nbytes` of weights once."""
        bandwidth, where = self.bandwidth_for(nbytes)
        return 1e6 * nbytes / bandwidth, bandwidth, where

    def merged(self, others: Iterable[Roofline]) -> Roofline:
        """This roofline with the cached read rates the others measured (a combined run's sizes)."""
        cached = dict(self.read_bw_cached)
        for other in others:
            cached.update({k: v for k, v in other.read_bw_cached.items() if k not in cached})
        return Roofline(**{**asdict(self), "read_bw_cached": cached})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["read_bw_cached"] = {str(k): v for k, v in sorted(self.read_bw_cached.items())}
        out["roofs"] = {
            p: {"runtime_macs_per_s": self.runtime_roof(p), "hardware_macs_per_s": self.hardware_roof(p)}
            for p in ("fp32", "int8")
        }
        return out


_MACHINE: dict[int, Roofline] = {}


def _machine(threads: int) -> Roofline:
    """Cache size, memory read rate and the four GEMM roofs, measured once per process and thread count."""
    if threads not in _MACHINE:
        t0 = time.perf_counter()
        llc = cache_bytes()
        room = max(LARGE_MIN, psutil.virtual_memory().available // 8)
        large = min(max(2 * llc, LARGE_MIN), LARGE_MAX, room)
        notes = {}
        if large < 2 * llc:
            notes["memory_buffer"] = f"{large >> 20} MiB, under twice the cache: memory rate overstated"
        _MACHINE[threads] = Roofline(
            cache_bytes=llc,
            threads=threads,
            read_bw_memory=read_bandwidth(large, threads),
            memory_buffer_bytes=large,
            read_bw_cached={},
            ort_macs={p: ort_gemm_macs(p, threads=threads) for p in ("fp32", "int8")},
            torch_macs={d: torch_gemm_macs(d, threads=threads) for d in ("fp32", "bf16")},
            seconds=time.perf_counter() - t0,
            notes=notes,
        )
    return _MACHINE[threads]
