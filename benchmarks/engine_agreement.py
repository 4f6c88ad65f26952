"""Native engine vs perf_analyzer, side by side in one run: batch 1 c=1 and batch 256 c=4 on a tiny member
and on a default-size DCNv2 member (untrained: weights cost what they cost without training).

    .venv/bin/python benchmarks/engine_agreement.py                 # both models, both points, best of 3
    .venv/bin/python benchmarks/engine_agreement.py --repeats 1 -p 500 --json out/agreement.json

Each model is exported into a temporary repository (`fused_m1`) and served by the bundled tritonserver; the
engines alternate on the same server, and each cell reports the best of `--repeats` rows (throughput: the
highest; p50 and client overhead: the lowest), so that one unlucky window on a shared machine does not
decide. Prints a markdown table (the one in docs/bench.md, "Agreement with perf_analyzer").
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from ttsrec.cli.common import console, run_app
from ttsrec.export.writer import ExportConfig
from ttsrec.repository.config import Serving

app = typer.Typer(add_completion=False, help=__doc__)

POINTS = ((1, 1), (256, 4))
"""(batch, concurrency) of each measured point."""
MODELS = {"tiny": ("fnn", {"embed_dim": 8, "mlp_dims": [64, 32]}), "dcnv2": ("dcnv2", {})}
"""name -> (backbone, hparams): the session's tiny member, and the default-size DCNv2."""


def _repository(root: Path, data: Path, backbone: str, hparams: dict[str, Any]) -> Path:
    import torch

    from ttsrec.data.prepared import PreparedData
    from ttsrec.export import export_repository
    from ttsrec.models import build_model
    from ttsrec.models.checkpoint import save_member

    fmap = PreparedData(data).feature_map
    torch.manual_seed(0)
    model = build_model(backbone, fmap, **hparams).eval()
    member = save_member(root / f"member_00_{backbone}_s0.pt", model, backbone=backbone,
                         hparams=model.hparams, seed=0, vocab_sizes=fmap.vocab_sizes,
                         feature_map_hash=fmap.hash)
    return export_repository([member], root / "repo", serving=Serving(queue_timeout_ms=0),
                             config=ExportConfig(m_list=[1]), data=data)


def _best(rows: list[Any]) -> dict[str, float]:
    overheads = [r.client_overhead_us for r in rows if r.client_overhead_us is not None]
    return {"throughput": max(r.throughput for r in rows), "p50_us": min(r.p50_us for r in rows),
            "client_overhead_us": min(overheads) if overheads else float("nan"),
            "client_cpu": min(r.client_cpu for r in rows)}


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| model | batch, c | engine | infer/s | p50 µs | client overhead µs | client CPU % "
             "| native / perf_analyzer: infer/s, p50 |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for entry in results:
        pa = entry["engines"].get("perf_analyzer")
        for engine, best in entry["engines"].items():
            ratio = ""
            if pa and engine != "perf_analyzer":
                ratio = f"{best['throughput'] / pa['throughput']:.3f}, {best['p50_us'] / pa['p50_us']:.3f}"
            lines.append(f"| {entry['model']} | {entry['batch']}, {entry['concurrency']} | {engine} "
                         f"| {best['throughput']:,.0f} | {best['p50_us']:,.0f} "
                         f"| {best['client_overhead_us']:,.0f} "
                         f"| {best['client_cpu']:.0f} | {ratio} |")
    return "\n".join(lines)


@app.command()
def main(
    models: Annotated[str, typer.Option(help="Comma-separated: tiny, dcnv2.")] = "tiny,dcnv2",
    repeats: Annotated[int, typer.Option(help="Alternations per point; each cell is the best of them.")] = 3,
    window_ms: Annotated[int, typer.Option("-p", "--measurement-interval", help="Window (ms).")] = 1000,
    protocol: Annotated[str, typer.Option("-i", "--protocol", help="grpc or http.")] = "grpc",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the rows and bests here.")] = None,
) -> None:
    from ttsrec.bench import perf_analyzer
    from ttsrec.bench.measure import MeasureSettings
    from ttsrec.bench.sweep import Sweep, SweepConfig
    from ttsrec.data.prepare import prepare
    from ttsrec.data.synth import write_synthetic_criteo
    from ttsrec.errors import RuntimeFailure, UserError
    from ttsrec.serve import TritonServer

    names = [n.strip() for n in models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise UserError(f"unknown model {', '.join(unknown) or '(none)'} (choose from {', '.join(MODELS)})")
    if repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {repeats}")
    engines = ["native", "perf_analyzer"] if perf_analyzer.locate() else ["native"]
    if len(engines) == 1:
        console.print("[yellow]perf_analyzer is not installed (make perf-analyzer): native rows only[/]")
    settings = MeasureSettings(window_ms=window_ms, stability_pct=30.0, max_trials=10, warmup_requests=50)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tts-agree-") as tmp:
        root = Path(tmp)
        data = root / "data"
        prepare("criteo", [write_synthetic_criteo(root / "criteo.tsv", rows=20_000, seed=0)], data)
        for name in names:
            folder = root / name
            folder.mkdir()
            repo = _repository(folder, data, *MODELS[name])
            with TritonServer(repo) as server:
                for batch, concurrency in POINTS:
                    rows: dict[str, list[Any]] = {e: [] for e in engines}
                    for _ in range(repeats):
                        for engine in engines:
                            config = SweepConfig(modes=["fused"], m_list=[1], batches=[batch],
                                                 concurrencies=[concurrency], repository=repo,
                                                 url=server.url(protocol), protocol=protocol, engine=engine,
                                                 settings=settings)
                            try:
                                (row,) = Sweep(config).run().rows
                            except RuntimeFailure as err:  # perf_analyzer gives up on unstable windows
                                console.print(f"[yellow]{name} batch {batch} {engine}: {err}; skipped[/]")
                                continue
                            rows[engine].append(row)
                            console.print(f"{name} batch {batch} c={concurrency} {engine}: "
                                          f"{row.throughput:,.0f} infer/s, p50 {row.p50_us:,.0f} µs")
                    results.append({"model": name, "batch": batch, "concurrency": concurrency,
                                    "engines": {e: _best(r) for e, r in rows.items() if r},
                                    "rows": {e: [r.to_dict() for r in rs] for e, rs in rows.items()}})
    print(markdown(results))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    run_app(app)
