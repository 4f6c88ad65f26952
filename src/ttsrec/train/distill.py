"""Distillation: one student member trained on the merged prediction of a trained run (`--distill-from`).

The teacher is the paper's merge, the mean of the logits of the run's first M members (its member order,
`ttsrec.ensemble.runs.run_checkpoints`; default all of them). It is computed once per training row, in
batches, into a float32 `.npy` (memory-mapped while the student trains), never on the validation or test
rows except for the figures recorded next to the student. The student is an ordinary member, trained by
the ordinary run machinery (`train_members`: early stopping on validation AUC against the true labels,
checkpoint, run.json, resume), whose loss has a teacher term:

    loss = alpha * T^2 * BCE(student_logit / T, sigmoid(teacher_logit / T))
           + (1 - alpha) * BCE(student_logit, y)

(`calibrate`: teacher_logit is a * logit + b, Platt-scaled on the validation split.)

Its batches are the rows a plain member of the same seed would see, in the same order (so `alpha=0`
trains exactly that member). By default a student of a backbone the teacher has inherits that teacher
member's hyper-parameters ("the members' architecture"); `--hparam` overrides them and `width_mult`
scales every width knob (`ttsrec.models.scaling.wider`: DCNv2/FNN/DeepFM... the MLP widths).
`options.distill` (recorded in the checkpoint's `train` as `distilled_from`, and in run.json) names the
teacher run, M, alpha, temperature, width and the teacher's feature-map hash.

The run-level entry, `train_distilled`, lives in train/student.py: it drives `train_members`, and this
module is what a member's training imports (train/member.py), so keeping them apart keeps train/ acyclic.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from torch.nn.functional import binary_cross_entropy_with_logits

from ttsrec.ensemble.calibration import platt_fit
from ttsrec.errors import UserError

CACHE_PREFIX = ".member_teacher_"
"""The cache's name in --out: a run's own temp file (`prepare_out --force` wipes it, export ignores it)."""
SHARED_PREFIX = "teacher_"
"""Its name in a `--distill-cache` folder, where it stays for later students."""
TEACHER_BATCH = 16384


def load_teacher(run_dir: Path, data, m: int | None) -> dict[str, Any]:
    """The first `m` members of a run (all by default), checked against the data's feature map."""
    from ttsrec.ensemble.runs import RUN_FILE, load_run, run_checkpoints
    from ttsrec.models.checkpoint import load_members

    if not run_dir.is_dir():
        raise UserError(f"--distill-from {run_dir}: not a run folder")
    fmap_hash = data.feature_map.hash
    if (run_dir / RUN_FILE).is_file():
        recorded = load_run(run_dir).get("feature_map_hash")
        if recorded is not None and recorded != fmap_hash:
            raise UserError(f"teacher run {run_dir} was trained on feature map {recorded}, --data has "
                            f"{fmap_hash}")
    try:
        files = run_checkpoints(run_dir)
    except UserError as err:
        raise UserError(f"--distill-from: {err}") from None
    m = len(files) if m is None else int(m)
    if not 1 <= m <= len(files):
        raise UserError(f"--distill-m must be within 1..{len(files)} (the members of {run_dir}), got {m}")
    members = load_members(files[:m])
    if members[0].feature_map_hash != fmap_hash:
        raise UserError(f"teacher run {run_dir} was trained on feature map {members[0].feature_map_hash}, "
                        f"--data has {fmap_hash}")
    return {"run": str(run_dir.resolve()), "m": m, "files": [f.name for f in files[:m]],
            "backbones": [mb.backbone for mb in members], "hparams": [mb.hparams for mb in members],
            "sha256": [mb.sha256 for mb in members], "feature_map_hash": fmap_hash,
            "models": [mb.model for mb in members]}


def student_hparams(backbones: list[str], teacher: dict[str, Any], options, width_mult: float,
                    num_fields: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Per-backbone (`backbone.key`) hparams of the students: the first teacher member of that backbone's
    (else the defaults), then `--hparam`, then every width knob times `width_mult`."""
    from ttsrec.models import resolve_hparams
    from ttsrec.models.scaling import wider

    options.check_hparams(backbones)
    out: dict[str, Any] = {}
    inherited: dict[str, str] = {}
    for backbone in dict.fromkeys(backbones):
        base: dict[str, Any] = {}
        if backbone in teacher["backbones"]:
            i = teacher["backbones"].index(backbone)
            base = dict(teacher["hparams"][i])
            inherited[backbone] = teacher["files"][i]
        hp = resolve_hparams(backbone, num_fields, **{**base, **options.hparams_for(backbone)})
        if width_mult != 1.0:
            hp = resolve_hparams(backbone, num_fields, **wider(backbone, hp, width_mult))
        out.update({f"{backbone}.{k}": v for k, v in hp.items()})
    return out, inherited


def cache_key(teacher: dict[str, Any], data, rows: int) -> str:
    """What the cached logits depend on: the teacher's exact files, the data folder and its training rows."""
    train_ids = data.path / "train" / "ids.npy"
    stat = train_ids.stat()
    blob = json.dumps({"members": teacher["sha256"], "feature_map": teacher["feature_map_hash"],
                       "data": str(data.path.resolve()), "train_ids": [stat.st_size, stat.st_mtime_ns],
                       "rows": rows}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@torch.inference_mode()
def merged_logits(models, data, split: str, limit: int | None = None, *, device: str = "cpu",
                  out: np.ndarray | None = None) -> np.ndarray:
    """Mean of the models' logits on a split's first `limit` rows, float32 [N], one batch at a time
    (into `out` when given: a memmap holds the training split's without the whole [M, N] in memory)."""
    from ttsrec.data.loader import iter_batches

    n = data.num_rows(split) if limit is None else min(limit, data.num_rows(split))
    out = np.empty(n, dtype=np.float32) if out is None else out
    models = [mdl.to(device).eval() for mdl in models]
    start = 0
    for feat_ids, _ in iter_batches(data, split, TEACHER_BATCH, limit=n):
        feat_ids = feat_ids.to(device)
        logit = torch.stack([mdl(feat_ids).reshape(-1).float() for mdl in models]).mean(0)
        out[start:start + len(logit)] = logit.cpu().numpy()
        start += len(logit)
    for mdl in models:
        mdl.cpu()
    return out


def write_teacher_logits(models, data, rows: int, path: Path, *, device: str = "cpu") -> Path:
    """The teacher's logits on the first `rows` training rows, written atomically as a float32 `.npy`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows,))
        merged_logits(models, data, "train", rows, device=device, out=array)
        array.flush()
        del array
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def teacher_metrics(models, data, valid_limit: int | None, *, device: str = "cpu") -> dict[str, Any]:
    """The teacher's merged AUC/logloss on validation and test (for the record, never for training), and
    `calibration`: (a, b) of sigmoid(a * logit + b) fitted on validation only."""
    from ttsrec.ensemble.metrics import binary_metrics
    from ttsrec.train.metrics import split_labels

    out: dict[str, Any] = {}
    for split, limit in (("valid", valid_limit), ("test", None)):
        labels, logits = split_labels(data, split, limit), merged_logits(models, data, split, limit,
                                                                         device=device)
        out[split] = binary_metrics(labels, logits)
        if split == "valid":
            scale, offset = fit_calibration(logits, labels)
            out["calibration"] = (scale, offset)
        out[split]["calibrated_logloss"] = binary_metrics(labels, scale * logits + offset)["logloss"]
    return out


def fit_calibration(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Platt scaling of the teacher (`ensemble.calibration.platt_fit`): (a, b) of sigmoid(a * logit + b)."""
    return platt_fit(logits, labels)[:2]


def _cache_rows(path: Path) -> int | None:
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return int(array.shape[0]) if array.ndim == 1 and array.dtype == np.float32 else None


class _RowNumbers:
    """Stands in for a split's ids in `iter_batches`: row r reads as `[[r]]`, so a shuffled epoch yields
    the row numbers of the batches a plain member gets (blocks, pools and permutations depend only on the
    row count and the seed)."""

    def __init__(self, n: int) -> None:
        self.shape = (n, 1)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self.shape[0])
        return np.arange(start, stop, dtype=np.int64)[:, None]


class _Numbered:
    def __init__(self, data) -> None:
        self.data = data

    def ids(self, split: str) -> _RowNumbers:
        return _RowNumbers(self.data.num_rows(split))

    def labels(self, split: str) -> np.ndarray:
        return self.data.labels(split)


def student_fit_kwargs(job, data) -> dict[str, Any]:
    """`fit`'s `batches` and `loss_fn` for a student job: targets `[B, 2]` = (label, teacher probability)."""
    from ttsrec.data.loader import iter_batches

    options = job.options
    distill = options.distill
    alpha, temperature = float(distill["alpha"]), float(distill["temperature"])
    calibration = distill.get("calibration") or {"scale": 1.0, "offset": 0.0}
    scale, offset = float(calibration["scale"]), float(calibration["offset"])
    cache = Path(distill["cache"])
    if not cache.is_file():
        raise UserError(f"the teacher's logits {cache} are missing (rerun the command without --resume)")
    teacher = np.load(cache, mmap_mode="r")
    ids, labels = data.ids("train"), data.labels("train")
    if len(teacher) != int(distill["rows"]) or len(teacher) > len(labels):
        raise UserError(f"the teacher's logits {cache} do not match the training split")
    numbered = _Numbered(data)

    def batches(epoch: int):
        for rows, _ in iter_batches(numbered, "train", options.batch_size, shuffle=True,
                                    seed=options.shuffle_seed(job.seed, epoch), limit=len(teacher)):
            rows = rows[:, 0].numpy()
            prob = expit((scale * np.asarray(teacher[rows], dtype=np.float64) + offset) / temperature)
            target = np.stack([labels[rows], prob.astype(np.float32)], axis=1)
            yield torch.from_numpy(np.asarray(ids[rows], dtype=np.int64)), torch.from_numpy(target)

    def loss_fn(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        hard = binary_cross_entropy_with_logits(logit, target[:, 0])
        if alpha == 0.0:
            return hard
        soft = binary_cross_entropy_with_logits(logit / temperature, target[:, 1]) * temperature**2
        return alpha * soft + (1.0 - alpha) * hard if alpha < 1.0 else soft

    return {"batches": batches, "loss_fn": loss_fn}
