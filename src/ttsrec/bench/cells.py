"""The cells and columns the screen tables (`bench.tables`) and the markdown (`bench.markdown`) share: a
`prec` column or the precision in the title, an `inputs` column where raw records and ids mix, each derived
figure's cells, the roofline's figures and the warnings when a row beat a measured bound."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ttsrec.bench.roofline import Roofline
from ttsrec.utils.report import Column


def precision_title(name: str, detail: str, precisions: Iterable[str]) -> tuple[str, bool]:
    """(title, whether the table needs a precision column): one precision is said in the title."""
    found = list(dict.fromkeys(precisions))
    if len(found) > 1:
        return f"{name}: {detail}", True
    return f"{name}{', ' + found[0] if found else ''}: {detail}", False


def prec_column(column: bool) -> list[Column]:
    return [Column("prec", numeric=False)] if column else []


def several_inputs(kinds: Iterable[str]) -> bool:
    """Whether rows (or entries) of raw records and of ids are mixed: then a table says which in a column."""
    return len(set(kinds)) > 1


def inputs_column(several: bool) -> list[Column]:
    return [Column("inputs", numeric=False)] if several else []


def texts(*headers: str) -> list[Column]:
    return [Column(h, numeric=False) for h in headers]


def numbers(*headers: str) -> list[Column]:
    return [Column(h) for h in headers]


def raw_cells(entries: Sequence[dict[str, Any]]) -> list[list[str]]:
    """mode, M, batch, conc, ids infer/s, raw infer/s, ratio, ids p50, raw p50."""
    return [[e["mode"], str(e["m"]), str(e["batch"]), str(e["concurrency"]), f"{e['ids_throughput']:,.0f}",
             f"{e['raw_throughput']:,.0f}", f"{e['ratio']:.2f}" + ("" if e["stable"] else "*"),
             f"{e['ids_p50_us']:,.0f}", f"{e['raw_p50_us']:,.0f}"] for e in entries]


def floor_cells(entries: Sequence[dict[str, Any]]) -> list[list[str]]:
    """mode, M, dense MB, weights in, read GB/s, floor µs, p50 µs, p50 / floor."""
    return [[e["mode"], str(e["m"]), f"{e['weight_bytes'] / 1e6:.1f}", e["weights_in"],
             f"{e['bandwidth_bytes_per_s'] / 1e9:.1f}", f"{e['floor_us']:,.0f}", f"{e['p50_us']:,.0f}",
             f"{e['ratio']:.2f}" if e["ratio"] else "-"] for e in entries]


def roof_cells(entries: Sequence[dict[str, Any]]) -> list[list[str]]:
    """mode, M, batch, conc, MMAC/row, GMAC/s, of runtime roof, of hardware roof."""
    return [[e["mode"], str(e["m"]), str(e["batch"]), str(e["concurrency"]),
             f"{e['macs_per_row'] / 1e6:.2f}", f"{e['achieved_macs_per_s'] / 1e9:,.1f}",
             pct(e["runtime_roof_fraction"]), pct(e["hardware_roof_fraction"])] for e in entries]


def beaten(summary: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Warnings when a row beat the floor or a roof measured at the start of the run: that roof or
    floor is no bound (the machine was busier when it was measured, or the weights partly stayed
    in a cache the buffer read missed)."""
    out = []
    floors = [e for e in summary["bandwidth_floor"] if e["ratio"] is not None and e["ratio"] < 1]
    if floors:
        out.append(f"Note: {len(floors)} batch-1 row(s) ran below the read-bandwidth floor "
                   f"(p50 / floor down to {min(e['ratio'] for e in floors):.2f}): the read rate measured "
                   "at the start understates what the model read at (a busier machine then, or caching).")
    roofs = [e for e in summary["compute_roof"] if (e["runtime_roof_fraction"] or 0) > 1]
    if roofs:
        out.append(f"Note: {len(roofs)} row(s) above the runtime roof (up to "
                   f"{max(e['runtime_roof_fraction'] for e in roofs):.2f}): the GEMM roof was measured while "
                   "the machine was busier than during those rows; their fractions are not reliable.")
    return out


def pct(fraction: float | None) -> str:
    if fraction is None:
        return "-"
    return f"{100 * fraction:.1f} %" if fraction >= 0.01 else f"{100 * fraction:.2f} %"


def roofline_brief(roofline: Roofline | None) -> str:
    if roofline is None:
        return "roofline not measured"
    r = roofline
    roofs = ", ".join(
        f"{p} {r.runtime_roof(p) / 1e9:,.0f} / {r.hardware_roof(p) / 1e9:,.0f}" for p in ("fp32", "int8")
    )
    return f"roofs {roofs} GMAC/s (runtime / hardware), memory read {r.read_bw_memory / 1e9:.1f} GB/s"


def roofline_figures(roofline: Roofline) -> list[tuple[str, str]]:
    """(figure, value) pairs: what the screen and the markdown tables both show."""
    cache = f"{roofline.cache_bytes / (1 << 20):,.0f} MiB" if roofline.cache_bytes else "unknown"
    out = [
        ("threads", str(roofline.threads)),
        ("last-level cache (reported)", cache),
        (f"read, {roofline.memory_buffer_bytes >> 20} MiB buffer (memory)", gbs(roofline.read_bw_memory)),
    ]
    out += [(f"read, {size / 1e6:.1f} MB buffer (cache)", gbs(bw))
            for size, bw in sorted(roofline.read_bw_cached.items())]
    out += [
        ("onnxruntime fp32 MatMul (runtime roof fp32)", gmacs(roofline.ort_macs["fp32"])),
        ("onnxruntime int8 MatMulInteger (runtime roof int8)", gmacs(roofline.ort_macs["int8"])),
        ("torch fp32 matmul", gmacs(roofline.torch_macs["fp32"])),
        ("torch bf16 matmul", gmacs(roofline.torch_macs["bf16"])),
        ("hardware roof fp32 / int8", f"{roofline.hardware_roof('fp32') / 1e9:,.0f} / "
         f"{roofline.hardware_roof('int8') / 1e9:,.0f} GMAC/s"),
        ("measured in", f"{roofline.seconds:.1f} s"),
    ]
    return out


def roofline_notes(roofline: Roofline) -> list[tuple[str, str]]:
    return [(f"note: {k}", v) for k, v in roofline.notes.items()]


def gbs(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e9:.1f} GB/s"


def gmacs(macs_per_s: float) -> str:
    return f"{macs_per_s / 1e9:,.0f} GMAC/s"


PINNED_HEADER = ("K", "cores/server", "batch", "conc", "sharded p50 µs", "sharded p99 µs", "single p50 µs",
                  "single p99 µs", "p50 ratio", "fan-out overhead µs")


def pinned_cells(entries: list[dict[str, Any]]) -> list[list[str]]:
    """One row per sharded point of a `--pin-cores` run (see `ttsrec.bench.pinning.compare`)."""
    return [[str(e["shards"]), str(e["cores_per_server"]), str(e["batch"]), str(e["concurrency"]),
             f"{e['sharded_p50_us']:,.0f}", f"{e['sharded_p99_us']:,.0f}", f"{e['single_p50_us']:,.0f}",
             f"{e['single_p99_us']:,.0f}", "-" if e["p50_ratio"] is None else f"{e['p50_ratio']:.2f}",
             f"{e['fanout_overhead_us']:,.0f}"] for e in entries]
