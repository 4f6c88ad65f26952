"""Peer check: ttsrec's DCNv2, DeepFM and FNN next to DeepCTR-Torch's same architectures, test AUC per epoch.

    .venv/bin/python benchmarks/peer_check.py DATA [--epochs 5] [--out out/peer] [--models dcnv2,deepfm,fnn]

Why: a verdict about merging ttsrec members is only worth as much as the members; if one of them trains
worse than a maintained library's same model, merging gains measured on it could be artefacts. Both sides
get the same prepared split of DATA (`tts-data prepare`: every field categorical, id 0 = OOV), the same
embedding size, MLP, cross layers, Adam (learning rate, no weight decay or L2: DeepCTR's default 1e-5 L2 on
embeddings is set to 0, as ttsrec has none), batch size and epochs, one seed; each side keeps its own
initialisation (that difference is part of what is checked). DeepCTR's equivalents: DCN with
`cross_parameterization="matrix"` (DCN-M = DCNv2) and no linear feature columns (DeepCTR adds a first-order
linear logit to every model given them; DCN-V2 has none, and with it the peer was worth up to +0.004 AUC at
equal epochs on the Criteo-like data), DeepFM, and for FNN a WDL without its wide part (an MLP on
the concatenated embeddings). After every epoch both score the test split (the current state, no early
stopping). Prints a table (AUC per epoch side by side, the difference) and writes peer_check.csv/json.

DeepCTR-Torch is an optional dependency of this benchmark only: `pip install --no-deps deepctr-torch tqdm`
(it needs torch, scikit-learn and tqdm; `--no-deps` keeps the installed torch), or the `peer` extra.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import polars as pl
import torch
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ttsrec.cli.common import console, results, run_app
from ttsrec.errors import UserError
from ttsrec.utils.report import Column, Table

app = typer.Typer(add_completion=False, help=__doc__)
MODELS = ("dcnv2", "deepfm", "fnn")
MISSING = ("the peer library is not installed: pip install --no-deps deepctr-torch tqdm "
           "(or pip install -e '.[peer]')")


def require_peer() -> None:
    """One line and exit 2 (a `UserError`) when DeepCTR-Torch is missing: it is optional."""
    try:
        import deepctr_torch  # noqa: F401
    except ImportError:
        raise UserError(MISSING) from None


def ttsrec_curve(name: str, data, hp: dict[str, Any], epochs: int, batch_size: int, lr: float, seed: int,
                 test: tuple[np.ndarray, np.ndarray], tick) -> list[float]:
    """ttsrec's member trained by `ttsrec.train.fit` (as tts-train does), test AUC after every epoch."""
    from ttsrec.ensemble.metrics import binary_metrics
    from ttsrec.train import TrainOptions
    from ttsrec.train.fit import fit
    from ttsrec.train.member import build_member
    from ttsrec.train.metrics import predict_logits

    hparams = {"embed_dim": hp["embed_dim"], "mlp_dims": hp["mlp_dims"]}
    if name == "dcnv2":
        hparams["num_cross_layers"] = hp["cross_layers"]
    model = build_member(name, data.feature_map, seed, {**hparams, "embedding_init": hp["embedding_init"]})
    options = TrainOptions(epochs=epochs, batch_size=batch_size, lr=lr, patience=epochs, evals_per_epoch=1)
    aucs: list[float] = []

    def on_event(kind: str, **fields: Any) -> None:
        if kind == "epoch":
            model.eval()
            aucs.append(binary_metrics(test[1], predict_logits([model], data, "test")[0])["auc"])
            model.train()
            tick()

    fit([model], data, options, seed=seed, on_event=on_event)
    return aucs


def peer_curve(name: str, data, hp: dict[str, Any], epochs: int, batch_size: int, lr: float, seed: int,
               test: tuple[np.ndarray, np.ndarray], tick) -> list[float]:
    """DeepCTR-Torch's same architecture on the same ids, its own fit loop, test AUC after every epoch."""
    from deepctr_torch.inputs import SparseFeat, get_feature_names
    from deepctr_torch.models import DCN, WDL, DeepFM
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(seed)
    np.random.seed(seed)
    fields = [SparseFeat(f"f{i}", vocabulary_size=int(v), embedding_dim=hp["embed_dim"])
              for i, v in enumerate(data.feature_map.vocab_sizes)]
    common = {"dnn_hidden_units": tuple(hp["mlp_dims"]), "l2_reg_embedding": 0.0, "l2_reg_linear": 0.0,
              "seed": seed, "device": "cpu"}
    if name == "dcnv2":
        # No linear_feature_columns: DCN-V2 (and ttsrec's) has no first-order term, its logit is one
        # bias-free layer over [cross, MLP]; DeepCTR's extra linear logit made the peer a different model.
        model = DCN([], fields, cross_num=hp["cross_layers"], cross_parameterization="matrix",
                    l2_reg_cross=0.0, **common)
    elif name == "deepfm":
        model = DeepFM(fields, fields, **common)
    else:  # FNN: an MLP on the concatenated embeddings, no wide part
        model = WDL([], fields, **common)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    model.compile(torch.optim.Adam(model.parameters(), lr=lr), "binary_crossentropy")
    names = get_feature_names(fields)

    def inputs(split: str) -> dict[str, np.ndarray]:
        ids = np.asarray(data.ids(split))
        return {n: ids[:, i].astype(np.int64) for i, n in enumerate(names)}

    train_x, train_y = inputs("train"), np.asarray(data.labels("train"), dtype=np.float32)
    test_x = inputs("test")
    aucs = []
    for _ in range(epochs):
        with contextlib.redirect_stdout(io.StringIO()):  # its fit prints the device and the sample count
            model.fit(train_x, train_y, batch_size=batch_size, epochs=1, verbose=0, shuffle=True)
        aucs.append(float(roc_auc_score(test[1], model.predict(test_x, batch_size=16384).reshape(-1))))
        tick()
    return aucs


@app.command()
def main(
    data_dir: Annotated[Path, typer.Argument(metavar="DATA", help="Prepared data dir (tts-data prepare).")],
    out: Annotated[Path, typer.Option(help="Folder for peer_check.csv/json.")] = Path("out/peer_check"),
    models: Annotated[str, typer.Option(help="Comma-separated: dcnv2, deepfm, fnn.")] = ",".join(MODELS),
    epochs: Annotated[int, typer.Option(help="Epochs, equal for both sides.")] = 5,
    embed_dim: Annotated[int, typer.Option(help="Embedding size.")] = 16,
    mlp_dims: Annotated[str, typer.Option(help="MLP widths, comma-separated.")] = "256,128",
    cross_layers: Annotated[int, typer.Option(help="DCNv2 cross layers.")] = 2,
    batch_size: Annotated[int, typer.Option(help="Training batch.")] = 4096,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of both sides.")] = 0,
    embedding_init: Annotated[str, typer.Option(help="ttsrec's embedding init (the peer keeps its own).")
                              ] = "xavier",
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
) -> None:
    """Train each model with ttsrec and with DeepCTR-Torch; print test AUC per epoch side by side."""
    from ttsrec.data.prepared import PreparedData
    from ttsrec.models.layers import EMBEDDING_INITS

    require_peer()
    chosen = [m.strip() for m in models.split(",") if m.strip()]
    bad = [m for m in chosen if m not in MODELS]
    if bad or not chosen:
        raise UserError(f"--models: unknown {', '.join(bad) or 'empty list'}; "
                        f"choose from {', '.join(MODELS)}")
    if epochs < 1 or embed_dim < 1 or cross_layers < 0 or batch_size < 1 or lr <= 0 or threads < 1:
        raise UserError("--epochs, --embed-dim, --batch-size, --threads must be >= 1, --cross-layers >= 0, "
                        "--lr > 0")
    if embedding_init not in EMBEDDING_INITS:
        raise UserError(f"unknown embedding init {embedding_init!r}; "
                        f"choose from {', '.join(EMBEDDING_INITS)}")
    try:
        dims = [int(v) for v in mlp_dims.split(",")]
    except ValueError:
        raise UserError(f"--mlp-dims expects comma-separated integers, got {mlp_dims!r}") from None
    data = PreparedData(data_dir)
    torch.set_num_threads(threads)
    hp = {"embed_dim": embed_dim, "mlp_dims": dims, "cross_layers": cross_layers,
          "embedding_init": embedding_init}
    test = (None, np.asarray(data.labels("test")))
    curves: dict[tuple[str, str], list[float]] = {}
    seconds: dict[tuple[str, str], float] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("epochs", total=2 * len(chosen) * epochs)
        for name in chosen:
            for side, train in (("ttsrec", ttsrec_curve), ("peer", peer_curve)):
                bar.update(task, description=f"{name} ({side})")
                started = time.perf_counter()
                curves[name, side] = train(name, data, hp, epochs, batch_size, lr, seed, test,
                                           lambda: bar.advance(task))
                seconds[name, side] = round(time.perf_counter() - started, 1)
    rows = [{"model": name, "epoch": e + 1, "ttsrec_auc": curves[name, "ttsrec"][e],
             "peer_auc": curves[name, "peer"][e],
             "diff": curves[name, "ttsrec"][e] - curves[name, "peer"][e]}
            for name in chosen for e in range(epochs)]
    _write(out, data_dir, hp, epochs, batch_size, lr, seed, rows, seconds)
    results.table(_table(rows, data_dir))
    console.print(f"[green]wrote[/] {out}/peer_check.csv, peer_check.json")


def _table(rows: list[dict[str, Any]], data_dir: Path) -> Table:
    table = Table(f"test AUC per epoch, ttsrec vs DeepCTR-Torch ({data_dir.name})",
                  [Column("model", numeric=False), Column("epoch"), Column("ttsrec"), Column("peer"),
                   Column("ttsrec-peer")],
                  caption="goal: ttsrec within 0.002 of the peer or better at every epoch")
    for r in rows:
        table.add_row(r["model"], r["epoch"], f"{r['ttsrec_auc']:.4f}", f"{r['peer_auc']:.4f}",
                      f"{r['diff']:+.4f}")
    return table


def _write(out: Path, data_dir: Path, hp: dict[str, Any], epochs: int, batch_size: int, lr: float, seed: int,
           rows: list[dict[str, Any]], seconds: dict[tuple[str, str], float]) -> None:
    from ttsrec.utils.versions import library_versions

    out.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_csv(out / "peer_check.csv")
    meta = {"data": str(data_dir.resolve()), "hparams": hp, "epochs": epochs, "batch_size": batch_size,
            "lr": lr, "seed": seed, "rows": rows, "seconds": {f"{m}/{s}": v for (m, s), v in seconds.items()},
            "versions": library_versions(["torch", "deepctr-torch", "ttsrec"])}
    (out / "peer_check.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    run_app(app)
