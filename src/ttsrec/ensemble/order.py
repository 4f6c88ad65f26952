"""Member order: `ensemble_mM` (served) and the M-member curves (evaluated) use the first M members of
this order, so for a heterogeneous run it keeps backbones balanced at every M."""

from __future__ import annotations

from collections.abc import Sequence


def balanced_order(backbones: Sequence[str]) -> list[int]:
    """Indices that interleave backbones round-robin, in order of first appearance; within a
    backbone the given order (seed order from `tts-train`) is kept.

    `[fnn, fnn, dcnv2, dcnv2, wukong]` -> fnn, dcnv2, wukong, fnn, dcnv2: any prefix holds each
    backbone at most once more than any other. A homogeneous run keeps its order.
    """
    groups: dict[str, list[int]] = {}
    for index, backbone in enumerate(backbones):
        groups.setdefault(backbone, []).append(index)
    queues = list(groups.values())
    order: list[int] = []
    for depth in range(max((len(q) for q in queues), default=0)):
        order.extend(q[depth] for q in queues if depth < len(q))
    return order


def default_m_list(num_members: int) -> list[int]:
    """1, 2, 4, 8, 16 capped at the number of members (which is always included)."""
    return sorted({min(m, num_members) for m in (1, 2, 4, 8, 16)})


def shard_members(num_members: int, shards: int) -> list[list[int]]:
    """Round-robin split of member positions over shards: sizes differ by at most one."""
    return [list(range(k, num_members, shards)) for k in range(shards)]
