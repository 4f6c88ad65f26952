"""The cost–accuracy frontier: served AUC against throughput and p99 over every (M, precision, mode).

`best_within(points, budget_ms)` answers the deployment question: which configuration has the best AUC
while its p99 stays under the latency budget, at each measured batch size and concurrency.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttsrec.bench.row import IDS, RAW, Row


def frontier_points(rows: Sequence[Row], accuracy: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per row whose (repository, M) was scored: every mode of an export serves the same AUC (a
    raw row takes its raw model's AUC where that was measured, `--raw --eval-data`)."""
    auc = {(a.get("repository", ""), a["m"]): a["auc"] for a in accuracy if a.get("inputs", IDS) == IDS}
    raw_auc = {(a.get("repository", ""), a["m"]): a["auc"] for a in accuracy if a.get("inputs") == RAW}
    points = []
    for r in rows:
        key = (r.repository, r.m)
        score = raw_auc.get(key, auc.get(key)) if r.inputs == RAW else auc.get(key)
        if score is not None:
            points.append(
                {
                    "mode": r.mode, "m": r.m, "precision": r.precision, "batch": r.batch,
                    "concurrency": r.concurrency, "throughput": r.throughput, "p99_ms": r.p99_us / 1e3,
                    "auc": score, "repository": r.repository, "inputs": r.inputs,
                }
            )
    return points


def best_within(points: Sequence[dict[str, Any]], budget_ms: float) -> list[dict[str, Any]]:
    """Per (batch, concurrency): the point with the best AUC whose p99 is under the budget (then the
    higher throughput); nothing for a (batch, concurrency) where no configuration fits."""
    best: dict[tuple[int, int], dict[str, Any]] = {}
    for p in points:
        if p["p99_ms"] >= budget_ms:
            continue
        key = (p["batch"], p["concurrency"])
        if key not in best or (p["auc"], p["throughput"]) > (best[key]["auc"], best[key]["throughput"]):
            best[key] = p
    return [best[k] for k in sorted(best)]


def plot_frontier(path: Path, points: Sequence[dict[str, Any]]) -> None:
    """AUC against throughput (left) and p99 (right), one series per (mode, precision), M annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ttsrec.utils.atomic import atomic_write_bytes

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    series: dict[tuple[str, str, str, int, int], list[dict[str, Any]]] = {}
    for p in points:
        key = (p["mode"], p.get("inputs", IDS), p["precision"], p["batch"], p["concurrency"])
        series.setdefault(key, []).append(p)
    for (mode, kind, precision, batch, conc), pts in sorted(series.items()):
        pts = sorted(pts, key=lambda p: p["m"])
        label = f"{mode}{' raw' if kind == RAW else ''} {precision} b={batch} c={conc}"
        for ax, x in ((left, "throughput"), (right, "p99_ms")):
            ax.plot([p[x] for p in pts], [p["auc"] for p in pts], marker="o", label=label)
            for p in pts:
                ax.annotate(f"M={p['m']}", (p[x], p["auc"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    left.set_xlabel("throughput (inferences/s)")
    right.set_xlabel("p99 latency (ms)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_ylabel("served AUC")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize="small", frameon=False)
    fig.suptitle("tts-bench: cost–accuracy frontier")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    from io import BytesIO

    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
