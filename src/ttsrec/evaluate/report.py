"""The evaluation's outputs: results.json, results.csv, report.md, PNG plots, and the tables shown on screen
(`tables`: plain `ttsrec.utils.report.Table`s that the CLI draws)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from ttsrec.evaluate.plots import LABELS, plot_auc_vs_m, plot_auc_vs_macs, plot_js
from ttsrec.utils.atomic import atomic_write_text
from ttsrec.utils.report import Column, Table

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


CURVE_PREFIX = {"tts": "", "tts_balanced": "mix ", "best_backbone": "best ", "group": "joint "}
"""On screen a merge curve's rows are named by their merge (mean, weighted, selection), after this."""
LEGEND = {"tts_balanced": "mix: the first M in backbone-balanced order",
          "best_backbone": "best: M seeds of the best backbone", "group": "joint: trained together",
          "soup": "soup: the members' weights averaged"}


def tables(result: dict[str, Any]) -> list[Table]:
    """AUC vs M (and parameter scaling) as shown on screen: one table per group (a group series is one),
    its precision in the title, or in a column where its rows differ (parameter-scaled models trained in
    another precision)."""
    sections: dict[str, list[dict[str, Any]]] = {}
    for g in result["groups"]:
        sections.setdefault(g["series"] if g.get("joint") else g["name"], []).append(g)
    test_rows = result["data"]["test_rows"]
    out = []
    for name, groups in sections.items():
        names = {g["name"] for g in groups}
        rows = [r for r in result["rows"] if r["group"] in names]
        precisions = list(dict.fromkeys(r.get("precision", "fp32") for r in rows))
        mixed = len(precisions) > 1
        if len(groups) == 1:
            g = groups[0]
            what = "homogeneous" if g["homogeneous"] else "heterogeneous"
            what += f"{', joint' if g.get('joint') else ''}, {len(g['members'])} members"
        else:
            what = f"{len(groups)} jointly trained runs"
        title = f"{name} ({what}{'' if mixed else ', ' + precisions[0]}): test split, {test_rows:,} rows"
        legend = [text for kind, text in LEGEND.items() if any(r["kind"] == kind for r in rows)]
        ref = groups[0]["reference"]
        gain = (f"gain: AUC over the {ref['kind'].replace('_', ' ')} ({ref['auc']:.4f})" if len(groups) == 1
                else "gain: AUC over each run's reference")
        caption = "; ".join([gain, *legend])
        columns = [Column("prec", numeric=False)] if mixed else []
        columns += [Column("kind", numeric=False),
                    *(Column(h) for h in ("M", "AUC", "± std", "logloss", "gain", "JS bits", "MACs"))]
        table = Table(title, columns, caption=caption)
        for r in rows:
            kind = r["kind"]
            label = (CURVE_PREFIX[kind] + r.get("merge", "mean") if kind in CURVE_PREFIX
                     else SHORT.get(kind, kind))
            table.add_row(*([r.get("precision", "fp32")] if mixed else []), label, r["M"], f"{r['auc']:.4f}",
                          f"{r['auc_std']:.4f}", f"{r['logloss']:.4f}", f"{r['auc_gain']:+.4f}",
                          "" if r.get("js_mean") is None else f"{r['js_mean']:.3g}",
                          _fmt_macs(r["macs_per_sample"]))
        out.append(table)
    return out


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
             f"logloss {ref['logloss']:.4f}.", ""]
    numbers = ("M", "AUC", "± std", "logloss", "AUC gain", "logloss gain", "JS (bits)", "MACs/sample")
    curve = Table(g["name"], [Column("kind", numeric=False), Column("merge", numeric=False),
                              *map(Column, numbers)])
    for r in (r for r in rows if not r["kind"].startswith("param")):
        curve.add_row(LABELS.get(r["kind"], r["kind"]), r.get("merge", "mean"), r["M"], f"{r['auc']:.4f}",
                      f"{r['auc_std']:.4f}", f"{r['logloss']:.4f}", f"{r['auc_gain']:+.4f}",
                      f"{r['logloss_gain']:+.4f}", "-" if r.get("js_mean") is None else f"{r['js_mean']:.3g}",
                      _fmt_macs(r["macs_per_sample"]))
    lines.append(curve.markdown())
    lines += _merge_table(g, rows)
    lines += ["", f"Diversity: mean pairwise JS divergence {g['js_mean']:.3g} bits; merging all {gain['M']} "
              f"members changes AUC by {gain['auc']:+.4f} and logloss by {gain['logloss']:+.4f}.", ""]
    members = Table(f"{g['name']} members", [
        Column("member", numeric=False), Column("backbone", numeric=False), Column("seed"),
        Column("precision", numeric=False),
        *(Column(h) for h in ("test AUC", "test logloss", "MACs/sample", "params"))])
    for m in g["members"]:
        members.add_row(m["name"], m["backbone"], m["seed"], m.get("precision", "fp32"), f"{m['auc']:.4f}",
                        f"{m['logloss']:.4f}", _fmt_macs(m["macs_per_sample"]), f"{m['params']:,}")
    lines.append(members.markdown())
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
    out = Table(f"{g['name']}: mean vs fitted merges",
                [Column(h) for h in ("M", *merges, "best of the M alone (chosen on validation)")])
    for t in table:
        out.add_row(t["M"], *(f"{t[k]:.4f}" if k in t else "-" for k in merges), f"{t['best_single']:.4f}")
    return ["", "Mean vs fitted merges (test AUC; fitted on validation):", "", out.markdown()]


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
              "![AUC vs MACs](auc_vs_macs.png)", ""]
    table = Table("parameter scaling at equal inference cost",
                  [Column("group", numeric=False), Column("M"), Column("merge M", numeric=False),
                   *(Column(SHORT[k], numeric=False) for k in kinds), Column("winner", numeric=False)])
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
            table.add_row(g["name"], m, *cells, winner)
    won = sum(verdicts)
    lines += [table.markdown(), "", f"Merging had the best AUC in {won} of {len(verdicts)} equal-cost "
              "comparisons (the paper claims it wins at equal cost).", ""]
    return lines
