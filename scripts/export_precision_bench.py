"""Side-by-side measurement of member precisions (fp32, int8 qdq, int8 dynamic, fp16) in-process.

    .venv/bin/python scripts/export_precision_bench.py RUN_DIR --data DATA [--m 8,16] [--threads 2]

Exports each member once in fp32, reduces it with `ttsrec.export.precision`, fuses the first M
members per precision (`fused_graph`, as tts-export does) and times every graph in one process,
interleaved (rounds alternate precisions, so machine noise hits all alike): p50 at batch 1, rows/s
at batch 256; test AUC of each fused graph against the fp32 one. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
from sklearn.metrics import roc_auc_score

from ttsrec.data.prepared import PreparedData
from ttsrec.ensemble.session import ort_session
from ttsrec.export.gate import calibration_rows
from ttsrec.export.onnx_member import export_member_onnx
from ttsrec.export.precision import reduce_precision
from ttsrec.export.sources import load_sources
from ttsrec.repository.graphs import fused_graph

VARIANTS = {"fp32": ("fp32", "qdq"), "int8 qdq": ("int8", "qdq"), "int8 dynamic": ("int8", "dynamic"),
            "fp16": ("fp16", "qdq")}


def timed(session, ids: np.ndarray, seconds: float) -> list[float]:
    """Latencies (s) of repeated calls on `ids` for about `seconds`."""
    feed = {session.get_inputs()[0].name: ids}
    out = [session.get_outputs()[0].name]
    session.run(out, feed)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        session.run(out, feed)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--m", default="8,16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--variants", default="fp32,int8 qdq,int8 dynamic")
    args = parser.parse_args()
    ms = [int(m) for m in args.m.split(",")]
    variants = args.variants.split(",")
    sources = load_sources([args.run], args.data)
    members = sources.members[:max(ms)]
    data = PreparedData(args.data)
    test_ids = np.ascontiguousarray(data.ids("test"), dtype=np.int64)
    labels = np.asarray(data.labels("test"))
    calibration = calibration_rows(args.data)
    work = Path("/tmp/tts-precision-bench")
    fp32 = [onnx.load(export_member_onnx(m.model, work / f"m{k}.onnx")) for k, m in enumerate(members)]
    reduced = {v: [reduce_precision(p, VARIANTS[v][0], int8_mode=VARIANTS[v][1], calibration=calibration)
                   for p in fp32] for v in variants}
    rows = []
    for m in ms:
        sessions = {v: ort_session(fused_graph(reduced[v][:m]).SerializeToString(), args.threads)
                    for v in variants}
        chunks = range(0, len(test_ids), 4096)
        auc = {v: roc_auc_score(labels, np.concatenate(
            [s.run(None, {"feat_ids": test_ids[i:i + 4096]})[0] for i in chunks]).ravel())
            for v, s in sessions.items()}
        lat1: dict[str, list[float]] = {v: [] for v in variants}
        lat256: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v, s in sessions.items():
                lat1[v] += timed(s, test_ids[:1], args.seconds)
                lat256[v] += timed(s, test_ids[:256], args.seconds)
        for v in variants:
            p50 = float(np.median(lat1[v])) * 1e3
            rps = 256 / float(np.median(lat256[v]))
            rows.append((m, v, p50, p50 / (float(np.median(lat1["fp32"])) * 1e3), rps,
                         rps / (256 / float(np.median(lat256["fp32"]))), auc[v], auc[v] - auc["fp32"]))
    print(f"fused_mM in-process onnxruntime, {args.threads} intra-op threads, {len(test_ids)} test rows\n")
    print("| M | precision | batch 1 p50 ms | vs fp32 | batch 256 rows/s | vs fp32 | test AUC | ΔAUC |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for m, v, p50, p50r, rps, rpsr, a, da in rows:
        print(f"| {m} | {v} | {p50:.3f} | {p50r:.2f}× | {rps:,.0f} | {rpsr:.2f}× | {a:.5f} | {da:+.5f} |")


if __name__ == "__main__":
    main()
