"""What the bench needs to know about an exported repository: M values, members per M, weight bytes.

Read from the files the exporter wrote (manifest, feature map, `config.pbtxt` steps, `model.onnx`),
not guessed from names: the members of `ensemble_mM` are the ensemble's own steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import onnx

from ttsrec.data.feature_map import FeatureMap
from ttsrec.errors import UserError
from ttsrec.repository import naming
from ttsrec.repository.config import read_config
from ttsrec.repository.graphs import onnx_file
from ttsrec.repository.manifest import read_manifest

_M_RE = re.compile(r"^(?:ensemble|fused)_m(\d+)$")


def dense_weight_bytes(path: Path) -> int:
    """Bytes of the initializers a batch-1 request reads in full: all but the tables that feed `Gather`
    (an embedding lookup reads one row per field, not the table)."""
    model = onnx.load(str(path))
    tables = {node.input[0] for node in model.graph.node if node.op_type == "Gather"}
    total = 0
    for init in model.graph.initializer:
        if init.name in tables:
            continue
        count = 1
        for dim in init.dims:
            count *= dim
        total += count * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    return total


@dataclass
class RepositoryInfo:
    path: Path
    manifest: dict[str, Any]
    feature_map: FeatureMap
    models: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, path: Path) -> RepositoryInfo:
        path = Path(path)
        if not path.is_dir():
            raise UserError(
                f"model repository not found: {path} (export one with tts-export, or pass --repository)"
            )
        manifest = read_manifest(path)
        fmap = FeatureMap.load(path / naming.FEATURE_MAP_FILE)
        models = {p.parent.name for p in path.glob("*/config.pbtxt")}
        return cls(path, manifest, fmap, models)

    @property
    def m_values(self) -> list[int]:
        """M values with an ensemble or a fused model in the repository."""
        return sorted({int(match.group(1)) for name in self.models if (match := _M_RE.match(name))})

    def has(self, model: str) -> bool:
        return model in self.models

    def members(self, m: int) -> list[str]:
        """Member model names of `ensemble_mM`, in step order (the merge step left out)."""
        name = naming.ensemble_name(m)
        if not self.has(name):
            raise UserError(f"{self.path} has no {name}")
        config = read_config(self.path / name / "config.pbtxt")
        return [s.model_name for s in config.ensemble_scheduling.step if s.model_name in self.member_names]

    @cached_property
    def member_names(self) -> list[str]:
        return sorted(n for n in self.models if naming.is_member(n))

    def onnx_path(self, model: str) -> Path:
        path = onnx_file(self.path / model / naming.VERSION)
        if not path.is_file():
            raise UserError(f"{model} has no ONNX file at {path}")
        return path

    @cached_property
    def _weight_bytes(self) -> dict[str, int]:
        return {}

    def member_weight_bytes(self, model: str) -> int:
        if model not in self._weight_bytes:
            self._weight_bytes[model] = dense_weight_bytes(self.onnx_path(model))
        return self._weight_bytes[model]
