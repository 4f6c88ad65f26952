"""Cascaded merging on one trained run: test AUC against members evaluated per row, fitted on validation.

    .venv/bin/python benchmarks/cascade_frontier.py runs/dcnv2x16 --data data/criteo --out reports/cascade
    .venv/bin/python benchmarks/cascade_frontier.py runs/dcnv2x16 --data data/criteo --out reports/cascade \\
        --onnx --graph-rows 4000        # served numbers: onnxruntime logits, graph == in-process checks

Writes `cascade.json` (every row of `ttsrec.evaluate.cascade.evaluate_cascades`, plus the exactness
checks), `cascade.png` and prints the fitted cascades next to the full merges and the first-k merges.
With `--onnx` the members are exported to ONNX and every logit comes from onnxruntime (what a server
computes); it then checks (1) the cascade on full-batch precomputed logits against the in-process
cascade (later stages on the surviving rows only) over the whole test split and (2) the one-graph
`cascade_mM` against the in-process cascade on `--graph-rows` rows, both with np.array_equal.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ttsrec.cli.common import run_app
from ttsrec.ensemble.cascade import DEFAULT_TOLERANCE, SELECTIONS, cascade_inprocess, run_cascade, stage_plans
from ttsrec.ensemble.order import balanced_order
from ttsrec.ensemble.runs import expand_checkpoints
from ttsrec.errors import UserError
from ttsrec.evaluate.cascade import MERGES, ORDERS, evaluate_cascades, fitted_rows, plot_cascade_frontier

app = typer.Typer(add_completion=False, help=__doc__)


def torch_logits(members, data) -> dict[str, np.ndarray]:
    from ttsrec.train.metrics import predict_logits

    return {split: np.stack([predict_logits([m.model], data, split)[0] for m in members])
            for split in ("valid", "test")}


def onnx_sessions(members, folder: Path):
    import onnx

    from ttsrec.ensemble.session import ort_session
    from ttsrec.export.onnx_member import export_member_onnx

    files = [export_member_onnx(m.model, folder / f"member_{i:02d}.onnx") for i, m in enumerate(members)]
    return [onnx.load(f) for f in files], [ort_session(f) for f in files]


def ort_logits(sessions, data, batch: int = 4096) -> dict[str, np.ndarray]:
    from ttsrec.ensemble.session import run_session

    out = {}
    for split in ("valid", "test"):
        ids = np.asarray(data.ids(split), dtype=np.int64)
        out[split] = np.stack([np.concatenate([run_session(s, ids[i:i + batch])[:, 0]
                                               for i in range(0, len(ids), batch)]) for s in sessions])
    return out


def exactness(models, sessions, cascade, logits: np.ndarray, ids: np.ndarray, graph_rows: int) -> dict:
    """Precomputed full-batch logits vs in-process, and the one graph vs in-process."""
    from ttsrec.ensemble.session import ort_session
    from ttsrec.repository import naming
    from ttsrec.repository.cascade_graph import cascade_graph

    merged, used = run_cascade(logits, cascade)
    start = time.perf_counter()
    served, served_used = cascade_inprocess(sessions, ids, cascade)
    inprocess_s = time.perf_counter() - start
    out = {"precomputed_rows": len(ids), "precomputed_used_equal": bool(np.array_equal(used, served_used)),
           "precomputed_logit_equal": bool(np.array_equal(merged, served)),
           "precomputed_max_abs_diff": float(np.abs(merged.astype(np.float64) - served).max()),
           "inprocess_seconds": round(inprocess_s, 3)}
    graph = ort_session(cascade_graph(models, cascade.to_dict(), stage_plans(cascade)).SerializeToString())
    sub = ids[:graph_rows]
    expected, expected_used = cascade_inprocess(sessions, sub, cascade)
    logit, members_used = graph.run([naming.LOGIT, naming.MEMBERS_USED], {naming.FEAT_IDS: sub})
    ones = [graph.run([naming.LOGIT, naming.MEMBERS_USED],
                      {naming.FEAT_IDS: sub[r:r + 1]}) for r in range(64)]
    one_expected = [cascade_inprocess(sessions, sub[r:r + 1], cascade) for r in range(64)]
    out.update({"graph_rows": len(sub), "graph_logit_equal": bool(np.array_equal(logit[:, 0], expected)),
                "graph_used_equal": bool(np.array_equal(members_used[:, 0], expected_used.astype("float32"))),
                "graph_batch1_equal": all(np.array_equal(g[0][:, 0], e[0]) and g[1][0, 0] == e[1][0]
                                          for g, e in zip(ones, one_expected, strict=True))})
    return out


def table(rows: list[dict]) -> str:
    lines = ["| order | merge | kind | rule | threshold | members/row | test AUC | logloss | valid AUC |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    shown = [r for r in rows if r["kind"] in ("prefix", "full") or r["fitted"]]
    for r in shown:
        kind = "cascade (kept)" if r["kept"] else r["kind"]
        tau = "" if r["threshold"] is None else f"{r['threshold']:.4g}"
        valid = "" if r["valid_auc"] is None else f"{r['valid_auc']:.5f}"
        lines.append(f"| {r['order']} | {r['merge']} | {kind} | {r['rule'] or ''} | {tau} | "
                     f"{r['avg_members']:.2f} | {r['auc']:.5f} | {r['logloss']:.5f} | {valid} |")
    return "\n".join(lines)


@app.command()
def main(
    run: Annotated[Path, typer.Argument(help="A tts-train run folder (or member checkpoints' folder).")],
    data: Annotated[Path, typer.Option(help="The prepared data the run was trained on.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    onnx: Annotated[bool, typer.Option(help="Logits from onnxruntime, plus the exactness checks.")] = False,
    graph_rows: Annotated[int, typer.Option(help="Rows for the graph == in-process check.")] = 4000,
    tolerance: Annotated[float, typer.Option(help="Validation AUC to give up.")] = DEFAULT_TOLERANCE,
    selection: Annotated[str, typer.Option(help=f"Threshold pick: {', '.join(SELECTIONS)}.")] = "stable",
    orders: Annotated[str, typer.Option(help=f"Member orders: {', '.join(ORDERS)}.")] = ",".join(ORDERS),
    merges: Annotated[str, typer.Option(help=f"Merges: {', '.join(MERGES)}.")] = ",".join(MERGES),
) -> None:
    import torch

    from ttsrec.data.prepared import PreparedData
    from ttsrec.models import model_cost
    from ttsrec.models.checkpoint import load_members

    torch.set_num_threads(2)
    members = load_members(expand_checkpoints([run]))
    prepared = PreparedData(data)
    labels = {s: np.asarray(prepared.labels(s), dtype=np.float64) for s in ("valid", "test")}
    backbones = [m.backbone for m in members]
    macs = [float(model_cost(m.model).macs_per_sample) for m in members]
    order_kinds = [o.strip() for o in orders.split(",") if o.strip()]
    merge_kinds = [m.strip() for m in merges.split(",") if m.strip()]
    if not set(order_kinds) <= set(ORDERS) or not set(merge_kinds) <= set(MERGES):
        raise UserError(f"--orders from {', '.join(ORDERS)}, --merges from {', '.join(MERGES)}")
    out.mkdir(parents=True, exist_ok=True)
    checks = None
    with tempfile.TemporaryDirectory(prefix="tts-cascade-") as tmp:
        start = time.perf_counter()
        if onnx:
            models, sessions = onnx_sessions(members, Path(tmp))
            logits = ort_logits(sessions, prepared)
        else:
            logits = torch_logits(members, prepared)
        logits_s = time.perf_counter() - start
        start = time.perf_counter()
        rows = evaluate_cascades(logits["valid"], labels["valid"], logits["test"], labels["test"],
                                 group=run.name, backbones=backbones, orders=order_kinds, merges=merge_kinds,
                                 tolerance=tolerance, selection=selection, member_macs=macs)
        eval_s = time.perf_counter() - start
        if onnx:
            from ttsrec.ensemble.cascade import fit_cascade

            fit = fit_cascade(logits["valid"], labels["valid"], order=balanced_order(backbones),
                              tolerance=tolerance, selection=selection)
            ids = np.asarray(prepared.ids("test"), dtype=np.int64)
            checks = {rule: exactness(models, sessions, rf.cascade, logits["test"], ids, graph_rows)
                      for rule, rf in fit.rules.items()}
    plot_cascade_frontier(rows, out / "cascade.png", title=f"{run.name}: cascaded merging (test split)")
    finite = [{k: "inf" if isinstance(v, float) and math.isinf(v) else v for k, v in r.items()} for r in rows]
    summary = {"run": str(run), "members": len(members), "backbones": backbones,
               "logits": "onnxruntime" if onnx else "torch", "tolerance": tolerance, "selection": selection,
               "seconds": {"logits": round(logits_s, 1), "evaluate": round(eval_s, 1)},
               "exactness": checks, "rows": finite}
    (out / "cascade.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(table(rows))
    for r in fitted_rows(rows):
        print(f"\n{r['order']}/{r['merge']}: {r['reason']}")
    if checks:
        print("\nexactness:", json.dumps(checks, indent=1))


if __name__ == "__main__":
    run_app(app)
