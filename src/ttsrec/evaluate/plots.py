"""PNG plots of the evaluation: AUC against M, and AUC against inference MACs per sample."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

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


def plot_auc_vs_macs(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Test-time scaling and parameter scaling on one inference-cost axis."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for (group, kind, merge), series in _series(rows).items():
        if kind == "soup" or merge not in ("mean", "none"):
            continue
        ax.plot([r["macs_per_sample"] for r in series], [r["auc"] for r in series],
                marker=MARKERS.get(kind, "o"), linestyle="--" if kind.startswith("param") else "-",
                label=_label(group, kind, merge))
        for r in series:
            ax.annotate(f"{r['M']}", (r["macs_per_sample"], r["auc"]), fontsize=6,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_xscale("log")
    ax.set_xlabel("inference MACs per sample")
    ax.set_ylabel("test AUC")
    ax.set_title("Equal inference cost: merging vs deeper/wider (labels: M)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


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
