"""The member contract every backbone follows (design §2).

`forward(feat_ids int64 [B, F]) -> logit float32 [B, 1]`, raw logit.  A backbone's hyper-parameters
are the keyword arguments of its `__init__` (their defaults are the paper's); `build_model` resolves
them and records the result in `model.hparams`, which is all that is needed to rebuild the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from ttsrec.models.layers import FeatureEmbedding

DEFAULT_EMBEDDING_INIT = "xavier"
"""The `embedding_init` of a member that names none (docs/training.md says why this one)."""


class Member(nn.Module):
    backbone: ClassVar[str] = ""
    depth_knobs: ClassVar[tuple[str, ...]] = ()
    """Hparams that make the network deeper (int layer counts, or lists whose length is the depth)."""
    width_knobs: ClassVar[tuple[str, ...]] = ()
    """Hparams that make the network wider (int/float widths, or lists of widths)."""
    module_depth_knob: ClassVar[str | None] = None
    """The paper's depth scaling: the count of stacked interaction modules (MLP layers excluded)."""
    module_width_knob: ClassVar[str | None] = None
    """The paper's width scaling: K parallel interaction modules, each with its own embedding table."""

    def __init__(self, vocab_sizes: Sequence[int], embed_dim: int):
        super().__init__()
        self.vocab_sizes: list[int] = [int(v) for v in vocab_sizes]
        self.num_fields = len(self.vocab_sizes)
        self.embed_dim = int(embed_dim)
        self.embedding = FeatureEmbedding(self.vocab_sizes, self.embed_dim)
        self.hparams: dict[str, Any] = {}
        self.bags: list[list[Any] | None] | None = None
        """List fields (`FeatureMap.bags`), or None when every field holds one id."""

    def use_bags(self, bags: Sequence[Sequence[Any] | None] | None) -> None:
        """Declare list fields on every embedding table (parallel modules' and FM's first-order ones too):
        the backbone itself is unchanged, it still sees one vector per field."""
        self.bags = [list(b) if b else None for b in bags] if bags and any(bags) else None
        for module in self.modules():
            if isinstance(module, FeatureEmbedding):
                module.set_bags(self.bags)

    @property
    def column_sizes(self) -> list[int]:
        """The vocab size behind each input column (a list field's over its `max_len` columns)."""
        bags = self.bags or [None] * self.num_fields
        return [v for v, b in zip(self.vocab_sizes, bags, strict=True) for _ in range(int(b[0]) if b else 1)]

    @property
    def width(self) -> int:
        """Columns of `feat_ids`: the fields, a list field counting `max_len`."""
        return len(self.column_sizes)

    @classmethod
    def resolve(cls, hparams: dict[str, Any], num_fields: int) -> dict[str, Any]:
        """Fill hparams that depend on the feature map (e.g. RankMixer's token width); checks them."""
        return hparams

    def init_embeddings(self, init: str) -> None:
        """Start every embedding table (parallel modules' and FM's first-order ones too) with `init`.

        The backbones build their tables with the paper's Xavier; another choice redraws them after
        construction, so `xavier` models keep their exact draws (and golden values)."""
        if init == "xavier":
            return
        for module in self.modules():
            if isinstance(module, FeatureEmbedding):
                module.reset(init)

    def extra_embeddings(self, num_modules: int) -> nn.ModuleList:
        """Tables for parallel modules 2..K (module 1 uses `self.embedding`, so K=1 is today's model)."""
        if num_modules < 1:
            raise ValueError(f"num_modules must be >= 1, got {num_modules}")
        tables = (FeatureEmbedding(self.vocab_sizes, self.embed_dim) for _ in range(num_modules - 1))
        return nn.ModuleList(tables)

    def flat_embedding(self, feat_ids):
        """[B, F] ids -> ([B, F, d] embeddings, [B, F*d] flattened)."""
        emb = self.embedding(feat_ids)
        return emb, emb.flatten(1)
