"""A model's files in a repository: `name/<version>/model.onnx`, plus the generic python-backend
`model.py` next to it in the python flavour (both flavours run the same ONNX file, design §4)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import onnx

from ttsrec.repository import naming
from ttsrec.repository.graphs import save_onnx

PYTHON_MODEL = resources.files("ttsrec.repository") / "triton_model.py"
"""The generic python-backend `model.py` every python-flavour model carries."""


def write_onnx_model(root: Path, name: str, proto: onnx.ModelProto, backend: str,
                     version: str = naming.VERSION) -> Path:
    """`root/name/version/model.onnx` (Triton's folder layout above 2 GB), plus `model.py` when `backend`
    is python. Returns the ONNX file to open."""
    version_dir = Path(root) / name / version
    path = save_onnx(proto, version_dir)
    if backend == "python":
        (version_dir / "model.py").write_bytes(PYTHON_MODEL.read_bytes())
    return path
