"""Train one member (or one group of members) and write its checkpoint: the unit of work of a run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ttsrec.ensemble.metrics import binary_metrics
from ttsrec.errors import UserError
from ttsrec.train.fit import EventFn, FitResult, fit
from ttsrec.train.metrics import predict_logits, split_labels
from ttsrec.train.options import TrainOptions


@dataclass
class MemberJob:
    """Everything a (possibly spawned) worker needs; plain data so it pickles."""

    index: int
    backbone: str
    seed: int
    data_dir: str
    path: str
    options: TrainOptions
    device: str = "cpu"


def build_member(backbone: str, feature_map, seed: int, hparams: dict[str, Any]) -> nn.Module:
    """Seeded construction: a member's initial weights depend only on (backbone, hparams, seed)."""
    from ttsrec.models import build_model

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    try:
        return build_model(backbone, feature_map, **hparams)
    except UserError:
        raise
    except (TypeError, ValueError, KeyError, AssertionError) as err:
        raise UserError(f"cannot build {backbone} with hparams {hparams}: {err}") from err


def split_metrics(models: list[nn.Module], data, options: TrainOptions) -> dict[str, list[dict[str, float]]]:
    """Valid and test AUC/logloss for each model, plus the merged prediction as the last entry."""
    out = {}
    for split in ("valid", "test"):
        limit = options.valid_limit if split == "valid" else None
        logits = predict_logits(models, data, split, limit=limit)
        labels = split_labels(data, split, limit)
        rows = [binary_metrics(labels, row) for row in logits]
        rows.append(binary_metrics(labels, logits.mean(0)) if len(models) > 1 else rows[0])
        out[split] = rows
    return out


def _record(job: MemberJob, model: nn.Module, metrics: dict[str, dict[str, float]],
            result: FitResult) -> dict[str, Any]:
    from ttsrec.models import model_cost

    cost = model_cost(model)
    return {
        "index": job.index, "file": Path(job.path).name, "backbone": job.backbone, "seed": job.seed,
        "hparams": model.hparams, "params": int(cost.params), "macs_per_sample": int(cost.macs_per_sample),
        "valid": metrics["valid"], "test": metrics["test"],
        "best": result.best, "steps": result.steps, "stopped_early": result.stopped_early,
        "still_improving": result.still_improving, "stop_reason": result.stop_reason, "device": job.device,
        "precision": job.options.precision,
        "train_time_s": round(result.wall_time_s, 3), "samples_per_s": round(result.samples_per_s, 1),
    }


def _save(job: MemberJob, model: nn.Module, feature_map, metrics: dict[str, Any], result: FitResult) -> None:
    from ttsrec.models.checkpoint import save_member

    save_member(Path(job.path), model, backbone=job.backbone, hparams=model.hparams, seed=job.seed,
                vocab_sizes=feature_map.vocab_sizes, feature_map_hash=feature_map.hash, metrics=metrics,
                train={"options": job.options.to_dict(), "device": job.device,
                       "precision": job.options.precision, **result.to_dict(),
                       **({"distilled_from": job.options.distill} if job.options.distill else {})})


def train_member(job: MemberJob, on_event: EventFn | None = None) -> dict[str, Any]:
    """Independent training of one member; its checkpoint is written (atomically) before returning."""
    from ttsrec.data.prepared import PreparedData

    data = PreparedData(Path(job.data_dir))
    model = build_member(job.backbone, data.feature_map, job.seed, job.options.hparams_for(job.backbone))
    model.to(job.device)
    teacher = {}
    if job.options.distill:  # a student: the loss gets the teacher's term (train/distill.py)
        from ttsrec.train.distill import student_fit_kwargs

        teacher = student_fit_kwargs(job, data)
    result = fit([model], data, job.options, seed=job.seed, on_event=on_event, **teacher)
    both = split_metrics([model], data, job.options)
    metrics = {split: rows[0] for split, rows in both.items()}
    model.cpu()  # checkpoints and cost counting are CPU-side
    _save(job, model, data.feature_map, metrics, result)
    return _record(job, model, metrics, result)


def train_group(jobs: list[MemberJob], on_event: EventFn | None = None) -> tuple[list[dict[str, Any]], dict]:
    """Joint training (one optimiser, loss on the merged logit); every member is saved at the group's best.

    Returns per-member records and the merged metrics.
    """
    from ttsrec.data.prepared import PreparedData

    first = jobs[0]
    data = PreparedData(Path(first.data_dir))
    fmap = data.feature_map
    models = [build_member(j.backbone, fmap, j.seed, j.options.hparams_for(j.backbone)).to(first.device)
              for j in jobs]
    started = time.perf_counter()
    result = fit(models, data, first.options, seed=first.seed, on_event=on_event)
    both = split_metrics(models, data, first.options)
    records = []
    for model in models:
        model.cpu()
    for i, (job, model) in enumerate(zip(jobs, models, strict=True)):
        metrics = {split: rows[i] for split, rows in both.items()}
        group_metrics = {s: rows[-1] for s, rows in both.items()}
        _save(job, model, fmap, {**metrics, "group": group_metrics}, result)
        records.append(_record(job, model, metrics, result))
    merged = {"valid": both["valid"][-1], "test": both["test"][-1], **result.to_dict(),
              "train_time_s": round(time.perf_counter() - started, 3)}
    return records, merged
