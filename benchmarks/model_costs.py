"""Parameters and MACs per sample of the nine backbones (default hparams) on one feature map.

    .venv/bin/python benchmarks/model_costs.py --data runs/data            # a prepared dataset
    .venv/bin/python benchmarks/model_costs.py --synth-rows 200000         # synth + prepare first

Prints a markdown table (the one in docs/models.md) and optionally writes it as CSV/JSON;
`--latency` adds the median onnxruntime time of one member per call (one thread) at batch 1 and 256.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import polars as pl
import torch
import typer
from rich.progress import Progress

from ttsrec.cli.common import console, run_app
from ttsrec.data.feature_map import FeatureMap
from ttsrec.errors import UserError
from ttsrec.models import BACKBONES, build_model, model_cost

app = typer.Typer(add_completion=False, help=__doc__)


def cost_table(fmap: FeatureMap, backbones: list[str], latency: bool) -> pl.DataFrame:
    rows = []
    with Progress(console=console, transient=True) as progress, \
            tempfile.TemporaryDirectory(prefix="tts-costs-onnx-") as tmp:
        task = progress.add_task("counting", total=len(backbones))
        for name in backbones:
            torch.manual_seed(0)
            model = build_model(name, fmap)
            cost = model_cost(model)
            row = {"backbone": name, "dense_params": cost.dense_params,
                   "embedding_params": cost.embedding_params, "params": cost.params,
                   "macs_per_sample": cost.macs_per_sample,
                   "dense_weight_mb": round(cost.dense_weight_bytes / 1e6, 2),
                   "hparams": json.dumps(model.hparams, separators=(",", ":"))}
            if latency:
                row.update(ort_latency(model, Path(tmp) / f"{name}.onnx"))
            rows.append(row)
            progress.advance(task)
    return pl.DataFrame(rows)


def ort_latency(model: torch.nn.Module, path: Path) -> dict[str, float]:
    """Median onnxruntime time per call (one thread, no spinning) at batch 1 and 256."""
    from ttsrec.ensemble.session import ort_session, run_session
    from ttsrec.export.onnx_member import export_member_onnx

    session = ort_session(export_member_onnx(model, path), intra_op_threads=1)
    rng = np.random.default_rng(0)
    out = {}
    for batch, calls in ((1, 300), (256, 30)):
        ids = (rng.random((batch, len(model.vocab_sizes))) * np.asarray(model.vocab_sizes)).astype(np.int64)
        for _ in range(5):
            run_session(session, ids)
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            run_session(session, ids)
            times.append(time.perf_counter() - start)
        out[f"ort_p50_ms_b{batch}"] = round(float(np.median(times)) * 1e3, 3)
    return out


def markdown(table: pl.DataFrame, fmap: FeatureMap) -> str:
    lines = [f"Feature map `{fmap.dataset_id}` ({fmap.num_fields} fields, {sum(fmap.vocab_sizes):,} ids, "
             f"{fmap.hash}), default hparams, float32.", "",
             "| backbone | dense params | embedding params | MACs / sample | dense weights (MB) |",
             "|---|---:|---:|---:|---:|"]
    timed = "ort_p50_ms_b1" in table.columns
    if timed:
        lines[-2] += " ORT p50 batch 1 (ms) | ORT p50 batch 256 (ms) |"
        lines[-1] += "---:|---:|"
    for row in table.iter_rows(named=True):
        line = (f"| {row['backbone']} | {row['dense_params']:,} | {row['embedding_params']:,} | "
                f"{row['macs_per_sample']:,} | {row['dense_weight_mb']:.2f} |")
        if timed:
            line += f" {row['ort_p50_ms_b1']:.3f} | {row['ort_p50_ms_b256']:.2f} |"
        lines.append(line)
    return "\n".join(lines)


def synth_feature_map(rows: int, seed: int) -> FeatureMap:
    from ttsrec.data.prepare import prepare
    from ttsrec.data.synth import write_synthetic_criteo

    with tempfile.TemporaryDirectory(prefix="tts-costs-") as tmp:
        tsv = write_synthetic_criteo(Path(tmp) / "criteo.tsv", rows=rows, seed=seed)
        prepare("criteo", [tsv], Path(tmp) / "data", seed=seed)
        return FeatureMap.load(Path(tmp) / "data")


@app.command()
def main(
    data: Annotated[Path | None, typer.Option(help="Prepared dataset dir or feature_map.json.")] = None,
    synth_rows: Annotated[int, typer.Option(help="Without --data: synthetic rows to prepare.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data.")] = 0,
    backbones: Annotated[str, typer.Option(help="Comma-separated subset.")] = ",".join(BACKBONES),
    csv: Annotated[Path | None, typer.Option(help="Also write the table as CSV.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the table as JSON.")] = None,
    latency: Annotated[bool, typer.Option(help="Also time each member in onnxruntime (1 thread).")] = False,
) -> None:
    names = [b.strip().lower() for b in backbones.split(",") if b.strip()]
    unknown = sorted(set(names) - set(BACKBONES))
    if unknown or not names:
        shown = ", ".join(unknown) or "(none given)"
        raise UserError(f"unknown backbone(s) {shown}; choose from {', '.join(BACKBONES)}")
    if synth_rows < 1:
        raise UserError("--synth-rows must be >= 1")
    fmap = FeatureMap.load(data) if data is not None else synth_feature_map(synth_rows, seed)
    table = cost_table(fmap, names, latency)
    print(markdown(table, fmap))
    if csv:
        table.write_csv(csv)
    if json_out:
        json_out.write_text(json.dumps({"feature_map": {"dataset_id": fmap.dataset_id, "hash": fmap.hash,
                                                        "vocab_sizes": fmap.vocab_sizes},
                                        "rows": table.to_dicts()}, indent=1) + "\n")


if __name__ == "__main__":
    run_app(app)
