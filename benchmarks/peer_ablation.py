"""One change at a time between ttsrec's DCNv2 and DeepCTR-Torch's DCN-M: which difference makes the gap.

    .venv/bin/python benchmarks/peer_ablation.py DATA [--variants peer_linear,peer,tts,tts_mlp] [--seed 0]

The peer check's setup (benchmarks/peer_check.py: same split, sizes, Adam, batch, epochs; ttsrec's
embeddings N(0, 1e-4) as the peer's), test AUC after every epoch, one line of JSON per variant:

- `peer`: DeepCTR's DCN-M as peer_check builds it (no linear feature columns: DCN-V2's architecture);
  `peer_linear`: with the fields as linear feature columns too (DeepCTR's extra first-order logit);
  `peer_nobias`: `peer` without its output bias.
- `tts`: ttsrec's DCNv2; `tts_cross`: its cross layers started as DeepCTR's (Xavier-normal, zero biases);
  `tts_mlp`: its MLP weights started as DeepCTR's (N(0, 1e-4)); `tts_cross_mlp`: both.

The results are in docs/training.md (Peer check). Needs DeepCTR-Torch, as peer_check.py.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any
from unittest import mock

import numpy as np
import torch
import typer
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_check

from ttsrec.cli.common import run_app
from ttsrec.errors import UserError

app = typer.Typer(add_completion=False, help=__doc__)
VARIANTS = ("peer", "peer_linear", "peer_nobias", "tts", "tts_cross", "tts_mlp", "tts_cross_mlp")


def peer_variant(name: str, data, hp: dict[str, Any], epochs: int, seed: int, test) -> list[float]:
    """peer_check's peer curve with DeepCTR's DCN built one change away."""
    import deepctr_torch.models as models

    real = models.DCN

    def dcn(linear_columns, dnn_columns, **kwargs):
        model = real(dnn_columns if name == "peer_linear" else linear_columns, dnn_columns, **kwargs)
        if name == "peer_nobias":
            model.out.use_bias = False
        return model

    with mock.patch.object(models, "DCN", dcn):
        return peer_check.peer_curve("dcnv2", data, hp, epochs, 4096, 1e-3, seed, test, lambda: None)


def tts_variant(name: str, data, hp: dict[str, Any], epochs: int, seed: int, test) -> list[float]:
    """peer_check's ttsrec curve with the member re-initialised in part as DeepCTR does."""
    import ttsrec.train.member as member

    real = member.build_member

    def build(*args, **kwargs):
        model = real(*args, **kwargs)
        with torch.no_grad():
            if "cross" in name:
                for linear in model.cross.weights:
                    nn.init.xavier_normal_(linear.weight)
                    nn.init.zeros_(linear.bias)
            if "mlp" in name:
                for layer in model.mlp:
                    if isinstance(layer, nn.Linear):
                        nn.init.normal_(layer.weight, 0.0, 1e-4)
        return model

    with mock.patch.object(member, "build_member", build):
        return peer_check.ttsrec_curve("dcnv2", data, hp, epochs, 4096, 1e-3, seed, test, lambda: None)


@app.command()
def main(
    data_dir: Annotated[Path, typer.Argument(metavar="DATA", help="Prepared data dir (tts-data prepare).")],
    variants: Annotated[str, typer.Option(help=f"Comma-separated: {', '.join(VARIANTS)}.")
                        ] = "peer_linear,peer,tts,tts_mlp",
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of both sides.")] = 0,
    embedding_init: Annotated[str, typer.Option(help="ttsrec's embedding init.")] = "normal",
) -> None:
    """Train each variant (MLP [256, 128], 2 cross layers, embedding 16); print test AUC per epoch as JSON."""
    from ttsrec.data.prepared import PreparedData

    peer_check.require_peer()
    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    bad = [v for v in chosen if v not in VARIANTS]
    if bad or not chosen:
        raise UserError(f"--variants: unknown {', '.join(bad) or 'empty list'}; "
                        f"choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(1)
    data = PreparedData(data_dir)
    hp = {"embed_dim": 16, "mlp_dims": [256, 128], "cross_layers": 2, "embedding_init": embedding_init}
    test = (None, np.asarray(data.labels("test")))
    for name in chosen:
        started = time.perf_counter()
        train = peer_variant if name.startswith("peer") else tts_variant
        aucs = train(name, data, hp, epochs, seed, test)
        print(json.dumps({"variant": name, "seed": seed, "aucs": [round(a, 4) for a in aucs],
                          "s": round(time.perf_counter() - started)}), flush=True)


if __name__ == "__main__":
    run_app(app)
