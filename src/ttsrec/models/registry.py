"""Backbones by name, hyper-parameter resolution and member specs (`dcnv2*8`, `wukong+rankmixer`)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any

from ttsrec.data.feature_map import FeatureMap
from ttsrec.errors import UserError
from ttsrec.models.base import DEFAULT_EMBEDDING_INIT, Member
from ttsrec.models.dcn import DCN
from ttsrec.models.dcnv2 import DCNv2
from ttsrec.models.deepfm import DeepFM
from ttsrec.models.finalmlp import FinalMLP
from ttsrec.models.fm import FM
from ttsrec.models.fnn import FNN
from ttsrec.models.ipnn import IPNN
from ttsrec.models.layers import EMBEDDING_INITS
from ttsrec.models.rankmixer import RankMixer
from ttsrec.models.wukong import Wukong

_CLASSES: dict[str, type[Member]] = {
    cls.backbone: cls for cls in (FM, DeepFM, IPNN, DCN, DCNv2, FNN, Wukong, RankMixer, FinalMLP)
}
BACKBONES: tuple[str, ...] = tuple(_CLASSES)


def backbone_class(name: str) -> type[Member]:
    key = str(name).strip().lower()
    if key not in _CLASSES:
        raise UserError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return _CLASSES[key]


def default_hparams(name: str) -> dict[str, Any]:
    """The backbone's keyword arguments and their (paper) defaults, JSON-able, plus `embedding_init`
    (every backbone's, applied by `build_model`)."""
    params = inspect.signature(backbone_class(name).__init__).parameters
    out = {k: _jsonable(p.default) for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    out["embedding_init"] = DEFAULT_EMBEDDING_INIT
    return out


def resolve_hparams(name: str, num_fields: int, **overrides: Any) -> dict[str, Any]:
    """Defaults + overrides, type-checked, with feature-map-dependent values filled in."""
    cls = backbone_class(name)
    defaults = default_hparams(name)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise UserError(f"{cls.backbone}: unknown hparam(s) {', '.join(unknown)}; "
                        f"known: {', '.join(defaults)}")
    hparams = {k: _coerce(cls.backbone, k, overrides.get(k, v), v) for k, v in defaults.items()}
    if hparams["embed_dim"] < 1:
        raise UserError(f"{cls.backbone}: embed_dim must be >= 1")
    return cls.resolve(hparams, num_fields)


def build_model(name: str, feature_map: FeatureMap | Sequence[int], *,
                bags: Sequence[Sequence[Any] | None] | None = None, **hparams: Any) -> Member:
    """Build a fresh member (random init from torch's global RNG; seed it first for reproducibility).

    `feature_map` is a `FeatureMap` or its list of vocab sizes (then `bags` declares its list fields,
    as `FeatureMap.bags`); `model.hparams` is the fully resolved set, so
    `build_model(model.backbone, model.vocab_sizes, bags=model.bags, **model.hparams)` rebuilds it.
    """
    if isinstance(feature_map, FeatureMap):
        vocab_sizes = feature_map.vocab_sizes
        bags = feature_map.bags
    else:
        vocab_sizes = [int(v) for v in feature_map]
    if not vocab_sizes:
        raise UserError("a member needs at least one field")
    cls = backbone_class(name)
    resolved = resolve_hparams(cls.backbone, len(vocab_sizes), **hparams)
    try:
        model = cls(vocab_sizes, **{k: v for k, v in resolved.items() if k != "embedding_init"})
    except ValueError as err:
        raise UserError(f"{cls.backbone}: {err}") from err
    try:
        model.use_bags(bags)
    except ValueError as err:
        raise UserError(f"{cls.backbone}: {err}") from err
    model.init_embeddings(resolved["embedding_init"])
    model.hparams = resolved
    return model


_TERM = re.compile(r"^\s*([a-z0-9_]+)\s*(?:\*\s*(\d+))?\s*$", re.IGNORECASE)


def parse_members(spec: str, seeds: int | Sequence[int] | None = None) -> list[tuple[str, int]]:
    """`"dcnv2*8"` -> eight (dcnv2, seed) pairs; `"wukong+rankmixer+dcnv2"` -> one of each.

    Seeds count per backbone (the k-th dcnv2 gets seed base+k), so `dcnv2*4` and `dcnv2*4+wukong*4`
    share their dcnv2 members. `seeds` is a base (int) or one explicit seed per member.
    """
    members: list[str] = []
    for term in str(spec).split("+"):
        match = _TERM.match(term)
        if not match:
            raise UserError(f"bad member spec {spec!r}: expected e.g. 'dcnv2*8' or 'wukong+rankmixer+dcnv2'")
        count = int(match.group(2) or 1)
        if count < 1:
            raise UserError(f"bad member spec {spec!r}: a count must be >= 1")
        members += [backbone_class(match.group(1)).backbone] * count
    if seeds is None or isinstance(seeds, int):
        base, seen = int(seeds or 0), dict.fromkeys(members, 0)
        pairs = []
        for name in members:
            pairs.append((name, base + seen[name]))
            seen[name] += 1
        return pairs
    seeds = [int(s) for s in seeds]
    if len(seeds) != len(members):
        raise UserError(f"{len(seeds)} seeds given for {len(members)} members in {spec!r}")
    return list(zip(members, seeds, strict=True))


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _coerce(backbone: str, key: str, value: Any, default: Any) -> Any:
    """Check one hparam against its default's type: int lists, bools (true/false or 0/1), ints, floats."""
    if key == "embedding_init":
        if value not in EMBEDDING_INITS:
            raise UserError(f"unknown embedding init {value!r}; choose from {', '.join(EMBEDDING_INITS)}")
        return value
    bad = UserError(f"{backbone}: hparam {key}={value!r} must be like {default!r}")
    if isinstance(default, bool):
        if value in (0, 1) and not isinstance(value, float):
            return bool(value)
        raise bad
    if isinstance(default, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise bad
        items = [_coerce(backbone, key, v, 1) for v in value]
        if any(v < 1 for v in items):
            raise bad
        return items
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad
    if isinstance(default, int):
        if int(value) != value or value < 0:
            raise bad
        return int(value)
    return float(value)
