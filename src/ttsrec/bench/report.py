"""Results out: the tables a person reads (plain `ttsrec.utils.report.Table`s: the live rows, the derived
figures; the CLI draws them), a perf_analyzer-like CSV, the JSON report, the markdown and the PNG plot.

Every table says its rows' precision: in its title when they share one, else in a `prec` column (a
combined run of an fp32 and an int8 export gives each figure twice, once per precision). Likewise an
`inputs` column (ids/raw) where a table holds rows of both (`tts-bench --raw`).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from ttsrec.bench.roofline import Roofline
from ttsrec.bench.row import IDS, RAW, Row
from ttsrec.utils.atomic import atomic_write_bytes
from ttsrec.utils.report import Column, Table

CAPTION = "* not stable within -s over the last 3 windows; cli%, srv%: CPU of the bench, of the server"


def table(rows: Sequence[Row], precisions: Sequence[str] | None = None) -> Table:
    """The rows as they come in, compact enough for 80 columns; the CSV and JSON carry every column.
    `precisions`: those of the whole run, when known before its rows (else the rows' own)."""
    title, column = _precision(
        "tts-bench", "µs; server = queue + compute per request", precisions or [r.precision for r in rows])
    several = _several_inputs(r.inputs for r in rows)
    out = Table(title, [Column("mode", numeric=False), *_inputs_column(several), *_prec(column),
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


def _precision(name: str, detail: str, precisions: Iterable[str]) -> tuple[str, bool]:
    """(title, whether the table needs a precision column): one precision is said in the title."""
    found = list(dict.fromkeys(precisions))
    if len(found) > 1:
        return f"{name}: {detail}", True
    return f"{name}{', ' + found[0] if found else ''}: {detail}", False


def _prec(column: bool) -> list[Column]:
    return [Column("prec", numeric=False)] if column else []


def _several_inputs(kinds: Iterable[str]) -> bool:
    """Whether rows (or entries) of raw records and of ids are mixed: then a table says which in a column."""
    return len(set(kinds)) > 1


def _inputs_column(several: bool) -> list[Column]:
    return [Column("inputs", numeric=False)] if several else []


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    frame = pl.DataFrame([r.csv_record() for r in rows])
    buffer = io.BytesIO()
    frame.write_csv(buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def read_csv(path: Path) -> pl.DataFrame:
    return pl.read_csv(path)


def plot(path: Path, rows: Sequence[Row]) -> None:
    """Throughput (top) and p99 latency (bottom) against M, one column per batch size, log-2 x axis;
    one line per (mode, precision)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r.batch for r in rows})
    fig, axes = plt.subplots(2, len(batches), figsize=(5 * len(batches), 7.5), squeeze=False)
    series: dict[tuple[str, str, str, int], list[Row]] = {}
    for r in rows:
        series.setdefault((r.mode, r.precision, r.inputs, r.concurrency), []).append(r)
    styles = ["-", "--", ":", "-."]
    lines = sorted({(r.mode, r.precision, r.inputs) for r in rows})
    concurrencies = sorted({r.concurrency for r in rows})
    several_precisions = len({r.precision for r in rows}) > 1
    for col, batch in enumerate(batches):
        top, bottom = axes[0][col], axes[1][col]
        for (mode, precision, kind, conc), points in sorted(series.items()):
            points = sorted((p for p in points if p.batch == batch), key=lambda p: p.m)
            if not points:
                continue
            color = f"C{lines.index((mode, precision, kind)) % 10}"
            style = styles[concurrencies.index(conc) % len(styles)]
            label = f"{mode} {precision}" if several_precisions else mode
            label += " raw" if kind == RAW else ""
            label += f" c={conc}" if len(concurrencies) > 1 else ""
            ms = [p.m for p in points]
            top.plot(ms, [p.throughput for p in points], style, marker="o", color=color, label=label)
            bottom.plot(ms, [p.p99_us / 1e3 for p in points], style, marker="o", color=color, label=label)
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({r.m for r in rows}))
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xlabel("M (members)")
        top.set_title(f"batch {batch}")
        top.set_ylabel("throughput (inferences/s)")
        bottom.set_ylabel("p99 latency (ms)")
        top.set_yscale("log")
        bottom.set_yscale("log")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize="small", frameon=False)
    fig.suptitle("tts-bench: cost per scaling factor M")
    rows_of_legend = -(-len(labels) // 5)
    fig.tight_layout(rect=(0, 0.035 * rows_of_legend, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())


def _figure_table(name: str, detail: str, entries: Sequence[dict[str, Any]], columns: Sequence[Column],
                  cells: Iterable[Sequence[Any]], at: int = 1, inputs_at: int | None = None) -> Table:
    """A derived figure's table: a `prec` column inserted at `at` when its entries differ in precision, and
    an `inputs` column at `inputs_at` (before `prec` there) when they mix raw records and ids."""
    title, column = _precision(name, detail, (e.get("precision", "fp32") for e in entries))
    where = inputs_at if _several_inputs(e.get("inputs", IDS) for e in entries) else None
    columns = list(columns)
    columns = columns[:at] + _prec(column) + columns[at:]
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


def _text(*headers: str) -> list[Column]:
    return [Column(h, numeric=False) for h in headers]


def _numbers(*headers: str) -> list[Column]:
    return [Column(h) for h in headers]


def summary_tables(result: Any) -> list[Table]:
    """The figures the sweep exists for (see `ttsrec.bench.analysis`), one small table each."""
    summary = result.summary
    out = []
    if eff := summary["scaling_efficiency"]:
        out.append(_figure_table(
            "scaling efficiency", "M·throughput(M) / throughput(1) (1.0: each member costs its share)", eff,
            [*_text("mode"), *_numbers("batch", "conc", "M", "efficiency")],
            ((e["mode"], e["batch"], e["concurrency"], e["m"], f"{e['efficiency']:.2f}") for e in eff),
            inputs_at=1))
    if ratio := summary["serving_ratio"]:
        out.append(_figure_table(
            "best Triton mode", "its throughput / the in-process fused graph's", ratio,
            [*_numbers("M", "batch", "conc"), *_text("best mode"), *_numbers("ratio")],
            ((e["m"], e["batch"], e["concurrency"], e["best_mode"], f"{e['ratio']:.2f}") for e in ratio),
            at=0))
    if result.roofline is not None:
        out.append(roofline_table(result.roofline))
    if floor := summary["bandwidth_floor"]:
        out.append(_figure_table(
            "batch-1 floor", "p50 at batch 1, concurrency 1 vs the read-bandwidth floor (µs): the M members' "
            "dense weight MB / the read rate where they sit (cache when they fit the last-level cache, else "
            "memory)", floor,
            [*_text("mode"), *_numbers("M", "MB"), *_text("weights"),
             *_numbers("GB/s", "floor", "p50", "ratio")],
            _floor_cells(floor), inputs_at=1))
    if roof := summary["compute_roof"]:
        t = _figure_table(
            "compute roof", "achieved fraction: MACs/row × rows/s over onnxruntime's GEMM (runtime) and the "
            "fastest kernel at hand (hardware) in the row's precision", roof,
            [*_text("mode"), *_numbers("M", "b", "c", "MMAC/row", "GMAC/s", "runtime", "hardware")],
            _roof_cells(roof), inputs_at=1)
        t.caption = "\n".join(beaten(summary))
        out.append(t)
    if pinned := summary.get("parallel_servers", []):
        out.append(_figure_table(  # ratio: of the p50s; fan-out: sharded p50 - one p50
            "parallel servers", "--pin-cores, µs: K pinned shards vs one pinned server, one member", pinned,
            _numbers("K", "cores", "b", "c", "K p50", "K p99", "one p50", "one p99", "ratio", "fan-out"),
            _pinned_cells(pinned), at=0))
    if fan := summary["fanout_overhead"]:
        out.append(_figure_table(
            "sharded fan-out overhead", "sharded p50 − the slowest shard's own p50 (µs)", fan,
            _numbers("M", "batch", "conc", "sharded p50", "slowest shard p50", "overhead"),
            ((e["m"], e["batch"], e["concurrency"], f"{e['sharded_p50_us']:,.0f}",
              f"{e['slowest_shard_p50_us']:,.0f}", f"{e['overhead_us']:,.0f}") for e in fan), at=0))
    if raw := summary.get("raw_vs_ids", []):
        out.append(_figure_table(
            "raw records vs ids", "a raw_* model's infer/s and p50 (µs) against its id model's at the same "
            "point (--raw; * not stable)", raw,
            [*_text("mode"), *_numbers("M", "b", "c", "ids/s", "raw/s", "ratio", "ids p50", "raw p50")],
            _raw_cells(raw)))
    if result.accuracy:
        out.append(_figure_table(
            "what each M buys", "through the served models", result.accuracy,
            [*_numbers("M"), *_text("model"), *_numbers("rows", "AUC", "logloss")],
            ((e["m"], e["model"], f"{e['rows']:,}", f"{e['auc']:.4f}", f"{e['logloss']:.4f}")
             for e in result.accuracy)))
    return out


def markdown(result: Any) -> str:
    """The rows and the derived figures as markdown tables (for a README's performance section)."""
    machine = result.metadata["machine"]
    several = _several_inputs(r.inputs for r in result.rows)
    rows = Table("rows", [*_text("mode", *(["inputs"] if several else []), "precision", "engine"), *_numbers(
        "M", "batch", "conc", "infer/s", "p50 µs", "p90 µs", "p99 µs", "server queue µs", "server compute µs",
        "client overhead µs", "client CPU %", "server CPU %"), *_text("stable")])
    for r in result.rows:
        compute = r.server_compute_input_us + r.server_compute_infer_us + r.server_compute_output_us
        queue, comp = (f"{r.server_queue_us:,.0f}", f"{compute:,.0f}") if compute else ("-", "-")
        overhead = "-" if r.client_overhead_us is None else f"{r.client_overhead_us:,.0f}"
        rows.add_row(r.mode, *([r.inputs] if several else []), r.precision, r.engine, r.m, r.batch,
                     r.concurrency, f"{r.throughput:,.0f}",
                     f"{r.p50_us:,.0f}", f"{r.p90_us:,.0f}", f"{r.p99_us:,.0f}", queue, comp, overhead,
                     f"{r.client_cpu:.0f}", "-" if r.server_cpu is None else f"{r.server_cpu:.0f}",
                     "yes" if r.stable else "no")
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} cores; "
        f"{_roofline_brief(result.roofline)}; engine {result.config.engine}, "
        f"{result.config.protocol}; windows of {result.config.settings.window_ms} ms, "
        f"stability {result.config.settings.stability_pct:g} %.",
        "",
        rows.markdown(),
    ]
    summary = result.summary
    lines += _table("Scaling efficiency M·throughput(M)/throughput(1):",
                    [*_text("mode", *(["inputs"] if several else []), "precision"),
                     *_numbers("batch", "conc", "M", "efficiency")],
                    [[e["mode"], *([e.get("inputs", IDS)] if several else []), e.get("precision", "fp32"),
                      e["batch"], e["concurrency"], e["m"], f"{e['efficiency']:.2f}"]
                     for e in summary["scaling_efficiency"]])
    raw = summary.get("raw_vs_ids", [])
    lines += _table("Raw records vs ids (--raw): a raw_* model against its id model at the same point:",
                    [*_text("mode", "precision"), *_numbers("M", "batch", "conc", "ids infer/s",
                                                            "raw infer/s", "raw / ids", "ids p50 µs",
                                                            "raw p50 µs")],
                    [[c[0], e.get("precision", "fp32"), *c[1:]] for e, c in zip(raw, _raw_cells(raw),
                                                                                   strict=True)])
    lines += _table("Best Triton mode vs in-process fused graph (throughput ratio):",
                    [*_numbers("M"), *_text("precision"), *_numbers("batch", "conc"), *_text("best mode"),
                     *_numbers("ratio")],
                    [[e["m"], e.get("precision", "fp32"), e["batch"], e["concurrency"], e["best_mode"],
                      f"{e['ratio']:.2f}"] for e in summary["serving_ratio"]])
    if result.roofline is not None:
        lines += ["", "Roofline measured in this run (before the rows):", "",
                  *roofline_markdown(result.roofline)]
    lines += _table("Batch 1, concurrency 1: p50 against the read-bandwidth floor (weights in cache "
                    "or memory):", *_with_inputs(FLOOR_HEADER, summary["bandwidth_floor"],
                                                 _floor_rows(summary["bandwidth_floor"]), several))
    lines += _table("Achieved fraction of the compute roof (MACs/row × rows/s / roof):",
                    *_with_inputs(ROOF_HEADER, summary["compute_roof"], _roof_rows(summary["compute_roof"]),
                                  several))
    lines += [f"\n{note}" for note in beaten(summary)]
    lines += _table("Sharded fan-out overhead (sharded p50 − slowest shard's own p50):",
                    _numbers("M", "batch", "conc", "sharded p50 µs", "slowest shard p50 µs", "overhead µs"),
                    [[e["m"], e["batch"], e["concurrency"], f"{e['sharded_p50_us']:,.0f}",
                      f"{e['slowest_shard_p50_us']:,.0f}", f"{e['overhead_us']:,.0f}"]
                     for e in summary["fanout_overhead"]])
    lines += _table("Parallel servers (--pin-cores): K shards on their own cores against one server "
                    "holding one member (the slowest shard alone) on as many cores:",
                    _numbers(*_PINNED_HEADER), _pinned_cells(summary.get("parallel_servers", [])))
    lines += _table("What each M buys:", [*_numbers("M"), *_text("precision", "model"),
                                          *_numbers("rows", "AUC", "logloss")],
                    [[a["m"], a.get("precision", "fp32"), a["model"], a["rows"], f"{a['auc']:.4f}",
                      f"{a['logloss']:.4f}"]
                     for a in result.accuracy or []])
    return "\n".join(lines) + "\n"


def _raw_cells(entries: Sequence[dict[str, Any]]) -> list[list[str]]:
    """mode, M, batch, conc, ids infer/s, raw infer/s, ratio, ids p50, raw p50."""
    return [[e["mode"], str(e["m"]), str(e["batch"]), str(e["concurrency"]), f"{e['ids_throughput']:,.0f}",
             f"{e['raw_throughput']:,.0f}", f"{e['ratio']:.2f}" + ("" if e["stable"] else "*"),
             f"{e['ids_p50_us']:,.0f}", f"{e['raw_p50_us']:,.0f}"] for e in entries]


FLOOR_HEADER = [*_text("mode", "precision"), *_numbers("M", "dense MB"), *_text("weights in"),
                *_numbers("read GB/s", "floor µs", "p50 µs", "p50 / floor")]
ROOF_HEADER = [*_text("mode", "precision"), *_numbers("M", "batch", "conc", "MMAC/row", "GMAC/s",
                                                      "of runtime roof", "of hardware roof")]


def _with_inputs(header: Sequence[Column], entries: Sequence[dict[str, Any]], rows: list[list[str]],
                 several: bool) -> tuple[list[Column], list[list[str]]]:
    """A markdown table's header and rows with an `inputs` column after the mode when the run mixes them."""
    if not several:
        return list(header), rows
    return ([header[0], *_text("inputs"), *header[1:]],
            [[row[0], e.get("inputs", IDS), *row[1:]] for e, row in zip(entries, rows, strict=True)])


def _floor_cells(entries: Sequence[dict[str, Any]]) -> list[list[str]]:
    """mode, M, dense MB, weights in, read GB/s, floor µs, p50 µs, p50 / floor."""
    return [[e["mode"], str(e["m"]), f"{e['weight_bytes'] / 1e6:.1f}", e["weights_in"],
             f"{e['bandwidth_bytes_per_s'] / 1e9:.1f}", f"{e['floor_us']:,.0f}", f"{e['p50_us']:,.0f}",
             f"{e['ratio']:.2f}" if e["ratio"] else "-"] for e in entries]


def _floor_rows(entries: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [[c[0], e.get("precision", "fp32"), *c[1:]] for e, c in zip(entries, _floor_cells(entries),
                                                                       strict=True)]


def _roof_cells(entries: Sequence[dict[str, Any]]) -> list[list[str]]:
    """mode, M, batch, conc, MMAC/row, GMAC/s, of runtime roof, of hardware roof."""
    return [[e["mode"], str(e["m"]), str(e["batch"]), str(e["concurrency"]),
             f"{e['macs_per_row'] / 1e6:.2f}", f"{e['achieved_macs_per_s'] / 1e9:,.1f}",
             _pct(e["runtime_roof_fraction"]), _pct(e["hardware_roof_fraction"])] for e in entries]


def _roof_rows(entries: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [[c[0], e.get("precision", "fp32"), *c[1:]] for e, c in zip(entries, _roof_cells(entries),
                                                                       strict=True)]


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


def _pct(fraction: float | None) -> str:
    if fraction is None:
        return "-"
    return f"{100 * fraction:.1f} %" if fraction >= 0.01 else f"{100 * fraction:.2f} %"


def _roofline_brief(roofline: Roofline | None) -> str:
    if roofline is None:
        return "roofline not measured"
    r = roofline
    roofs = ", ".join(
        f"{p} {r.runtime_roof(p) / 1e9:,.0f} / {r.hardware_roof(p) / 1e9:,.0f}" for p in ("fp32", "int8")
    )
    return f"roofs {roofs} GMAC/s (runtime / hardware), memory read {r.read_bw_memory / 1e9:.1f} GB/s"


def _roofline_figures(roofline: Roofline) -> list[tuple[str, str]]:
    """(figure, value) pairs: what the screen and the markdown tables both show."""
    cache = f"{roofline.cache_bytes / (1 << 20):,.0f} MiB" if roofline.cache_bytes else "unknown"
    out = [
        ("threads", str(roofline.threads)),
        ("last-level cache (reported)", cache),
        (f"read, {roofline.memory_buffer_bytes >> 20} MiB buffer (memory)", _gbs(roofline.read_bw_memory)),
    ]
    out += [(f"read, {size / 1e6:.1f} MB buffer (cache)", _gbs(bw))
            for size, bw in sorted(roofline.read_bw_cached.items())]
    out += [
        ("onnxruntime fp32 MatMul (runtime roof fp32)", _gmacs(roofline.ort_macs["fp32"])),
        ("onnxruntime int8 MatMulInteger (runtime roof int8)", _gmacs(roofline.ort_macs["int8"])),
        ("torch fp32 matmul", _gmacs(roofline.torch_macs["fp32"])),
        ("torch bf16 matmul", _gmacs(roofline.torch_macs["bf16"])),
        ("hardware roof fp32 / int8", f"{roofline.hardware_roof('fp32') / 1e9:,.0f} / "
         f"{roofline.hardware_roof('int8') / 1e9:,.0f} GMAC/s"),
        ("measured in", f"{roofline.seconds:.1f} s"),
    ]
    return out


def _roofline_notes(roofline: Roofline) -> list[tuple[str, str]]:
    return [(f"note: {k}", v) for k, v in roofline.notes.items()]


def _gbs(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e9:.1f} GB/s"


def _gmacs(macs_per_s: float) -> str:
    return f"{macs_per_s / 1e9:,.0f} GMAC/s"


def roofline_table(roofline: Roofline) -> Table:
    """The figures measured, the machine's notes (a figure to doubt, and why) below them."""
    t = Table("roofline measured in this run (before the rows)", [*_text("figure"), *_numbers("value")],
              caption="\n".join(f"note: {k}: {v}" for k, v in roofline.notes.items()))
    for name, value in _roofline_figures(roofline):
        t.add_row(name, value)
    return t


def roofline_markdown(roofline: Roofline) -> list[str]:
    t = Table("roofline", [*_text("figure"), *_numbers("value")])
    for name, value in [*_roofline_figures(roofline), *_roofline_notes(roofline)]:
        t.add_row(name, value)
    return t.markdown().splitlines()


def _table(title: str, columns: Sequence[Column], rows: list[list[Any]]) -> list[str]:
    """A titled markdown table, or nothing when there are no rows."""
    if not rows:
        return []
    t = Table(title, list(columns))
    for row in rows:
        t.add_row(*row)
    return ["", title, "", t.markdown()]


_PINNED_HEADER = ("K", "cores/server", "batch", "conc", "sharded p50 µs", "sharded p99 µs", "single p50 µs",
                  "single p99 µs", "p50 ratio", "fan-out overhead µs")


def _pinned_cells(entries: list[dict[str, Any]]) -> list[list[str]]:
    """One row per sharded point of a `--pin-cores` run (see `ttsrec.bench.pinning.compare`)."""
    return [[str(e["shards"]), str(e["cores_per_server"]), str(e["batch"]), str(e["concurrency"]),
             f"{e['sharded_p50_us']:,.0f}", f"{e['sharded_p99_us']:,.0f}", f"{e['single_p50_us']:,.0f}",
             f"{e['single_p99_us']:,.0f}", "-" if e["p50_ratio"] is None else f"{e['p50_ratio']:.2f}",
             f"{e['fanout_overhead_us']:,.0f}"] for e in entries]
