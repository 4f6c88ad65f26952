"""Half-precision members: weights and arithmetic in fp16, int64 ids in and fp32 logits out, so the
ensemble, the merge step and the clients do not change."""

from __future__ import annotations

import warnings

import onnx


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxconverter_common.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        # "values truncated to fp16" notices: the parity gate judges the result
        warnings.simplefilter("ignore")
        return convert_float_to_float16(model, keep_io_types=True)
