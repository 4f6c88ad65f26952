"""DeepFM: the FM logit plus an MLP over the same (shared) embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ttsrec.models.fm import FM
from ttsrec.models.layers import MLP


class DeepFM(FM):
    backbone = "deepfm"
    depth_knobs = ("mlp_dims",)
    width_knobs = ("mlp_dims",)

    def __init__(self, vocab_sizes: Sequence[int], *, embed_dim: int = 16,
                 mlp_dims: Sequence[int] = (1024, 512, 256), first_order: bool = True, bias: bool = True):
        super().__init__(vocab_sizes, embed_dim=embed_dim, first_order=first_order, bias=bias)
        self.mlp = MLP(self.num_fields * embed_dim, mlp_dims)

    def forward(self, feat_ids: torch.Tensor) -> torch.Tensor:
        emb, flat = self.flat_embedding(feat_ids)
        return self.fm_logit(feat_ids, emb) + self.mlp(flat)
