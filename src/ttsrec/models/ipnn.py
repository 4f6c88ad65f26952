"""IPNN: flattened embeddings plus all pairwise inner products, into an MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ttsrec.models.base import Member
from ttsrec.models.layers import MLP, InnerProduct


class IPNN(Member):
    backbone = "ipnn"
    depth_knobs = ("mlp_dims",)
    width_knobs = ("mlp_dims",)

    def __init__(self, vocab_sizes: Sequence[int], *, embed_dim: int = 16,
                 mlp_dims: Sequence[int] = (1024, 512, 256)):
        super().__init__(vocab_sizes, embed_dim)
        self.inner = InnerProduct(self.num_fields)
        self.mlp = MLP(self.num_fields * embed_dim + self.inner.num_pairs, mlp_dims)

    def forward(self, feat_ids: torch.Tensor) -> torch.Tensor:
        emb, flat = self.flat_embedding(feat_ids)
        return self.mlp(torch.cat((flat, self.inner(emb)), dim=1))
