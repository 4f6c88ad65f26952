"""What a bench row measures: one name per way of serving M members, shared by the bench's planner,
runner, analysis, report and frontier, and by the experiments that drive it."""

from __future__ import annotations

from enum import Enum


class Mode(str, Enum):
    """A `str` (JSON, CSV and comparisons with plain strings work); `str(mode)` is its value."""

    ENSEMBLE = "ensemble"
    """Triton `ensemble_mM`: M member models in parallel, then the merge step."""
    FUSED = "fused"
    """Triton `fused_mM`: all M members and the merge in one ONNX graph."""
    CASCADE = "cascade"
    """Triton `cascade_mM`: the members in stages, each stage only on the rows not yet settled."""
    SHARDED = "sharded"
    """K shard servers, each summing its members, merged by the client."""
    SHARD = "shard"
    """One shard server alone (the rows the sharded fan-out overhead is measured against)."""
    INPROCESS = "inprocess"
    """`--mode` choice only: gives one `inprocess_members` and one `inprocess_fused` row per point."""
    INPROCESS_MEMBERS = "inprocess_members"
    """onnxruntime in the bench's process, members one by one, then a numpy mean."""
    INPROCESS_FUSED = "inprocess_fused"
    """onnxruntime in the bench's process, the fused graph."""

    def __str__(self) -> str:
        return self.value


TRITON_MODES: tuple[Mode, ...] = (Mode.ENSEMBLE, Mode.FUSED, Mode.CASCADE)
"""Modes that query one served model on one server."""
SERVED_MODES: tuple[Mode, ...] = (Mode.ENSEMBLE, Mode.FUSED, Mode.CASCADE, Mode.SHARDED)
"""Modes whose rows go through tritonserver (compared with each other and with in-process)."""
INPROCESS_MODES: tuple[Mode, ...] = (Mode.INPROCESS_MEMBERS, Mode.INPROCESS_FUSED)
CLI_MODES: tuple[Mode, ...] = (Mode.ENSEMBLE, Mode.FUSED, Mode.CASCADE, Mode.SHARDED, Mode.INPROCESS)
"""`tts-bench --mode` choices."""
