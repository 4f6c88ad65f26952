"""Parameter scaling: one member made deeper or wider until its inference MACs match M members.

Two variants. The paper's (`module_depth`, `module_width`): depth stacks more interaction modules (cross
layers, Wukong/RankMixer layers; the MLP is unchanged), width puts K interaction modules side by side, each
with its own embedding table, in one model. Ours (`depth`, `width`): a deeper or wider MLP/knob set.
The paper's claim is that, at equal inference cost, merging M members beats one bigger model; these
models are trained by the same trainer with the same options as the run, so the comparison is fair.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ttsrec.errors import UserError

KINDS = ("depth", "width", "module_depth", "module_width")
DEFAULT_KINDS = ("depth", "width")
MAX_STEPS = 64


def macs_of(backbone: str, hparams: dict[str, Any], num_fields: int) -> int:
    """MACs per sample, counted on a tiny-vocab copy (embedding lookups cost no MACs)."""
    from ttsrec.models import build_model, model_cost

    return int(model_cost(build_model(backbone, [2] * num_fields, **hparams)).macs_per_sample)


def deeper(backbone: str, hparams: dict[str, Any], steps: int) -> dict[str, Any]:
    """`steps` more layers on every depth knob: layer counts + steps, layer-width lists repeat their
    first (widest) layer, so a few layers add real cost instead of a long stack of thin ones."""
    from ttsrec.models import backbone_class

    out = dict(hparams)
    for knob in backbone_class(backbone).depth_knobs:
        value = out[knob]
        out[knob] = [*[value[0]] * steps, *value] if isinstance(value, list) else value + steps
    return out


def wider(backbone: str, hparams: dict[str, Any], factor: float) -> dict[str, Any]:
    """Every width knob multiplied by `factor` (integers rounded, at least 1)."""
    from ttsrec.models import backbone_class

    def scale(v: Any) -> Any:
        if isinstance(v, list):
            return [scale(x) for x in v]
        return max(1, round(v * factor)) if isinstance(v, int) else v * factor

    out = dict(hparams)
    for knob in backbone_class(backbone).width_knobs:
        out[knob] = scale(out[knob])
    return out


def match_macs(backbone: str, hparams: dict[str, Any], num_fields: int, kind: str,
               target: float) -> tuple[dict[str, Any], int]:
    """Hparams of the deeper/wider model whose MACs per sample come closest to `target`, and those MACs."""
    from ttsrec.models import backbone_class

    cls = backbone_class(backbone)
    cost = lambda hp: macs_of(backbone, hp, num_fields)  # noqa: E731
    if kind in ("module_depth", "module_width"):
        knob = cls.module_depth_knob if kind == "module_depth" else cls.module_width_knob
        if knob is None:
            raise UserError(f"{backbone} has no interaction module to scale by {kind} (the paper's scaling "
                            f"needs dcn, dcnv2, wukong or rankmixer)")
        start = int(hparams.get(knob, 1))
        return _closest([{**hparams, knob: start + s} for s in range(MAX_STEPS + 1)], cost, target)
    knobs = cls.depth_knobs if kind == "depth" else cls.width_knobs
    if kind not in KINDS or not knobs:
        raise UserError(f"{backbone} has no {kind} knob to scale")
    if kind == "depth":
        return _closest([deeper(backbone, hparams, s) for s in range(MAX_STEPS + 1)], cost, target)
    lo, hi = 1.0, 2.0
    while cost(wider(backbone, hparams, hi)) < target and hi < 1024:
        lo, hi = hi, hi * 2
    for _ in range(8):  # bisection on the factor (to ~0.3%); MACs grow monotonically with width
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if cost(wider(backbone, hparams, mid)) < target else (lo, mid)
    return _closest([wider(backbone, hparams, lo), wider(backbone, hparams, hi)], cost, target)


def _closest(candidates: list[dict[str, Any]], cost: Callable[[dict[str, Any]], int],
             target: float) -> tuple[dict[str, Any], int]:
    best: tuple[dict[str, Any], int] | None = None
    for hp in candidates:
        macs = cost(hp)
        if best is None or abs(macs - target) < abs(best[1] - target):
            best = (hp, macs)
        if macs > target:  # candidates grow in cost; the rest are further away
            break
    assert best is not None
    return best
