"""`tts-data` as a user runs it: tables on success, one-line errors with exit code 2 on bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from ttsrec.cli.common import run_app
from ttsrec.cli.data import main
from ttsrec.errors import RuntimeFailure, UserError


@dataclass
class Result:
    returncode: int
    stderr: str


@pytest.fixture
def tts_data(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run `tts-data ARGS` in-process (the console script's `main`), capturing exit code and stderr."""

    def run(*args: str | Path) -> Result:
        monkeypatch.setattr(sys, "argv", ["tts-data", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        return Result(code, capsys.readouterr().err)

    return run


def one_error_line(proc: Result) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_synth_then_prepare(tmp_path: Path, tts_data: Callable[..., Result]) -> None:
    tsv = tmp_path / "s.tsv"
    proc = tts_data("synth", "--rows", "3000", "--seed", "1", "--out", tsv)
    assert proc.returncode == 0, proc.stderr
    assert len(tsv.read_text().splitlines()) == 3000
    out = tmp_path / "data"
    proc = tts_data("prepare", "--preset", "criteo", "--input", tsv, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "rows kept" in proc.stderr and "3,000" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_kept"] == 3000 and sum(summary["splits"].values()) == 3000
    assert sorted(p.name for p in out.iterdir()) == [
        "feature_map.json",
        "summary.json",
        "test",
        "train",
        "valid",
    ]
    again = tts_data("prepare", "--input", tsv, "--out", out)
    assert "already exists (pass --force" in one_error_line(again)
    assert tts_data("prepare", "--input", tsv, "--out", out, "--force").returncode == 0
    shown = tts_data("summary", out)
    assert shown.returncode == 0 and "rows kept" in shown.stderr


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, tts_data: Callable[..., Result]) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\t2\t3\n")
    out = tmp_path / "o"
    assert "input file not found" in one_error_line(
        tts_data("prepare", "--input", tmp_path / "x", "--out", out)
    )
    assert "unknown preset 'foo'" in one_error_line(
        tts_data("prepare", "-p", "foo", "--input", bad, "--out", out)
    )
    line = one_error_line(tts_data("prepare", "--input", bad, "--out", out, "--on-bad-row", "fail"))
    assert f"{bad}:1: wrong number of columns (expected 40, got 3)" in line
    spec = tmp_path / "s.yaml"
    spec.write_text("label: click\nfields: [user]\n")
    csv = tmp_path / "log.csv"
    csv.write_text("click,item\n1,a\n")
    line = one_error_line(tts_data("prepare", "-p", "csv", "--spec", spec, "--input", csv, "--out", out))
    assert "spec names column(s) ['user'] not present" in line
    assert "--rows must be at least 1" in one_error_line(
        tts_data("synth", "--rows", "0", "--out", tmp_path / "z")
    )
    assert not out.exists() and not (tmp_path / "z").exists()


def test_force_never_replaces_an_input(tmp_path: Path, tts_data: Callable[..., Result],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10's reproduction: `--out data --force` with the input inside `data` is refused."""
    monkeypatch.chdir(tmp_path)
    assert tts_data("synth", "--rows", "2000", "--out", "data/raw.tsv").returncode == 0
    raw = (tmp_path / "data" / "raw.tsv").read_bytes()
    line = one_error_line(
        tts_data("prepare", "--preset", "criteo", "--input", "data/raw.tsv", "--out", "data", "--force")
    )
    assert "holds the input data/raw.tsv" in line
    assert (tmp_path / "data" / "raw.tsv").read_bytes() == raw
    # the output equal to the input, and an output folder holding someone else's files
    one_error_line(tts_data("prepare", "--input", "data/raw.tsv", "--out", "data/raw.tsv", "--force"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert "was not written by tts-data prepare" in one_error_line(
        tts_data("prepare", "--input", "data/raw.tsv", "--out", "mine", "--force")
    )
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_synth_out_is_atomic_and_never_replaces_a_foreign_file(
    tmp_path: Path, tts_data: Callable[..., Result]
) -> None:
    log = tmp_path / "log.tsv"
    log.write_text("a user's real log\n")
    assert "tts-data synth did not write it (pass --force" in one_error_line(
        tts_data("synth", "--rows", "100", "--out", log)
    )
    assert log.read_text() == "a user's real log\n"
    assert tts_data("synth", "--rows", "100", "--out", log, "--force").returncode == 0
    assert tts_data("synth", "--rows", "50", "--out", log).returncode == 0, "its own file: replaced"
    assert len(log.read_text().splitlines()) == 50
    assert "is not a regular file" in one_error_line(tts_data("synth", "--rows", "10", "--out", tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".log.tsv.tts-synth.json", "log.tsv"]


@pytest.mark.slow
def test_sigkill_during_prepare_keeps_the_old_output(tmp_path: Path) -> None:
    """kill -9 mid-prepare: the old output is intact; the next run cleans the dead writer's leftovers."""
    from ttsrec.data.prepare import prepare
    from ttsrec.data.synth import write_synthetic_criteo

    small = write_synthetic_criteo(tmp_path / "small.tsv", rows=2000)
    big = write_synthetic_criteo(tmp_path / "big.tsv", rows=400_000, seed=1)
    out = tmp_path / "data"
    prepare("criteo", [small], out)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for attempt in range(2):
        args = ["prepare", "--input", str(big), "--out", str(out), "--force"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "ttsrec.cli.data", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".data.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3 * attempt)  # at the start, then mid-way through pass 1
        proc.kill()
        assert proc.wait(timeout=10) == -signal.SIGKILL, "prepare finished before the kill: use more rows"
        assert list(tmp_path.glob(".data.tmp-*")), "the dead writer left its temp folder"
        assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    summary = prepare("criteo", [small], out, force=True, seed=3)
    assert summary.seed == 3 and json.loads((out / "summary.json").read_text())["seed"] == 3
    assert not list(tmp_path.glob(".data.*")), "leftovers of the killed writers are cleaned"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UserError("bad flag value"), 2),
        (FileNotFoundError(2, "No such file or directory", "x.tsv"), 2),
        (RuntimeFailure("server at 127.0.0.1:1 did not answer"), 1),
        (OSError(28, "No space left on device"), 1),
    ],
)
def test_run_app_maps_errors_to_two_families(
    error: Exception, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    app = typer.Typer()

    @app.command()
    def fail() -> None:
        raise error

    with pytest.raises(SystemExit) as exit_:
        run_app_with_argv(app, [])
    assert exit_.value.code == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def run_app_with_argv(app: typer.Typer, argv: list[str]) -> None:
    old = sys.argv
    sys.argv = ["tool", *argv]
    try:
        run_app(app)
    finally:
        sys.argv = old
