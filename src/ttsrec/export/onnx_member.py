"""One member -> one ONNX file (input `feat_ids` int64 [batch, F], output `logit` float32 [batch, 1]),
checked against torch (`parity`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from ttsrec.ensemble.session import run_session
from ttsrec.repository import naming
from ttsrec.repository.graphs import IR_VERSION, reinfer_shapes

_TWO_GB = 2**31


def export_member_onnx(model: nn.Module, path: Path, *, opset: int = 18, example_batch: int = 4,
                       metadata: Mapping[str, str] | None = None) -> Path:
    """Export with torch's dynamo exporter and a dynamic batch axis; written atomically.

    The example batch is >= 2 so torch.export does not specialise the batch to 1. Weights are
    embedded in the file unless the model passes 2 GB (then `<name>.data` sits next to it).
    Backbone and hparams (when the model has them) go into the ONNX metadata. Shapes are
    inferred afresh (strict), so onnx's strict shape inference and onnxruntime's quantizer accept it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    num_fields = len(model.vocab_sizes)
    width = getattr(model, "width", num_fields)  # list fields fill max_len columns each
    example = torch.zeros(max(2, example_batch), width, dtype=torch.int64)
    batch = torch.export.Dim("batch", min=1, max=1 << 24)
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter():
            warnings.simplefilter("ignore")  # exporter chatter (deprecations, onnxscript notices)
            program = torch.onnx.export(
                model, (example,), input_names=[naming.FEAT_IDS], output_names=[naming.LOGIT],
                dynamic_shapes={"feat_ids": {0: batch}}, opset_version=opset, dynamo=True,
                external_data=False, verbose=False,
            )
    finally:
        model.train(was_training)
    graph = program.model
    graph.ir_version = min(graph.ir_version, IR_VERSION)
    graph.metadata_props["ttsrec.num_fields"] = str(num_fields)
    if getattr(model, "bags", None):
        graph.metadata_props["ttsrec.bags"] = json.dumps(model.bags)
    if getattr(model, "backbone", None):
        graph.metadata_props["ttsrec.backbone"] = model.backbone
        graph.metadata_props["ttsrec.hparams"] = json.dumps(model.hparams, sort_keys=True)
    graph.metadata_props.update(metadata or {})

    big = sum(p.numel() * p.element_size() for p in model.parameters()) > _TWO_GB - (64 << 20)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        program.save(staged, external_data=big)  # big: weights in `<name>.data` next to the model
        # stale value_info (initializer shapes) breaks strict inference and the quantizer: infer afresh
        onnx.save_model(reinfer_shapes(onnx.load(staged, load_external_data=False)), staged)
        onnx.checker.check_model(str(staged), full_check=True)
        for produced in sorted(Path(tmp).iterdir(), key=lambda f: f == staged):  # the model file last
            os.replace(produced, path.parent / produced.name)
    stale = path.with_name(f"{path.name}.data")
    if not big and stale.exists():  # left by an earlier, bigger export to the same path
        stale.unlink()
    return path


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs optional-operator notices (one per missing torchvision op): nothing a user
    can act on, and they would break progress bars."""
    names = ("torch.onnx", "torch.onnx._internal.exporter._registration")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def parity(model: nn.Module, session: ort.InferenceSession, *, batch_sizes: Sequence[int] = (1, 7, 256),
           seed: int = 0) -> float:
    """Max |torch - onnxruntime| over random in-range ids (plus some out-of-range ones) per batch size."""
    rng = np.random.default_rng(seed)
    vocab = np.asarray(getattr(model, "column_sizes", model.vocab_sizes), dtype=np.int64)
    worst = 0.0
    model.eval()
    for size in batch_sizes:
        ids = (rng.random((size, len(vocab))) * vocab).astype(np.int64)
        ids[rng.random(ids.shape) < 0.05] = -1
        with torch.no_grad():
            expected = model(torch.from_numpy(ids)).numpy()
        worst = max(worst, float(np.abs(run_session(session, ids) - expected).max()))
    return worst
