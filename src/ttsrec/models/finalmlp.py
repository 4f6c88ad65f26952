"""FinalMLP: two MLP streams over the flattened embeddings, fused by a multi-head bilinear
aggregation (the reference code's variant: no feature-selection gates)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ttsrec.models.base import Member
from ttsrec.models.layers import MLP, BilinearAggregation


class FinalMLP(Member):
    backbone = "finalmlp"
    depth_knobs = ("mlp_dims",)
    width_knobs = ("mlp_dims",)

    def __init__(self, vocab_sizes: Sequence[int], *, embed_dim: int = 16,
                 mlp_dims: Sequence[int] = (1024, 512, 256), num_heads: int = 1):
        super().__init__(vocab_sizes, embed_dim)
        flat_dim = self.num_fields * embed_dim
        self.stream1 = MLP(flat_dim, mlp_dims, output_layer=False)
        self.stream2 = MLP(flat_dim, mlp_dims, output_layer=False)
        self.fusion = BilinearAggregation(self.stream1.out_dim, self.stream2.out_dim, num_heads)

    def forward(self, feat_ids: torch.Tensor) -> torch.Tensor:
        _, flat = self.flat_embedding(feat_ids)
        return self.fusion(self.stream1(flat), self.stream2(flat))
