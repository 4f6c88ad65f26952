"""Generic Triton python-backend model: runs the `model.onnx` next to it in onnxruntime.

Copied verbatim as `<model>/1/model.py` for every python-flavour model (members, merge steps,
fused graphs); it never imports ttsrec, so the repository also runs where ttsrec is not
installed. Input and output names come from the model config, so one file serves every model.
Triton's dynamic batcher hands `execute()` a list of requests: they are concatenated, run
once, and split again, or dynamic batching would gain nothing. Each request is checked first
(batch within max_batch_size, per-row dims and dtype as configured): a bad one gets its own
error response and never reaches onnxruntime, so it cannot fail its neighbours or the model.

String inputs (`TYPE_STRING`: the raw record fields of `raw_encode` / `raw_fused_mM`, tts-export
--raw-inputs) arrive as numpy object arrays of bytes; they are decoded to `str` (what onnxruntime's
string tensors take), and a value that is not UTF-8 or longer than the config's `max_string_bytes`
parameter fails its request with an error naming the input (the field) and the row.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads") or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Several sessions share the cores: spinning thread pools would fight (design §4).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list = ["CPUExecutionProvider"]
        gpu = args.get("model_instance_kind") == "GPU"
        if gpu and "CUDAExecutionProvider" in ort.get_available_providers():
            device = int(args["model_instance_device_id"])
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device}))
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        if path.is_dir():  # Triton's layout for graphs with external data: model.onnx/model.onnx
            path = path / "model.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        to_numpy = pb_utils.triton_string_to_numpy
        self.inputs = [t["name"] for t in config["input"]]
        self.expected = {t["name"]: (np.dtype(to_numpy(t["data_type"])), tuple(int(d) for d in t["dims"]))
                         for t in config["input"]}
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.max_string_bytes = int(params.get("max_string_bytes") or 0)
        """Longest string value a row may carry (0: no limit)."""
        self.outputs = [(t["name"], to_numpy(t["data_type"])) for t in config["output"]]

    def check(self, request: object) -> list[np.ndarray]:
        """The request's inputs in config order; a `ValueError` saying what is wrong with them."""
        arrays = []
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"input {name!r} is missing")
            array = tensor.as_numpy()
            dtype, dims = self.expected[name]
            if array.dtype != dtype:
                raise ValueError(f"input {name!r} has dtype {array.dtype}, expected {dtype}")
            rows = array.shape[1:]
            if len(rows) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, rows, strict=True)):
                raise ValueError(f"input {name!r} has shape {list(array.shape)}, expected [batch, "
                                 f"{', '.join(map(str, dims))}]")
            if not 1 <= array.shape[0] <= self.max_batch_size:
                raise ValueError(f"input {name!r} has batch {array.shape[0]}, "
                                 f"expected 1..{self.max_batch_size}")
            arrays.append(self.strings(name, array) if dtype == np.object_ else array)
        return arrays

    def strings(self, name: str, array: np.ndarray) -> np.ndarray:
        """A BYTES input as an object array of `str`; too long or not UTF-8: a `ValueError` naming the row."""
        flat = array.ravel()
        per_row = max(1, flat.size // max(1, array.shape[0]))
        limit = self.max_string_bytes
        if limit and flat.size and max(map(len, flat)) > limit:
            k = next(i for i, v in enumerate(flat) if len(v) > limit)
            raise ValueError(f"input {name!r} row {k // per_row}: value of {len(flat[k])} bytes is longer "
                             f"than the limit of {limit} bytes")
        try:  # one decode for the whole tensor: NUL-joined (a UTF-8 sequence cut by NUL is invalid)
            values = b"\x00".join(flat).decode("utf-8").split("\x00")
            if len(values) != flat.size:  # a value holds NUL itself
                values = [v.decode("utf-8") for v in flat]
        except UnicodeDecodeError:
            k = next(i for i, v in enumerate(flat) if not _is_utf8(v))
            raise ValueError(f"input {name!r} row {k // per_row}: value is not valid UTF-8") from None
        out = np.empty(flat.size, dtype=object)
        out[:] = values
        return out.reshape(array.shape)

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        good, inputs = [], []
        for k, request in enumerate(requests):
            try:
                inputs.append(self.check(request))
                good.append(k)
            except Exception as err:  # a malformed request fails alone, as bad input (400 / INVALID_ARGUMENT)
                error = _bad_input(str(err))
                responses[k] = pb_utils.InferenceResponse(output_tensors=[], error=error)
        if good:
            for k, response in zip(good, self.run(inputs), strict=True):
                responses[k] = response
        return responses

    def run(self, requests: list[list[np.ndarray]]) -> list:
        """One onnxruntime call for the checked requests (their inputs in config order), split again."""
        try:
            parts = [[r[i] for r in requests] for i in range(len(self.inputs))]
            feeds = {name: np.concatenate(p) if len(p) > 1 else p[0]
                     for name, p in zip(self.inputs, parts, strict=True)}
            results = self.session.run([name for name, _ in self.outputs], feeds)
        except Exception as err:  # one bad batch must not take the model down
            error = pb_utils.TritonError(f"{type(err).__name__}: {err}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for size in (p.shape[0] for p in parts[0]):
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[start:start + size], dtype=dtype))
                       for (name, dtype), out in zip(self.outputs, results, strict=True)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def finalize(self) -> None:
        self.session = None


def _is_utf8(value: object) -> bool:
    try:
        bytes(value).decode("utf-8")  # type: ignore[call-overload]
    except (UnicodeDecodeError, TypeError):
        return False
    return True


def _bad_input(message: str) -> object:
    """A `TritonError` the client reads as its own mistake (code INVALID_ARG where the stub has codes)."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
