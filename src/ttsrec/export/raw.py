"""`tts-export --raw-inputs`: models that take the raw record and encode it inside the served graph.

Next to the id models (`ensemble_mM`, `fused_mM` on `feat_ids`) a repository then holds:

    raw_encode/        the encode graph (`ttsrec.export.encode_graph`): one input per field, named after
                       the field (TYPE_STRING or TYPE_FP32, dims [1]) -> feat_ids INT64 [F]
    raw_ensemble_mM/   ensemble: raw_encode -> the M member steps -> merge (the id ensemble's own
                       member and merge models)
    raw_fused_mM/      one ONNX graph: the encode graph in front of fused_mM's graph

in both flavours (python backend: the generic `model.py`, which decodes string inputs; onnxruntime:
`platform: onnxruntime_onnx`). The configs carry the id models' `ttsrec.*` parameters plus
`ttsrec.inputs = raw`, `ttsrec.raw_inputs` (JSON: input name, raw column, fields, dtype),
`ttsrec.ids_model` and `ttsrec.max_string_bytes`, so a client learns how to send records from the server.

**Parity gate.** The prepared folder keeps ids only, so the raw rows come from two places:

1. *the test split's raw rows*: `summary.json` names the raw input files and the split seed; while those
   files exist the first test rows (up to the max batch) are read again with `tts-data`'s own reader,
   tokeniser and split hash. Where `tts-data`'s lookup of them no longer gives `test/ids.npy` (the file
   changed since `prepare`), they are not used and the manifest says why;
2. *vocabulary rows*, always: per field every vocabulary token as a raw value (plus its upper-cased or
   extended form where the transform folds those onto it), unseen values, missing values, numbers on
   both sides of every bucket edge (FP32 values), dates over two weeks at every hour.

Gates, each exact: the shipped `raw_encode` graph gives on all these rows the ids `tts-data` gives them
(0 differing ids; for test rows that is `test/ids.npy`); every `raw_fused_mM` gives bit for bit the
outputs of `fused_mM` on those ids at batch 1, 2, 7 and the max batch (test rows first, vocabulary rows
after). `raw_ensemble_mM` runs the same member and merge models as `ensemble_mM` after `raw_encode`, so
its parity is the encode gate's. The tests compare served raw models with served id models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import polars as pl
from onnx import helper
from tritonclient.grpc import model_config_pb2 as pb

from ttsrec.data import transforms
from ttsrec.data.encode import BAD, Lookup, tokens
from ttsrec.data.feature_map import FeatureMap, Field
from ttsrec.data.spec import DatasetSpec, FieldSpec
from ttsrec.errors import UserError
from ttsrec.export.encode_graph import EncodeGraph, RawInput, build_encode_graph, raw_feed
from ttsrec.export.parity import ParityError, batch_sizes
from ttsrec.export.records import onnx_record
from ttsrec.repository import naming
from ttsrec.repository.config import Serving, Tensor, onnx_model_config, raw_ensemble_config, set_parameters
from ttsrec.repository.config import write_config as write_model_config
from ttsrec.repository.graphs import EXTERNAL_DATA_BYTES, onnx_file, save_onnx, weight_bytes

if TYPE_CHECKING:
    from ttsrec.export.assemble import Job, Member

MAX_STRING_BYTES = 1024
"""Longest string value a raw request may carry (python flavour: checked by model.py, error naming the
field; the onnxruntime flavour has no such check: a longer value encodes like any other)."""
MAX_VOCAB_ROWS = 262_144
"""Vocabulary rows per source at most (a larger vocabulary is sampled evenly)."""
TEST_SPLIT = 2
_TRITON_TYPES = {"float32": pb.TYPE_FP32, "float64": pb.TYPE_FP64, "string": pb.TYPE_STRING}
_UNSEEN = ["never-seen-value", "ÜNSEEN ß 日本", "\t", "z" * 64]
Feed = dict[str, np.ndarray]


@dataclass
class RawRows:
    """Raw rows for the gate: the encode graph's feed and the ids `tts-data` gives the same rows."""

    name: str
    feed: Feed
    ids: np.ndarray
    """int64 [N, F]."""

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int) -> RawRows:
        return RawRows(self.name, {k: v[:n] for k, v in self.feed.items()}, self.ids[:n])


@dataclass
class RawPlan:
    """What `--raw-inputs` needs before the repository is written: the encode graph and the gate's rows
    (built first, so an unsupported transform or unreadable data stops the export before any member)."""

    graph: EncodeGraph
    rows: list[RawRows]
    """Test rows (when recoverable) first, then the vocabulary rows."""
    notes: dict[str, Any] = field(default_factory=dict)
    max_string_bytes: int = MAX_STRING_BYTES

    def model_rows(self, count: int) -> RawRows:
        """The first `count` rows over all sets (test rows first): the batches raw_fused is gated on."""
        parts, left = [], count
        for rows in self.rows:
            if left <= 0:
                break
            parts.append(rows.head(left))
            left -= len(parts[-1])
        names = parts[0].feed
        return RawRows("+".join(p.name for p in parts),
                       {k: np.concatenate([p.feed[k] for p in parts]) for k in names},
                       np.concatenate([p.ids for p in parts]))


def plan(feature_map: FeatureMap, data_dir: Path | None, max_batch_size: int) -> RawPlan:
    """The encode graph of `feature_map` and the gate's raw rows (see the module docstring)."""
    graph = build_encode_graph(feature_map)
    rows, notes = [], {}
    test, note = raw_test_rows(feature_map, data_dir, max_batch_size)
    notes["test_rows"] = note
    if test is not None:
        frame, ids = test
        rows.append(RawRows("test", _feed(graph, frame), ids))
    frame = vocabulary_rows(feature_map)
    ids, bad = prepare_ids(feature_map, frame)
    keep = ~bad
    rows.append(RawRows("vocabulary", _feed(graph, frame.filter(pl.Series(keep))), ids[keep]))
    notes["vocabulary_rows"] = int(keep.sum())
    return RawPlan(graph, rows, notes)


def _feed(graph: EncodeGraph, frame: pl.DataFrame) -> Feed:
    """What a client sends for these rows (unchecked: the gate compares ids, and names what differs)."""
    return raw_feed(graph, columns={c: frame.get_column(c) for c in frame.columns}, check=False)


# -- the gate's rows ---------------------------------------------------------------------------------------


def _spec(fmap: FeatureMap) -> DatasetSpec:
    if fmap.spec:
        return DatasetSpec.from_dict(fmap.spec, origin="feature_map.json spec")
    return DatasetSpec(dataset_id=fmap.dataset_id, label=fmap.label,
                       fields=[FieldSpec(f.name, f.source, f.preprocess) for f in fmap.fields])


def prepare_ids(fmap: FeatureMap, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """`tts-data`'s ids for a raw frame (source columns, null = missing) and which rows it would skip."""
    toks = tokens(frame, _spec(fmap), with_label=False)
    return Lookup(fmap)(toks.drop(BAD), np.int64), toks.get_column(BAD).to_numpy() != 0


def raw_test_rows(fmap: FeatureMap, data_dir: Path | None, limit: int
                  ) -> tuple[tuple[pl.DataFrame, np.ndarray] | None, str]:
    """The first `limit` test rows of the prepared data as raw columns, with their ids from `test/ids.npy`;
    (None, why) when the raw input files are unknown, gone or changed since `prepare`."""
    from ttsrec.data.prepared import PreparedData
    from ttsrec.data.readers import iter_chunks
    from ttsrec.data.split import split_of

    if data_dir is None:
        return None, "no prepared data folder (--data) to take test rows from"
    data = PreparedData(data_dir)
    inputs = [Path(p) for p in data.summary.get("inputs", [])]
    if not inputs:
        return None, f"{data_dir}/summary.json names no raw input files"
    gone = [p for p in inputs if not p.exists()]
    if gone:
        return None, f"raw input {gone[0]} (named in summary.json) is gone"
    expected = np.asarray(data.ids("test"), dtype=np.int64)
    want = min(limit, len(expected))
    if want == 0:
        return None, "the test split is empty"
    spec = _spec(fmap)
    seed = int(data.summary.get("seed", 0))
    frames, start, found = [], 0, 0
    try:
        for chunk in iter_chunks(spec, inputs):
            toks = tokens(chunk.frame, spec)
            n = toks.height
            split = split_of(np.arange(start, start + n), seed)
            keep = (split == TEST_SPLIT) & (toks.get_column(BAD).to_numpy() == 0)
            start += n
            if keep.any():
                frames.append(chunk.frame.filter(pl.Series(keep)).select(spec.sources))
                found += int(keep.sum())
            if found >= want:
                break
    except UserError as err:
        return None, f"raw inputs unreadable now ({err})"
    if found < want:
        return None, f"raw inputs hold {found} test rows, test/ids.npy {len(expected)}: changed since prepare"
    frame = pl.concat(frames, how="vertical_relaxed").head(want)
    ids, _ = prepare_ids(fmap, frame)
    if not np.array_equal(ids, expected[:want]):
        return None, "the raw inputs no longer give test/ids.npy (changed since prepare)"
    where = ", ".join(map(str, inputs))
    return (frame, expected[:want]), f"the first {want} test rows, read again from {where}"


def vocabulary_rows(fmap: FeatureMap, max_rows: int = MAX_VOCAB_ROWS) -> pl.DataFrame:
    """Raw rows (String columns per raw source, null = missing) that cover every field's vocabulary: per
    source the candidates of every field reading it, cycled to the longest source."""
    per_source: dict[str, list[str | None]] = {}
    for f in fmap.fields:
        per_source.setdefault(f.source, []).extend(_candidates(f))
    columns = {}
    for source, values in per_source.items():
        values = list(dict.fromkeys(values))
        if len(values) > max_rows:
            values = [values[i] for i in np.linspace(0, len(values) - 1, max_rows).astype(int)]
        columns[source] = values
    rows = max(len(v) for v in columns.values())
    return pl.DataFrame({s: pl.Series(s, [v[i % len(v)] for i in range(rows)], dtype=pl.String)
                         for s, v in columns.items()})


def _candidates(f: Field) -> list[str | None]:
    name = f.preprocess.partition(":")[0]
    vocab = [t for t in f.vocab if t != transforms.MISSING]
    missing: list[str | None] = [None]
    if name in transforms.NUMERIC:
        return missing + _numbers(vocab, log_square=name == "log_square")
    if name in transforms.DATE_PARTS:
        return missing + _dates()
    if name == "lower":
        return missing + _UNSEEN + vocab + [v.upper() for v in vocab]
    if name == "prefix":
        return missing + _UNSEEN + vocab + [v + "~tail" for v in vocab]
    if name == "year":
        return missing + ["1899", "x 2001 1999"] + vocab + [f"x{v}y" for v in vocab]
    return missing + _UNSEEN + vocab


def _fp32_text(values: Sequence[float]) -> list[str]:
    """Numbers as the decimal text of an FP32 value (a client's FP32 input is then exactly that value)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr) & (np.abs(arr) < 2.0**62)].astype(np.float32)
    return [repr(float(v)) for v in dict.fromkeys(arr.tolist())]


def _numbers(vocab: Sequence[str], log_square: bool) -> list[str | None]:
    """Each integer token, its neighbours, and for log_square both sides of its bucket edge exp(sqrt(k))."""
    ks = []
    for tok in vocab:
        try:
            ks.append(int(tok))
        except ValueError:
            continue
    ks += [-3, 0, 1, 2, 3, 1000]
    values: list[float] = []
    for k in ks:
        values += [k, k + 0.5, k - 0.25]
        if log_square and 0 < k < 3000:
            edge = np.float32(math.exp(math.sqrt(k)))
            values += [float(np.nextafter(edge, np.float32(-np.inf))), float(edge),
                       float(np.nextafter(edge, np.float32(np.inf))), math.exp(math.sqrt(k + 0.5))]
    values += [2.0, float(np.nextafter(np.float32(2), np.float32(3))), 1e18, -1e6, 123456789.0]
    return list(_fp32_text(values))


def _dates() -> list[str | None]:
    """YYMMDDHH over two weeks at every hour, a leap day and both centuries (text that is no date: prepare
    skips the row, the graph gives OOV; tests/test_encode_graph.py covers those)."""
    start = date(2014, 10, 20)
    days = [start + timedelta(d) for d in range(14)]
    days += [date(2016, 2, 29), date(1999, 12, 31), date(2000, 1, 1)]
    return [d.strftime("%y%m%d") + f"{h:02d}" for d in days for h in range(24)]


# -- graphs and configs ------------------------------------------------------------------------------------


def raw_fused_graph(encode: onnx.ModelProto, fused: onnx.ModelProto) -> onnx.ModelProto:
    """The encode graph in front of a fused graph: its `feat_ids` output becomes the fused graph's input.

    The encode graph's internal names get the prefix `encode/` (its inputs and `feat_ids` keep theirs);
    a name both graphs use otherwise is refused."""
    if [i.name for i in fused.graph.input] != [naming.FEAT_IDS]:
        raise UserError(f"a fused graph to put the encode graph in front of takes {naming.FEAT_IDS} only")
    enc = onnx.compose.add_prefix(encode, "encode/", rename_inputs=False, rename_outputs=False)
    names = lambda g: ({o for n in g.node for o in n.output} | {t.name for t in g.initializer}  # noqa: E731
                       | {n.name for n in g.node if n.name})
    clash = (names(enc.graph) & names(fused.graph)) - {naming.FEAT_IDS}
    if clash:
        raise UserError(f"encode and fused graphs both name {sorted(clash)[0]!r}")
    opsets: dict[str, int] = {}
    for op in [*enc.opset_import, *fused.opset_import]:
        if op.domain in opsets and opsets[op.domain] != op.version:
            raise UserError(f"encode and fused graphs import {op.domain or 'ai.onnx'} at versions "
                            f"{opsets[op.domain]} and {op.version}")
        opsets[op.domain] = op.version
    graph = helper.make_graph(
        [*enc.graph.node, *fused.graph.node], f"raw_{fused.graph.name}", list(enc.graph.input),
        list(fused.graph.output), initializer=[*enc.graph.initializer, *fused.graph.initializer],
        value_info=[*enc.graph.value_info, enc.graph.output[0], *fused.graph.value_info])
    model = helper.make_model(graph, functions=list(fused.functions), producer_name="ttsrec",
                              ir_version=max(enc.ir_version, fused.ir_version),
                              opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())])
    props = {p.key: p.value for p in [*fused.metadata_props, *encode.metadata_props]}
    helper.set_model_props(model, props)
    if weight_bytes(model) < EXTERNAL_DATA_BYTES:
        onnx.checker.check_model(model)
    return model


def input_tensors(graph: EncodeGraph) -> list[Tensor]:
    """Config inputs of a raw model: one per encode-graph input, [1] per row."""
    return [Tensor(inp.name, _TRITON_TYPES[inp.dtype], (1,)) for inp in graph.inputs]


def input_record(inp: RawInput) -> dict[str, Any]:
    return {**inp.to_dict(), "triton_dtype": inp.triton_dtype}


def raw_parameters(plan: RawPlan, ids_model: str) -> dict[str, object]:
    """The `ttsrec.*` parameters a raw model adds to its id model's: how a client sends records."""
    return {"inputs": "raw", "ids_model": ids_model, "max_string_bytes": plan.max_string_bytes,
            "raw_inputs": json.dumps([i.to_dict() for i in plan.graph.inputs], separators=(",", ":"))}


def _onnx_config(name: str, plan: RawPlan, outputs: list[Tensor], serving: Serving) -> pb.ModelConfig:
    cfg = onnx_model_config(name, input_tensors(plan.graph), outputs, serving)
    if serving.backend == "python":  # model.py refuses longer strings, naming the field
        cfg.parameters["max_string_bytes"].string_value = str(plan.max_string_bytes)
    return cfg


def _write_model(root: Path, name: str, proto: onnx.ModelProto, backend: str) -> Path:
    """`name/1/model.onnx` (+ the generic python-backend `model.py` in the python flavour)."""
    version_dir = root / name / naming.VERSION
    path = save_onnx(proto, version_dir)
    if backend == "python":
        source = resources.files("ttsrec.repository").joinpath("triton_model.py").read_bytes()
        (version_dir / "model.py").write_bytes(source)
    return path


# -- writing and gating ------------------------------------------------------------------------------------


def write_raw_models(root: Path, members: Sequence[Member], ensembles: Sequence[Mapping[str, Any]],
                     fused: Sequence[Mapping[str, Any]], job: Job) -> dict[str, Any]:
    """`raw_encode`, one `raw_ensemble_mM` per id ensemble and one `raw_fused_mM` per fused graph, gated
    (module docstring); returns the manifest's `raw` section."""
    from ttsrec.ensemble.session import ort_session

    plan: RawPlan = job.raw
    graph, serving = plan.graph, job.serving
    if graph.feature_map.hash != job.feature_map.hash:
        raise UserError("the raw encode graph was built from another feature map than the members'")
    job.step(naming.RAW_ENCODE)
    encode_path = _write_model(root, naming.RAW_ENCODE, graph.model, serving.backend)
    num_fields = job.feature_map.num_fields
    feat_ids = Tensor(naming.FEAT_IDS, pb.TYPE_INT64, (num_fields,))
    encode_cfg = _onnx_config(naming.RAW_ENCODE, plan, [feat_ids], serving)
    write_model_config(root / naming.RAW_ENCODE, set_parameters(encode_cfg, {
        "feature_map_hash": job.feature_map.hash, "export_id": job.export_id,
        **raw_parameters(plan, naming.RAW_ENCODE)}))
    encode_session = ort_session(encode_path, intra_op_threads=2)
    encode_parity = [_check_encode(graph, encode_session, rows) for rows in plan.rows]

    by_name = {m.name: m for m in members}
    raw_ensembles = []
    for entry in ensembles:
        name = naming.raw_ensemble_name(entry["m"])
        job.step(name)
        group = [by_name[n] for n in entry["members"]]
        outputs = list(entry["outputs"])
        cfg = raw_ensemble_config(name, inputs=input_tensors(graph), encode_model=naming.RAW_ENCODE,
                                  max_batch_size=serving.max_batch_size, members=[m.step for m in group],
                                  merge_model=entry["merge"],
                                  merge_inputs=[naming.merge_input(k) for k in range(len(group))],
                                  outputs=outputs)
        write_model_config(root / name, set_parameters(cfg, {**job.parameters(group),
                                                            **raw_parameters(plan, entry["name"])}))
        (root / name / naming.VERSION).mkdir()
        raw_ensembles.append({"name": name, "m": entry["m"], "ids_model": entry["name"],
                              "encode": naming.RAW_ENCODE, "members": list(entry["members"]),
                              "merge": entry["merge"], "outputs": outputs,
                              "parity": "raw_encode's (the same member and merge models after it)"})

    sample = plan.model_rows(serving.max_batch_size)
    raw_fused = []
    for entry in fused:
        name = naming.raw_fused_name(entry["m"])
        job.step(name)
        ids_path = onnx_file(root / entry["name"] / naming.VERSION)
        proto = raw_fused_graph(graph.model, onnx.load(ids_path))
        path = _write_model(root, name, proto, serving.backend)
        outputs = list(entry["outputs"])
        figures = _check_fused(name, entry["name"], path, ids_path, outputs, sample, serving)
        group = [by_name[n] for n in entry["members"]]
        cfg = _onnx_config(name, plan, [Tensor(o, pb.TYPE_FP32, (1,)) for o in outputs], serving.fused)
        write_model_config(root / name, set_parameters(cfg, {**job.parameters(group),
                                                            **raw_parameters(plan, entry["name"])}))
        raw_fused.append({"name": name, "m": entry["m"], "ids_model": entry["name"],
                          "members": list(entry["members"]), "outputs": outputs,
                          "onnx": onnx_record(root, path, proto), "parity": figures})
    return {
        "encode": {"name": naming.RAW_ENCODE, "num_fields": num_fields, "numeric_type": graph.numeric_type,
                   "inputs": [input_record(i) for i in graph.inputs],
                   "onnx": onnx_record(root, encode_path, graph.model),
                   "contrib_ops": any(o.domain == "com.microsoft" for o in graph.model.opset_import),
                   "parity": encode_parity},
        "max_string_bytes": plan.max_string_bytes,
        "max_string_bytes_checked_by": "model.py" if serving.backend == "python" else None,
        "rows": plan.notes,
        "ensembles": raw_ensembles,
        "fused": raw_fused,
    }


def _check_encode(graph: EncodeGraph, session: Any, rows: RawRows) -> dict[str, Any]:
    """The shipped encode graph gives exactly `tts-data`'s ids on these rows, else a `ParityError` naming
    the first differing field, row and value."""
    step = 65_536
    parts = [session.run([naming.FEAT_IDS], {k: v[i:i + step] for k, v in rows.feed.items()})[0]
             for i in range(0, len(rows), step)]
    got = np.concatenate(parts) if parts else rows.ids
    differ = got != rows.ids
    count = int(differ.sum())
    if count:
        row, col = (int(x) for x in np.argwhere(differ)[0])
        f = graph.feature_map.fields[col]
        value = rows.feed[graph.input_for(f.name).name][row, 0]
        raise ParityError(f"raw parity gate failed for {naming.RAW_ENCODE}: {count} ids differ from "
                          f"tts-data's on the {rows.name} rows, first field {f.name} ({f.preprocess}) at "
                          f"row {row}: value {value!r} -> id {got[row, col]}, tts-data {rows.ids[row, col]}")
    return {"rows": rows.name, "count": len(rows), "differing_ids": 0}


def _check_fused(name: str, ids_name: str, raw_path: Path, ids_path: Path, outputs: list[str], rows: RawRows,
                 serving: Serving) -> dict[str, Any]:
    """`raw_fused_mM` on raw rows equals `fused_mM` on their ids bit for bit, at the parity batch sizes."""
    from ttsrec.ensemble.session import ort_session

    raw, ids = ort_session(raw_path, intra_op_threads=2), ort_session(ids_path, intra_op_threads=2)
    sizes = [b for b in batch_sizes(serving.max_batch_size) if b <= len(rows)]
    for b in sizes:
        got = raw.run(outputs, {k: v[:b] for k, v in rows.feed.items()})
        want = ids.run(outputs, {naming.FEAT_IDS: rows.ids[:b]})
        for out, g, w in zip(outputs, got, want, strict=True):
            if g.shape != w.shape or not np.array_equal(g, w):
                diff = float(np.max(np.abs(g.astype(np.float64) - w))) if g.shape == w.shape else math.inf
                raise ParityError(f"raw parity gate failed for {name}: {out} at batch {b} differs from "
                                  f"{ids_name} on the same rows' ids by up to {diff:.3g} (must be equal)")
    return {"against": ids_name, "rows": rows.name, "batch_sizes": sizes, "max_abs_diff": 0.0, "exact": True}
