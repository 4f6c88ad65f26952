"""Orthogonality (the paper's Wukong/RankMixer table): test-time scaling on top of parameter-scaled members.

Three member variants of one backbone: the base, a deeper one (more stacked interaction modules) and a
wider one (K parallel interaction modules, each with its own embedding table). M members of each are
trained with different seeds and merged; if merging still gains on the scaled members, the two kinds of
scaling are orthogonal.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ttsrec.errors import UserError
from ttsrec.utils.atomic import atomic_dir, atomic_write_text
from ttsrec.utils.report import SILENT, Reporter

MARKER = "orthogonality.json"


def variants(backbone: str, base: dict[str, Any], depth_add: int,
             width_modules: int) -> dict[str, dict[str, Any]]:
    """hparam overrides of the base, deeper and wider members."""
    from ttsrec.models import backbone_class, default_hparams

    cls = backbone_class(backbone)
    if cls.module_depth_knob is None or cls.module_width_knob is None:
        raise UserError(f"{backbone} has no interaction module to scale; use dcn, dcnv2, wukong or rankmixer")
    if depth_add < 1 or width_modules < 2:
        raise UserError("--depth-add must be >= 1 and --width-modules >= 2")
    depth = int(base.get(cls.module_depth_knob, default_hparams(backbone)[cls.module_depth_knob]))
    return {"base": dict(base), "deeper": {**base, cls.module_depth_knob: depth + depth_add},
            "wider": {**base, cls.module_width_knob: width_modules}}


def run_orthogonality(data_dir: Path, out: Path, *, backbone: str = "wukong", members: int = 4,
                      m_list: Sequence[int] | None = None, hparams: dict[str, Any] | None = None,
                      depth_add: int = 3, width_modules: int = 2, train_options: dict[str, Any] | None = None,
                      force: bool = False, reporter: Reporter = SILENT,
                      on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train `members` seeds of each variant, evaluate each run, write a table, a plot and JSON into `out`."""
    from ttsrec.evaluate import evaluate_runs
    from ttsrec.train import train_members

    if members < 1:
        raise UserError(f"--members must be >= 1, got {members}")
    plan = variants(backbone, dict(hparams or {}), depth_add, width_modules)
    rows: list[dict[str, Any]] = []
    with atomic_dir(Path(out), force=force, marker=MARKER, tool="orthogonality", inputs=[data_dir]) as tmp:
        for name, hp in plan.items():
            if on_stage:
                on_stage(f"train {members} x {name} {backbone}")
            run = train_members(data_dir, f"{backbone}*{members}", tmp / "runs" / name, hparams=hp,
                                reporter=reporter, **(train_options or {}))
            if on_stage:
                on_stage(f"evaluate {name}")
            result = evaluate_runs([run], data_dir, tmp / "eval" / name, m_list=m_list, merges=["mean"],
                                   soup=False, reporter=reporter)
            member = result["groups"][0]["members"][0]
            for r in (r for r in result["rows"] if r["kind"] == "tts"):
                rows.append({"variant": name, "M": r["M"], "auc": r["auc"], "auc_std": r["auc_std"],
                             "logloss": r["logloss"], "auc_gain": r["auc_gain"],
                             "macs_per_sample": r["macs_per_sample"], "member_params": member["params"],
                             "hparams": hp})
        summary = {"format": "ttsrec.orthogonality/1", "backbone": backbone, "members": members,
                   "data": str(data_dir), "variants": plan, "rows": rows}
        plot(rows, backbone, tmp / "orthogonality.png")
        atomic_write_text(tmp / "orthogonality.md", markdown(summary))
        atomic_write_text(tmp / MARKER, json.dumps(summary, indent=1) + "\n")
    return summary


def markdown(summary: dict[str, Any]) -> str:
    rows = summary["rows"]
    ms = sorted({r["M"] for r in rows})
    lines = [f"# Orthogonality: test-time scaling on parameter-scaled {summary['backbone']} members", "",
             "Test AUC of the equal-weight logit mean of M seeds (± std over member subsets); the gain is "
             "against the variant's own mean single member.", "",
             "![AUC vs M](orthogonality.png)", "",
             "| variant | member params | member MACs | " + " | ".join(f"M={m}" for m in ms)
             + " | gain at max M |",
             "|---|---:|---:|" + "---:|" * len(ms) + "---:|"]
    for name in summary["variants"]:
        mine = {r["M"]: r for r in rows if r["variant"] == name}
        if not mine:
            continue
        one = mine[min(mine)]
        cells = " | ".join(f"{mine[m]['auc']:.4f} ± {mine[m]['auc_std']:.4f}" if m in mine else "-"
                           for m in ms)
        top = mine[max(mine)]
        lines.append(f"| {name} | {one['member_params']:,} | {one['macs_per_sample'] / one['M']:,.0f} "
                     f"| {cells} | {top['auc_gain']:+.4f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], backbone: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = sorted((r for r in rows if r["variant"] == name), key=lambda r: r["M"])
        ax.errorbar([r["M"] for r in mine], [r["auc"] for r in mine], yerr=[r["auc_std"] for r in mine],
                    marker="o", capsize=3, label=name)
    ax.set_xscale("log", base=2)
    ticks = sorted({r["M"] for r in rows})
    ax.set_xticks(ticks, [str(m) for m in ticks])
    ax.minorticks_off()
    ax.set_xlabel("M (seeds merged)")
    ax.set_ylabel("test AUC")
    ax.set_title(f"Test-time scaling on parameter-scaled {backbone} members")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
