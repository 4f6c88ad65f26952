"""Request tensors as tritonclient sends them: one INT64 id input, raw inputs whose bytes are already in
Triton's wire layout, and the requested outputs (binary on HTTP)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ttsrec.client.utils import tritonclient_module


def build_inputs(protocol: str, input_name: str, ids: np.ndarray) -> list[Any]:
    """One INT64 input tensor for `ids` (binary on HTTP)."""
    mod = tritonclient_module(protocol)
    tensor = mod.InferInput(input_name, list(ids.shape), "INT64")
    if protocol == "grpc":
        tensor.set_data_from_numpy(ids)
    else:
        tensor.set_data_from_numpy(ids, binary_data=True)
    return [tensor]


def build_raw_input(protocol: str, name: str, datatype: str, rows: int, payload: bytes) -> Any:
    """One [rows, 1] input whose bytes are already in Triton's wire layout (`ttsrec.client.raw`): set as the
    tensor's raw contents, so tritonclient does not serialize BYTES element by element again."""
    mod = tritonclient_module(protocol)
    tensor = mod.InferInput(name, [rows, 1], datatype)
    if protocol == "grpc" and hasattr(tensor, "_raw_content"):
        tensor._raw_content = payload
    elif protocol == "http" and hasattr(tensor, "_raw_data") and hasattr(tensor, "_parameters"):
        tensor._data = None
        tensor._raw_data = payload
        tensor._parameters["binary_data_size"] = len(payload)
    else:  # another tritonclient: its public (slower) path
        tensor.set_data_from_numpy(_decode_payload(datatype, rows, payload), **(
            {"binary_data": True} if protocol == "http" else {}))
    return tensor


def _decode_payload(datatype: str, rows: int, payload: bytes) -> np.ndarray:
    if datatype != "BYTES":
        return np.frombuffer(payload, dtype={"FP32": "<f4", "FP64": "<f8"}[datatype]).reshape(rows, 1)
    from tritonclient.utils import deserialize_bytes_tensor

    return deserialize_bytes_tensor(payload).reshape(rows, 1)


def build_outputs(protocol: str, outputs: Sequence[str]) -> list[Any]:
    mod = tritonclient_module(protocol)
    if protocol == "grpc":
        return [mod.InferRequestedOutput(name) for name in outputs]
    return [mod.InferRequestedOutput(name, binary_data=True) for name in outputs]
