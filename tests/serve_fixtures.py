"""Helpers for the serving tests: exported repositories, raw Criteo records, and the in-process
onnxruntime reference (members' `model.onnx` run directly, their logits averaged).

A test module that uses the shared `repo` / `server` fixtures (conftest.py) says which repository it
needs with a module-level `REPO = RepoSpec(...)`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ttsrec.repository import naming
from ttsrec.repository.config import Serving

MAX_BATCH = 256


def export(checkpoints: list[Path], out: Path, data: Path, **options: object) -> Path:
    """`export_repository` in the python flavour at MAX_BATCH; `options` are fields of `Serving` or
    `ExportConfig`."""
    from ttsrec.export import export_repository
    from ttsrec.export.writer import ExportConfig

    scheduling = {f.name for f in fields(Serving)}
    serving = Serving(**{"backend": "python", "max_batch_size": MAX_BATCH,
                         **{k: v for k, v in options.items() if k in scheduling}})
    config = ExportConfig(**{k: v for k, v in options.items() if k not in scheduling})
    return export_repository(checkpoints, out, serving, config, data=data)


@dataclass(frozen=True)
class RepoSpec:
    """The repository a test module exports once (conftest.py's `repo`): the first `members` of the
    session's member checkpoints (None: all), exported by `export` with `options`, in a temporary folder
    named `name`."""

    name: str
    members: int | None = None
    options: dict[str, object] = field(default_factory=dict)

    def build(self, checkpoints: list[Path], root: Path, data: Path) -> Path:
        return export(list(checkpoints[:self.members]), root / "repo", data, **self.options)


def onnx_path(repo: Path, model: str) -> Path:
    path = Path(repo) / model / naming.VERSION / "model.onnx"
    return path / "model.onnx" if path.is_dir() else path  # external-data layout


class OrtReference:
    """Member logits computed in-process with onnxruntime on CPU, one session per member."""

    def __init__(self, repo: Path):
        self.repo = Path(repo)
        self.manifest = json.loads((self.repo / naming.MANIFEST_FILE).read_text())
        self._sessions: dict[str, ort.InferenceSession] = {}

    def members_of(self, model: str) -> list[str]:
        """Members behind `ensemble_mM` / `fused_mM`, as the manifest records them."""
        for entry in self.manifest.get("ensembles", []) + self.manifest.get("fused", []):
            if entry["name"] == model:
                return list(entry["members"])
        raise KeyError(model)

    def member_logit(self, member: str, ids: np.ndarray) -> np.ndarray:
        if member not in self._sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self._sessions[member] = ort.InferenceSession(str(onnx_path(self.repo, member)), options,
                                                          providers=["CPUExecutionProvider"])
        session = self._sessions[member]
        (out,) = session.run(None, {session.get_inputs()[0].name: ids.astype(np.int64)})
        return out.reshape(-1)

    def mean_logit(self, members: list[str], ids: np.ndarray) -> np.ndarray:
        return np.mean(np.stack([self.member_logit(m, ids) for m in members]), axis=0)


def criteo_records(tsv: Path, rows: int) -> list[dict[str, str]]:
    """The first rows of a Criteo TSV as raw records keyed I1..I13, C1..C26 (label dropped)."""
    names = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    records = []
    with open(tsv) as fh:
        for line, _ in zip(fh, range(rows), strict=False):
            values = line.rstrip("\n").split("\t")[1:]
            records.append(dict(zip(names, values, strict=True)))
    return records
