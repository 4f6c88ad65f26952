"""What a member costs at inference: parameters, multiply-accumulates per sample, dense weight bytes.

MACs are counted, not derived from formulas: one forward pass of a single row under torch's
`FlopCounterMode`, which counts the matrix products (linear, matmul, bmm, einsum); MACs = FLOPs / 2.
Element-wise work (activations, LayerNorm, FM's sums of squares) and embedding gathers are O(F*d)
and not counted, so FM, whose interaction is all element-wise, shows ~0 MACs. At batch 1 the real
cost is reading the dense weights, hence `dense_weight_bytes` (every parameter outside the
embedding tables).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ttsrec.models.layers import FeatureEmbedding


@dataclass(frozen=True)
class Cost:
    params: int
    """All parameters, embedding tables included."""
    macs_per_sample: int
    """Multiply-accumulates of the matrix products for one row."""
    dense_weight_bytes: int
    """Bytes of the parameters outside the embedding tables (read in full by every request)."""
    embedding_params: int = 0
    """Parameters in the embedding tables (only F rows of them are read per request)."""

    @property
    def dense_params(self) -> int:
        return self.params - self.embedding_params

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dense_params": self.dense_params}


def model_cost(model: nn.Module) -> Cost:
    """Count a member's cost on a batch of one row (its mode is restored afterwards)."""
    tables = [m for m in model.modules() if isinstance(m, FeatureEmbedding)]
    embedding_ids = {id(p) for table in tables for p in table.parameters()}
    params = list(model.parameters())
    dense = [p for p in params if id(p) not in embedding_ids]
    feat_ids = torch.zeros(1, getattr(model, "width", len(model.vocab_sizes)), dtype=torch.int64)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(feat_ids)
    finally:
        model.train(was_training)
    return Cost(
        params=sum(p.numel() for p in params),
        macs_per_sample=int(counter.get_total_flops()) // 2,
        dense_weight_bytes=sum(p.numel() * p.element_size() for p in dense),
        embedding_params=sum(p.numel() for p in params if id(p) in embedding_ids),
    )
