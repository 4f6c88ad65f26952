"""`--executor ray` against a real local Ray instance started in the test process (no mocks)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from train_fixtures import QUICK
from ttsrec.export.writer import export_repository
from ttsrec.train import train_members
from ttsrec.train.ray_executor import FAIL_ONCE_ENV
from ttsrec.train.runfile import load_run

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_trains_retries_a_failed_member_and_resumes(local_ray, prepared_dir: Path, tmp_path: Path,
                                                        monkeypatch) -> None:
    marker = tmp_path / "failed-once"
    monkeypatch.setenv(FAIL_ONCE_ENV, str(marker))  # Ray workers inherit the driver's environment
    out = train_members(prepared_dir, "fnn*2", tmp_path / "run", executor="ray", max_retries=1, epochs=1,
                        train_limit=4096, show_progress=False, **QUICK)
    assert marker.exists(), "one attempt must have failed and been retried"
    run = load_run(out)
    assert run["status"] == "complete" and [m["index"] for m in run["members"]] == [0, 1]
    repo = export_repository([out], tmp_path / "repo", backend="onnxruntime", fused=False, show=False)
    assert len(list(repo.glob("member_*/1/model.onnx"))) == 2

    # Resume after losing a member: only that one is trained again.
    kept = out / run["members"][0]["file"]
    (out / run["members"][1]["file"]).unlink()
    before = kept.stat().st_mtime_ns
    train_members(prepared_dir, "fnn*2", out, executor="ray", resume=True, epochs=1, train_limit=4096,
                  show_progress=False, **QUICK)
    assert kept.stat().st_mtime_ns == before and len(load_run(out)["members"]) == 2


@pytest.mark.slow
def test_ray_failure_after_retries_is_reported_per_member(local_ray, prepared_dir: Path, tmp_path: Path,
                                                          monkeypatch) -> None:
    from ttsrec.errors import RuntimeFailure

    monkeypatch.setenv(FAIL_ONCE_ENV, str(tmp_path / "failed-once"))
    with pytest.raises(RuntimeFailure, match=r"member 0: .*injected"):
        train_members(prepared_dir, "fnn", tmp_path / "run", executor="ray", max_retries=0, epochs=1,
                      train_limit=4096, show_progress=False, **QUICK)
    assert load_run(tmp_path / "run")["status"] == "failed"


@pytest.mark.slow
def test_ray_ctrl_c_cancels_remaining_members(local_ray, prepared_dir: Path, tmp_path: Path) -> None:
    """A KeyboardInterrupt in the driver (Ctrl-C) cancels the tasks; run.json says interrupted."""
    timer = threading.Timer(3.0, lambda: __import__("_thread").interrupt_main())
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            train_members(prepared_dir, "fnn*6", tmp_path / "run", executor="ray", epochs=30, patience=30,
                          show_progress=False, **QUICK)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 60
    run = load_run(tmp_path / "run")
    assert run["status"] == "interrupted" and len(run["members"]) < 6
