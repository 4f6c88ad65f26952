"""Manifest entries: what an exported ONNX file is, what a member costs, how models are served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from onnx.external_data_helper import ExternalDataInfo, uses_external_data
from torch import nn

from ttsrec.models import model_cost
from ttsrec.repository.config import Serving
from ttsrec.repository.manifest import file_sha256


def onnx_record(root: Path, path: Path, proto: onnx.ModelProto) -> dict[str, Any]:
    """File (relative to the repository), size with any external data, sha256, IR, opset, I/O."""
    files = [path]
    if path.parent.name == "model.onnx":  # Triton's folder layout for > 2 GB graphs
        files += [path.parent / loc for loc in {ExternalDataInfo(t).location for t in proto.graph.initializer
                                                if uses_external_data(t)}]
    opsets = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    return {"file": str(path.relative_to(root)), "bytes": sum(f.stat().st_size for f in files),
            "sha256": file_sha256(path), "ir_version": proto.ir_version,
            "opset": max(opsets, default=None), "input": proto.graph.input[0].name,
            "outputs": [o.name for o in proto.graph.output]}


def cost_record(model: nn.Module) -> dict[str, Any]:
    """Parameters, MACs per sample and dense weight bytes, as counted by the model zoo."""
    cost = model_cost(model)
    return {"params": int(cost.params), "macs_per_sample": int(cost.macs_per_sample),
            "dense_weight_bytes": int(cost.dense_weight_bytes)}


def serving_record(serving: Serving) -> dict[str, Any]:
    return {"max_batch_size": serving.max_batch_size, "instance_count": serving.instance_count,
            "instance_kind": serving.instance_kind, "dynamic_batching": serving.dynamic_batching,
            "max_queue_delay_us": serving.max_queue_delay_us, "intra_op_threads": serving.intra_op_threads,
            "fused_intra_op_threads": serving.fused.intra_op_threads,
            "fused_instance_count": serving.fused_instance_count,
            "queue_policy": queue_policy_record(serving)}


def queue_policy_record(serving: Serving) -> dict[str, Any]:
    """The dynamic batcher's load shedding (none without dynamic batching: Triton has no queue then; none
    unless asked for with a bound, see `Serving.queue_policy`)."""
    if not serving.queue_policy:
        return {"applied": False}
    return {"applied": True, "max_queue_size": serving.queue_max, "timeout_ms": serving.queue_timeout_ms,
            "timeout_action": "REJECT", "allow_timeout_override": True}
