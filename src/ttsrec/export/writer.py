"""`export_repository`: member checkpoints -> a Triton model repository (or K shard repositories).

Layout of one repository (python or onnxruntime flavour: same ensembles, same ONNX files):

    member_XX_<backbone>/   config.pbtxt, 1/model.onnx (+ 1/model.py in the python flavour)
    merge_mean_mM/          Mean + Sigmoid over M logits (ONNX)
    ensemble_mM/            feat_ids -> M members in parallel -> merge -> logit, prob; empty 1/
    fused_mM/               all M members + the merge in one ONNX graph (no ensemble hops)
    feature_map.json, tts_manifest.json

Everything is written into a temp folder that replaces `out` only when every parity check passed.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttsrec.data.prepared import PreparedData
from ttsrec.ensemble.merge import MERGE_KINDS
from ttsrec.ensemble.order import balanced_order, default_m_list, shard_members
from ttsrec.errors import UserError
from ttsrec.export import gate, parity, raw
from ttsrec.export.assemble import REPOSITORY_README, write_repository
from ttsrec.export.cascade import Cascades
from ttsrec.export.job import Artefact, Job, Labelled, Member, Record
from ttsrec.export.precision import DEFAULT_INT8_MODE, Int8Mode, Precision, check_precision
from ttsrec.export.raw_models import RawModels
from ttsrec.export.records import serving_record
from ttsrec.export.sources import Sources, load_sources
from ttsrec.repository import naming
from ttsrec.repository.config import Serving
from ttsrec.repository.graphs import OPSET
from ttsrec.repository.manifest import SHARDS_FORMAT
from ttsrec.repository.tree import layout_tree
from ttsrec.utils.atomic import atomic_dir, check_not_input, check_replaceable, write_json
from ttsrec.utils.report import SILENT, Reporter


def written_by_export(path: Path) -> bool:
    """A folder `--force` may replace: an export (manifest or shards file at its top), or the
    source tree's `model_repository/` as checked out (nothing but the README every export writes)."""
    if (path / naming.MANIFEST_FILE).is_file() or (path / naming.SHARDS_FILE).is_file():
        return True
    only_readme = [p.name for p in path.iterdir()] == ["README.md"]
    return only_readme and (path / "README.md").read_text() == REPOSITORY_README.read_text()


@dataclass(frozen=True)
class ExportConfig:
    """What a repository holds, besides how its models are scheduled (`Serving`); the defaults are
    `tts-export`'s."""

    m_list: Sequence[int] | None = None
    """Ensemble sizes (each within 1..N members); None: 1, 2, 4, 8, 16 capped at N."""
    precision: Precision = "fp32"
    """fp16 / int8 reduce every member (and so every fused graph), each scored against its fp32 graph."""
    int8_mode: Int8Mode = DEFAULT_INT8_MODE
    gate_rows: int | None = None
    """Test rows the accuracy gate scores (None: the whole test split)."""
    max_auc_drop: float = gate.DEFAULT_MAX_AUC_DROP
    merge: str = "mean"
    """mean (the paper), or weighted / selection: member weights fitted per M on the validation split."""
    fused: bool = True
    """Also write `fused_mM` graphs (all members and the merge in one ONNX)."""
    shards: int = 1
    """K > 1: `out/shard_XX/` repositories with a `shard_sum` ensemble each, plus `out/shards.json`."""
    opset: int = OPSET
    raw_inputs: bool = False
    """Also write raw_encode, raw_ensemble_mM and raw_fused_mM: raw record fields in
    (`ttsrec.export.raw_models`)."""
    cascade: bool = False
    """Also write `cascade_mM` per M >= 2: members in stages, each on the rows not yet settled (fitted on
    the validation split, gated on the test split)."""

    def validate(self) -> None:
        check_precision(self.precision, self.int8_mode)
        if self.cascade and self.shards > 1:
            raise UserError("--cascade does not apply to --shards (each shard sums all of its members)")
        if self.raw_inputs and self.shards > 1:
            raise UserError("--raw-inputs does not apply to --shards (shard_sum takes feat_ids)")
        if self.shards < 1:
            raise UserError(f"--shards must be at least 1, got {self.shards}")
        if self.shards > 1 and self.m_list is not None:
            raise UserError("--m-list does not apply to --shards (each shard sums all of its members)")


@dataclass(frozen=True)
class Switch:
    """The on/off switch of an optional artefact: its `ExportConfig` field and its `tts-export` flags (the
    CLI declares one option per switch, in this order)."""

    field: str
    flags: str
    help: str


SWITCHES = (
    Switch("raw_inputs", "--raw-inputs/--no-raw-inputs", "Also write raw_encode, raw_ensemble_mM and "
           "raw_fused_mM: the raw record's fields in (one input per field, encoded inside the served graph), "
           "gated against the id models."),
    Switch("cascade", "--cascade/--no-cascade", "Also write cascade_mM for M >= 2: members in stages, each "
           "stage only on the rows the earlier ones did not settle; fitted on the validation split, gated on "
           "the test split (needs --data)."),
)


def export_repository(checkpoints: Sequence[Path | str], out: Path | str, serving: Serving | None = None,
                      config: ExportConfig | None = None, *, data: Path | str | None = None,
                      force: bool = False, reporter: Reporter = SILENT) -> Path:
    """Export member checkpoints (files or `tts-train` run folders) into a Triton repository at `out`.

    `data` is the prepared data folder (or its feature_map.json); without it the feature map is
    looked up next to the checkpoints and through their `run.json`. Its test split feeds the parity and
    accuracy gates, its validation split the fitted merges. Progress and the final layout go to
    `reporter`. Returns `out`. Bad input, parity and accuracy-gate failures raise `UserError`, and `out`
    is then left as it was.
    """
    serving = serving or Serving()
    config = config or ExportConfig()
    serving.validate()
    config.validate()
    out = Path(out)
    inputs = [Path(c) for c in checkpoints] + ([] if data is None else [Path(data)])
    check_not_input(out, inputs)
    check_replaceable(out, force, written_by_export, "tts-export")
    sources = load_sources([Path(c) for c in checkpoints], None if data is None else Path(data))
    loaded = [sources.members[i] for i in balanced_order([m.backbone for m in sources.members])]
    members = [Member(position=k, loaded=m, name=naming.member_name(k, m.backbone))
               for k, m in enumerate(loaded)]
    shards = config.shards
    if not 1 <= shards <= len(members):
        raise UserError(f"--shards must be within 1..{len(members)} (the number of members), got {shards}")
    ms = resolve_m_list(config.m_list, len(members)) if shards == 1 else []
    rows = _GateInputs.load(sources, serving, config)
    artefacts = _artefacts(config, sources, serving, rows.gate)
    steps = len(members) + (1 + config.fused) * (len(ms) if shards == 1 else shards)
    steps += sum(a.steps(ms) for a in artefacts)

    with (atomic_dir(out, force, marker=written_by_export, tool="tts-export", inputs=inputs) as tmp,
          reporter.progress() as board, tempfile.TemporaryDirectory(prefix="tts-export-") as work):
        job = Job(feature_map=sources.feature_map, serving=serving, sample=rows.sample,
                  precision=config.precision, int8_mode=config.int8_mode, export_id=uuid.uuid4().hex,
                  merge=config.merge, fused=config.fused, opset=config.opset,
                  max_auc_drop=config.max_auc_drop, workdir=Path(work),
                  task=board.task("tts-export members", total=steps), gate=rows.gate,
                  calibration=rows.calibration, validation=rows.validation, artefacts=artefacts)
        common = _common(job, config)
        if shards == 1:
            write_repository(tmp, members, ms, job, common)
        else:
            groups = shard_members(len(members), shards)
            for k, positions in enumerate(groups):
                write_repository(tmp / naming.shard_dir(k), [members[p] for p in positions], [], job,
                                 {**common, "shard": {"index": k, "count": shards}})
            write_json(tmp / naming.SHARDS_FILE, _shards_file(job, members, groups))
        job.step("done")
    reporter.lines(layout_tree(out))
    return out


@dataclass(frozen=True)
class _GateInputs:
    """The rows the gates and fits use, loaded before any member is exported."""

    sample: parity.ParitySample
    gate: gate.GateRows | None
    calibration: np.ndarray | None
    validation: Labelled | None

    @classmethod
    def load(cls, sources: Sources, serving: Serving, config: ExportConfig) -> _GateInputs:
        precision, data_dir = config.precision, sources.data_dir
        sample = parity.build_sample(sources.feature_map, serving.max_batch_size, data_dir)
        gate_set = None if precision == "fp32" else gate.load_gate_rows(data_dir, config.gate_rows,
                                                                         config.max_auc_drop, precision)
        calibration = gate.calibration_rows(data_dir) if precision == "int8" else None
        validation = _validation(config.merge, config.shards, data_dir, config.cascade)
        return cls(sample, gate_set, calibration, validation)


def _artefacts(config: ExportConfig, sources: Sources, serving: Serving,
               gate_set: gate.GateRows | None) -> tuple[Artefact, ...]:
    """The optional model kinds this export writes, in manifest order, each prepared now (bad input stops
    the export before any member). A new kind: its module (an `Artefact`), and here its `ExportConfig`
    field, its `SWITCHES` entry and a line below."""
    found: list[Artefact] = []
    if config.raw_inputs:
        found.append(RawModels(raw.plan(sources.feature_map, sources.data_dir, serving.max_batch_size)))
    if config.cascade:
        test = gate_set or gate.load_gate_rows(sources.data_dir, config.gate_rows, config.max_auc_drop,
                                               "fp32")
        found.append(Cascades((test.ids, test.labels)))
    return tuple(found)


def _common(job: Job, config: ExportConfig) -> Record:
    """Manifest entries every repository (every shard) of this export shares."""
    serving, precision = job.serving, job.precision
    tolerance = {"rtol": job.tolerance.rtol, "atol": job.tolerance.atol}
    common: Record = {"flavour": serving.backend, "serving": serving_record(serving),
                      "fp16": precision == "fp16", "opset": config.opset,
                      "parity": {**job.sample.describe(), **tolerance}}
    if precision == "int8":
        rows = 0 if job.calibration is None else len(job.calibration)
        common["int8"] = {"mode": config.int8_mode, "calibration_rows": rows, "calibration_split": "train"}
    if job.gate is not None:
        common["gate"] = {"rows": len(job.gate.labels), "split": "test", "max_auc_drop": config.max_auc_drop,
                          "reference": "fp32 graph"}
    return common


def _shards_file(job: Job, members: list[Member], groups: list[list[int]]) -> Record:
    """`shards.json` of a sharded export: which members each shard repository holds."""
    return {
        "format": SHARDS_FORMAT, "num_shards": len(groups), "num_members": len(members),
        "ensemble": naming.SHARD_ENSEMBLE, "outputs": [naming.LOGIT_SUM, naming.MEMBER_COUNT],
        "feature_map_hash": job.feature_map.hash, "flavour": job.serving.backend,
        "export_id": job.export_id, "precision": job.precision,
        "shards": [{"name": naming.shard_dir(k), "path": naming.shard_dir(k),
                    "members": [members[p].name for p in positions]}
                   for k, positions in enumerate(groups)],
    }


def _validation(merge: str, shards: int, data_dir: Path | None,
                cascade: bool = False) -> Labelled | None:
    """Validation ids and labels for a fitted merge or a cascade (None for the plain mean alone)."""
    if merge not in MERGE_KINDS:
        raise UserError(f"unknown --merge {merge!r} (choose from {', '.join(MERGE_KINDS)})")
    what = f"--merge {merge}" if merge != "mean" else "--cascade"
    if merge == "mean" and not cascade:
        return None
    if shards > 1:
        raise UserError("--merge weighted/selection does not apply to --shards (shards sum, clients average)")
    if data_dir is None:
        raise UserError(f"{what} needs the prepared data (--data DIR): it is fitted on the validation split")
    data = PreparedData(data_dir)
    labels = np.asarray(data.labels("valid"), dtype=np.float64)
    if len(np.unique(labels)) < 2:
        raise UserError(f"{what} needs both labels in the validation split of {data_dir}")
    return np.ascontiguousarray(data.ids("valid"), dtype=np.int64), labels


def resolve_m_list(m_list: Sequence[int] | None, num_members: int) -> list[int]:
    """The ensemble sizes to write: the given ones (each within 1..N), or 1, 2, 4, 8, 16 capped at N."""
    if m_list is None:
        return default_m_list(num_members)
    ms = sorted({int(m) for m in m_list})
    if not ms:
        raise UserError("--m-list is empty")
    bad = [m for m in ms if not 1 <= m <= num_members]
    if bad:
        raise UserError(f"--m-list asks for M={bad[-1]} but there are {num_members} members "
                        f"(M must be within 1..{num_members})")
    return ms
