"""FNN: field embeddings, flattened, into an MLP (the plain deep baseline)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ttsrec.models.base import Member
from ttsrec.models.layers import MLP


class FNN(Member):
    backbone = "fnn"
    depth_knobs = ("mlp_dims",)
    width_knobs = ("mlp_dims",)

    def __init__(self, vocab_sizes: Sequence[int], *, embed_dim: int = 16,
                 mlp_dims: Sequence[int] = (1024, 512, 256)):
        super().__init__(vocab_sizes, embed_dim)
        self.mlp = MLP(self.num_fields * embed_dim, mlp_dims)

    def forward(self, feat_ids: torch.Tensor) -> torch.Tensor:
        _, flat = self.flat_embedding(feat_ids)
        return self.mlp(flat)
