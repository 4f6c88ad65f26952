"""`config.pbtxt` from Triton's own protobuf types (never string templates), and back.

Two flavours share one writer (design §4): `onnxruntime` models run `model.onnx` in Triton's
onnxruntime backend (stock NGC container, GPU deployments); `python` models run the same file
through the generic python-backend `model.py` (the server bundled in the PyPI wheel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from ttsrec.errors import UserError
from ttsrec.repository import naming

Backend = Literal["python", "onnxruntime"]
InstanceKind = Literal["cpu", "gpu"]
BACKENDS: tuple[str, ...] = ("python", "onnxruntime")
INSTANCE_KINDS: tuple[str, ...] = ("cpu", "gpu")

_KINDS = {"cpu": pb.ModelInstanceGroup.KIND_CPU, "gpu": pb.ModelInstanceGroup.KIND_GPU}
_ONNX_TO_TRITON = {1: pb.TYPE_FP32, 7: pb.TYPE_INT64, 10: pb.TYPE_FP16, 11: pb.TYPE_FP64, 6: pb.TYPE_INT32}


class Tensor(NamedTuple):
    """One model input or output, per row (Triton adds the batch axis itself)."""

    name: str
    data_type: int
    dims: tuple[int, ...]


def triton_dtype(onnx_elem_type: int) -> int:
    """Triton `TYPE_*` for an ONNX `TensorProto` element type."""
    try:
        return _ONNX_TO_TRITON[onnx_elem_type]
    except KeyError:
        raise UserError(f"unsupported ONNX element type {onnx_elem_type} at a model boundary") from None


@dataclass(frozen=True)
class Serving:
    """How every non-ensemble model of a repository is scheduled."""

    backend: Backend = "python"
    max_batch_size: int = 4096
    instance_count: int = 1
    instance_kind: InstanceKind = "cpu"
    dynamic_batching: bool = True
    max_queue_delay_us: int = 0
    """0: batch only what queued up while an instance was busy, never wait for more rows."""
    intra_op_threads: int = 1
    """One thread per session: M member sessions share the cores, spinning pools fight (design §4)."""
    fused_intra_op_threads: int | None = None
    """Threads of a fused graph's session (one session does all the work): default `intra_op_threads`."""
    queue_max: int = 0
    """Requests a model's dynamic batcher holds; one more is rejected at once (0: unbounded)."""
    queue_timeout_ms: int = 0
    """A request queued longer is rejected (0: none of the server's own)."""
    fused_instance_count: int = 2
    """A fused graph is one model doing all M members' work: with one instance it can use one core only
    (measured: 0.56x of in-process throughput at M=16, batch 256, c=4; two instances: 0.99x)."""

    @property
    def queue_policy(self) -> bool:
        """Whether the dynamic batcher gets a `default_queue_policy` (load shedding). Off unless asked for:
        with any queue policy, Triton 2.51's dynamic batcher (the bundled server) leaves a request queued
        for 500 ms every second or so even at concurrency 1 (measured: one member, 10-16 such stalls in
        10 s, p99 500 ms; none without the policy); docs/export.md, "Load shedding"."""
        return self.dynamic_batching and (self.queue_max > 0 or self.queue_timeout_ms > 0)

    @property
    def fused(self) -> Serving:
        """The same scheduling with the fused graphs' thread count."""
        return replace(self, intra_op_threads=self.fused_intra_op_threads or self.intra_op_threads,
                       instance_count=self.fused_instance_count)

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r} (choose from {', '.join(BACKENDS)})")
        if self.instance_kind not in INSTANCE_KINDS:
            raise UserError(f"unknown instance kind {self.instance_kind!r} (choose from cpu, gpu)")
        for label, value, low in (("--max-batch-size", self.max_batch_size, 1),
                                  ("--instance-count", self.instance_count, 1),
                                  ("--fused-instance-count", self.fused_instance_count, 1),
                                  ("--max-queue-delay-us", self.max_queue_delay_us, 0),
                                  ("--queue-max", self.queue_max, 0),
                                  ("--queue-timeout-ms", self.queue_timeout_ms, 0),
                                  ("--intra-op-threads", self.intra_op_threads, 1),
                                  ("--fused-intra-op-threads", 1 if self.fused_intra_op_threads is None
                                   else self.fused_intra_op_threads, 1)):
            if value < low:
                raise UserError(f"{label} must be >= {low}, got {value}")


def onnx_model_config(name: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor],
                      serving: Serving) -> pb.ModelConfig:
    """Config of a model that runs a `model.onnx` (member, merge step or fused graph)."""
    cfg = pb.ModelConfig(name=name, max_batch_size=serving.max_batch_size)
    if serving.backend == "python":
        cfg.backend = "python"
        cfg.parameters["intra_op_threads"].string_value = str(serving.intra_op_threads)
    else:
        cfg.platform = "onnxruntime_onnx"
        cfg.backend = "onnxruntime"
        cfg.parameters["intra_op_thread_count"].string_value = str(serving.intra_op_threads)
        cfg.parameters["inter_op_thread_count"].string_value = "1"
    _add_io(cfg, inputs, outputs)
    cfg.instance_group.add(count=serving.instance_count, kind=_KINDS[serving.instance_kind])
    if serving.dynamic_batching:
        cfg.dynamic_batching.SetInParent()
        cfg.dynamic_batching.max_queue_delay_microseconds = serving.max_queue_delay_us
        if serving.queue_policy:
            _set_queue_policy(cfg.dynamic_batching.default_queue_policy, serving)
    return cfg


def _set_queue_policy(policy: pb.ModelQueuePolicy, serving: Serving) -> None:
    """Load shedding: a bounded queue, and a timeout that rejects rather than computing answers the
    client has given up on; clients may send a shorter deadline (`allow_timeout_override`)."""
    policy.max_queue_size = serving.queue_max
    policy.default_timeout_microseconds = serving.queue_timeout_ms * 1000
    policy.timeout_action = pb.ModelQueuePolicy.REJECT
    policy.allow_timeout_override = True


PARAMETER_PREFIX = "ttsrec."


def set_parameters(cfg: pb.ModelConfig, values: dict[str, object]) -> pb.ModelConfig:
    """`parameters { key: "ttsrec.<name>" value { string_value: ... } }`: what a client or the bench
    learns from the server alone (export id, precision, members, weight bytes, shard identity)."""
    for key, value in values.items():
        cfg.parameters[PARAMETER_PREFIX + key].string_value = str(value)
    return cfg


def get_parameters(cfg: pb.ModelConfig) -> dict[str, str]:
    """The `ttsrec.*` parameters of a config, without the prefix."""
    return {k[len(PARAMETER_PREFIX):]: v.string_value for k, v in cfg.parameters.items()
            if k.startswith(PARAMETER_PREFIX)}


class Step(NamedTuple):
    """A member step of an ensemble: which model, and its input/output tensor names."""

    model: str
    input: str
    output: str


def ensemble_config(name: str, *, num_fields: int, max_batch_size: int, members: Sequence[Step],
                    merge_model: str, merge_inputs: Sequence[str], outputs: Sequence[str]) -> pb.ModelConfig:
    """`platform: "ensemble"`: all member steps in parallel on `feat_ids`, then the merge step.

    Member outputs get unique ensemble-scope names (`logit_00`, ...); no `dynamic_batching`
    here (a parse error for ensembles), `max_batch_size` no larger than the members'.
    """
    if len(members) != len(merge_inputs):
        raise ValueError("one merge input per member step")
    cfg = pb.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch_size)
    _add_io(cfg, [Tensor(naming.FEAT_IDS, pb.TYPE_INT64, (num_fields,))],
            [Tensor(out, pb.TYPE_FP32, (1,)) for out in outputs])
    _member_steps(cfg, members, merge_model, merge_inputs, outputs)
    return cfg


def raw_ensemble_config(name: str, *, inputs: Sequence[Tensor], encode_model: str, max_batch_size: int,
                        members: Sequence[Step], merge_model: str, merge_inputs: Sequence[str],
                        outputs: Sequence[str]) -> pb.ModelConfig:
    """An ensemble on raw record fields (`tts-export --raw-inputs`): the `encode_model` step turns the raw
    `inputs` (one per field, [1] per row) into the ensemble-scope `feat_ids`, which feeds the member steps
    and the merge exactly as in `ensemble_config`."""
    if len(members) != len(merge_inputs):
        raise ValueError("one merge input per member step")
    cfg = pb.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch_size)
    _add_io(cfg, inputs, [Tensor(out, pb.TYPE_FP32, (1,)) for out in outputs])
    encode = cfg.ensemble_scheduling.step.add(model_name=encode_model, model_version=-1)
    for t in inputs:
        encode.input_map[t.name] = t.name
    encode.output_map[naming.FEAT_IDS] = naming.FEAT_IDS
    _member_steps(cfg, members, merge_model, merge_inputs, outputs)
    return cfg


def _member_steps(cfg: pb.ModelConfig, members: Sequence[Step], merge_model: str, merge_inputs: Sequence[str],
                  outputs: Sequence[str]) -> None:
    """Every member step on the ensemble-scope `feat_ids`, then the merge step over their logits."""
    for k, step in enumerate(members):
        node = cfg.ensemble_scheduling.step.add(model_name=step.model, model_version=-1)
        node.input_map[step.input] = naming.FEAT_IDS
        node.output_map[step.output] = naming.scope_tensor(k)
    merge = cfg.ensemble_scheduling.step.add(model_name=merge_model, model_version=-1)
    for k, key in enumerate(merge_inputs):
        merge.input_map[key] = naming.scope_tensor(k)
    for out in outputs:
        merge.output_map[out] = out


def _add_io(cfg: pb.ModelConfig, inputs: Sequence[Tensor], outputs: Sequence[Tensor]) -> None:
    for t in inputs:
        cfg.input.add(name=t.name, data_type=t.data_type, dims=list(t.dims))
    for t in outputs:
        cfg.output.add(name=t.name, data_type=t.data_type, dims=list(t.dims))


def write_config(model_dir: Path, cfg: pb.ModelConfig) -> Path:
    path = Path(model_dir) / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text_format.MessageToString(cfg))
    return path


def read_config(model_dir_or_file: Path) -> pb.ModelConfig:
    """Parse a `config.pbtxt` (or the one in a model folder) back into `ModelConfig`."""
    path = Path(model_dir_or_file)
    if path.is_dir():
        path = path / "config.pbtxt"
    try:
        return text_format.Parse(path.read_text(), pb.ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not a valid Triton model config: {err}") from err
