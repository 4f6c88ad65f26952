"""Served cascades against the fused graph, side by side on one tritonserver (issue 19's serving goals).

    python benchmarks/cascade_serving.py RUN --data DATA --out OUT [--merge mean|weighted] [--m 16]

Exports RUN's members with `--cascade` (and the fused graph), then, on one server:
- throughput at batch 256, concurrency 4: `cascade_mM` against `fused_mM` (tts-bench's sweep, one run);
- batch 1: p50 of single-row requests for rows the cascade stops earliest (the first stage that
  settles any row), against `fused_mM` on the same rows (alternating, so both see the same machine);
- test AUC of both (the manifest's gate figures) and the average members per row.
Writes OUT/cascade_serving.json and prints a table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ttsrec.cli.common import console, reporter, run_app
from ttsrec.utils.report import table

app = typer.Typer(add_completion=False)


@app.command()
def main(run: Path, data: Annotated[Path, typer.Option()], out: Annotated[Path, typer.Option()],
         merge: str = "mean", m: int = 16, batch: int = 256, concurrency: int = 4, single_rows: int = 300,
         window_ms: int = 3000) -> None:
    from ttsrec.bench import MeasureSettings, Sweep, SweepConfig
    from ttsrec.client.transport import Transport
    from ttsrec.data.prepared import PreparedData
    from ttsrec.export.writer import ExportConfig, export_repository
    from ttsrec.repository import naming, read_manifest
    from ttsrec.serve import TritonServer

    repo = out / f"repo_{merge}_m{m}"
    if not (repo / naming.MANIFEST_FILE).is_file():
        export_repository([run], repo, config=ExportConfig(m_list=[m], merge=merge, cascade=True),
                          data=data, force=True, reporter=reporter)
    manifest = read_manifest(repo)
    record = next(c for c in manifest["cascades"] if c["m"] == m)
    cascade, fused = naming.cascade_name(m), naming.fused_name(m)
    ids = np.asarray(PreparedData(data).ids("test"), dtype=np.int64)
    sweep = Sweep(SweepConfig(modes=["fused", "cascade"], m_list=[m], batches=[batch],
                              concurrencies=[concurrency], repository=repo, protocol="grpc", data=data,
                              settings=MeasureSettings(window_ms=window_ms, max_trials=6)))
    rows = {r.mode: r for r in sweep.run().rows}  # its own server, both modes in one run
    with TritonServer(repo) as server:
        url = server.url("grpc")
        transport = Transport(url, "grpc", 60.0)
        answers = [transport.infer(cascade, naming.FEAT_IDS, ids[i:i + 4096], (naming.MEMBERS_USED,))
                   for i in range(0, len(ids), 4096)]
        used = np.concatenate([a[naming.MEMBERS_USED].reshape(-1) for a in answers])
        earliest = int(used.min())  # the first stage that settles any row (a 1-member stage may settle none)
        first = ids[np.flatnonzero(used == earliest)[:single_rows]]
        latency: dict[str, list[float]] = {cascade: [], fused: []}
        for row in first:  # alternating, one row per request
            for model in (cascade, fused):
                start = time.perf_counter()
                transport.infer(model, naming.FEAT_IDS, row[None, :], (naming.LOGIT,))
                latency[model].append(time.perf_counter() - start)
        transport.close()
    p50 = {k: float(np.median(v)) * 1e3 for k, v in latency.items()}
    result = {
        "merge": merge, "m": m, "rule": record["rule"], "stages": record["stages"],
        "test_members_per_row": record["test_members_per_row"], "test_auc_cascade": record["gate"]["auc"],
        "test_auc_full": record["gate"]["auc_full"], "auc_change": record["gate"]["auc_change"],
        "batch": batch, "concurrency": concurrency,
        "throughput": {k: r.throughput for k, r in rows.items()},
        "throughput_ratio": rows["cascade"].throughput / rows["fused"].throughput,
        "earliest_stop_members": earliest, "earliest_stop_rows": len(first),
        "earliest_stop_share": float(np.mean(used == earliest)),
        "p50_ms_batch1_earliest_stop_rows": p50, "p50_ratio": p50[cascade] / p50[fused],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"cascade_serving_{merge}_m{m}.json").write_text(json.dumps(result, indent=1) + "\n")
    t = table(f"cascade_m{m} vs fused_m{m} ({merge} merge)", ["figure"], ["cascade", "fused", "ratio"])
    t.add_row(f"rows/s, batch {batch}, c={concurrency}", f"{rows['cascade'].throughput:,.0f}",
              f"{rows['fused'].throughput:,.0f}", f"{result['throughput_ratio']:.2f}x")
    t.add_row(f"p50 ms, batch 1, rows out after {earliest}", f"{p50[cascade]:.2f}", f"{p50[fused]:.2f}",
              f"{result['p50_ratio']:.2f}x")
    t.add_row("test AUC", f"{record['gate']['auc']:.5f}", f"{record['gate']['auc_full']:.5f}",
              f"{record['gate']['auc_change']:+.1e}")
    t.add_row("members per row", f"{record['test_members_per_row']:.2f}", str(m), "")
    reporter.table(t)
    console.print(f"the earliest stop, after {earliest} members, settles {result['earliest_stop_share']:.0%} "
                  "of the test rows")


if __name__ == "__main__":
    run_app(app)
