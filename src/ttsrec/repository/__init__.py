"""Triton model repository pieces: config builders, ONNX merge/fused graphs, the generic
python-backend model, names and the manifest. `ttsrec.export` assembles them."""

from ttsrec.repository import naming
from ttsrec.repository.config import (
    Serving,
    Tensor,
    ensemble_config,
    onnx_model_config,
    read_config,
    write_config,
)
from ttsrec.repository.graphs import fused_graph, merge_graph, onnx_file, save_onnx
from ttsrec.repository.manifest import read_manifest, read_shards

__all__ = [
    "Serving",
    "Tensor",
    "ensemble_config",
    "fused_graph",
    "merge_graph",
    "naming",
    "onnx_file",
    "onnx_model_config",
    "read_config",
    "read_manifest",
    "read_shards",
    "save_onnx",
    "write_config",
]
