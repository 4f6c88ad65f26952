"""Deployment comparison (the paper's claim, served): an M-member ensemble against one parameter-scaled
model of about the same MACs per sample, both exported, served by tritonserver and benched side by side.

Each side is exported with `ttsrec.export.writer.export_repository` and measured with the bench's `Sweep`
(it starts the bundled tritonserver on the repository, measures each batch x concurrency point, and scores
the served model on the test split), one side after the other on the same machine.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ttsrec.ensemble.modes import TRITON_MODES, Mode
from ttsrec.errors import UserError
from ttsrec.export.writer import ExportConfig
from ttsrec.utils.atomic import atomic_dir, atomic_write_text

MARKER = "deployment.json"


def compare_deployment(members: Sequence[Path], scaled: Path, data_dir: Path, out: Path, *,
                       mode: str = Mode.FUSED, batches: Sequence[int] = (1, 256),
                       concurrencies: Sequence[int] = (1,), window_ms: int = 1000, max_trials: int = 10,
                       eval_rows: int = 20_000, protocol: str = "grpc", force: bool = False,
                       on_status: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Export and bench `members` (merged as one ensemble of all of them) and the single `scaled` model."""
    from ttsrec.bench import MeasureSettings, Sweep, SweepConfig
    from ttsrec.ensemble.runs import run_checkpoints
    from ttsrec.export.writer import export_repository
    from ttsrec.models import model_cost
    from ttsrec.models.checkpoint import load_members

    if mode not in TRITON_MODES:
        raise UserError(f"--mode must be fused or ensemble, got {mode!r}")
    files = [f for p in map(Path, members) for f in (run_checkpoints(p) if p.is_dir() else [p])]
    if len(files) < 2:
        raise UserError("the ensemble side needs at least two member checkpoints")
    loaded = load_members([*files, Path(scaled)])
    sides = {"ensemble": (files, loaded[:-1]), "scaled": ([Path(scaled)], loaded[-1:])}
    result: dict[str, Any] = {"format": "ttsrec.deployment/1", "data": str(data_dir), "mode": mode,
                              "batches": list(batches), "concurrencies": list(concurrencies), "sides": {}}
    with atomic_dir(Path(out), force=force, marker=MARKER, tool="deployment_compare",
                    inputs=[*files, Path(scaled), Path(data_dir)]) as tmp:
        for name, (paths, models) in sides.items():
            m = len(paths)
            costs = [model_cost(x.model) for x in models]
            on_status(f"exporting the {name} side (M={m})")
            repo = export_repository(paths, tmp / f"repo_{name}", config=ExportConfig(m_list=[m]),
                                     data=data_dir)
            on_status(f"benching the {name} side on tritonserver")
            sweep = Sweep(SweepConfig(
                modes=[mode], m_list=[m], batches=list(batches), concurrencies=list(concurrencies),
                repository=Path(repo), protocol=protocol, data=Path(data_dir), eval_data=Path(data_dir),
                eval_rows=eval_rows, settings=MeasureSettings(window_ms=window_ms, max_trials=max_trials)))
            measured = sweep.run(on_status=on_status)
            accuracy = next((a for a in measured.accuracy if a.get("m") == m), {})
            result["sides"][name] = {
                "M": m, "members": [x.name for x in models], "backbones": [x.backbone for x in models],
                "macs_per_sample": int(sum(c.macs_per_sample for c in costs)),
                "params": int(sum(c.params for c in costs)),
                "embedding_params": int(sum(c.embedding_params for c in costs)),
                "served_auc": accuracy.get("auc"), "served_logloss": accuracy.get("logloss"),
                "rows": [{"batch": r.batch, "concurrency": r.concurrency, "throughput": r.throughput,
                          "p50_us": r.p50_us, "p99_us": r.p99_us, "stable": r.stable} for r in measured.rows],
            }
        result["macs_ratio"] = result["sides"]["scaled"]["macs_per_sample"] / result["sides"]["ensemble"][
            "macs_per_sample"]
        plot(result, tmp / "deployment.png")
        atomic_write_text(tmp / "deployment.md", markdown(result))
        atomic_write_text(tmp / MARKER, json.dumps(result, indent=1) + "\n")
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Deployment comparison: M members merged vs one parameter-scaled model", "",
             f"Served by the bundled tritonserver ({result['mode']} model), one side after the other on one "
             f"machine. The scaled model has {result['macs_ratio']:.2f}x the ensemble's MACs per sample.", "",
             "![deployment](deployment.png)", "",
             "| side | M | MACs/sample | params (embedding) | served AUC | logloss | batch | concurrency "
             "| infer/s | p50 ms | p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, side in result["sides"].items():
        auc = "-" if side["served_auc"] is None else f"{side['served_auc']:.4f}"
        ll = "-" if side["served_logloss"] is None else f"{side['served_logloss']:.4f}"
        for r in side["rows"]:
            lines.append(f"| {name} | {side['M']} | {side['macs_per_sample']:,} | {side['params']:,} "
                         f"({side['embedding_params']:,}) | {auc} | {ll} | {r['batch']} | {r['concurrency']} "
                         f"| {r['throughput']:,.0f} | {r['p50_us'] / 1e3:.2f} | {r['p99_us'] / 1e3:.2f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), dpi=110)
    names = list(result["sides"])
    points = [(r["batch"], r["concurrency"]) for r in result["sides"][names[0]]["rows"]]
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        side = result["sides"][name]
        rows = {(r["batch"], r["concurrency"]): r for r in side["rows"]}
        xs = [i + k * width for i in range(len(points))]
        auc = "" if side["served_auc"] is None else f", AUC {side['served_auc']:.4f}"
        label = f"{name} (M={side['M']}{auc})"
        axes[0].bar(xs, [rows[p]["throughput"] if p in rows else 0 for p in points], width, label=label)
        axes[1].bar(xs, [rows[p]["p99_us"] / 1e3 if p in rows else 0 for p in points], width, label=label)
    for ax, title in zip(axes, ("throughput (rows/s)", "p99 latency (ms)"), strict=True):
        ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(points))],
                      [f"b={b} c={c}" for b, c in points])
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
