"""Member checkpoints (design §2): weights + backbone + hyper-parameters + seed + feature-map hash
+ metrics, as plain tensors and builtins so `torch.load(..., weights_only=True)` reads them."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ttsrec.errors import UserError

FORMAT = "ttsrec.member/1"
LEGACY_EMBEDDING_INIT = "xavier"
"""The embedding init of checkpoints written before `embedding_init` was recorded (the paper's)."""


@dataclass
class LoadedMember:
    path: Path
    model: nn.Module
    backbone: str
    seed: int
    hparams: dict[str, Any]
    vocab_sizes: list[int]
    feature_map_hash: str
    metrics: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    @property
    def name(self) -> str:
        return self.path.stem


def save_member(path: Path, model: nn.Module, *, backbone: str, hparams: dict[str, Any], seed: int,
                vocab_sizes: Sequence[int], feature_map_hash: str,
                metrics: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> Path:
    """Write a member checkpoint atomically (temp file, then rename)."""
    payload = {
        "format": FORMAT,
        "backbone": backbone,
        "hparams": dict(hparams),
        "seed": int(seed),
        "vocab_sizes": [int(v) for v in vocab_sizes],
        "feature_map_hash": feature_map_hash,
        "metrics": dict(metrics or {}),
        "train": dict(train or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    if getattr(model, "bags", None):  # list fields; absent otherwise, as in older checkpoints
        payload["bags"] = [list(b) if b else None for b in model.bags]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_member(path: Path) -> LoadedMember:
    """Rebuild a member in eval mode; any unreadable or foreign file is a `UserError`."""
    from ttsrec.models.registry import build_model

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    raw = path.read_bytes()
    try:
        payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt zips/pickles
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise UserError(f"cannot load checkpoint {path}: {type(err).__name__}: {first_line}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not a ttsrec member checkpoint (expected format {FORMAT})")
    # A checkpoint from before the init was a choice was built with the paper's Xavier: say so.
    hparams = {"embedding_init": LEGACY_EMBEDDING_INIT, **payload.get("hparams", {})}
    try:
        model = build_model(payload["backbone"], payload["vocab_sizes"], bags=payload.get("bags"), **hparams)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise UserError(f"checkpoint {path} does not match its backbone: {str(err).splitlines()[0]}") from err
    model.eval()
    return LoadedMember(
        path=path, model=model, backbone=payload["backbone"], seed=payload["seed"],
        hparams=hparams, vocab_sizes=payload["vocab_sizes"],
        feature_map_hash=payload["feature_map_hash"], metrics=payload.get("metrics", {}),
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def load_members(paths: Sequence[Path]) -> list[LoadedMember]:
    """Load several members and refuse a mix of feature maps (their ids would mean different things)."""
    if not paths:
        raise UserError("no checkpoints given")
    members = [load_member(Path(p)) for p in paths]
    hashes = {m.feature_map_hash for m in members}
    if len(hashes) > 1:
        by_hash = {h: [m.path.name for m in members if m.feature_map_hash == h][:2] for h in hashes}
        raise UserError(f"checkpoints were built on different feature maps: {by_hash}")
    return members
