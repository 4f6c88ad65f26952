"""How close the in-process fused graph gets to this machine's roofline, per precision.

    .venv/bin/python benchmarks/roofline.py                    # M=16 default DCNv2, fp32 and int8
    .venv/bin/python benchmarks/roofline.py --m 8 --work out/roofline --data runs/data

Builds M untrained default-size DCNv2 members (the cost does not depend on the weights), exports
them in fp32 and int8 (the accuracy gate loosened: untrained members have nothing to keep), then
benches `inprocess` at batch 1 and `--batch` (default 1024), concurrency 1, through the bench's own
sweep, so the roofline is the one `tts-bench` measures. Prints the bench's markdown (roofline,
batch-1 floor, fraction of each compute roof) and an onnxruntime profile of the fused graph at
`--batch`: where the time goes per operator type, and the MAC/s inside the matrix products alone,
which is what limits the fraction. Last, `--rounds` paired rounds of every roof and the fused graph
side by side (best of each: on a shared machine the sweep's roof and its rows are seconds apart).
`--out` gets the JSON. Exports are reused when `--work` has them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ttsrec.export.writer import ExportConfig

MATMUL_OPS = ("MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat",
              "DynamicQuantizeMatMul", "FusedMatMul", "FusedGemm")


def prepared_data(work: Path, data: Path | None) -> Path:
    if data is not None:
        return data
    out = work / "data"
    if not (out / "feature_map.json").is_file():
        from ttsrec.data.prepare import prepare
        from ttsrec.data.synth import write_synthetic_criteo

        tsv = write_synthetic_criteo(work / "criteo.tsv", rows=20_000, seed=0)
        prepare("criteo", [tsv], out)
    return out


def members(work: Path, data: Path, m: int) -> list[Path]:
    import torch

    from ttsrec.data.prepared import PreparedData
    from ttsrec.models import build_model
    from ttsrec.models.checkpoint import save_member

    fmap = PreparedData(data).feature_map
    paths = []
    for seed in range(m):
        path = work / "members" / f"member_{seed:02d}_dcnv2_s{seed}.pt"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(seed)
            model = build_model("dcnv2", fmap).eval()
            save_member(path, model, backbone="dcnv2", hparams=model.hparams, seed=seed,
                        vocab_sizes=fmap.vocab_sizes, feature_map_hash=fmap.hash)
        paths.append(path)
    return paths


def export(work: Path, data: Path, checkpoints: list[Path], m: int, precision: str) -> Path:
    from ttsrec.export import export_repository

    out = work / f"repo_m{m}_{precision}"
    if (out / "manifest.json").is_file():
        return out
    config = ExportConfig(m_list=[m], precision=precision, max_auc_drop=1.0, gate_rows=2000)
    return export_repository(checkpoints, out, config=config, data=data, force=True)


def profile(onnx_path: Path, ids: np.ndarray, macs_per_row: int, runs: int = 10) -> dict[str, Any]:
    """Node time per operator type over `runs` calls at this batch (onnxruntime's profiler, same
    threads as the bench), and the MAC/s of the matrix-product nodes alone."""
    import onnxruntime as ort

    from ttsrec.utils.common import usable_cores

    with tempfile.TemporaryDirectory(prefix="tts-roofline-prof-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = usable_cores()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "prof")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(3):
            session.run(None, {name: ids})
        for _ in range(runs):
            session.run(None, {name: ids})
        events = json.loads(Path(session.end_profiling()).read_text())
    runs_seen = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    keep_after = runs_seen[-runs]["ts"] if len(runs_seen) >= runs else 0
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= keep_after:
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    wall = sum(e["dur"] for e in runs_seen[-runs:])
    matmul = sum(v for k, v in per_op.items() if k in MATMUL_OPS)
    return {
        "batch": len(ids),
        "runs": runs,
        "wall_us_per_run": wall / runs,
        "node_us_per_run": total / runs,
        "share": {k: v / total for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])},
        "matmul_share": matmul / total if total else 0.0,
        "matmul_macs_per_s": macs_per_row * len(ids) * runs / (matmul * 1e-6) if matmul else None,
    }


def paired(repos: dict[str, Path], m: int, ids: np.ndarray, rounds: int) -> dict[str, Any]:
    """Rounds of (every roof, then the fused graph per precision), each the best of a short burst:
    on a shared machine the best of each, measured side by side, is the fairest ratio."""
    from ttsrec.bench.roofline import ort_gemm_macs, torch_gemm_macs
    from ttsrec.ensemble.session import ort_session
    from ttsrec.repository import naming
    from ttsrec.repository.graphs import onnx_file
    from ttsrec.utils.common import usable_cores

    sessions = {p: ort_session(onnx_file(repo / naming.fused_name(m) / naming.VERSION), usable_cores())
                for p, repo in repos.items()}
    name = next(iter(sessions.values())).get_inputs()[0].name
    out: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for p in ("fp32", "int8"):
            out[f"ort_{p}"].append(ort_gemm_macs(p))
        for d in ("fp32", "bf16"):
            out[f"torch_{d}"].append(torch_gemm_macs(d))
        for p, session in sessions.items():
            session.run(None, {name: ids})
            best = min(_seconds(lambda s=session: s.run(None, {name: ids})) for _ in range(3))
            out[f"rows_per_s_{p}"].append(len(ids) / best)
    return dict(out)


def _seconds(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--work", type=Path, default=Path("out/roofline"))
    parser.add_argument("--data", type=Path, default=None, help="a prepared dataset (default: synthetic)")
    parser.add_argument("--window-ms", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds of roofs and fused runs")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args()

    from ttsrec.bench import inputs
    from ttsrec.bench.measure import MeasureSettings
    from ttsrec.bench.report import markdown
    from ttsrec.bench.sweep import Sweep, SweepConfig, combine
    from ttsrec.repository import naming
    from ttsrec.repository.graphs import onnx_file

    args.work.mkdir(parents=True, exist_ok=True)
    data = prepared_data(args.work, args.data)
    checkpoints = members(args.work, data, args.m)
    repos = {p: export(args.work, data, checkpoints, args.m, p) for p in args.precisions.split(",")}
    settings = MeasureSettings(window_ms=args.window_ms, stability_pct=10.0, max_trials=6, warmup_requests=10)
    sweeps = [
        Sweep(SweepConfig(modes=["inprocess"], m_list=[args.m], batches=[1, args.batch], concurrencies=[1],
                          repository=repo, settings=settings))
        for repo in repos.values()
    ]
    load_before = os.getloadavg()[0]
    result = combine([s.run(on_status=lambda s: print(f"# {s}", flush=True)) for s in sweeps])
    print(f"load average (1 min) {load_before:.1f} before the sweep, {os.getloadavg()[0]:.1f} after "
          f"(on {os.cpu_count()} cores: above ~0.5 the figures below are shared with other work)\n")
    print(markdown(result))

    ids = inputs.random_ids(sweeps[0].fmap, args.batch, seed=1)  # type: ignore[arg-type]
    profiles = {}
    print(f"onnxruntime profile of fused_m{args.m} at batch {args.batch} (node time per operator type):\n")
    print("| precision | wall ms/run | matrix products share | their GMAC/s | runtime roof GMAC/s "
          "| top operators |")
    print("|---|---:|---:|---:|---:|---|")
    for precision, repo in repos.items():
        macs = next(r.macs_per_row for r in result.rows if r.precision == precision and r.macs_per_row)
        prof = profile(onnx_file(repo / naming.fused_name(args.m) / naming.VERSION), ids, macs)
        profiles[precision] = prof
        top = ", ".join(f"{k} {100 * v:.0f} %" for k, v in list(prof["share"].items())[:5])
        rate = prof["matmul_macs_per_s"]
        print(f"| {precision} | {prof['wall_us_per_run'] / 1e3:.1f} | {100 * prof['matmul_share']:.0f} % "
              f"| {rate / 1e9 if rate else 0:,.0f} | {result.roofline.runtime_roof(precision) / 1e9:,.0f} "
              f"| {top} |")

    print(f"\nPaired: {args.rounds} rounds of the roofs and fused_m{args.m} at batch {args.batch}, side by "
          "side (best of each):\n")
    pairs = paired(repos, args.m, ids, args.rounds)
    macs = next(r.macs_per_row for r in result.rows if r.macs_per_row)
    print("| precision | rows/s | GMAC/s | runtime roof GMAC/s | of runtime roof | hardware roof GMAC/s "
          "| of hardware roof | per-round fraction of runtime roof |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for precision in repos:
        rates = pairs[f"rows_per_s_{precision}"]
        ort = pairs["ort_int8" if precision == "int8" else "ort_fp32"]
        hardware = [max(a, b) for a, b in zip(pairs["ort_fp32"], pairs["torch_fp32"], strict=True)]
        if precision == "int8":
            hardware = [max(h, a, b) for h, a, b in zip(hardware, pairs["ort_int8"], pairs["torch_bf16"],
                                                         strict=True)]
        achieved = max(rates) * macs
        rounds = ", ".join(f"{100 * r * macs / o:.0f}" for r, o in zip(rates, ort, strict=True))
        print(f"| {precision} | {max(rates):,.0f} | {achieved / 1e9:,.1f} | {max(ort) / 1e9:,.0f} "
              f"| {100 * achieved / max(ort):.1f} % | {max(hardware) / 1e9:,.0f} "
              f"| {100 * achieved / max(hardware):.1f} % | {rounds} % |")
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.1f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        body = result.to_json() | {"profiles": profiles, "paired": pairs}
        args.out.write_text(json.dumps(body, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
