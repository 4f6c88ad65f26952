"""What one export shares while it writes its repositories: the `Job` (settings, the rows the gates
use, progress), each `Member` on its way in, the `Draft` of one repository being written, and the
`Artefact` protocol every optional model kind implements (`raw_models.RawModels`,
`cascade.Cascades`). `writer.export_repository` builds the job once, by keyword; `assemble` writes
each repository from it. Nothing here imports another module of `ttsrec.export` but the gates'
plain data (`parity`, `gate`, `precision`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from ttsrec.data.feature_map import FeatureMap
from ttsrec.export import parity
from ttsrec.export.gate import GateRows
from ttsrec.export.precision import Int8Mode, Precision
from ttsrec.models.checkpoint import LoadedMember
from ttsrec.repository.config import Serving, Step
from ttsrec.repository.models import write_onnx_model
from ttsrec.utils.report import Task

Logits = dict[int, np.ndarray]
"""Logits [b, 1] per parity batch size."""
Labelled = tuple[np.ndarray, np.ndarray]
"""Rows with labels: ids int64 [N, F], labels [N]."""
Record = dict[str, object]
"""A manifest entry (JSON)."""
MergeFits = dict[int, dict[str, object]]
"""Per M, the fitted merge: weights and the validation figures (`merge_fit.per_m` in the manifest)."""


@dataclass(kw_only=True)
class Member:
    """One member on its way into a repository; `proto` and `logits` feed the merges and fused graphs."""

    position: int
    loaded: LoadedMember
    name: str
    proto: onnx.ModelProto = field(default_factory=onnx.ModelProto)
    logits: Logits = field(default_factory=dict)
    """What the shipped graph gives on the parity batches (PyTorch's logits in fp32)."""
    gate_fp32: np.ndarray | None = None
    """The fp32 graph's logits on the accuracy gate's rows (reduced precision only)."""
    gate_figures: Record | None = None
    """The accuracy gate's figures of the shipped graph (reduced precision only)."""
    weight_bytes: int = 0
    """Bytes of the shipped ONNX file(s)."""
    record: Record = field(default_factory=dict)
    """The member's manifest entry."""

    @property
    def step(self) -> Step:
        return Step(self.name, self.proto.graph.input[0].name, self.proto.graph.output[0].name)


@dataclass(frozen=True, kw_only=True)
class Job:
    """What every repository of one export shares."""

    feature_map: FeatureMap
    serving: Serving
    sample: parity.ParitySample
    precision: Precision
    int8_mode: Int8Mode
    export_id: str
    merge: str
    """mean (the paper), or weighted / selection: member weights fitted on the validation split."""
    fused: bool
    opset: int
    max_auc_drop: float
    workdir: Path
    """Scratch space (the fp32 member graphs before any precision change)."""
    task: Task
    """The export's progress bar (a silent one without a reporter)."""
    gate: GateRows | None = None
    """Reduced precision: the labelled test rows every graph is scored on against its fp32 graph."""
    calibration: np.ndarray | None = None
    """int8 qdq: train rows that fix the activation scales."""
    validation: Labelled | None = None
    """Validation rows the fitted merges and cascades learn from (None for the plain mean alone)."""
    artefacts: tuple[Artefact, ...] = ()
    """Optional model kinds to write after the ensembles and fused graphs (single repositories only)."""

    @property
    def tolerance(self) -> parity.Tolerance:
        """Fused graphs and merges against the shipped members' logits (fp32: PyTorch's)."""
        return parity.FP32 if self.precision == "fp32" else parity.REDUCED

    def parameters(self, members: Sequence[Member]) -> dict[str, object]:
        """The `ttsrec.*` config parameters of an ensemble, fused graph or shard (the contract)."""
        return {"export_id": self.export_id, "feature_map_hash": self.feature_map.hash,
                "precision": self.precision, "merge": self.merge,
                "members": ",".join(m.name for m in members),
                "weight_bytes": sum(m.weight_bytes for m in members), **self.layout_parameters()}

    def layout_parameters(self) -> dict[str, object]:
        """With list fields, `feat_ids_layout`: which columns of the one INT64 `feat_ids` each field fills
        (JSON, `FeatureMap.layout`); nothing otherwise, so those configs are unchanged."""
        fmap = self.feature_map
        return {"feat_ids_layout": json.dumps(fmap.layout(), separators=(",", ":"))} if fmap.has_lists else {}

    def write_onnx(self, root: Path, name: str, proto: onnx.ModelProto) -> Path:
        """`name/1/model.onnx` in this export's flavour (python: plus the generic `model.py`)."""
        return write_onnx_model(root, name, proto, self.serving.backend)

    def step(self, description: str) -> None:
        self.task.update(description=description)

    def done(self) -> None:
        self.task.update(advance=1)


@dataclass(kw_only=True)
class Draft:
    """One repository being written: what is already in it, for the artefacts that build on it."""

    root: Path
    job: Job
    members: list[Member]
    ms: list[int]
    fits: MergeFits = field(default_factory=dict)
    """Per M the fitted merge (empty for the plain mean)."""
    ensembles: list[Record] = field(default_factory=list)
    fused: list[Record] = field(default_factory=list)

    def weights(self, m: int) -> list[float] | None:
        """The fitted member weights of the M-member merge (None: the plain mean)."""
        return self.fits[m]["weights"] if self.fits else None  # type: ignore[return-value]


class Artefact(Protocol):
    """An optional kind of model in a repository (raw-record models, cascades, ...): prepared before any
    member is exported (so bad input stops the export early), written and gated after the ensembles and
    fused graphs, recorded under its own manifest key."""

    manifest_key: str

    def steps(self, ms: Sequence[int]) -> int:
        """Progress steps `write` advances for these ensemble sizes."""
        ...

    def write(self, draft: Draft) -> object:
        """Write, gate and configure the models; returns the manifest section."""
        ...
