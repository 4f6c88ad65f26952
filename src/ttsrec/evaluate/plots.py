"""PNG plots of the evaluation: AUC against M, the compute-AUC frontier (AUC against inference MACs per row),
and the JS matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

LABELS = {"tts": "merge M members", "tts_balanced": "merge M (balanced mix)",
          "best_backbone": "merge M of best backbone", "group": "group runs (trained jointly)",
          "soup": "weight-averaged soup", "param_depth": "one deeper model", "param_width": "one wider model",
          "param_module_depth": "stacked interaction modules", "param_module_width": "K parallel modules"}
MARKERS = {"tts": "o", "tts_balanced": "o", "best_backbone": "s", "group": "D", "soup": "x",
           "param_depth": "^", "param_width": "v", "param_module_depth": "<", "param_module_width": ">"}
MERGE_STYLE = {"mean": "-", "weighted": "--", "selection": ":"}


def _series(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Rows by (curve, kind, merge); the runs of one group series make one curve."""
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r.get("series") or r["group"], r["kind"], r.get("merge", "mean")), []).append(r)
    return {k: sorted(v, key=lambda r: r["macs_per_sample"] if k[1].startswith("param") else r["M"])
            for k, v in out.items()}


def _label(group: str, kind: str, merge: str) -> str:
    suffix = f" [{merge}]" if merge not in ("mean", "none", "weights") else ""
    return f"{group}: {LABELS.get(kind, kind)}{suffix}"


def plot_auc_vs_m(rows: Sequence[dict[str, Any]], groups: Sequence[dict[str, Any]], path: Path) -> None:
    """Merged test AUC against M (log2 axis), with the subset spread and each group's reference line."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for (group, kind, merge), series in _series(rows).items():
        if kind.startswith("param") or kind == "soup":
            continue
        ms = [r["M"] for r in series]
        ax.errorbar(ms, [r["auc"] for r in series], yerr=[r["auc_std"] for r in series], capsize=3,
                    marker=MARKERS.get(kind, "o"), linestyle=MERGE_STYLE.get(merge, "-"),
                    label=_label(group, kind, merge))
    for g in groups:
        ref = g["reference"]
        ax.axhline(ref["auc"], linestyle=":", linewidth=1, color="grey")
        ax.annotate(f"{g['name']}: {ref['kind'].replace('_', ' ')} ({ref['backbone']})", (1, ref["auc"]),
                    fontsize=7, color="grey", va="bottom")
    ax.set_xscale("log", base=2)
    ticks = sorted({r["M"] for r in rows})
    ax.set_xticks(ticks, [str(m) for m in ticks])
    ax.minorticks_off()
    ax.set_xlabel("M (members merged)")
    ax.set_ylabel("test AUC")
    ax.set_title("Test-time scaling: AUC vs M")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


FAMILY_MARKERS = {"soup": "x", "distilled": "D", "single": "s"}
"""Families drawn as points (no line): a soup, a distilled student, a single model trained on labels."""


def plot_frontier(points: Sequence[dict[str, Any]], path: Path, *, span: float = 0.04) -> None:
    """The compute-AUC frontier: test AUC against inference MACs per row (log axis), every method a line
    or point (`ttsrec.evaluate.report.frontier_points`): merging M members (one line per merge), the
    scaled single models, soups, distilled students, and each cascade's threshold sweep (its fitted point
    a star). Points more than `span` below the best AUC, and soups below everything else, are left off the
    chart (the table has them)."""
    curves_count = len({p["curve"] for p in points})
    fig, ax = plt.subplots(figsize=(7.6, 4.8 + 0.11 * ((curves_count + 1) // 2)), dpi=110)
    curves: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        curves.setdefault(p["curve"], []).append(p)
    colours = plt.get_cmap("tab20").colors
    for n, series in enumerate(curves.values()):
        series = sorted(series, key=lambda p: (p["macs"], p["auc"]))
        first, colour = series[0], colours[(2 * n) % 20 if n < 10 else (2 * n + 1) % 20]
        xs, ys = [p["macs"] for p in series], [p["auc"] for p in series]
        family = first["family"]
        if family == "cascade":
            ax.plot(xs, ys, "-", linewidth=1, color=colour, alpha=0.85, label=first["label"])
            for p in series:
                if p["fitted"]:
                    ax.plot(p["macs"], p["auc"], "*", markersize=12, color=colour, markeredgecolor="black",
                            markeredgewidth=0.5)
            continue
        if family in FAMILY_MARKERS:
            ax.plot(xs, ys, FAMILY_MARKERS[family], linestyle="none", markersize=8 if family != "soup" else 6,
                    color=colour, label=first["label"])
        else:
            style = "--" if family == "param" else MERGE_STYLE.get(first.get("merge", "mean"), "-")
            ax.plot(xs, ys, marker=first.get("marker", "o"), markersize=4, linestyle=style, color=colour,
                    label=first["label"])
        for p in series:
            if p.get("note"):
                ax.annotate(p["note"], (p["macs"], p["auc"]), fontsize=6, textcoords="offset points",
                            xytext=(3, 3), color=colour)
    finite = [p["auc"] for p in points if np.isfinite(p["auc"])]
    ranged = [p["auc"] for p in points if np.isfinite(p["auc"]) and p["family"] != "soup"] or finite
    if finite:  # soups (often far below: their logloss too) do not stretch the axis
        top = max(finite)
        bottom = max(min(ranged), top - span)
        ax.set_ylim(bottom - 0.05 * (top - bottom + 1e-4), top + 0.08 * (top - bottom + 1e-4))
        hidden = [p for p in points if p["auc"] < bottom]
        if hidden:
            kinds = ", ".join(sorted({p["family"] for p in hidden}))
            ax.text(0.01, 0.01, f"{len(hidden)} point(s) below the chart ({kinds}): see the table",
                    transform=ax.transAxes, fontsize=6, color="grey")
    ax.set_xscale("log")
    ticks = _macs_ticks([p["macs"] for p in points if p["family"] == "merge" and p.get("merge") == "mean"]
                        or [p["macs"] for p in points])
    ax.set_xticks(ticks, [fmt_macs(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("inference MACs per row (cascades: their average)")
    ax.set_ylabel("test AUC")
    ax.set_title("The compute-AUC frontier (labels: M; * fitted cascade)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    _save(fig, path)  # the legend below the axes: it hides no point


def _macs_ticks(values: Sequence[float]) -> list[float]:
    """Distinct values at least 1.3x apart (tick labels that do not collide)."""
    ticks: list[float] = []
    for v in sorted(v for v in values if v > 0):
        if not ticks or v >= ticks[-1] * 1.3:
            ticks.append(v)
    return ticks


def fmt_macs(v: float) -> str:
    """MACs per sample as people read them: 2.46M, 190.0k."""
    return f"{v / 1e6:.2f}M" if v >= 1e5 else f"{v / 1e3:.1f}k"


def plot_js(matrix: Sequence[Sequence[float]], names: Sequence[str], title: str, path: Path) -> None:
    """Heat map of the pairwise Jensen-Shannon divergence matrix."""
    n = len(names)
    fig, ax = plt.subplots(figsize=(2.5 + 0.35 * n, 2 + 0.35 * n), dpi=110)
    image = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(n), names, rotation=90, fontsize=6)
    ax.set_yticks(range(n), names, fontsize=6)
    ax.set_title(title, fontsize=8)
    fig.colorbar(image, ax=ax, label="JS divergence (bits)")
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
