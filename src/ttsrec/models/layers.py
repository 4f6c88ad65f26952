"""Building blocks shared by the backbones.

Every layer works row by row (no statistics over the batch) and uses only ops that the dynamo ONNX
exporter maps to plain ONNX (Gather, MatMul/Gemm, LayerNormalization, Where, Erf), so a member
exports with a dynamic batch axis and serves any int64 request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

EMBEDDING_INITS = ("xavier", "xavier_field", "normal")
"""How a member's embedding tables start (the `embedding_init` hparam of every backbone):

- `xavier`: Xavier-uniform over the one concatenated table, as the paper's code; its scale,
  sqrt(6 / (total vocabulary + d)), is an accident of the vocabulary size (+-0.11 at 474 ids, +-0.013 at 35k).
- `xavier_field`: Xavier-uniform per field, sqrt(6 / (field vocabulary + d)): one field's size sets its scale.
- `normal`: N(0, 1e-4) (std 1e-4), the default of FuxiCTR and DeepCTR: independent of any vocabulary.
"""
NORMAL_INIT_STD = 1e-4


class FeatureEmbedding(nn.Module):
    """One table for all fields of one member (global row = field offset + field-local id).

    Out-of-range ids (negative or >= the field's vocab) are mapped to the field's OOV id 0 *inside*
    the graph, so random ids from a load generator can never index outside the table.

    List fields (`bags`, per field `[max_len, pooling]` or None): such a field fills `max_len` input
    columns and is pooled here (`mean` or `sum` of its tokens' rows; its padding id, the field's last
    id, never counts; an empty list gives zeros), so every backbone still sees one vector per field.
    """

    segments: list[tuple[int, int, str]]
    """With list fields: (first column, end column, pooling or "" for one-value fields) in field order."""

    def __init__(self, vocab_sizes: Sequence[int], dim: int,
                 bags: Sequence[Sequence[Any] | None] | None = None):
        super().__init__()
        sizes = torch.tensor([int(v) for v in vocab_sizes], dtype=torch.int64)
        if sizes.numel() == 0 or bool((sizes < 1).any()):
            raise ValueError(f"vocab sizes must be >= 1 per field, got {list(vocab_sizes)}")
        # Derived from vocab_sizes (which checkpoints store), so kept out of the state dict.
        self.register_buffer("sizes", sizes, persistent=False)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.weight = nn.Parameter(torch.empty(int(sizes.sum()), dim))
        nn.init.xavier_uniform_(self.weight)
        self.set_bags(bags)

    def set_bags(self, bags: Sequence[Sequence[Any] | None] | None) -> None:
        """Declare list fields (no parameters change: their padding row is part of the vocab size)."""
        self.segments = []
        if not bags or all(b is None for b in bags):
            return
        if len(bags) != len(self.sizes):
            raise ValueError(f"{len(bags)} list declarations for {len(self.sizes)} fields")
        widths = torch.tensor([int(b[0]) if b else 1 for b in bags], dtype=torch.int64)
        sizes = torch.repeat_interleave(self.sizes, widths)
        pad = torch.repeat_interleave(torch.where(widths > 0, self.sizes - 1, -1), widths)
        is_list = torch.repeat_interleave(torch.tensor([b is not None for b in bags]), widths)
        self.register_buffer("col_sizes", sizes, persistent=False)
        self.register_buffer("col_offsets", torch.repeat_interleave(self.offsets, widths), persistent=False)
        self.register_buffer("col_pad", torch.where(is_list, pad, -1), persistent=False)
        col = 0
        for b in bags:
            width, pooling = (int(b[0]), str(b[1])) if b else (1, "")
            if pooling not in ("", "mean", "sum") or width < 1:
                raise ValueError(f"bad list field declaration {b!r} (max_len >= 1, pooling mean or sum)")
            if not pooling and self.segments and not self.segments[-1][2]:
                self.segments[-1] = (self.segments[-1][0], col + 1, "")  # one slice per run of fields
            else:
                self.segments.append((col, col + width, pooling))
            col += width

    @torch.no_grad()
    def reset(self, init: str) -> None:
        """Redraw the table with one of `EMBEDDING_INITS` (torch's global RNG, as at construction)."""
        if init == "xavier":
            nn.init.xavier_uniform_(self.weight)
        elif init == "xavier_field":
            dim = self.weight.shape[1]
            for offset, size in zip(self.offsets.tolist(), self.sizes.tolist(), strict=True):
                bound = math.sqrt(6.0 / (size + dim))
                self.weight[offset:offset + size].uniform_(-bound, bound)
        elif init == "normal":
            nn.init.normal_(self.weight, 0.0, NORMAL_INIT_STD)
        else:
            raise ValueError(f"unknown embedding init {init!r}; choose from {', '.join(EMBEDDING_INITS)}")

    def forward(self, feat_ids: torch.Tensor) -> torch.Tensor:
        """[B, F] int64 field-local ids -> [B, F, dim] ([B, width] with list fields, still [B, F, dim])."""
        if self.segments:
            return self._pooled(feat_ids)
        valid = (feat_ids >= 0) & (feat_ids < self.sizes)
        rows = torch.where(valid, feat_ids, torch.zeros_like(feat_ids)) + self.offsets
        return F.embedding(rows, self.weight)

    def _pooled(self, feat_ids: torch.Tensor) -> torch.Tensor:
        """Each row on its own: padding weighs 0, a mean divides by the row's own token count (>= 1)."""
        valid = (feat_ids >= 0) & (feat_ids < self.col_sizes)
        rows = torch.where(valid, feat_ids, torch.zeros_like(feat_ids)) + self.col_offsets
        emb = F.embedding(rows, self.weight)
        parts = []
        for start, end, pooling in self.segments:
            if not pooling:
                parts.append(emb[:, start:end])
                continue
            keep = (feat_ids[:, start:end] != self.col_pad[start:end]).to(emb.dtype).unsqueeze(-1)
            pooled = (emb[:, start:end] * keep).sum(dim=1, keepdim=True)
            if pooling == "mean":
                pooled = pooled / keep.sum(dim=1, keepdim=True).clamp_min(1.0)
            parts.append(pooled)
        return torch.cat(parts, dim=1)


class MLP(nn.Sequential):
    """Linear -> ReLU per hidden width, then an optional Linear(., 1) output layer."""

    def __init__(self, in_dim: int, dims: Sequence[int], *, output_layer: bool = True):
        layers: list[nn.Module] = []
        for width in dims:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        if output_layer:
            layers.append(nn.Linear(in_dim, 1))
        super().__init__(*layers)
        self.out_dim = 1 if output_layer else in_dim


class CrossNetwork(nn.Module):
    """DCN cross layers, x_{l+1} = x0 * (x_l . w_l) + b_l + x_l, rank-1 (DCN) or full-matrix (DCNv2:
    x_{l+1} = x0 * (W_l x_l + b_l) + x_l)."""

    def __init__(self, dim: int, num_layers: int, *, full_rank: bool):
        super().__init__()
        self.full_rank = full_rank
        width = dim if full_rank else 1
        self.weights = nn.ModuleList(nn.Linear(dim, width, bias=full_rank) for _ in range(num_layers))
        self.biases = nn.Parameter(torch.zeros(num_layers, dim)) if not full_rank else None

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for index, linear in enumerate(self.weights):
            x = x0 * linear(x) + x
            if self.biases is not None:
                x = x + self.biases[index]
        return x


class FMInteraction(nn.Module):
    """Second-order FM term 0.5 * sum_d[(sum_f e)^2 - sum_f e^2], [B, F, d] -> [B, 1]."""

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        square_of_sum = emb.sum(dim=1).pow(2)
        sum_of_square = emb.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)


class InnerProduct(nn.Module):
    """All pairwise inner products <e_i, e_j>, i < j: one batched matmul, then a gather of the upper
    triangle (indices kept as a buffer so they follow the module's device)."""

    def __init__(self, num_fields: int):
        super().__init__()
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("pairs", rows * num_fields + cols, persistent=False)
        self.num_pairs = int(rows.numel())

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """[B, F, d] -> [B, F(F-1)/2]."""
        gram = torch.bmm(emb, emb.transpose(1, 2)).flatten(1)
        return gram.index_select(1, self.pairs)


def _uniform_(tensor: torch.Tensor, fan_in: int) -> torch.Tensor:
    """nn.Linear's default init range for weights we hold as raw (batched) parameters."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.init.uniform_(tensor, -bound, bound)


class WukongLayer(nn.Module):
    """Wukong interaction layer: linear-compress block (LCB) + low-rank FM block (FMB), concatenated,
    plus a residual (projected over the embedding-count axis when the count changes), LayerNorm(d).

    [B, n_in, d] -> [B, n_lcb + n_fmb, d].
    """

    def __init__(self, num_in: int, dim: int, num_lcb: int, num_fmb: int, rank: int,
                 fm_mlp_dims: Sequence[int]):
        super().__init__()
        self.num_out = num_lcb + num_fmb
        self.num_fmb, self.dim = num_fmb, dim
        self.lcb = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(num_in, num_lcb)))
        self.fmb_proj = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(num_in, rank)))
        self.fmb_norm = nn.LayerNorm(num_in * rank)
        self.fmb_mlp = MLP(num_in * rank, [*fm_mlp_dims, num_fmb * dim], output_layer=False)
        self.residual = (nn.Parameter(nn.init.kaiming_normal_(torch.empty(num_in, self.num_out)))
                         if num_in != self.num_out else None)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xt = x.transpose(1, 2)                                           # [B, d, n]
        lcb = torch.matmul(xt, self.lcb).transpose(1, 2)                 # [B, n_lcb, d]
        fm = torch.bmm(x, torch.matmul(xt, self.fmb_proj)).flatten(1)    # X (X^T W): [B, n * r]
        fmb = self.fmb_mlp(self.fmb_norm(fm)).view(-1, self.num_fmb, self.dim)
        residual = x if self.residual is None else torch.matmul(xt, self.residual).transpose(1, 2)
        return self.norm(torch.cat((fmb, lcb), dim=1) + residual)


class PerTokenLinear(nn.Module):
    """T independent Linear(d_in, d_out) maps, one per token, computed as one batched matmul over a
    [T, d_in, d_out] weight on token-major input (no Python loop over tokens, no transposes;
    onnxruntime runs a batched MatMul 1.3-4x faster than the equivalent Einsum)."""

    def __init__(self, num_tokens: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(_uniform_(torch.empty(num_tokens, d_in, d_out), d_in))
        self.bias = nn.Parameter(_uniform_(torch.empty(num_tokens, d_out), d_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token-major [T, B, d_in] -> [T, B, d_out]."""
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)


class RankMixerLayer(nn.Module):
    """RankMixer block: parameter-free token mixing (T tokens x H = T heads), then a per-token FFN
    (GELU), each with a residual and a LayerNorm over the last dimension only (never over the batch,
    unlike the reference code).  Token-major [T, B, D] -> [T, B, D], D divisible by T: the layout
    the per-token FFN wants, so a stack of layers needs no transposes.
    """

    def __init__(self, num_tokens: int, dim: int, hidden: int):
        super().__init__()
        if dim % num_tokens:
            raise ValueError(f"token dim {dim} must be a multiple of the token count {num_tokens}")
        self.num_tokens, self.dim = num_tokens, dim
        self.mix_norm = nn.LayerNorm(dim)
        self.ffn_in = PerTokenLinear(num_tokens, dim, hidden)
        self.ffn_out = PerTokenLinear(num_tokens, hidden, dim)
        self.ffn_norm = nn.LayerNorm(dim)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """Output token h is slice h of every input token, concatenated: [T, B, H, D/H] -> [H, B, T, D/H]."""
        heads = x.reshape(self.num_tokens, -1, self.num_tokens, self.dim // self.num_tokens)
        return heads.permute(2, 1, 0, 3).reshape(self.num_tokens, -1, self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mix_norm(x + self.mix(x))
        return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))


class BilinearAggregation(nn.Module):
    """FinalMLP's fusion head: w1.x1 + w2.x2 + sum_h x1_h^T W_h x2_h (multi-head bilinear)."""

    def __init__(self, dim1: int, dim2: int, num_heads: int = 1):
        super().__init__()
        if dim1 % num_heads or dim2 % num_heads:
            raise ValueError(f"stream widths {dim1}, {dim2} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.linear1 = nn.Linear(dim1, 1)
        self.linear2 = nn.Linear(dim2, 1, bias=False)
        head1, head2 = dim1 // num_heads, dim2 // num_heads
        self.bilinear = nn.Parameter(nn.init.xavier_normal_(torch.empty(num_heads, head1, head2)))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        h1 = x1.view(x1.shape[0], self.num_heads, -1)
        h2 = x2.view(x2.shape[0], self.num_heads, -1)
        cross = torch.matmul(h1.unsqueeze(2), self.bilinear).squeeze(2)  # [B, H, 1, i] @ [H, i, j]
        return self.linear1(x1) + self.linear2(x2) + (cross * h2).sum(dim=(1, 2)).unsqueeze(1)
