"""`tts-export` never destroys what it did not write: every `--force` refusal; SIGKILL during an
export leaves the old repository intact and the next run cleans the leftovers; two concurrent
exports to one folder: one wins, the other says why (exit 1). Real processes, real files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from export_fixtures import tiny_run
from test_export_cli import assert_one_line_error, cli
from ttsrec.repository import naming

TTS_EXPORT = Path(sys.executable).with_name("tts-export")
MANY = ("fnn", "dcnv2", "deepfm")
"""Three tiny members: an export that writes for several seconds, long enough to be interrupted."""


def snapshot(folder: Path) -> dict[str, bytes]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def old_export(out: Path) -> dict[str, bytes]:
    """A folder tts-export may replace (its manifest at the top), with a file of its own."""
    out.mkdir(parents=True)
    (out / naming.MANIFEST_FILE).write_text('{"format": "old"}\n')
    (out / "old.txt").write_text("previous export\n")
    return snapshot(out)


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def wait_for(condition, timeout_s: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, "tts-export ended before the test could interrupt it"
        assert time.monotonic() < deadline, "tts-export never started writing"
        time.sleep(0.05)


def writing(out: Path) -> bool:
    """The export has begun filling its temp folder (the feature map is written first)."""
    return any((p / naming.FEATURE_MAP_FILE).exists() for p in out.parent.glob(f".{out.name}.tmp-*"))


def start_export(run: Path, out: Path) -> subprocess.Popen:
    command = [str(TTS_EXPORT), str(run), "--out", str(out), "--force", "--m-list", "1,3",
               "--max-batch-size", "64"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


# -- --force refusals (fast: each fails before any member is exported) -----------------------------------


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    tiny_run(tmp_path / "runs" / "run")
    return tmp_path / "runs" / "run"


@pytest.mark.parametrize(("target", "needle"), [
    ("run", "is the input"),  # --out is the run folder
    ("runs", "holds the input"),  # --out holds the checkpoints
    ("foreign", "was not written by tts-export"),  # a folder of someone else's files
])
def test_force_refusals_touch_nothing(run_dir: Path, tmp_path: Path, capsys, monkeypatch, target: str,
                                      needle: str) -> None:
    out = {"run": run_dir, "runs": run_dir.parent, "foreign": tmp_path / "foreign"}[target]
    if target == "foreign":
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    code, err = cli([run_dir, "--out", out, "--force"], capsys, monkeypatch)
    assert_one_line_error(code, err, needle)
    assert snapshot(tmp_path) == before and not leftovers(out)


# -- hard faults (slow: real tts-export processes) ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_keeps_the_old_export_and_the_next_run_cleans_up(tmp_path: Path, capsys, monkeypatch) -> None:
    run = tmp_path / "run"
    tiny_run(run, MANY)
    out = tmp_path / "repo"
    before = old_export(out)
    process = start_export(run, out)
    try:
        wait_for(lambda: writing(out), 120, process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert snapshot(out) == before  # the old export, untouched
    assert any(name.startswith(f".{out.name}.tmp-") for name in leftovers(out))  # the dead writer's temp
    first = sorted(run.glob("member_*.pt"))[0]
    code, err = cli([first, "--out", out, "--force", "--max-batch-size", "64"], capsys, monkeypatch)
    assert code == 0, err
    assert (out / naming.MANIFEST_FILE).is_file() and not (out / "old.txt").exists()
    assert leftovers(out) == []  # temp folder and lock both gone


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_concurrent_exports_one_wins_the_other_says_why(tmp_path: Path, capsys, monkeypatch) -> None:
    run = tmp_path / "run"
    tiny_run(run, MANY)
    out = tmp_path / "repo"
    first = start_export(run, out)
    try:
        wait_for(lambda: writing(out), 120, first)
        code, err = cli([run, "--out", out, "--force"], capsys, monkeypatch)
        assert first.poll() is None, "the first export finished too early to test the lock"
    finally:
        _, first_err = first.communicate(timeout=180)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    assert f"another process (pid {first.pid}) is writing" in lines[0] and "Traceback" not in err
    assert first.returncode == 0, first_err
    assert (out / naming.MANIFEST_FILE).is_file() and leftovers(out) == []
