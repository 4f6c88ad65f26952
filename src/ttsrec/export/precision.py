"""Reduced-precision members: fp16 (the GPU path) and int8 (onnxruntime quantization, the CPU path).

Every precision keeps the member contract: int64 ids in, a float32 logit out, so merges, ensembles
and clients do not change. int8 comes in two modes (docs/export.md has the measurements behind
the default):

- `qdq`: static quantization in QDQ format, weights int8 per output channel, activations uint8
  with scales calibrated once on train-split rows. Scales are constants, so a row's logit never
  depends on the other rows of its batch (the member contract), and served equals in-process.
- `dynamic`: weights int8, activation scales computed per call from the whole batch tensor, so a
  row's logit moves (slightly) with whatever the dynamic batcher put next to it.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from ttsrec.errors import UserError
from ttsrec.export.fp16 import to_fp16

Precision = Literal["fp32", "fp16", "int8"]
Int8Mode = Literal["qdq", "dynamic"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
INT8_MODES: tuple[str, ...] = ("qdq", "dynamic")
DEFAULT_INT8_MODE: Int8Mode = "qdq"
QUANTIZED_OPS = ["MatMul", "Gemm"]
"""The dense layers hold the bytes and the MACs; embedding lookups stay fp32 (a Gather moves no MACs)."""
CALIBRATION_BATCH = 256


def check_precision(precision: str, int8_mode: str) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if int8_mode not in INT8_MODES:
        raise UserError(f"unknown --int8-mode {int8_mode!r} (choose from {', '.join(INT8_MODES)})")


def reduce_precision(model: onnx.ModelProto, precision: Precision, *, int8_mode: Int8Mode = DEFAULT_INT8_MODE,
                     calibration: np.ndarray | None = None) -> onnx.ModelProto:
    """The fp32 member graph in the asked precision (fp32: unchanged). `calibration`: int64 ids
    [rows, F] from the train split, needed by int8 `qdq`."""
    if precision == "fp32":
        return model
    if precision == "fp16":
        return to_fp16(model)
    with tempfile.TemporaryDirectory(prefix="tts-quantize-") as work, _quiet_quantizer():
        source, target = Path(work) / "fp32.onnx", Path(work) / "int8.onnx"
        onnx.save_model(model, source)
        skip = _not_per_channel(model)
        if int8_mode == "dynamic":
            _dynamic(source, target, skip)
        else:
            if calibration is None or len(calibration) == 0:
                raise UserError("int8 qdq quantization needs train-split rows for calibration (pass --data)")
            _static_qdq(source, target, calibration, skip)
        quantized = onnx.load(target)
    quantized.ir_version = model.ir_version
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(model.metadata_props)
    return quantized


def _not_per_channel(model: onnx.ModelProto) -> list[str]:
    """Dense nodes whose weight is not a 2-D matrix (RankMixer's per-token FFN: [tokens, in, out]):
    onnxruntime's int8 MatMul kernels take per-channel scales of 2-D weights only, so these stay fp32."""
    ranks = {t.name: len(t.dims) for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS
            and any(ranks.get(i, 2) != 2 for i in n.input[1:2])]


def _dynamic(source: Path, target: Path, skip: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=skip)


def _static_qdq(source: Path, target: Path, calibration: np.ndarray, skip: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(source, target, _Calibration(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=QUANTIZED_OPS, calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=skip)


class _Calibration:
    """onnxruntime's `CalibrationDataReader` protocol over fixed train rows, in batches."""

    def __init__(self, ids: np.ndarray):
        self._batches = iter([np.ascontiguousarray(ids[i:i + CALIBRATION_BATCH], dtype=np.int64)
                              for i in range(0, len(ids), CALIBRATION_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"feat_ids": batch}

    def rewind(self) -> None:  # one pass is all MinMax calibration needs
        pass


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer logs a "consider pre-processing" hint per call at WARNING on the root logger and
    prints progress: nothing a user can act on, and it would break progress bars."""
    import onnxruntime as ort

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)  # calibration sessions: "removing unused initializer" notices
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
        ort.set_default_logger_severity(2)
