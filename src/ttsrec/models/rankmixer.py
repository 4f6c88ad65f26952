"""RankMixer: one token per field, a stack of RankMixer layers (parameter-free token mixing +
per-token FFN, LayerNorm over the last dim), then an MLP head on the flattened tokens.

Token mixing needs the token width to be a multiple of the token count (the reference code forces
embed_dim to be one). Here each field embedding is projected per token to `token_dim` instead;
`token_dim=0` resolves to the smallest multiple of the field count >= embed_dim, and the projection
is skipped when `token_dim == embed_dim`. `num_modules=K` is the paper's width scaling: K RankMixer stacks,
each over its own embedding table, concatenated into the MLP head; depth scaling stacks more layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ttsrec.errors import UserError
from ttsrec.models.base import Member
from ttsrec.models.layers import MLP, PerTokenLinear, RankMixerLayer


class RankMixer(Member):
    backbone = "rankmixer"
    depth_knobs = ("num_layers", "mlp_dims")
    width_knobs = ("expansion", "mlp_dims")
    module_depth_knob = "num_layers"
    module_width_knob = "num_modules"

    def __init__(self, vocab_sizes: Sequence[int], *, embed_dim: int = 16,
                 mlp_dims: Sequence[int] = (1024, 512, 256), num_layers: int = 3,
                 expansion: float = 2.0, token_dim: int = 0, num_modules: int = 1):
        super().__init__(vocab_sizes, embed_dim)
        tokens = self.num_fields
        token_dim = token_dim or self.auto_token_dim(embed_dim, tokens)
        hidden = max(1, round(token_dim * expansion))

        def tokenizer() -> nn.Module:
            return PerTokenLinear(tokens, embed_dim, token_dim) if token_dim != embed_dim else nn.Identity()

        def stack() -> nn.Sequential:
            return nn.Sequential(*(RankMixerLayer(tokens, token_dim, hidden) for _ in range(num_layers)))

        self.tokenize = PerTokenLinear(tokens, embed_dim, token_dim) if token_dim != embed_dim else None
        self.layers = stack()
        self.extra_tables = self.extra_embeddings(num_modules)
        self.extra_modules = nn.ModuleList(nn.Sequential(tokenizer(), stack())
                                           for _ in range(num_modules - 1))
        self.mlp = MLP(tokens * token_dim * num_modules, mlp_dims)

    @staticmethod
    def auto_token_dim(embed_dim: int, num_tokens: int) -> int:
        return num_tokens * math.ceil(embed_dim / num_tokens)

    @classmethod
    def resolve(cls, hparams: dict[str, Any], num_fields: int) -> dict[str, Any]:
        token_dim = hparams["token_dim"] or cls.auto_token_dim(hparams["embed_dim"], num_fields)
        if token_dim % num_fields:
            raise UserError(f"rankmixer: token_dim={token_dim} must be a multiple of the field count "
                            f"{num_fields} (or 0 for automatic)")
        if hparams["num_modules"] < 1:
            raise UserError(f"rankmixer: num_modules must be >= 1, got {hparams['num_modules']}")
        if hparams["expansion"] <= 0:
            raise UserError(f"rankmixer: expansion must be > 0, got {hparams['expansion']}")
        return {**hparams, "token_dim": token_dim}

    def forward(self, feat_ids: torch.Tensor) -> torch.Tensor:
        tokens = self.embedding(feat_ids).transpose(0, 1)  # token-major [T, B, d] for the batched FFNs
        if self.tokenize is not None:
            tokens = self.tokenize(tokens)
        out = self.layers(tokens).transpose(0, 1).flatten(1)
        if self.extra_tables:
            pairs = zip(self.extra_tables, self.extra_modules, strict=True)
            out = torch.cat([out, *(module(table(feat_ids).transpose(0, 1)).transpose(0, 1).flatten(1)
                                    for table, module in pairs)], dim=1)
        return self.mlp(out)
