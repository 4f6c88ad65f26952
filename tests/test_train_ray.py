"""`--executor ray` against a real local Ray instance started in the test process (no mocks)."""

from __future__ import annotations

import _thread
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from train_fixtures import QUICK
from ttsrec.ensemble.runs import load_run
from ttsrec.export.writer import ExportConfig, export_repository
from ttsrec.repository.config import Serving
from ttsrec.train import train_members
from ttsrec.train.ray_executor import FAIL_ONCE_ENV

ray = pytest.importorskip("ray", reason="the optional `ray` extra is not installed (`make test` installs it: "
                                        "pip install -e '.[ray]')")


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
                        train_limit=4096, **QUICK)
    assert marker.exists(), "one attempt must have failed and been retried"
    run = load_run(out)
    assert run["status"] == "complete" and [m["index"] for m in run["members"]] == [0, 1]
    repo = export_repository([out], tmp_path / "repo", serving=Serving(backend="onnxruntime"),
                             config=ExportConfig(fused=False))
    assert len(list(repo.glob("member_*/1/model.onnx"))) == 2

    # Resume after losing a member: only that one is trained again.
    kept = out / run["members"][0]["file"]
    (out / run["members"][1]["file"]).unlink()
    before = kept.stat().st_mtime_ns
    train_members(prepared_dir, "fnn*2", out, executor="ray", resume=True, epochs=1, train_limit=4096,
                  **QUICK)
    assert kept.stat().st_mtime_ns == before and len(load_run(out)["members"]) == 2


@pytest.mark.slow
def test_ray_failure_after_retries_is_reported_per_member(local_ray, prepared_dir: Path, tmp_path: Path,
                                                          monkeypatch) -> None:
    from ttsrec.errors import RuntimeFailure

    monkeypatch.setenv(FAIL_ONCE_ENV, str(tmp_path / "failed-once"))
    with pytest.raises(RuntimeFailure, match=r"member 0: .*injected"):
        train_members(prepared_dir, "fnn", tmp_path / "run", executor="ray", max_retries=0, epochs=1,
                      train_limit=4096, **QUICK)
    assert load_run(tmp_path / "run")["status"] == "failed"


NEVER = 100_000
"""Epochs (and patience) no member can finish: the run ends only by the test's Ctrl-C."""


def free_cpus() -> float:
    return ray.available_resources().get("CPU", 0.0)


def wait_for(condition, seconds: float) -> bool:
    """Poll `condition` until it holds (True) or `seconds` pass (False): a deadline, not a timing."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture()
def python_sigint() -> Iterator[None]:
    """Ctrl-C's default handler (KeyboardInterrupt) for one test, the previous one put back after it.

    `_thread.interrupt_main()` does nothing when SIGINT is not Python's (SIG_IGN, SIG_DFL): what a runner
    that starts jobs in the background gives (`nohup make test &`, `trap "" INT`)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_ray_ctrl_c_cancels_remaining_members(local_ray, python_sigint: None, prepared_dir: Path,
                                              tmp_path: Path) -> None:
    """A KeyboardInterrupt in the driver (Ctrl-C) cancels the tasks; run.json says interrupted.

    No member can finish first (NEVER epochs, no early stop), so the run can only end by the interrupt,
    and the interrupt arrives once every Ray CPU is taken by a member (the tasks are submitted and
    running, the driver is in its wait loop), however slow the machine. The CPUs coming back, and staying
    free although four more members were queued, shows the tasks were cancelled, not left to train.
    """
    cpus = ray.cluster_resources()["CPU"]
    assert wait_for(lambda: free_cpus() == cpus, 60), "an earlier test's tasks still hold the CPUs"
    running, ended, presses = threading.Event(), threading.Event(), []

    def ctrl_c() -> None:
        if wait_for(lambda: free_cpus() == 0 or ended.is_set(), 300) and not ended.is_set():
            running.set()
        if ended.is_set():
            return  # the run ended without us (a failure the test reports)
        presses.append("Ctrl-C")
        _thread.interrupt_main()
        while not ended.wait(60):  # a swallowed Ctrl-C would leave the run training: press again
            presses.append("Ctrl-C again")
            _thread.interrupt_main()

    presser = threading.Thread(target=ctrl_c, daemon=True)
    presser.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            train_members(prepared_dir, "fnn*6", tmp_path / "run", executor="ray", epochs=NEVER,
                          patience=NEVER, train_limit=4096, **QUICK)
    finally:
        ended.set()
        presser.join()
    assert running.is_set(), "the members never took the cluster's CPUs"
    assert presses == ["Ctrl-C"], f"the first Ctrl-C did not stop the run: {presses}"
    run = load_run(tmp_path / "run")
    assert run["status"] == "interrupted" and "KeyboardInterrupt" in run["error"]
    assert run["members"] == []  # none could finish
    # Cancelled: the two running members' CPUs come back, and the four queued ones never take them.
    assert wait_for(lambda: free_cpus() == cpus, 120), f"{cpus - free_cpus():g} CPU(s) still taken"
    assert not wait_for(lambda: free_cpus() < cpus, 3), "a queued member started after the Ctrl-C"
