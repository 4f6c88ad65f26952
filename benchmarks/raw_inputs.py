"""Raw records in (`tts-export --raw-inputs`): served `raw_fused_m8` vs `fused_m8`, and the client's CPU.

    .venv/bin/python benchmarks/raw_inputs.py --out out/raw_inputs        # ~10 min on 2 cores

1. data and members (reused when already in --out): `tts-data synth` + `prepare` (criteo preset), 8
   default-size DCNv2 members trained one epoch on the first --train-limit rows, exported with
   `--raw-inputs --m-list 8` (python flavour, the bundled tritonserver);
2. zero skew: the whole test split as raw records through the served `raw_fused_m8` and `raw_ensemble_m8`
   equals `fused_m8` / `ensemble_m8` on `test/ids.npy` bit for bit (and the encode graph's ids equal
   `test/ids.npy`: 0 differing ids);
3. throughput: batch 256, concurrency 4, the bench's closed-loop `ThreadLoad` on one raw gRPC channel and
   perf_analyzer's measurement loop (`ttsrec.bench.measure`); requests serialized once (ids for
   `fused_m8`, raw columns for `raw_fused_m8`); the two models alternate for --rounds rounds, medians kept;
4. server compute per request (Triton's `compute_infer` statistics) at concurrency 1, alternating;
5. client CPU per row (`time.process_time`): today's `predict_records` encoding on the client
   (`RecordEncoder`) vs laying out and serializing raw records (`ttsrec.client.raw`), with request
   building and without the network; then whole `Client.predict_records` calls on the live server.

Prints a markdown summary and writes `--out/raw_inputs.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 256
CONCURRENCY = 4
M = 8


def run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def build(out: Path, rows: int, train_limit: int) -> tuple[Path, Path, Path]:
    """(raw TSV, prepared data, repository), each made once."""
    bin_dir = Path(sys.executable).parent
    tsv, data, run_dir, repo = out / "criteo.tsv", out / "data", out / "run", out / "repo"
    if not tsv.is_file():
        run([str(bin_dir / "tts-data"), "synth", "--rows", str(rows), "--seed", "0", "--out", str(tsv)])
    if not (data / "summary.json").is_file():
        run([str(bin_dir / "tts-data"), "prepare", "--preset", "criteo", "--input", str(tsv),
             "--out", str(data)])
    if not (run_dir / "run.json").is_file():
        run([str(bin_dir / "tts-train"), "--data", str(data), "--members", f"dcnv2*{M}",
             "--out", str(run_dir), "--epochs", "1", "--train-limit", str(train_limit), "--threads", "1"])
    if not (repo / "tts_manifest.json").is_file():
        run([str(bin_dir / "tts-export"), str(run_dir), "--data", str(data), "--out", str(repo), "--m-list",
             str(M), "--max-batch-size", "1024", "--raw-inputs", "--force"])
    return tsv, data, repo


def test_records(tsv: Path, data: Path) -> tuple[list[dict[str, str]], np.ndarray]:
    """The whole test split as raw records (values as text, as in the TSV) and test/ids.npy."""
    from ttsrec.data.encode import RecordEncoder
    from ttsrec.data.prepared import PreparedData
    from ttsrec.data.split import split_of

    prepared = PreparedData(data)
    names = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    with open(tsv) as fh:
        lines = fh.read().splitlines()
    test = split_of(np.arange(len(lines)), int(prepared.summary.get("seed", 0))) == 2
    records = [dict(zip(names, line.split("\t")[1:], strict=True))
               for line, t in zip(lines, test, strict=True) if t]
    ids = np.asarray(prepared.ids("test"), dtype=np.int64)
    assert prepared.summary["rows_skipped"] == 0 and len(records) == len(ids)
    np.testing.assert_array_equal(RecordEncoder(prepared.feature_map).encode(records[:2000]), ids[:2000])
    return records, ids


def zero_skew(server: Any, repo: Path, records: list[dict], ids: np.ndarray) -> dict[str, Any]:
    from ttsrec.client import Client
    from ttsrec.data.feature_map import FeatureMap
    from ttsrec.export.encode_feed import raw_feed
    from ttsrec.export.encode_graph import build_encode_graph

    graph = build_encode_graph(FeatureMap.load(repo))
    encoded = graph.run(raw_feed(graph, records, check=False))
    out: dict[str, Any] = {"test_rows": len(ids), "differing_ids": int((encoded != ids).sum())}
    for raw_name, ids_name in ((f"raw_fused_m{M}", f"fused_m{M}"), (f"raw_ensemble_m{M}", f"ensemble_m{M}")):
        with Client(server.grpc_url, "grpc", raw_name, timeout_s=600) as a, \
                Client(server.grpc_url, "grpc", ids_name, timeout_s=600) as b:
            got, want = a.predict_records(records), b.predict(ids)
        out[raw_name] = {"against": ids_name, "logit_equal": bool(np.array_equal(got[1], want[1])),
                         "prob_equal": bool(np.array_equal(got[0], want[0])),
                         "max_abs_diff": float(np.max(np.abs(got[1].astype(np.float64) - want[1])))}
    return out


def throughput(server: Any, repo: Path, records: list[dict], ids: np.ndarray, rounds: int,
               window_ms: int) -> dict[str, Any]:
    from ttsrec.bench.load import ThreadLoad
    from ttsrec.bench.loadgen import grpc_infer_request, grpc_payload_sender, grpc_raw_infer_request
    from ttsrec.bench.measure import MeasureSettings, measure
    from ttsrec.client import Client
    from ttsrec.client.raw import raw_columns

    outputs = ("logit", "prob")
    batches = range(0, (len(ids) // BATCH) * BATCH, BATCH)
    with Client(server.grpc_url, "grpc", f"raw_fused_m{M}") as client:
        info = client.info
    names = [f.name for f in info.raw_inputs]
    types = [f.datatype for f in info.raw_inputs]
    payloads = {
        f"fused_m{M}": [grpc_infer_request(f"fused_m{M}", "feat_ids", ids[i:i + BATCH], outputs, 60)
                        for i in batches],
        f"raw_fused_m{M}": [grpc_raw_infer_request(
            f"raw_fused_m{M}", list(zip(names, types, raw_columns(info.raw_inputs, records[i:i + BATCH])
                                        .payloads(), strict=True)), BATCH, outputs, 60) for i in batches],
    }
    settings = MeasureSettings(window_ms=window_ms, stability_pct=10.0, max_trials=8, warmup_requests=20)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in payloads}
    for r in range(rounds):
        for name, requests in payloads.items():
            send, close = grpc_payload_sender(server.grpc_url, name, requests, 60)
            m = measure(ThreadLoad(send, close), CONCURRENCY, BATCH, settings, label=name)
            results[name].append({"rows_per_s": m.throughput, "p50_ms": m.latency.p50 / 1e3,
                                  "p99_ms": m.latency.p99 / 1e3, "stable": m.stable,
                                  "client_cpu_pct": m.client_cpu})
            print(f"round {r + 1} {name}: {m.throughput:,.0f} rows/s, p50 {m.latency.p50 / 1e3:.1f} ms "
                  f"(stable: {m.stable})", flush=True)
    summary = {name: {"rows_per_s_median": statistics.median(x["rows_per_s"] for x in runs),
                      "p50_ms_median": statistics.median(x["p50_ms"] for x in runs), "runs": runs}
               for name, runs in results.items()}
    summary["ratio"] = (summary[f"raw_fused_m{M}"]["rows_per_s_median"]
                        / summary[f"fused_m{M}"]["rows_per_s_median"])
    summary["ratio_per_round"] = [a["rows_per_s"] / b["rows_per_s"] for a, b in
                                  zip(results[f"raw_fused_m{M}"], results[f"fused_m{M}"], strict=True)]
    return summary


def server_compute(server: Any, records: list[dict], ids: np.ndarray, rounds: int) -> dict[str, Any]:
    """Triton's own per-request compute time (`compute_infer`: the model's execute, string decoding and
    onnxruntime included) at concurrency 1, batch 256, the two models alternating: the cost of encoding
    in the graph without the load generator's noise."""
    from ttsrec.client import Client

    def infer_ms(client: Any, model: str) -> tuple[int, int]:
        stats = client.transport.inference_statistics(model)["model_stats"][0]["inference_stats"]
        return int(stats["compute_infer"].get("count", 0)), int(stats["compute_infer"].get("ns", 0))

    per: dict[str, list[float]] = {f"fused_m{M}": [], f"raw_fused_m{M}": []}
    with Client(server.grpc_url, "grpc", f"fused_m{M}", timeout_s=120) as ids_client, \
            Client(server.grpc_url, "grpc", f"raw_fused_m{M}", timeout_s=120) as raw_client:
        calls = {f"fused_m{M}": (ids_client, lambda i: ids_client.predict(ids[i:i + BATCH])),
                 f"raw_fused_m{M}": (raw_client, lambda i: raw_client.predict_records(records[i:i + BATCH]))}
        for _ in range(rounds):
            for model, (client, call) in calls.items():
                count, ns = infer_ms(client, model)
                for i in range(0, 12 * BATCH, BATCH):
                    call(i)
                count2, ns2 = infer_ms(client, model)
                per[model].append((ns2 - ns) / max(1, count2 - count) / 1e6)
    out: dict[str, Any] = {f"{k}_compute_infer_ms_median": statistics.median(v) for k, v in per.items()}
    out["runs_ms"] = per
    out["ratio"] = out[f"raw_fused_m{M}_compute_infer_ms_median"] / out[f"fused_m{M}_compute_infer_ms_median"]
    return out


def client_cpu(server: Any, repo: Path, records: list[dict], rows: int) -> dict[str, Any]:
    """CPU seconds of this process per row: encoding alone (with request building), then whole calls."""
    from ttsrec.client import Client
    from ttsrec.client.raw import raw_columns
    from ttsrec.client.tensors import build_inputs, build_raw_input
    from ttsrec.data.encode import RecordEncoder
    from ttsrec.data.feature_map import FeatureMap

    encoder = RecordEncoder(FeatureMap.load(repo))
    with Client(server.grpc_url, "grpc", f"raw_fused_m{M}") as client:
        info = client.info
    names = [(f.name, f.datatype) for f in info.raw_inputs]
    parts = [records[i:i + BATCH] for i in range(0, min(rows, len(records)), BATCH)]
    n = sum(len(p) for p in parts)

    def ids_path(part: list[dict]) -> Any:
        return build_inputs("grpc", "feat_ids", encoder.encode(part))

    def raw_path(part: list[dict]) -> Any:
        cols = raw_columns(info.raw_inputs, part, info.max_string_bytes)
        return [build_raw_input("grpc", name, dt, len(part), p)
                for (name, dt), p in zip(names, cols.payloads(), strict=True)]

    def cpu(fn: Any) -> float:
        fn(parts[0])
        start = time.process_time()
        for part in parts:
            fn(part)
        return (time.process_time() - start) / n * 1e6

    out: dict[str, Any] = {"rows": n, "batch": BATCH}
    encode = {"ids": [], "raw": []}
    for _ in range(3):  # alternate, keep the medians
        encode["ids"].append(cpu(ids_path))
        encode["raw"].append(cpu(raw_path))
    out["encode_us_per_row"] = {k: statistics.median(v) for k, v in encode.items()}
    out["encode_runs"] = encode
    calls = {"ids": [], "raw": []}
    with Client(server.grpc_url, "grpc", f"fused_m{M}", feature_map=repo, timeout_s=120) as ids_client, \
            Client(server.grpc_url, "grpc", f"raw_fused_m{M}", timeout_s=120) as raw_client:
        for _ in range(2):
            calls["ids"].append(cpu(ids_client.predict_records))
            calls["raw"].append(cpu(raw_client.predict_records))
    out["predict_records_us_per_row"] = {k: statistics.median(v) for k, v in calls.items()}
    out["predict_records_runs"] = calls
    out["encode_ratio"] = out["encode_us_per_row"]["ids"] / out["encode_us_per_row"]["raw"]
    out["predict_records_ratio"] = (out["predict_records_us_per_row"]["ids"]
                                    / out["predict_records_us_per_row"]["raw"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/raw_inputs"))
    parser.add_argument("--rows", type=int, default=100_000, help="synthetic Criteo rows")
    parser.add_argument("--train-limit", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument("--cpu-rows", type=int, default=10_240)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tsv, data, repo = build(args.out, args.rows, args.train_limit)

    from ttsrec.bench.meta import cpu_model
    from ttsrec.serve import TritonServer

    records, ids = test_records(tsv, data)
    machine = {"cpu": cpu_model(), "cores": _cores(), "python": platform.python_version()}
    report: dict[str, Any] = {"machine": machine, "batch": BATCH, "concurrency": CONCURRENCY, "m": M}
    with TritonServer(repo) as server:
        report["zero_skew"] = zero_skew(server, repo, records, ids)
        print(json.dumps(report["zero_skew"]), flush=True)
        report["throughput"] = throughput(server, repo, records, ids, args.rounds, args.window_ms)
        report["server_compute"] = server_compute(server, records, ids, args.rounds)
        report["client_cpu"] = client_cpu(server, repo, records, args.cpu_rows)
    (args.out / "raw_inputs.json").write_text(json.dumps(report, indent=1) + "\n")
    t, c, z = report["throughput"], report["client_cpu"], report["zero_skew"]
    print(f"\n| | `fused_m{M}` (ids) | `raw_fused_m{M}` (raw records) | ratio |\n|---|---:|---:|---:|")
    ids_tput, raw_tput = t[f"fused_m{M}"]["rows_per_s_median"], t[f"raw_fused_m{M}"]["rows_per_s_median"]
    print(f"| served rows/s, batch {BATCH}, c={CONCURRENCY} (median of {args.rounds}) | "
          f"{ids_tput:,.0f} | {raw_tput:,.0f} | {t['ratio']:.2f}x |")
    sc = report["server_compute"]
    ids_ms, raw_ms = sc[f"fused_m{M}_compute_infer_ms_median"], sc[f"raw_fused_m{M}_compute_infer_ms_median"]
    print(f"| server compute per request, batch {BATCH}, c=1 (ms, Triton's compute_infer) | "
          f"{ids_ms:.1f} | {raw_ms:.1f} | {sc['ratio']:.2f}x |")
    enc, calls = c["encode_us_per_row"], c["predict_records_us_per_row"]
    print(f"| client CPU per row, encoding + request (µs) | {enc['ids']:.1f} | "
          f"{enc['raw']:.1f} | {c['encode_ratio']:.1f}x lower |")
    print(f"| client CPU per row, whole predict_records (µs) | {calls['ids']:.1f} | "
          f"{calls['raw']:.1f} | {c['predict_records_ratio']:.1f}x lower |")
    equal = ", ".join(f"{k} {v['logit_equal'] and v['prob_equal']}"
                      for k, v in z.items() if isinstance(v, dict))
    print(f"\nzero skew on {z['test_rows']:,} test rows: {z['differing_ids']} differing ids; "
          f"served raw == ids: {equal}")
    return 0


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
