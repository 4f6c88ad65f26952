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
"""`on_event(kind, **fields)`: kinds "start" (total), "step" (loss), "eval" (auc, logloss)."""
BatchesFn = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]
"""`batches(epoch)`: one epoch's training batches `(feat_ids, target)`, in place of the labels' batches."""
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`loss_fn(logit float [B], target)`: the training loss, in place of BCE on the labels."""


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

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.step_time_s if self.step_time_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best, "history": self.history, "steps": self.steps, "samples": self.samples,
                "wall_time_s": round(self.wall_time_s, 3), "step_time_s": round(self.step_time_s, 3),
                "samples_per_s": round(self.samples_per_s, 1), "stopped_early": self.stopped_early,
                "still_improving": self.still_improving}


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

    `batches(epoch)` replaces the shuffled training batches `(feat_ids, labels)` with `(feat_ids, target)`
    and `loss_fn(logit, target)` the BCE on the labels (distillation: a teacher term, train/distill.py).
    """
    from ttsrec.data.loader import iter_batches
    from ttsrec.train.device import autocast, grad_scaler

    emit = on_event or (lambda kind, **fields: None)
    params = [p for m in models for p in m.parameters()]
    device = str(params[0].device)
    on_gpu = device.startswith("cuda")
    scaler = grad_scaler(options.precision, device)
    optimiser = make_adam(params, options)
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
        if on_gpu:
            epoch_batches = _to_device(epoch_batches, device)
        for step, (feat_ids, labels) in enumerate(epoch_batches, start=1):
            t0 = time.perf_counter()
            with autocast(options.precision, device):
                logit = merged_logit(models, feat_ids)
            loss = (loss_fn(logit.float(), labels) if loss_fn is not None
                    else binary_cross_entropy_with_logits(logit.float(), labels.reshape(-1)))
            optimiser.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
            else:
                loss.backward()
                optimiser.step()
            result.step_time_s += time.perf_counter() - t0
            result.steps += 1
            result.samples += len(labels)
            ema = loss.item() if ema is None else 0.9 * ema + 0.1 * loss.item()
            emit("step", loss=ema)
            if step not in checks:
                continue
            logits = predict_logits(models, data, "valid", limit=options.valid_limit).mean(0)
            valid = binary_metrics(valid_labels, logits)
            point = {"epoch": round(epoch + step / steps_per_epoch, 3), "step": result.steps,
                     "train_loss": round(ema, 5), "valid_auc": valid["auc"],
                     "valid_logloss": valid["logloss"]}
            result.history.append(point)
            emit("eval", auc=valid["auc"], logloss=valid["logloss"])
            if valid["auc"] > result.best["valid_auc"]:
                result.best, best_state, waited = dict(point), _snapshot(models), 0
            else:
                waited += 1
                if waited > options.patience:
                    result.stopped_early = True
                    break
        if result.stopped_early:
            break
    last_check = result.history[-1] if result.history else None
    result.still_improving = (not result.stopped_early and last_check is not None
                              and result.best.get("step") == last_check["step"])
    for m, state in zip(models, best_state, strict=True):
        m.load_state_dict(state)
        m.eval()
    result.wall_time_s = time.perf_counter() - started
    return result
