"""The evaluation's outputs: results.json, results.csv, cascade.csv, report.md, PNG plots (the compute-AUC
frontier among them), and the tables shown on screen (`tables`: plain `ttsrec.utils.report.Table`s that the
CLI draws)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl

from ttsrec.ensemble.cascade import DEFAULT_TOLERANCE
from ttsrec.evaluate.cascade import fitted_rows, plot_cascade_frontier
from ttsrec.evaluate.plots import LABELS, MARKERS, fmt_macs, plot_auc_vs_m, plot_frontier, plot_js
from ttsrec.utils.atomic import atomic_write_text
from ttsrec.utils.report import Column, Table

SHORT = {"tts": "merge", "tts_balanced": "merge mix", "best_backbone": "merge best", "group": "group run",
         "soup": "soup", "param_depth": "deeper MLP", "param_width": "wider MLP",
         "param_module_depth": "stacked modules", "param_module_width": "parallel modules"}
CSV_COLUMNS = ["group", "kind", "merge", "backbone", "M", "subsets", "auc", "auc_std", "logloss",
               "logloss_std", "auc_gain", "logloss_gain", "macs_per_sample", "js_mean", "best_member_auc",
               "params", "hparams", "weights", "precision"]
CASCADE_COLUMNS = ["group", "kind", "order", "merge", "rule", "threshold", "avg_members", "avg_macs", "auc",
                   "logloss", "valid_auc", "fitted", "kept", "crossfit", "precision", "reason"]


def write_outputs(out: Path, result: dict[str, Any]) -> None:
    rows = result["rows"]
    atomic_write_text(out / "results.json", json.dumps(result, indent=1) + "\n")
    table = pl.DataFrame([{c: _csv_value(r.get(c)) for c in CSV_COLUMNS} for r in rows],
                         schema={c: _dtype(c) for c in CSV_COLUMNS}, orient="row")
    table.write_csv(out / "results.csv")
    cascade = result.get("cascade") or []
    if cascade:
        pl.DataFrame([{c: _cascade_value(c, r.get(c)) for c in CASCADE_COLUMNS} for r in cascade],
                     schema={c: _cascade_dtype(c) for c in CASCADE_COLUMNS}, orient="row"
                     ).write_csv(out / "cascade.csv")
        for g in result["groups"]:
            mine = [r for r in cascade if r["group"] == g["name"]]
            if mine:
                title = f"{g['name']}: cascades, test AUC vs members per row (* kept rule)"
                plot_cascade_frontier(mine, out / f"cascade_{g['name']}.png", title=title)
    plot_auc_vs_m(rows, result["groups"], out / "auc_vs_m.png")
    plot_frontier(frontier_points(result), out / "frontier.png")
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


def _cascade_dtype(column: str) -> Any:
    if column in ("fitted", "kept", "crossfit"):
        return pl.Boolean
    if column in ("group", "kind", "order", "merge", "rule", "precision", "reason"):
        return pl.String
    return pl.Float64


def _cascade_value(column: str, value: Any) -> Any:
    return math.inf if column == "threshold" and value == "inf" else value


CURVE_PREFIX = {"tts": "", "tts_balanced": "mix ", "best_backbone": "best ", "group": "joint "}
"""On screen a merge curve's rows are named by their merge (mean, weighted, selection), after this."""
LEGEND = {"tts_balanced": "mix: the first M in backbone-balanced order",
          "best_backbone": "best: M seeds of the best backbone", "group": "joint: trained together",
          "soup": "soup: the members' weights averaged"}


def tables(result: dict[str, Any]) -> list[Table]:
    """AUC vs M (and parameter scaling) as shown on screen: one table per group (a group series is one),
    its precision in the title, or in a column where its rows differ (parameter-scaled models trained in
    another precision); then each group's cascades and, with cascades or distilled students, the
    compute-AUC frontier."""
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
            if g.get("distilled"):
                what += f", {student(g['distilled'])}"
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
                          fmt_macs(r["macs_per_sample"]))
        out.append(table)
    out += [t for t in (cascade_table(result, g["name"]) for g in result["groups"]) if t is not None]
    if result.get("cascade") or any(g.get("distilled") for g in result["groups"]):
        out.append(frontier_table(result))
    return out


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
        lines += _cascade_section(result, g["name"])
    lines += _param_section(result)
    lines += _frontier_section(result)
    return "\n".join(lines) + "\n"


def _group_section(g: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    ref, gain = g["reference"], g["gain"]
    kind = "homogeneous" if g["homogeneous"] else "heterogeneous"
    lines = [f"## {g['name']} ({kind}, {len(g['members'])} members, trained in {g.get('precision', 'fp32')})",
             ""]
    if g.get("distilled"):
        d = g["distilled"]
        lines += [f"Trained by `tts-train --distill-from` ({student(d)}): the mean of M={d.get('m')} members "
                  f"of `{d.get('run')}` as the soft label, alpha {d.get('alpha')} (0: labels only), "
                  f"temperature {d.get('temperature')}.", ""]
    lines += [f"Reference ({ref['kind'].replace('_', ' ')}, {ref['backbone']}): AUC {ref['auc']:.4f}, "
              f"logloss {ref['logloss']:.4f}.", ""]
    numbers = ("M", "AUC", "± std", "logloss", "AUC gain", "logloss gain", "JS (bits)", "MACs/sample")
    curve = Table(g["name"], [Column("kind", numeric=False), Column("merge", numeric=False),
                              *map(Column, numbers)])
    for r in (r for r in rows if not r["kind"].startswith("param")):
        curve.add_row(LABELS.get(r["kind"], r["kind"]), r.get("merge", "mean"), r["M"], f"{r['auc']:.4f}",
                      f"{r['auc_std']:.4f}", f"{r['logloss']:.4f}", f"{r['auc_gain']:+.4f}",
                      f"{r['logloss_gain']:+.4f}", "-" if r.get("js_mean") is None else f"{r['js_mean']:.3g}",
                      fmt_macs(r["macs_per_sample"]))
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
                        f"{m['logloss']:.4f}", fmt_macs(m["macs_per_sample"]), f"{m['params']:,}")
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
              "sample, parameters (embedding parameters). Every method on one MACs axis: the compute-AUC "
              "frontier below.", ""]
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
                cells.append(f"{merged['auc']:.4f}, {fmt_macs(merged['macs_per_sample'])}, ≤{total:,}")
            else:
                cells.append("-")
            for kind in kinds:
                r = got.get(kind)
                if r:
                    scores[SHORT[kind]] = r["auc"]
                    emb = f" ({r['embedding_params']:,})" if r.get("embedding_params") is not None else ""
                    cells.append(f"{r['auc']:.4f}, {fmt_macs(r['macs_per_sample'])}, {r['params']:,}{emb}")
                else:
                    cells.append("-")
            winner = max(scores, key=scores.__getitem__) if scores else "-"
            verdicts.append(winner == "merge")
            table.add_row(g["name"], m, *cells, winner)
    won = sum(verdicts)
    lines += [table.markdown(), "", f"Merging had the best AUC in {won} of {len(verdicts)} equal-cost "
              "comparisons (the paper claims it wins at equal cost).", ""]
    return lines


# -- cascaded merging ---------------------------------------------------------------------------------------

CASCADE_CAPTION = ("full: every member merged (weighted: weights fitted on the even validation rows, the "
                   "cascade's threshold on the odd); cascade: the kept rule at its fitted threshold; "
                   "M-merge: the AUC-vs-M curve's fitted merge of all M (weights on every validation row); "
                   "members: evaluated per row; Δ mean: test AUC minus the full mean's")


def cascade_summary(result: dict[str, Any], group: str) -> list[dict[str, Any]]:
    """Per merge: the full merge, then each order's fitted cascade (kept rule); then the AUC-vs-M curve's
    fitted merges of all the group's members. Each with `delta`, its test AUC minus the full mean's."""
    rows = [r for r in result.get("cascade") or [] if r["group"] == group]
    if not rows:
        return []
    full: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["kind"] == "full":
            full.setdefault(r["merge"], r)
    mean_auc = full["mean"]["auc"]
    out = []
    kept = fitted_rows(rows)
    for merge in dict.fromkeys(r["merge"] for r in rows):
        if merge in full:
            out.append({**full[merge], "what": "full", "order": "", "rule": ""})
        out += [{**r, "what": "cascade"} for r in kept if r["merge"] == merge]
    info = next(g for g in result["groups"] if g["name"] == group)
    n = len(info["members"])
    mine = [r for r in result["rows"] if r["group"] == group]
    main = next((k for k in ("tts", "tts_balanced") if any(r["kind"] == k for r in mine)), None)
    for r in mine:
        if r["kind"] == main and r["M"] == n and r["merge"] != "mean":
            out.append({**r, "what": "M-merge", "order": "", "rule": "", "avg_members": float(n),
                        "avg_macs": r["macs_per_sample"]})
    return [{**r, "delta": r["auc"] - mean_auc} for r in out]


def cascade_table(result: dict[str, Any], group: str) -> Table | None:
    summary = cascade_summary(result, group)
    if not summary:
        return None
    info = next(g for g in result["groups"] if g["name"] == group)
    title = (f"{group}: cascaded merging, {len(info['members'])} members, test split "
             f"({result['data']['test_rows']:,} rows; thresholds fitted on validation)")
    table = Table(title, [Column("", numeric=False), Column("merge", numeric=False),
                          Column("order", numeric=False), Column("rule", numeric=False),
                          *(Column(h) for h in ("members", "MACs/row", "AUC", "Δ mean", "logloss"))],
                  caption=CASCADE_CAPTION)
    for r in summary:
        macs = r.get("avg_macs")
        delta = f"{r['delta']:+.5f}".replace("-0.00000", "+0.00000")
        table.add_row(r["what"], r["merge"], r["order"] or "-", r["rule"] or "-", f"{r['avg_members']:.2f}",
                      "-" if macs is None else fmt_macs(macs), f"{r['auc']:.5f}", delta,
                      f"{r['logloss']:.5f}")
    return table


def _cascade_section(result: dict[str, Any], group: str) -> list[str]:
    table = cascade_table(result, group)
    if table is None:
        return []
    kept = fitted_rows([r for r in result["cascade"] if r["group"] == group])
    lines = ["### Cascaded merging (`--cascade`)", "",
             "Members evaluated in stages (1, 2, 4, ... members); after each stage the rows whose merged "
             "logit is settled stop. The rule (se, delta, rank) and its threshold are fitted on the "
             f"validation split only: the cheapest threshold within {DEFAULT_TOLERANCE:g} validation AUC of "
             "the full merge; "
             "the rule with the fewest members per row is kept. Orders: export (the exporter's balanced "
             "order), best (best validation AUC first). " + CASCADE_CAPTION + ".", "",
             table.markdown(), "", "Kept rules:", ""]
    for r in kept:
        lines.append(f"- {r['merge']}, {r['order']} order: {r['reason']}")
    return [*lines, "", f"![cascade {group}](cascade_{group}.png)", ""]


# -- the compute-AUC frontier --------------------------------------------------------------------------------

def _width(record: dict[str, Any]) -> str:
    return f"{float(record.get('width_mult') or 1):g}x"


def student(record: dict[str, Any] | None) -> str:
    """How a `tts-train --distill-from` member was trained, in a few words: 'distilled 2x', or 'labels
    only 2x' where alpha is 0 (the teacher's weight in the loss: none)."""
    if not record:
        return ""
    kind = "labels only" if record.get("alpha") == 0 else "distilled"
    return f"{kind} {_width(record)}"


def frontier_points(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every method on the MACs-per-row axis: merging M members (per merge), parameter-scaled single models,
    soups, distilled students and single models, and each cascade's threshold sweep (kept rule per order and
    merge; `fitted` marks its fitted point). Keys: curve (one line each), family, label, group, method, M,
    members (evaluated per row), macs, auc, logloss, fitted, table (a row of the frontier table)."""
    groups = {g["name"]: g for g in result["groups"]}
    points = []
    for r in result["rows"]:
        g = groups.get(r["group"], {})
        kind, merge = r["kind"], r.get("merge", "mean")
        owner = r.get("series") if kind == "group" else r["group"]
        distilled = g.get("distilled")
        base = {"group": owner, "M": r["M"], "macs": r["macs_per_sample"], "auc": r["auc"],
                "logloss": r["logloss"], "fitted": False, "table": True, "merge": merge, "members": 1.0}
        if kind.startswith("param"):
            points.append({**base, "family": "param", "curve": f"{owner}/{kind}", "method": SHORT[kind],
                           "label": f"{owner}: {LABELS[kind]}", "marker": MARKERS.get(kind, "^"),
                           "note": f"{r['M']}"})
        elif kind == "soup":
            points.append({**base, "family": "soup", "curve": f"{owner}/soup", "method": f"soup of {r['M']}",
                           "label": f"{owner}: weight-averaged soup"})
        elif len(g.get("members", [])) == 1 and kind == "tts":
            family = "distilled" if student(distilled).startswith("distilled") else "single"
            method = (f"{student(distilled)} (of M={distilled.get('m')})" if family == "distilled"
                      else student(distilled) or "single model")
            points.append({**base, "family": family, "curve": f"{owner}/{family}", "method": method,
                           "label": f"{owner}: {method}", "note": _width(distilled) if distilled else ""})
        else:
            what = LABELS.get(kind, kind) + (f", {student(distilled)}" if distilled else "")
            suffix = f" [{merge}]" if merge != "mean" else ""
            short = f"merge {CURVE_PREFIX.get(kind, '')}{merge}"
            short += f" {student(distilled)}" if distilled else ""
            points.append({**base, "family": "merge", "curve": f"{owner}/{kind}/{merge}",
                           "method": short, "label": f"{owner}: {what}{suffix}",
                           "members": float(r["M"]), "marker": MARKERS.get(kind, "o"),
                           "note": f"{r['M']}" if merge == "mean" else ""})
    cascade = result.get("cascade") or []
    for kept in fitted_rows(cascade):
        key = (kept["group"], kept["order"], kept["merge"], kept["rule"])
        name = f"cascade {kept['merge']}/{kept['order']}/{kept['rule']}"
        n = len(groups[kept["group"]]["members"])
        for r in cascade:
            if r["kind"] == "cascade" and (r["group"], r["order"], r["merge"], r["rule"]) == key:
                points.append({"group": kept["group"], "M": n, "macs": r["avg_macs"], "auc": r["auc"],
                               "logloss": r["logloss"], "fitted": r is kept, "table": r is kept,
                               "merge": r["merge"], "members": r["avg_members"], "family": "cascade",
                               "curve": "/".join(map(str, key)), "method": name,
                               "label": f"{kept['group']}: {name}"})
    return points


def frontier_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The frontier table's points, cheapest first; `front`: no other point has at most its MACs and a
    higher AUC (or the same AUC for fewer MACs)."""
    points = [p for p in frontier_points(result) if p["table"]]
    for p in points:
        p["front"] = not any((q["macs"] <= p["macs"] and q["auc"] > p["auc"])
                             or (q["macs"] < p["macs"] and q["auc"] >= p["auc"]) for q in points)
    return sorted(points, key=lambda p: (p["macs"], -p["auc"]))


FRONTIER_CAPTION = ("merge: M members merged (mix: backbone-balanced order; best: seeds of the best "
                    "backbone); cascade merge/order/rule: the fitted cascade; MACs/row: counted inference "
                    "MACs per row (cascades: their average over the test rows); members: members evaluated "
                    "per row; front *: on the frontier (nothing cheaper is better)")


def frontier_table(result: dict[str, Any]) -> Table:
    table = Table(f"the compute-AUC frontier: test split, {result['data']['test_rows']:,} rows",
                  [Column("group", numeric=False), Column("method", numeric=False),
                   *(Column(h) for h in ("M", "members", "MACs/row", "AUC", "logloss")),
                   Column("front", numeric=False)],
                  caption=FRONTIER_CAPTION)
    for p in frontier_rows(result):
        table.add_row(p["group"], p["method"], p["M"], f"{p['members']:.2f}", fmt_macs(p["macs"]),
                      f"{p['auc']:.4f}", f"{p['logloss']:.4f}", "*" if p["front"] else "")
    return table


def distilled_comparisons(result: dict[str, Any]) -> list[str]:
    """Where each distilled student lands against merging M members of every other homogeneous group at
    about its MACs: the merge of mean with the nearest MACs per group (log distance)."""
    points = frontier_rows(result)
    lines = []
    merges = [p for p in points if p["family"] == "merge" and p["merge"] == "mean"]
    for s in (p for p in points if p["family"] == "distilled"):
        near = {}
        for p in merges:
            if p["group"] == s["group"]:
                continue
            gap = abs(math.log(p["macs"] / s["macs"]))
            if p["group"] not in near or gap < near[p["group"]][0]:
                near[p["group"]] = (gap, p)
        cells = [f"{g} M={p['M']} at {fmt_macs(p['macs'])}: {p['auc']:.4f} ({s['auc'] - p['auc']:+.4f})"
                 for g, (_, p) in near.items()]
        lines.append(f"- {s['group']}, {s['method']}, {fmt_macs(s['macs'])} MACs: AUC {s['auc']:.4f}"
                     + (f"; merging {'; '.join(cells)}" if cells else ""))
    return lines


def _frontier_section(result: dict[str, Any]) -> list[str]:
    lines = ["## The compute-AUC frontier", "",
             "Test AUC against inference MACs per row, every method on one axis: merging M members (each "
             "merge a line, labels: M), parameter-scaled single models at the MACs of M members, soups (one "
             "model's MACs), distilled students and single models (points), and each fitted cascade's "
             "threshold sweep (a line from one member to all, the fitted threshold a star). Points more "
             "than 0.04 AUC below the best, and soups below every other point, are off the chart; the table "
             "has every one.", "",
             "![compute-AUC frontier](frontier.png)", "", frontier_table(result).markdown(), "",
             FRONTIER_CAPTION + "."]
    students = distilled_comparisons(result)
    if students:
        lines += ["", "Distilled students against merging at about the same MACs (Δ: student minus merge):",
                  "", *students]
    return [*lines, ""]
