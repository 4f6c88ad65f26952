"""The raw-input description shared by the exporter and the client: one input of a raw model
(`tts-export --raw-inputs`), the raw column it carries and the fields computed from it.

The exporter builds these from the feature map (`ttsrec.export.encode_graph`) and records them in the
encode graph's metadata, the manifest and each raw model's `ttsrec.raw_inputs` parameter
(`RawInput.to_dict`); the client reads them back from a served config (`RawInput.from_dict`) to lay
records out. One dtype table says how each input dtype is spelt in ONNX, in `config.pbtxt`, on the wire
and in numpy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from onnx import TensorProto

InputDtype = Literal["float32", "float64", "string"]
RAW_KIND = "raw"
"""The `ttsrec.inputs` parameter of a raw model."""


class DtypeNames(NamedTuple):
    """How one raw-input dtype is spelt by each party."""

    onnx: int
    """`onnx.TensorProto` element type of the encode graph's input."""
    triton: str
    """`config.pbtxt` data type (`TYPE_*`)."""
    wire: str
    """Triton's wire datatype (KServe v2: BYTES, FP32, FP64)."""
    numpy: type
    """numpy dtype of a feed (strings: object arrays)."""


DTYPES: dict[str, DtypeNames] = {
    "float32": DtypeNames(TensorProto.FLOAT, "TYPE_FP32", "FP32", np.float32),
    "float64": DtypeNames(TensorProto.DOUBLE, "TYPE_FP64", "FP64", np.float64),
    "string": DtypeNames(TensorProto.STRING, "TYPE_STRING", "BYTES", np.object_),
}


def dtype_of_triton(data_type: str) -> str | None:
    """The raw-input dtype of a config's `TYPE_*` data type (None: no raw input has it)."""
    return next((dtype for dtype, names in DTYPES.items() if names.triton == data_type), None)


@dataclass(frozen=True)
class RawInput:
    """One input of a raw model: tensor `name`, [batch, 1] ([1] per row in a config), carrying raw column
    `source`."""

    name: str
    source: str
    fields: tuple[str, ...]
    """The fields computed from it (one in the encode graph's `inputs="field"` mode)."""
    dtype: InputDtype
    separator: str = ""
    """A list field's token separator: a client joins a Python list of tokens with it ("" otherwise)."""

    @property
    def triton_dtype(self) -> str:
        return DTYPES[self.dtype].triton

    @property
    def datatype(self) -> str:
        """Triton wire datatype: BYTES, FP32 or FP64."""
        return DTYPES[self.dtype].wire

    @property
    def numpy_dtype(self) -> type:
        return DTYPES[self.dtype].numpy

    @property
    def onnx_type(self) -> int:
        return DTYPES[self.dtype].onnx

    @property
    def is_string(self) -> bool:
        return self.dtype == "string"

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"name": self.name, "source": self.source, "fields": list(self.fields),
                                   "dtype": self.dtype}
        return {**body, "separator": self.separator} if self.separator else body

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> RawInput:
        """The inverse of `to_dict` (`source` defaults to the name, `fields` to the name alone)."""
        name = body["name"]
        if body.get("dtype") not in DTYPES:
            raise ValueError(f"raw input {name!r} has dtype {body.get('dtype')!r}")
        return cls(name, body.get("source", name), tuple(body.get("fields", [name])), body["dtype"],
                   str(body.get("separator", "")))


def raw_inputs_json(inputs: list[RawInput]) -> str:
    """The `ttsrec.raw_inputs` parameter of a raw model (compact JSON, in input order)."""
    return json.dumps([i.to_dict() for i in inputs], separators=(",", ":"))
