"""Small members for the model-zoo tests: six fields, embed_dim 8, tiny MLPs (2 cores)."""

from __future__ import annotations

import torch

from ttsrec.data.feature_map import FeatureMap, Field
from ttsrec.models import BACKBONES, Member, build_model

VOCAB_SIZES = [3, 10, 7, 50, 2, 20]

SMALL: dict[str, dict] = {name: {"embed_dim": 8, "mlp_dims": [32, 16]} for name in BACKBONES}
SMALL["fm"] = {"embed_dim": 8}
SMALL["dcn"] = SMALL["dcnv2"] = {"embed_dim": 8, "mlp_dims": [32, 16], "num_cross_layers": 2}
SMALL["wukong"] = {"embed_dim": 8, "mlp_dims": [32, 16], "num_layers": 2, "num_embed_lcb": 4,
                   "num_embed_fmb": 4, "rank": 4, "fm_mlp_dims": [16]}
SMALL["rankmixer"] = {"embed_dim": 8, "mlp_dims": [32, 16], "num_layers": 2}
SMALL["finalmlp"] = {"embed_dim": 8, "mlp_dims": [32, 16], "num_heads": 2}


def small_feature_map() -> FeatureMap:
    fields = [Field(name=f"f{i}", kind="categorical", vocab=[f"t{j}" for j in range(1, size)])
              for i, size in enumerate(VOCAB_SIZES)]
    return FeatureMap(dataset_id="tiny", fields=fields)


def small_model(name: str, seed: int = 0, init: str | None = None) -> Member:
    """`init`: an `embedding_init` (None: the backbone's default, what the golden values were drawn with)."""
    torch.manual_seed(seed)
    extra = {} if init is None else {"embedding_init": init}
    return build_model(name, small_feature_map(), **SMALL[name], **extra).eval()


def valid_ids(rows: int, seed: int = 0) -> torch.Tensor:
    """In-range field-local ids [rows, F], int64."""
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, v, (rows,), generator=gen) for v in VOCAB_SIZES], dim=1)


def wild_ids(rows: int, seed: int = 0) -> torch.Tensor:
    """Any int64: negatives, huge values, values just past the vocab, and some valid ones."""
    gen = torch.Generator().manual_seed(seed)
    pool = torch.tensor([-1, -2, -(2**63), 2**63 - 1, 2**40, *VOCAB_SIZES, 0, 1, 2])
    picks = pool[torch.randint(0, len(pool), (rows, len(VOCAB_SIZES)), generator=gen)]
    return torch.where(torch.rand(picks.shape, generator=gen) < 0.7, picks, valid_ids(rows, seed))


def oov_path(ids: torch.Tensor) -> torch.Tensor:
    """What the member must see: every out-of-range id replaced by the field's OOV id 0."""
    vocab = torch.tensor(VOCAB_SIZES)
    return torch.where((ids >= 0) & (ids < vocab), ids, torch.zeros_like(ids))
