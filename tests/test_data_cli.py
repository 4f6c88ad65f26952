"""`tts-data` as a user runs it: tables on success, one-line errors with exit code 2 on bad input."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ttsrec.cli.data import main


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
