"""Where and in which precision members train: `--device` and `--precision` resolved once, checked early.

GPU paths (cuda, fp16 with GradScaler, several GPUs) are written to torch's documented API but were not
run on the CPU-only machine this was built on.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from ttsrec.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str) -> str:
    """`cpu | cuda | cuda:N | auto` -> a concrete torch device string; a missing GPU is a `UserError`."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: torch sees no CUDA GPU here (use --device cpu or auto)")
        index = 0 if spec == "cuda" else _gpu_index(spec)
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) visible")
        return f"cuda:{index}"
    raise UserError(f"--device expects cpu, cuda, cuda:N or auto, got {spec!r}")


def _gpu_index(spec: str) -> int:
    try:
        index = int(spec.split(":", 1)[1])
    except ValueError:
        raise UserError(f"--device expects cuda:N with an integer N, got {spec!r}") from None
    if index < 0:
        raise UserError(f"--device {spec}: the GPU index must be >= 0")
    return index


def member_devices(device: str, jobs: int) -> list[str]:
    """Devices for `jobs` parallel workers: with `cuda` and several GPUs, one member per GPU at a time."""
    if device.startswith("cuda") and jobs > 1 and torch.cuda.device_count() > 1:
        return [f"cuda:{i % torch.cuda.device_count()}" for i in range(jobs)]
    return [device] * jobs


def cpu_bf16_units() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX-BF16), from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check_precision(precision: str, device: str) -> str | None:
    """Refuse what cannot run; return a one-line note for what runs but slowly (bf16 emulated on a CPU)."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision expects one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and not device.startswith("cuda"):
        raise UserError("--precision fp16 needs a CUDA device (fp16 training uses GradScaler); "
                        "use bf16 or fp32 on a CPU")
    if precision == "bf16" and device == "cpu" and not cpu_bf16_units():
        return ("this CPU has no bf16 units (no avx512_bf16/amx_bf16): bf16 autocast runs emulated, "
                "correct but usually slower than fp32")
    if precision == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        raise UserError(f"--precision bf16: GPU {device} does not support bf16")
    return None


def autocast(precision: str, device: str) -> AbstractContextManager:
    """Mixed-precision forward pass (weights and optimiser state stay fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_AUTOCAST_DTYPE[precision])


def grad_scaler(precision: str, device: str) -> torch.amp.GradScaler | None:
    """fp16 on CUDA needs loss scaling against underflow; bf16 has fp32's range and does not."""
    if precision == "fp16" and device.startswith("cuda"):
        return torch.amp.GradScaler("cuda")
    return None
