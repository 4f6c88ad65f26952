"""The training loop: Adam on the mean of the models' logits, early stopping on validation AUC.

One model is independent training; several models are the paper's group training (one optimiser,
one loss on the merged logit). Either way the best-validation state is what comes back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits

from ttsrec.ensemble.metrics import binary_metrics
from ttsrec.train.metrics import predict_logits, split_labels
from ttsrec.train.options import TrainOptions

EventFn = Callable[..., None]
"""`on_event(kind, **fields)`: kinds "start" (total), "step" (loss), "eval" (auc, logloss), "epoch" (epoch:
the number of whole epochs done; the models are in train mode, a listener that scores them restores it)."""
BatchesFn = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]
"""`batches(epoch)`: one epoch's training batches `(feat_ids, target)`, in place of the labels' batches."""
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`loss_fn(logit float [B], target)`: the training loss, in place of BCE on the labels."""


STOP_REASONS = {
    "patience": "validation AUC stopped improving (patience spent)",
    "epoch_cap_improving": "epoch cap, still improving (best state at the last check)",
    "epoch_cap": "epoch cap, on a plateau (patience not yet spent)",
}
"""Why a member stopped training, as recorded in run.json and the checkpoint (`stop_reason`)."""


@dataclass
class FitResult:
    best: dict[str, Any]
    """Where the kept state comes from: epoch, step, valid auc/logloss."""
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    samples: int = 0
    wall_time_s: float = 0.0
    step_time_s: float = 0.0
    stopped_early: bool = False
    still_improving: bool = False
    """The best state is the last validation check of the last epoch: more epochs would probably help."""
    stop_reason: str = ""
    """A key of `STOP_REASONS`."""

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.step_time_s if self.step_time_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best, "history": self.history, "steps": self.steps, "samples": self.samples,
                "wall_time_s": round(self.wall_time_s, 3), "step_time_s": round(self.step_time_s, 3),
                "samples_per_s": round(self.samples_per_s, 1), "stopped_early": self.stopped_early,
                "still_improving": self.still_improving, "stop_reason": self.stop_reason}


def merged_logit(models: Sequence[nn.Module], feat_ids: torch.Tensor) -> torch.Tensor:
    """The paper's merge: equal-weight mean of raw logits, `[B]`."""
    if len(models) == 1:
        return models[0](feat_ids).reshape(-1)
    return torch.stack([m(feat_ids).reshape(-1) for m in models]).mean(0)


def eval_points(steps_per_epoch: int, evals_per_epoch: int) -> set[int]:
    """1-based step numbers within an epoch after which validation runs (always the last step)."""
    n = min(evals_per_epoch, steps_per_epoch)
    return {math.ceil(steps_per_epoch * (k + 1) / n) for k in range(n)}


def _to_device(batches, device: str):
    """Pinned host memory and non-blocking copies, one batch ahead, so the GPU does not wait on the loader.

    Not run here (no GPU on the machine this was written on)."""
    pending = None
    for feat_ids, labels in batches:
        moved = (feat_ids.pin_memory().to(device, non_blocking=True),
                 labels.pin_memory().to(device, non_blocking=True))
        if pending is not None:
            yield pending
        pending = moved
    if pending is not None:
        yield pending


def make_adam(params: Sequence[nn.Parameter], options: TrainOptions) -> torch.optim.Adam:
    """Adam with torch's fused kernel (CPU and CUDA): the same update rule in one pass over each tensor
    instead of about ten elementwise ops, which matters once bf16 has made the GEMMs cheap."""
    device = params[0].device.type
    fused = True if device in ("cpu", "cuda") else None
    return torch.optim.Adam(params, lr=options.lr, weight_decay=options.weight_decay, fused=fused)


def _snapshot(models: Sequence[nn.Module]) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in models]


def fit(models: Sequence[nn.Module], data, options: TrainOptions, *, seed: int,
        on_event: EventFn | None = None, batches: BatchesFn | None = None,
        loss_fn: LossFn | None = None) -> FitResult:
    """Train `models` in place; on return they hold their best-validation-AUC state, in eval mode.

    Stops once validation AUC has not improved for `options.patience` checks in a row (plateaus shorter
    than that are outlasted), or at the `options.epochs` cap; `stop_reason` says which.
    `batches(epoch)` replaces the shuffled training batches `(feat_ids, labels)` with `(feat_ids, target)`
    and `loss_fn(logit, target)` the BCE on the labels (distillation: a teacher term, train/distill.py).
    """
    from ttsrec.data.loader import iter_batches

    emit = on_event or (lambda kind, **fields: None)
    step_fn = _Stepper(models, options, loss_fn)
    n_train = data.num_rows("train")
    if options.train_limit is not None:
        n_train = min(n_train, options.train_limit)
    steps_per_epoch = max(1, math.ceil(n_train / options.batch_size))
    checks = eval_points(steps_per_epoch, options.evals_per_epoch)
    valid_labels = split_labels(data, "valid", options.valid_limit)
    emit("start", total=steps_per_epoch * options.epochs)

    result = FitResult(best={"valid_auc": -math.inf})
    best_state = _snapshot(models)
    started, waited, ema = time.perf_counter(), 0, None
    for m in models:
        m.train()
    for epoch in range(options.epochs):
        epoch_batches = (batches(epoch) if batches is not None else
                         iter_batches(data, "train", options.batch_size, shuffle=True,
                                      seed=options.shuffle_seed(seed, epoch), limit=options.train_limit))
        if step_fn.on_gpu:
            epoch_batches = _to_device(epoch_batches, step_fn.device)
        for step, (feat_ids, labels) in enumerate(epoch_batches, start=1):
            loss = step_fn(feat_ids, labels, result)
            ema = loss if ema is None else 0.9 * ema + 0.1 * loss
            emit("step", loss=ema)
            if step not in checks:
                continue
            point = _validate(models, data, options, valid_labels, ema,
                              round(epoch + step / steps_per_epoch, 3), result.steps)
            result.history.append(point)
            emit("eval", auc=point["valid_auc"], logloss=point["valid_logloss"])
            if point["valid_auc"] > result.best["valid_auc"]:
                result.best, best_state, waited = dict(point), _snapshot(models), 0
            else:
                waited += 1
                if waited > options.patience:
                    result.stopped_early = True
                    break
        if result.stopped_early:
            break
        emit("epoch", epoch=epoch + 1)
    _finish(result, models, best_state)
    result.wall_time_s = time.perf_counter() - started
    return result


class _Stepper:
    """One optimiser step on the merged logit (autocast, grad scaling); times and counts it."""

    def __init__(self, models: Sequence[nn.Module], options: TrainOptions, loss_fn: LossFn | None):
        from ttsrec.train.device import grad_scaler

        self.models, self.options, self.loss_fn = models, options, loss_fn
        params = [p for m in models for p in m.parameters()]
        self.device = str(params[0].device)
        self.on_gpu = self.device.startswith("cuda")
        self.scaler = grad_scaler(options.precision, self.device)
        self.optimiser = make_adam(params, options)

    def __call__(self, feat_ids: torch.Tensor, labels: torch.Tensor, result: FitResult) -> float:
        from ttsrec.train.device import autocast

        t0 = time.perf_counter()
        with autocast(self.options.precision, self.device):
            logit = merged_logit(self.models, feat_ids)
        loss = (self.loss_fn(logit.float(), labels) if self.loss_fn is not None
                else binary_cross_entropy_with_logits(logit.float(), labels.reshape(-1)))
        self.optimiser.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimiser)
            self.scaler.update()
        else:
            loss.backward()
            self.optimiser.step()
        result.step_time_s += time.perf_counter() - t0
        result.steps += 1
        result.samples += len(labels)
        return loss.item()


def _validate(models: Sequence[nn.Module], data, options: TrainOptions, valid_labels, train_loss: float,
              epoch: float, steps: int) -> dict[str, Any]:
    """One validation check of the merged logit: a history point."""
    logits = predict_logits(models, data, "valid", limit=options.valid_limit).mean(0)
    valid = binary_metrics(valid_labels, logits)
    return {"epoch": epoch, "step": steps, "train_loss": round(train_loss, 5), "valid_auc": valid["auc"],
            "valid_logloss": valid["logloss"]}


def _finish(result: FitResult, models: Sequence[nn.Module],
            best_state: list[dict[str, torch.Tensor]]) -> None:
    """Why training stopped, and the models back at their best state in eval mode."""
    last_check = result.history[-1] if result.history else None
    result.still_improving = (not result.stopped_early and last_check is not None
                              and result.best.get("step") == last_check["step"])
    result.stop_reason = ("patience" if result.stopped_early else
                          "epoch_cap_improving" if result.still_improving else "epoch_cap")
    for m, state in zip(models, best_state, strict=True):
        m.load_state_dict(state)
        m.eval()
