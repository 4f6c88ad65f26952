"""The evaluation's outputs: results.json, results.csv, report.md, PNG plots and a rich table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
from rich.table import Table

from ttsrec.evaluate.plots import LABELS, plot_auc_vs_m, plot_auc_vs_macs, plot_js
from ttsrec.utils.atomic import atomic_write_text

SHORT = {"tts": "merge", "tts_balanced": "merge mix", "best_backbone": "merge best", "group": "group run",
         "soup": "soup", "param_depth": "deeper MLP", "param_width": "wider MLP",
         "param_module_depth": "stacked modules", "param_module_width": "parallel modules"}
CSV_COLUMNS = ["group", "kind", "merge", "backbone", "M", "subsets", "auc", "auc_std", "logloss",
               "logloss_std", "auc_gain", "logloss_gain", "macs_per_sample", "js_mean", "best_member_auc",
               "params", "hparams", "weights", "precision"]


def write_outputs(out: Path, result: dict[str, Any]) -> None:
    rows = result["rows"]
    atomic_write_text(out / "results.json", json.dumps(result, indent=1) + "\n")
    table = pl.DataFrame([{c: _csv_value(r.get(c)) for c in CSV_COLUMNS} for r in rows],
                         schema={c: _dtype(c) for c in CSV_COLUMNS}, orient="row")
    table.write_csv(out / "results.csv")
    plot_auc_vs_m(rows, result["groups"], out / "auc_vs_m.png")
    plot_auc_vs_macs(rows, out / "auc_vs_macs.png")
    for g in result["groups"]:
        if len(g["members"]) > 1:
            plot_js(g["js_matrix"], [m["name"].removeprefix("member_") for m in g["members"]],
                    f"{g['name']}: pairwise JS divergence", out / f"js_{g['name']}.png")
    atomic_write_text(out / "report.md", markdown(result))


def _dtype(column: str) -> Any:
    if column in ("group", "precision", "kind", "merge", "backbone", "hparams", "weights"):
        return pl.String
    return pl.Int64 if column in ("M", "subsets", "params") else pl.Float64


def _csv_value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict) else value


def rich_table(result: dict[str, Any]) -> Table:
    """AUC vs M (and parameter scaling) for every group, as shown on screen."""
    table = Table(title=f"test split: {result['data']['test_rows']:,} rows")
    for col in ("group", "precision", "kind", "merge", "M", "AUC", "± std", "logloss", "gain", "JS bits",
                "MACs"):
        table.add_column(col, justify="left" if col in ("group", "precision", "kind", "merge") else "right")
    for r in result["rows"]:
        table.add_row(r["group"], r.get("precision", "fp32"), SHORT.get(r["kind"], r["kind"]),
                      r.get("merge", "mean"), str(r["M"]),
                      f"{r['auc']:.4f}",
                      f"{r['auc_std']:.4f}", f"{r['logloss']:.4f}", f"{r['auc_gain']:+.4f}",
                      "" if r.get("js_mean") is None else f"{r['js_mean']:.3g}",
                      _fmt_macs(r["macs_per_sample"]))
    return table


def _fmt_macs(v: float) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e5 else f"{v / 1e3:.1f}k"


INTRO = ("Merged prediction = sigmoid(mean of the M members' logits). Homogeneous groups: mean ± std over "
         "up to {subsets} random member subsets per M; heterogeneous groups: the first M members in "
         "backbone-balanced order. Gains are against the mean single member (homogeneous) or the best "
         "single backbone (heterogeneous). JS = mean pairwise Jensen-Shannon divergence (bits) between the "
         "merged members' predicted click distributions. Fitted merges (weighted: non-negative logit "
         "weights summing to one that minimise validation logloss after a fitted scale and offset; "
         "selection: greedy ensemble selection with replacement, Caruana et al. 2004) are fitted on the "
         "validation split of the same members and scored on test. A soup averages the members' weights "
         "into one model (same architecture only).")


def markdown(result: dict[str, Any]) -> str:
    data = result["data"]
    lines = ["# Test-time scaling report", "",
             f"Test split of `{data['dir']}`: {data['test_rows']:,} rows, feature map "
             f"`{data['feature_map_hash']}`. " + INTRO.format(subsets=result["options"]["subsets"]), "",
             "![AUC vs M](auc_vs_m.png)", ""]
    for g in result["groups"]:
        lines += _group_section(g, [r for r in result["rows"] if r["group"] == g["name"]])
    lines += _param_section(result)
    return "\n".join(lines) + "\n"


def _group_section(g: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    ref, gain = g["reference"], g["gain"]
    kind = "homogeneous" if g["homogeneous"] else "heterogeneous"
    lines = [f"## {g['name']} ({kind}, {len(g['members'])} members, trained in {g.get('precision', 'fp32')})",
             "",
             f"Reference ({ref['kind'].replace('_', ' ')}, {ref['backbone']}): AUC {ref['auc']:.4f}, "
             f"logloss {ref['logloss']:.4f}.", "",
             "| kind | merge | M | AUC | ± std | logloss | AUC gain | logloss gain | JS (bits) | MACs/sample "
             "|",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in (r for r in rows if not r["kind"].startswith("param")):
        js = "-" if r.get("js_mean") is None else f"{r['js_mean']:.3g}"
        lines.append(f"| {LABELS.get(r['kind'], r['kind'])} | {r.get('merge', 'mean')} | {r['M']} "
                     f"| {r['auc']:.4f} | {r['auc_std']:.4f} | {r['logloss']:.4f} | {r['auc_gain']:+.4f} "
                     f"| {r['logloss_gain']:+.4f} | {js} | {_fmt_macs(r['macs_per_sample'])} |")
    lines += _merge_table(g, rows)
    lines += ["", f"Diversity: mean pairwise JS divergence {g['js_mean']:.3g} bits; merging all {gain['M']} "
              f"members changes AUC by {gain['auc']:+.4f} and logloss by {gain['logloss']:+.4f}.", "",
              "| member | backbone | seed | precision | test AUC | test logloss | MACs/sample | params |",
              "|---|---|---:|---|---:|---:|---:|---:|"]
    for m in g["members"]:
        lines.append(f"| {m['name']} | {m['backbone']} | {m['seed']} | {m.get('precision', 'fp32')} "
                     f"| {m['auc']:.4f} | {m['logloss']:.4f} "
                     f"| {_fmt_macs(m['macs_per_sample'])} | {m['params']:,} |")
    if len(g["members"]) > 1:
        lines += ["", f"![JS matrix](js_{g['name']}.png)"]
    return [*lines, ""]


def merge_table_rows(g: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per M of the group's main curve: test AUC of mean / weighted / selection and of the member one would
    deploy alone from the same merged members (best validation AUC; mean over subsets)."""
    main = next((k for k in ("group", "tts", "tts_balanced") if any(r["kind"] == k for r in rows)), None)
    out = []
    for m in sorted({r["M"] for r in rows if r["kind"] == main}):
        mine = [r for r in rows if r["kind"] == main and r["M"] == m]
        cells = {r["merge"]: r["auc"] for r in mine}
        out.append({"M": m, **cells, "best_single": mine[0].get("best_member_auc", float("nan"))})
    return out


def _merge_table(g: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    table = merge_table_rows(g, rows)
    merges = [k for k in ("mean", "weighted", "selection") if any(k in t for t in table)]
    if len(merges) < 2:
        return []
    lines = ["", "Mean vs fitted merges (test AUC; fitted on validation):", "",
             f"| M | {' | '.join(merges)} | best of the M alone (chosen on validation) |",
             "|---:|" + "---:|" * (len(merges) + 1)]
    for t in table:
        cells = " | ".join(f"{t[k]:.4f}" if k in t else "-" for k in merges)
        lines.append(f"| {t['M']} | {cells} | {t['best_single']:.4f} |")
    return lines


def _param_section(result: dict[str, Any]) -> list[str]:
    params = [r for r in result["rows"] if r["kind"].startswith("param")]
    lines = ["## Parameter scaling at equal inference cost", ""]
    if not params:
        return [*lines, "Not run (`--param-scaling` trains deeper and wider single models).", ""]
    kinds = [k for k in ("param_depth", "param_width", "param_module_depth", "param_module_width")
             if any(r["kind"] == k for r in params)]
    lines += ["Single models scaled until their MACs per sample match M members, trained by the same trainer "
              "with the run's options, against merging M members. Deeper/wider MLP: today's knobs (MLP "
              "layers and widths); stacked/parallel modules: the paper's definition (more interaction "
              "layers; K interaction modules each with its own embedding table). Cells: test AUC, MACs per "
              "sample, parameters (embedding parameters).", "",
              "![AUC vs MACs](auc_vs_macs.png)", "",
              f"| group | M | merge M | {' | '.join(SHORT[k] for k in kinds)} | winner |",
              "|---|---:|---|" + "---|" * len(kinds) + "---|"]
    verdicts = []
    for g in result["groups"]:
        merges = ("tts", "best_backbone")
        tts = {r["M"]: r for r in result["rows"]
               if r["group"] == g["name"] and r["kind"] in merges and r.get("merge", "mean") == "mean"}
        member_params = {m["name"]: m["params"] for m in g["members"]}
        for m in sorted({r["M"] for r in params if r["group"] == g["name"]}):
            got = {r["kind"]: r for r in params if r["group"] == g["name"] and r["M"] == m}
            cells, scores = [], {}
            merged = tts.get(m)
            if merged:
                scores["merge"] = merged["auc"]
                total = m * max(member_params.values())
                cells.append(f"{merged['auc']:.4f}, {_fmt_macs(merged['macs_per_sample'])}, ≤{total:,}")
            else:
                cells.append("-")
            for kind in kinds:
                r = got.get(kind)
                if r:
                    scores[SHORT[kind]] = r["auc"]
                    emb = f" ({r['embedding_params']:,})" if r.get("embedding_params") is not None else ""
                    cells.append(f"{r['auc']:.4f}, {_fmt_macs(r['macs_per_sample'])}, {r['params']:,}{emb}")
                else:
                    cells.append("-")
            winner = max(scores, key=scores.__getitem__) if scores else "-"
            verdicts.append(winner == "merge")
            lines.append(f"| {g['name']} | {m} | {' | '.join(cells)} | {winner} |")
    won = sum(verdicts)
    lines += ["", f"Merging had the best AUC in {won} of {len(verdicts)} equal-cost comparisons "
              f"(the paper claims it wins at equal cost).", ""]
    return lines
