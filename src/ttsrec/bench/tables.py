"""The tables a person reads on screen (plain `ttsrec.utils.report.Table`s; the CLI draws them): the live
rows and the derived figures of a `SweepResult`.

Every table says its rows' precision: in its title when they share one, else in a `prec` column (a
combined run of an fp32 and an int8 export gives each figure twice, once per precision). Likewise an
`inputs` column (ids/raw) where a table holds rows of both (`tts-bench --raw`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ttsrec.bench.cells import (
    beaten,
    floor_cells,
    inputs_column,
    numbers,
    pinned_cells,
    prec_column,
    precision_title,
    raw_cells,
    roof_cells,
    roofline_figures,
    several_inputs,
    texts,
)
from ttsrec.bench.result import SweepResult
from ttsrec.bench.roofline import Roofline
from ttsrec.bench.row import IDS, Row
from ttsrec.utils.report import Column, Table

CAPTION = "* not stable within -s over the last 3 windows; cli%, srv%: CPU of the bench, of the server"


def table(rows: Sequence[Row], precisions: Sequence[str] | None = None) -> Table:
    """The rows as they come in, compact enough for 80 columns; the CSV and JSON carry every column.
    `precisions`: those of the whole run, when known before its rows (else the rows' own)."""
    title, column = precision_title(
        "tts-bench", "µs; server = queue + compute per request", precisions or [r.precision for r in rows])
    several = several_inputs(r.inputs for r in rows)
    out = Table(title, [Column("mode", numeric=False), *inputs_column(several), *prec_column(column),
                        *map(Column, ("M", "b", "c", "infer/s", "p50", "p99", "server", "cli%", "srv%"))],
                caption=CAPTION)
    for r in rows:
        server = r.server_queue_us + r.server_compute_input_us + r.server_compute_infer_us
        server += r.server_compute_output_us
        out.add_row(
            r.mode + (" (pa)" if r.engine == "perf_analyzer" else ""),
            *([r.inputs] if several else []),
            *([r.precision] if column else []),
            r.m,
            r.batch,
            r.concurrency,
            f"{r.throughput:,.0f}" + ("" if r.stable else "*"),
            f"{r.p50_us:,.0f}",
            f"{r.p99_us:,.0f}",
            f"{server:,.0f}" if server else "-",
            f"{r.client_cpu:.0f}",
            "-" if r.server_cpu is None else f"{r.server_cpu:.0f}",
        )
    return out


def figure_table(name: str, detail: str, entries: Sequence[dict[str, Any]], columns: Sequence[Column],
                  cells: Iterable[Sequence[Any]], at: int = 1, inputs_at: int | None = None) -> Table:
    """A derived figure's table: a `prec` column inserted at `at` when its entries differ in precision, and
    an `inputs` column at `inputs_at` (before `prec` there) when they mix raw records and ids."""
    title, column = precision_title(name, detail, (e.get("precision", "fp32") for e in entries))
    where = inputs_at if several_inputs(e.get("inputs", IDS) for e in entries) else None
    columns = list(columns)
    columns = columns[:at] + prec_column(column) + columns[at:]
    if where is not None:
        columns.insert(where, Column("inputs", numeric=False))
    out = Table(title, columns)
    for e, row in zip(entries, cells, strict=True):
        row = list(row)
        row = [*row[:at], *([e.get("precision", "fp32")] if column else []), *row[at:]]
        if where is not None:
            row.insert(where, e.get("inputs", IDS))
        out.add_row(*row)
    return out


def summary_tables(result: SweepResult) -> list[Table]:
    """The figures the sweep exists for (see `ttsrec.bench.analysis`), one small table each."""
    summary = result.summary
    out = []
    if eff := summary["scaling_efficiency"]:
        out.append(figure_table(
            "scaling efficiency", "M·throughput(M) / throughput(1) (1.0: each member costs its share)", eff,
            [*texts("mode"), *numbers("batch", "conc", "M", "efficiency")],
            ((e["mode"], e["batch"], e["concurrency"], e["m"], f"{e['efficiency']:.2f}") for e in eff),
            inputs_at=1))
    if ratio := summary["serving_ratio"]:
        out.append(figure_table(
            "best Triton mode", "its throughput / the in-process fused graph's", ratio,
            [*numbers("M", "batch", "conc"), *texts("best mode"), *numbers("ratio")],
            ((e["m"], e["batch"], e["concurrency"], e["best_mode"], f"{e['ratio']:.2f}") for e in ratio),
            at=0))
    if result.roofline is not None:
        out.append(roofline_table(result.roofline))
    if floor := summary["bandwidth_floor"]:
        out.append(figure_table(
            "batch-1 floor", "p50 at batch 1, concurrency 1 vs the read-bandwidth floor (µs): the M members' "
            "dense weight MB / the read rate where they sit (cache when they fit the last-level cache, else "
            "memory)", floor,
            [*texts("mode"), *numbers("M", "MB"), *texts("weights"),
             *numbers("GB/s", "floor", "p50", "ratio")],
            floor_cells(floor), inputs_at=1))
    if roof := summary["compute_roof"]:
        t = figure_table(
            "compute roof", "achieved fraction: MACs/row × rows/s over onnxruntime's GEMM (runtime) and the "
            "fastest kernel at hand (hardware) in the row's precision", roof,
            [*texts("mode"), *numbers("M", "b", "c", "MMAC/row", "GMAC/s", "runtime", "hardware")],
            roof_cells(roof), inputs_at=1)
        t.caption = "\n".join(beaten(summary))
        out.append(t)
    if pinned := summary.get("parallel_servers", []):
        out.append(figure_table(  # ratio: of the p50s; fan-out: sharded p50 - one p50
            "parallel servers", "--pin-cores, µs: K pinned shards vs one pinned server, one member", pinned,
            numbers("K", "cores", "b", "c", "K p50", "K p99", "one p50", "one p99", "ratio", "fan-out"),
            pinned_cells(pinned), at=0))
    if fan := summary["fanout_overhead"]:
        out.append(figure_table(
            "sharded fan-out overhead", "sharded p50 − the slowest shard's own p50 (µs)", fan,
            numbers("M", "batch", "conc", "sharded p50", "slowest shard p50", "overhead"),
            ((e["m"], e["batch"], e["concurrency"], f"{e['sharded_p50_us']:,.0f}",
              f"{e['slowest_shard_p50_us']:,.0f}", f"{e['overhead_us']:,.0f}") for e in fan), at=0))
    if raw := summary.get("raw_vs_ids", []):
        out.append(figure_table(
            "raw records vs ids", "a raw_* model's infer/s and p50 (µs) against its id model's at the same "
            "point (--raw; * not stable)", raw,
            [*texts("mode"), *numbers("M", "b", "c", "ids/s", "raw/s", "ratio", "ids p50", "raw p50")],
            raw_cells(raw)))
    if result.accuracy:
        out.append(figure_table(
            "what each M buys", "through the served models", result.accuracy,
            [*numbers("M"), *texts("model"), *numbers("rows", "AUC", "logloss")],
            ((e["m"], e["model"], f"{e['rows']:,}", f"{e['auc']:.4f}", f"{e['logloss']:.4f}")
             for e in result.accuracy)))
    return out


def roofline_table(roofline: Roofline) -> Table:
    """The figures measured, the machine's notes (a figure to doubt, and why) below them."""
    t = Table("roofline measured in this run (before the rows)", [*texts("figure"), *numbers("value")],
              caption="\n".join(f"note: {k}: {v}" for k, v in roofline.notes.items()))
    for name, value in roofline_figures(roofline):
        t.add_row(name, value)
    return t
