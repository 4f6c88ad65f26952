"""Training options shared by `tts-train`, the Python API and `tts-eval`'s parameter-scaling runs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ttsrec.errors import UserError


@dataclass
class TrainOptions:
    """Optimiser and schedule; every member of a run (and every parameter-scaling model) uses the same."""

    epochs: int = 30
    """A safety net, not the usual stop: members train until validation AUC stops improving (patience).
    Two epochs, the old default, left every member of the docs' runs still improving (issue 24)."""
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 4096
    patience: int = 4
    """Validation checks without improvement tolerated before stopping (0: stop at the first). Four checks
    (two epochs at two checks per epoch) outlast the plateaus a small-scale init sits on early."""
    evals_per_epoch: int = 2
    """Validation AUC checks per epoch; early stopping and the kept best state work at this grain."""
    train_limit: int | None = None
    """Use only the first N training rows per epoch (quick runs, equal budgets)."""
    valid_limit: int | None = None
    precision: str = "fp32"
    """fp32 | bf16 | fp16: autocast dtype of the forward pass (see train/device.py)."""
    data_order: str = "per-seed"
    """per-seed: each member shuffles the training rows with its own seed (more diversity); fixed: every
    member sees the same order (the official TTS4CTR loader), so seeds differ only in initialisation."""
    hparams: dict[str, Any] = field(default_factory=dict)
    """Forwarded to `build_model`; a key `backbone.name` applies to that backbone only."""
    distill: dict[str, Any] | None = None
    """Distillation (train/distill.py): teacher run, M, alpha, temperature, cache key; None: plain labels."""

    def __post_init__(self) -> None:
        checks = {"epochs": self.epochs >= 1, "lr": self.lr > 0, "weight_decay": self.weight_decay >= 0,
                  "batch_size": self.batch_size >= 1, "patience": self.patience >= 0,
                  "evals_per_epoch": self.evals_per_epoch >= 1,
                  "train_limit": self.train_limit is None or self.train_limit >= 1,
                  "valid_limit": self.valid_limit is None or self.valid_limit >= 1,
                  "precision": self.precision in ("fp32", "bf16", "fp16"),
                  "data_order": self.data_order in ("fixed", "per-seed")}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            shown = ", ".join(f"{b}={getattr(self, b)!r}" for b in bad)
            raise UserError(f"invalid training option(s): {shown}")

    def check_hparams(self, backbones: list[str]) -> None:
        """A plain key that no backbone of the run knows is a typo, not a silent no-op."""
        from ttsrec.models import default_hparams

        known = {k for b in set(backbones) for k in default_hparams(b)}
        unknown = sorted(k for k in self.hparams if "." not in k and k not in known)
        if unknown:
            raise UserError(f"unknown hparam(s) {', '.join(unknown)} for {', '.join(sorted(set(backbones)))}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["distill"] is None:
            del out["distill"]  # runs without a teacher record (and resume) exactly what they did before
        return out

    def shuffle_seed(self, member_seed: int, epoch: int) -> int:
        """The row order of one epoch: the member's own (per-seed) or the same for every member (fixed)."""
        base = member_seed if self.data_order == "per-seed" else 0
        return base * 1009 + epoch

    def hparams_for(self, backbone: str) -> dict[str, Any]:
        """Plain keys apply to every backbone that has them, `backbone.key` to that backbone only."""
        from ttsrec.models import default_hparams

        known = default_hparams(backbone)
        out = {k: v for k, v in self.hparams.items() if "." not in k and k in known}
        prefix = f"{backbone}."
        out.update({k[len(prefix):]: v for k, v in self.hparams.items() if k.startswith(prefix)})
        return out


def parse_hparams(items: list[str] | None) -> dict[str, Any]:
    """`["embed_dim=8", "mlp_dims=[64,32]", "dcnv2.num_cross_layers=2"]` -> dict.

    Values are JSON; a bare word that is not JSON stays a string.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--hparam expects key=value, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


