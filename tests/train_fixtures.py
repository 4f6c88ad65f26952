"""Helpers for the training and evaluation tests: small members, one torch thread, in-process CLIs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest
import torch

SMALL = {"embed_dim": 8, "mlp_dims": [64, 32]}
"""Small FNN-style members: trained in seconds on the 20k-row session dataset."""
QUICK = {"batch_size": 1024, "lr": 3e-3, "hparams": SMALL}


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """Small models on a shared 2-core machine train faster on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cli(main: Callable[[], None], prog: str, args: list[object], capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """Run a console script's `main` in-process through `run_app`: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [prog, *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    """The stderr of a refused command: exactly one non-empty line starting with `error:`."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return lines[0]
