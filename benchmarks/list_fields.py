"""Issue 27's goals side by side in one run: a list field pooled vs the same list joined into one categorical.

Two datasets, each prepared twice from the same raw file (the only difference: the list column's spec):

- `synthetic`: `tts-data synth --tags 12` (Criteo columns plus `tags`, up to 12 per row, whose mean effect
  enters the teacher), the list field with max_len 8;
- `movielens`: a synthetic folder in the ml-100k layout (`u.data`, `u.user`, `u.item` with the 19 genre
  flags; built like tests/test_encode_graph.py's `ml100k`, at ml-100k's size: 943 users, 1682 items, 100k
  ratings), labelled by a hidden user x genre affinity. There are no real MovieLens files here (and no
  downloads): the figures are on this synthetic layout, not on ml-100k.

Per variant: M single members (FNN, small) trained with `fit` (early stopping on valid AUC), test AUC of
each (M=1: mean and std) and of their merged logit (M=8). Cost (synthetic data): `fused_m8` exported with
`tts-export` for both variants, in-process onnxruntime at batch 256 (rows/s, same threads), and, with
`--served`, `raw_fused_m8` on a real tritonserver (python flavour) fed raw records by
`Client.predict_records`.
Skew: differing ids between the encode graph and `prepare` on every test row of each list-field variant.

    .venv/bin/python benchmarks/list_fields.py --rows 200000 --served --out out/list_fields
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ttsrec.data.movielens import GENRES
from ttsrec.data.prepare import prepare
from ttsrec.data.prepared import PreparedData
from ttsrec.data.spec import DatasetSpec, preset_dict
from ttsrec.data.synth import synth_spec, write_synthetic_criteo
from ttsrec.ensemble.metrics import binary_metrics
from ttsrec.models import build_model
from ttsrec.models.checkpoint import save_member
from ttsrec.train.fit import fit
from ttsrec.train.metrics import predict_logits
from ttsrec.train.options import TrainOptions

HPARAMS = {"embed_dim": 16, "mlp_dims": [256, 128]}


def ml100k_layout(folder: Path, ratings: int = 100_000, seed: int = 0) -> Path:
    """An ml-100k-layout folder whose labels follow a hidden per-user genre affinity (mean over the
    movie's genres) plus user and item biases."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    users, items = 943, 1682
    occupations = ["technician", "other", "writer", "student", "executive", "educator", "programmer"]
    (folder / "u.user").write_text("".join(
        f"{u}|{rng.integers(18, 70)}|{'MF'[u % 2]}|{occupations[u % 7]}|{rng.integers(10000, 99999)}\n"
        for u in range(1, users + 1)))
    flags = rng.random((items, len(GENRES))) < np.r_[0.01, rng.uniform(0.03, 0.3, len(GENRES) - 1)]
    flags[np.arange(items), rng.integers(1, len(GENRES), items)] = True  # every movie has a genre
    genre_flags = ["|".join("1" if f else "0" for f in row) for row in flags]
    (folder / "u.item").write_bytes("".join(
        f"{i + 1}|Film {i + 1} (1995)|01-Jan-{1950 + i % 48}||http://x/{i}|{g}\n"
        for i, g in enumerate(genre_flags)).encode("latin-1"))
    taste = rng.normal(0, 1.0, (users, len(GENRES)))
    user_bias, item_bias = rng.normal(0, 0.3, users), rng.normal(0, 0.3, items)
    u = rng.integers(0, users, ratings)
    i = rng.integers(0, items, ratings)
    affinity = (taste[u] * flags[i]).sum(1) / flags[i].sum(1)
    logit = 1.5 * affinity + user_bias[u] + item_bias[i] - 0.2
    stars = np.where(rng.random(ratings) < 1 / (1 + np.exp(-logit)), rng.integers(4, 6, ratings),
                     rng.integers(1, 4, ratings))
    (folder / "u.data").write_text("".join(f"{a + 1}\t{b + 1}\t{s}\t{881250949 + k}\n"
                                           for k, (a, b, s) in enumerate(zip(u, i, stars, strict=True))))
    return folder


def movielens_spec(joined: bool) -> DatasetSpec:
    spec = preset_dict("movielens")
    if joined:
        spec["fields"] = ["genres" if isinstance(f, dict) and f.get("name") == "genres" else f
                          for f in spec["fields"]]
    return DatasetSpec.from_dict(spec, origin="movielens joined" if joined else "movielens")


def train_variant(data_dir: Path, members: int, out: Path, epochs: int) -> dict[str, Any]:
    """M FNN seeds; test AUC of each and of the merged (mean) logit."""
    data = PreparedData(data_dir)
    labels = np.asarray(data.labels("test"))
    options = TrainOptions(epochs=epochs, batch_size=1024, lr=1e-3, patience=2)
    models, logits = [], []
    for seed in range(members):
        torch.manual_seed(seed)
        model = build_model("fnn", data.feature_map, **HPARAMS)
        fit([model], data, options, seed=seed)
        models.append(model)
        logits.append(predict_logits([model], data, "test")[0])
        save_member(out / f"member_{seed:02d}_fnn_s{seed}.pt", model, backbone="fnn", hparams=model.hparams,
                    seed=seed, vocab_sizes=data.feature_map.vocab_sizes,
                    feature_map_hash=data.feature_map.hash)
    singles = [binary_metrics(labels, x)["auc"] for x in logits]
    merged = binary_metrics(labels, np.mean(logits, axis=0))["auc"]
    return {"auc_m1": float(np.mean(singles)), "auc_m1_std": float(np.std(singles)),
            f"auc_m{members}": float(merged), "test_rows": len(labels)}


def skew(data_dir: Path) -> dict[str, int]:
    from ttsrec.export import raw
    from ttsrec.export.encode_feed import raw_feed
    from ttsrec.export.encode_graph import build_encode_graph

    fmap = PreparedData(data_dir).feature_map
    graph = build_encode_graph(fmap)
    found, note = raw.raw_test_rows(fmap, data_dir, 10**9)
    if found is None:
        raise SystemExit(f"error: no raw test rows for {data_dir}: {note}")
    frame, ids = found
    got = np.concatenate([graph.run(raw_feed(graph, columns={c: frame.get_column(c)[k:k + 65536]
                                                             for c in frame.columns}, check=False))
                          for k in range(0, frame.height, 65536)])
    return {"test_rows": len(ids), "differing_ids": int((got != ids).sum())}


def inprocess_rows_per_s(onnx_path: Path, ids: np.ndarray, seconds: float = 5.0) -> float:
    from ttsrec.ensemble.session import ort_session

    session = ort_session(onnx_path, intra_op_threads=2)
    batches = [ids[k:k + 256] for k in range(0, len(ids) - 255, 256)]
    session.run(None, {"feat_ids": batches[0]})
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"feat_ids": batches[done % len(batches)]})
        done += 1
    return done * 256 / (time.perf_counter() - start)


def served_rows_per_s(repo: Path, records: list[dict[str, Any]], seconds: float = 8.0) -> float:
    from ttsrec.client import Client
    from ttsrec.repository import naming
    from ttsrec.serve import TritonServer

    batches = [records[k:k + 256] for k in range(0, len(records) - 255, 256)]
    with TritonServer(repo) as server, Client(server.grpc_url, "grpc", naming.raw_fused_name(8)) as client:
        client.predict_records(batches[0])
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            client.predict_records(batches[done % len(batches)])
            done += 1
        return done * 256 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--served", action="store_true", help="also time raw_fused_m8 on a tritonserver")
    parser.add_argument("--out", type=Path, default=Path("out/list_fields"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    tsv = write_synthetic_criteo(out / "synth_tags.tsv", args.rows, seed=0, tags=12, force=True)
    ml = ml100k_layout(out / "ml-100k-layout")
    variants = {
        ("synthetic", "pooled"): ("csv", [tsv], DatasetSpec.from_dict(synth_spec(8), "synth tags")),
        ("synthetic", "joined"): ("csv", [tsv],
                                  DatasetSpec.from_dict(synth_spec(joined=True), "synth joined")),
        ("movielens", "pooled"): ("movielens", [ml], movielens_spec(joined=False)),
        ("movielens", "joined"): ("movielens", [ml], movielens_spec(joined=True)),
    }
    results: dict[str, Any] = {"machine": "2-core VM shared with other engineers' jobs (noisy)",
                               "rows": args.rows, "members": args.members, "hparams": HPARAMS, "auc": {},
                               "skew": {}, "cost": {}}
    for (dataset, how), (preset, inputs, spec) in variants.items():
        data_dir = out / f"{dataset}_{how}"
        prepare(preset, inputs, data_dir, spec=spec, force=True)
        run = out / f"run_{dataset}_{how}"
        results["auc"][f"{dataset} {how}"] = train_variant(data_dir, args.members, run, args.epochs)
        if how == "pooled":
            results["skew"][dataset] = skew(data_dir)
        print(dataset, how, results["auc"][f"{dataset} {how}"], flush=True)
    results["cost"] = cost(out, args.served)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


def cost(out: Path, served: bool, rounds: int = 5) -> dict[str, Any]:
    """fused_m8 (in-process, `rounds` interleaved rounds of 3 s: the machine's load moves between them)
    and raw_fused_m8 (served) rows/s, the list field pooled vs one id."""
    from ttsrec.export import export_repository, raw
    from ttsrec.export.writer import ExportConfig
    from ttsrec.repository import naming
    from ttsrec.repository.config import Serving

    repos, ids, figures = {}, {}, {}
    for how in ("pooled", "joined"):
        data_dir = out / f"synthetic_{how}"
        members = sorted((out / f"run_synthetic_{how}").glob("*.pt"))
        repos[how] = export_repository(members, out / f"repo_{how}",
                                       Serving(backend="python", max_batch_size=256, fused_instance_count=1),
                                       ExportConfig(m_list=[8], raw_inputs=served), data=data_dir, force=True)
        ids[how] = np.ascontiguousarray(PreparedData(data_dir).ids("test")[:8192], dtype=np.int64)
        figures[how] = {"inprocess_fused_m8_rows_per_s": []}
    for r in range(rounds):
        for how in ("pooled", "joined") if r % 2 == 0 else ("joined", "pooled"):
            path = repos[how] / naming.fused_name(8) / "1" / "model.onnx"
            figures[how]["inprocess_fused_m8_rows_per_s"].append(inprocess_rows_per_s(path, ids[how], 3.0))
    for how in ("pooled", "joined"):
        runs = figures[how]["inprocess_fused_m8_rows_per_s"]
        figures[how].update(inprocess_median=float(np.median(runs)), inprocess_best=max(runs))
        if served:
            data_dir = out / f"synthetic_{how}"
            found, _ = raw.raw_test_rows(PreparedData(data_dir).feature_map, data_dir, 4096)
            assert found is not None
            records = found[0].to_dicts()
            figures[how]["served_raw_fused_m8_rows_per_s"] = served_rows_per_s(repos[how], records)
        print("cost", how, figures[how], flush=True)
    for key in ("inprocess_median", "inprocess_best", "served_raw_fused_m8_rows_per_s")[:3 if served else 2]:
        figures[f"ratio {key}"] = figures["pooled"][key] / figures["joined"][key]
    return figures


if __name__ == "__main__":
    main()
