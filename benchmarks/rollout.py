"""Rollout under load (issue 26): a 16-member repository, three generations, 3 rollouts + 1 rollback and a
SIGKILL of the rollout at each step, while 8 callers (both protocols) send batches of 1 to 256.

Every answer is checked bit for bit against the in-process output of the generation it names (and must
differ from the other generations', which it does: each generation retrains 4 of the 16 members).
Prints a markdown table and writes JSON.

    .venv/bin/python benchmarks/rollout.py --out /tmp/rollout.json [--embed 8 --mlp 64,32]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from ttsrec.client import Client
from ttsrec.data.feature_map import FeatureMap, Field
from ttsrec.deploy.add import add_generation
from ttsrec.deploy.rollout import STEPS, Target, rollout
from ttsrec.export import export_repository
from ttsrec.export.writer import ExportConfig
from ttsrec.models import build_model
from ttsrec.models.checkpoint import save_member
from ttsrec.repository import generations as gens
from ttsrec.repository import naming
from ttsrec.repository.config import Serving
from ttsrec.repository.graphs import onnx_file
from ttsrec.serve import TritonServer

BATCHES = (1, 16, 64, 256)
MODELS = ("ensemble_m16", "fused_m16")
KILL = """
import os, sys
from pathlib import Path
from ttsrec.deploy.rollout import Target, rollout
repo, url, to, step = sys.argv[1:5]
rollout([Target(Path(repo), url)], int(to), pause=lambda s: os.kill(os.getpid(), 9) if s == step else None)
"""


def members(folder: Path, fmap: FeatureMap, seeds: list[int], hp: dict[str, Any]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    fmap.save(folder / naming.FEATURE_MAP_FILE)
    out = []
    for index, seed in enumerate(seeds):
        backbone = ("fnn", "dcnv2")[index % 2]
        path = folder / f"member_{index:02d}_{backbone}_s{seed}.pt"
        if not path.exists():
            torch.manual_seed(seed)
            model = build_model(backbone, fmap, **hp)
            save_member(path, model, backbone=backbone, hparams=model.hparams, seed=seed,
                        vocab_sizes=fmap.vocab_sizes, feature_map_hash=fmap.hash)
        out.append(path)
    return out


class Reference:
    """Generation N's answer of a model, in-process from N's version folders (as tests/deploy_fixtures)."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.manifest = json.loads((repo / naming.MANIFEST_FILE).read_text())
        self.sessions: dict[tuple[str, int], Any] = {}

    def run(self, model: str, version: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if (model, version) not in self.sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self.sessions[(model, version)] = ort.InferenceSession(
                str(onnx_file(self.repo / model / str(version))), options, providers=["CPUExecutionProvider"])
        session = self.sessions[(model, version)]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds), strict=True))

    def logit(self, model: str, generation: int, ids: np.ndarray) -> np.ndarray:
        record = gens.generation_record(self.manifest, generation)
        if model not in record["ensembles"]:
            out = self.run(model, record["versions"][model], {naming.FEAT_IDS: ids})
            return out[naming.LOGIT].reshape(-1)
        cfg = text_format.Parse(record["ensembles"][model], pb.ModelConfig())
        scope, pending = {naming.FEAT_IDS: ids}, list(cfg.ensemble_scheduling.step)
        while pending:
            step = next(s for s in pending if all(v in scope for v in s.input_map.values()))
            pending.remove(step)
            feeds = {k: scope[v] for k, v in step.input_map.items()}
            out = self.run(step.model_name, step.model_version, feeds)
            scope.update({t: out[k] for k, t in step.output_map.items()})
        return scope[naming.LOGIT].reshape(-1)


class Load:
    """8 callers (4 gRPC, 4 HTTP), each cycling models and batches; bounded in time."""

    def __init__(self, server: TritonServer, ids: dict[int, np.ndarray], seconds: float):
        self.ids, self.stop, self.deadline = ids, threading.Event(), time.monotonic() + seconds
        self.records: list[tuple[float, float, str, int, int | None, bytes | None, str]] = []
        self.threads = [threading.Thread(target=self.loop, args=(server, ("grpc", "http")[k % 2], k),
                                         daemon=True) for k in range(8)]

    def loop(self, server: TritonServer, protocol: str, k: int) -> None:
        clients = {m: Client(server.url(protocol), protocol, m, timeout_s=60) for m in MODELS}
        n = k
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            model, batch = MODELS[n % len(MODELS)], BATCHES[(n // len(MODELS)) % len(BATCHES)]
            n += 1
            t0 = time.monotonic()
            try:
                got = clients[model].predict_generation(self.ids[batch])
                self.records.append((t0, time.monotonic(), model, batch, got.generation,
                                     got.logit.tobytes(), ""))
            except Exception as err:  # counted as failed requests
                self.records.append((t0, time.monotonic(), model, batch, None, None, str(err)[:200]))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)


def p99(latencies: list[float]) -> float | None:
    return float(np.percentile(latencies, 99)) * 1e3 if latencies else None


def check(load: Load, ref: Reference, ids: dict[int, np.ndarray]) -> dict[str, Any]:
    """Failed requests, mixed answers (not bit-equal to the named generation), answers per generation."""
    cache: dict[tuple[str, int, int], bytes] = {}
    failed = mixed = 0
    per_gen: dict[str, int] = {}
    for _, _, model, batch, generation, logit, err in load.records:
        if err:
            failed += 1
            continue
        key = (model, generation or 0, batch)
        if key not in cache:
            cache[key] = ref.logit(model, generation, ids[batch]).astype(np.float32).tobytes() \
                if generation else b""
        mixed += logit != cache[key]
        per_gen[str(generation)] = per_gen.get(str(generation), 0) + 1
    return {"requests": len(load.records), "failed": failed, "mixed": int(mixed), "per_generation": per_gen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("rollout.json"))
    ap.add_argument("--embed", type=int, default=8)
    ap.add_argument("--mlp", default="64,32")
    ap.add_argument("--fields", type=int, default=39)
    ap.add_argument("--settle", type=float, default=8.0, help="seconds of load between operations")
    args = ap.parse_args()
    hp = {"embed_dim": args.embed, "mlp_dims": [int(x) for x in args.mlp.split(",")]}
    fmap = FeatureMap("bench", [Field(f"c{i}", "categorical", [str(v) for v in range(50)])
                                for i in range(args.fields)])
    work = Path(tempfile.mkdtemp(prefix="tts-rollout-"))
    seeds1 = list(range(16))
    seeds2 = [s + 100 if i % 4 == 0 else s for i, s in enumerate(seeds1)]  # 4 of 16 retrained
    seeds3 = [s + 200 if i % 4 == 1 else s for i, s in enumerate(seeds2)]
    runs = [members(work / f"run{g}", fmap, s, hp) for g, s in enumerate((seeds1, seeds2, seeds3), 1)]
    repo = export_repository(runs[0], work / "repo", Serving(max_batch_size=256), ExportConfig())
    full = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())
    member_bytes = sum(p.stat().st_size for p in (repo / "member_00_fnn").rglob("*") if p.is_file())
    result: dict[str, Any] = {"repository_bytes": full, "one_member_bytes": member_bytes, "add": []}
    for g in (2, 3):
        t0 = time.monotonic()
        added = add_generation(runs[g - 1], repo)
        result["add"].append({"generation": added.generation, "seconds": time.monotonic() - t0,
                              "members_written": added.members_written, "bytes_added": added.bytes_added})
    rng = np.random.default_rng(0)
    ids = {b: rng.integers(0, 50, size=(b, args.fields)).astype(np.int64) for b in BATCHES}
    ops: list[dict[str, Any]] = []
    with TritonServer(repo) as server, Load(server, ids, seconds=1800) as load:
        target = [Target(repo, server.http_url)]
        time.sleep(args.settle)
        for to in (2, 3, 2, 3):  # 3 rollouts and 1 rollback (3 -> 2)
            marks = {"start": time.monotonic()}
            rollout(target, to, pause=lambda s, m=marks: m.__setitem__(s, time.monotonic()))
            ops.append({"to": to, **marks})
            time.sleep(args.settle)
        for step in STEPS:  # SIGKILL of the rollout at each step, then the same command again
            live = json.loads((repo / naming.MANIFEST_FILE).read_text())["live"]
            to = 2 if live == 3 else 3
            proc = subprocess.run([sys.executable, "-c", KILL, str(repo), server.http_url, str(to), step],
                                  capture_output=True, text=True, timeout=600)
            t0 = time.monotonic()
            rollout(target, to)
            ops.append({"kill_at": step, "killed": proc.returncode == -signal.SIGKILL, "to": to,
                        "rerun_s": time.monotonic() - t0})
            time.sleep(args.settle / 2)
    result.update(report(load, Reference(repo), ids, ops))
    args.out.write_text(json.dumps(result, indent=1))
    print_table(result)


def report(load: Load, ref: Reference, ids: dict[int, np.ndarray],
           ops: list[dict[str, Any]]) -> dict[str, Any]:
    checks = check(load, ref, ids)
    rolls = [o for o in ops if "switch" in o]
    spans = [(o["start"], o["record"]) for o in rolls]
    switches = [(o["stage"], o["switch"]) for o in rolls]
    kills_span = (min((r[0] for r in load.records), default=0), 0.0)

    def overlaps(r: Any, windows: list[tuple[float, float]]) -> bool:
        return any(r[0] <= b and r[1] >= a for a, b in windows)

    ok = [r for r in load.records if not r[6]]
    end_of_rolls = max((b for _, b in spans), default=kills_span[0])
    outside = [r[1] - r[0] for r in ok if not overlaps(r, spans) and r[1] < end_of_rolls]
    during = [r[1] - r[0] for r in ok if overlaps(r, spans)]
    at_switch = [r[1] - r[0] for r in ok if overlaps(r, switches)]
    return {"checks": checks, "ops": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in o.items()}
                                      for o in ops],
            "live_s": [round(o["record"] - o["start"], 2) for o in rolls],
            "switch_s": [round(o["switch"] - o["stage"], 3) for o in rolls],
            "p99_ms": {"outside": p99(outside), "during_rollout": p99(during), "at_switch": p99(at_switch)},
            "n": {"outside": len(outside), "during_rollout": len(during), "at_switch": len(at_switch)}}


def print_table(r: dict[str, Any]) -> None:
    c, p = r["checks"], r["p99_ms"]
    fmt = {k: "n/a" if v is None else f"{v:.1f}" for k, v in p.items()}
    print(f"| requests | failed | mixed | per generation |\n|---:|---:|---:|---|\n"
          f"| {c['requests']} | {c['failed']} | {c['mixed']} | {c['per_generation']} |")
    print(f"p99 ms outside rollouts {fmt['outside']} (n={r['n']['outside']}), during rollouts "
          f"{fmt['during_rollout']} (n={r['n']['during_rollout']}), overlapping a switch step "
          f"{fmt['at_switch']} (n={r['n']['at_switch']})")
    print(f"rollout wall times (check -> record) {r['live_s']} s; switch steps {r['switch_s']} s")
    for a in r["add"]:
        print(f"add generation {a['generation']}: {a['seconds']:.1f} s, {a['members_written']} members "
              f"written, {a['bytes_added'] / 1e6:.2f} MB added (repository {r['repository_bytes'] / 1e6:.2f} "
              f"MB, one member {r['one_member_bytes'] / 1e6:.2f} MB)")
    for o in r["ops"]:
        if "kill_at" in o:
            print(f"SIGKILL at {o['kill_at']}: killed={o['killed']}, rerun to {o['to']} took "
                  f"{o['rerun_s']} s")
    print(f"pid {os.getpid()} done")


if __name__ == "__main__":
    main()
