"""Wukong: a stack of Wukong layers (linear-compress block + low-rank FM block, residual,
LayerNorm) over the field embeddings, then an MLP head on the flattened result.

`num_modules=K` is the paper's width scaling: K Wukong stacks, each over its own embedding table, whose
flattened outputs are concatenated into the MLP head; depth scaling stacks more Wukong layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ttsrec.models.base import Member
from ttsrec.models.layers import MLP, WukongLayer


class Wukong(Member):
    backbone = "wukong"
    depth_knobs = ("num_layers", "mlp_dims")
    width_knobs = ("num_embed_lcb", "num_embed_fmb", "rank", "fm_mlp_dims", "mlp_dims")
    module_depth_knob = "num_layers"
    module_width_knob = "num_modules"

    def __init__(self, vocab_sizes: Sequence[int], *, embed_dim: int = 16,
                 mlp_dims: Sequence[int] = (1024, 512, 256), num_layers: int = 3,
                 num_embed_lcb: int = 16, num_embed_fmb: int = 16, rank: int = 24,
                 fm_mlp_dims: Sequence[int] = (512, 512), num_modules: int = 1):
        super().__init__(vocab_sizes, embed_dim)

        def stack() -> tuple[nn.Sequential, int]:
            layers, num_in = [], self.num_fields
            for _ in range(num_layers):
                layers.append(WukongLayer(num_in, embed_dim, num_embed_lcb, num_embed_fmb, rank, fm_mlp_dims))
                num_in = num_embed_lcb + num_embed_fmb
            return nn.Sequential(*layers), num_in

        self.layers, num_in = stack()
        self.extra_tables = self.extra_embeddings(num_modules)
        self.extra_layers = nn.ModuleList(stack()[0] for _ in range(num_modules - 1))
        self.mlp = MLP(num_in * embed_dim * num_modules, mlp_dims)

    def forward(self, feat_ids: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.embedding(feat_ids)).flatten(1)
        if self.extra_tables:
            pairs = zip(self.extra_tables, self.extra_layers, strict=True)
            out = torch.cat([out, *(layers(table(feat_ids)).flatten(1) for table, layers in pairs)], dim=1)
        return self.mlp(out)
