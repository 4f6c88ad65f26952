"""`--plot`: throughput and p99 latency against M, as a PNG."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from ttsrec.bench.row import RAW, Row
from ttsrec.utils.atomic import atomic_write_bytes


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
