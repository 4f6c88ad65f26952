"""`tts-export` bad input: one line, exit code 2, nothing written, an existing repository untouched.
Fast: every case fails before any member is exported (tiny untrained checkpoints)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from export_fixtures import tiny_run
from ttsrec.cli.export import main, parse_m_list
from ttsrec.errors import UserError
from ttsrec.export.sources import load_sources


def cli(args: list[object], capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run `tts-export` in-process through `run_app` (its exit code and stderr)."""
    monkeypatch.setattr(sys, "argv", ["tts-export", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    tiny_run(tmp_path / "run")
    return tmp_path / "run"


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_checkpoint(tmp_path: Path, capsys, monkeypatch) -> None:
    code, err = cli([tmp_path / "nope.pt", "--out", tmp_path / "repo"], capsys, monkeypatch)
    assert_one_line_error(code, err, "nope.pt")
    assert not (tmp_path / "repo").exists()


def test_corrupt_checkpoint(run_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    bad = tmp_path / "member_09_fnn_s9.pt"
    bad.write_bytes(b"PK\x03\x04 definitely not a torch zip")
    code, err = cli([*sorted(run_dir.glob("*.pt")), bad, "--out", tmp_path / "repo"], capsys, monkeypatch)
    assert_one_line_error(code, err, "member_09_fnn_s9.pt")
    assert not (tmp_path / "repo").exists()


def test_members_from_different_feature_maps(run_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    other = tiny_run(tmp_path / "other", ("fnn",), dataset_id="other")
    code, err = cli([*sorted(run_dir.glob("*.pt")), *other, "--out", tmp_path / "repo"], capsys, monkeypatch)
    assert_one_line_error(code, err, "different feature maps")
    assert not (tmp_path / "repo").exists()


def test_m_above_the_number_of_members(run_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    code, err = cli([run_dir, "--out", tmp_path / "repo", "--m-list", "1,2,4"], capsys, monkeypatch)
    assert_one_line_error(code, err, "M=4", "2 members")
    code, err = cli([run_dir, "--out", tmp_path / "repo", "--shards", "3"], capsys, monkeypatch)
    assert_one_line_error(code, err, "--shards")
    code, err = cli([run_dir, "--out", tmp_path / "repo", "--shards=2", "--m-list=1"], capsys, monkeypatch)
    assert_one_line_error(code, err, "--m-list", "--shards")
    assert not (tmp_path / "repo").exists()


def test_existing_out_without_force_is_left_alone(run_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "repo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = cli([run_dir, "--out", out], capsys, monkeypatch)
    assert_one_line_error(code, err, "already exists", "--force")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--backend", "tensorflow", "unknown backend"), ("--instance-kind", "tpu", "instance kind"),
    ("--max-batch-size", "0", "--max-batch-size"), ("--m-list", "1,x", "--m-list"),
    ("--instance-count", "0", "--instance-count"), ("--max-queue-delay-us", "-5", "--max-queue-delay-us"),
    ("--fused-intra-op-threads", "0", "--fused-intra-op-threads"),
])
def test_bad_options(run_dir: Path, tmp_path: Path, capsys, monkeypatch, flag: str, value: str,
                     needle: str) -> None:
    code, err = cli([run_dir, "--out", tmp_path / "repo", f"{flag}={value}"], capsys, monkeypatch)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "repo").exists()


def test_fp16_needs_labelled_data(run_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    code, err = cli([run_dir, "--out", tmp_path / "repo", "--fp16"], capsys, monkeypatch)
    assert_one_line_error(code, err, "--precision fp16", "accuracy gate")


def test_feature_map_discovery(tmp_path: Path) -> None:
    """Next to the checkpoints, through run.json's data folder, or --data; a foreign map is refused."""
    paths = tiny_run(tmp_path / "run")
    assert load_sources(paths).feature_map.dataset_id == "tiny"
    bare = tiny_run(tmp_path / "bare", with_feature_map=False)
    with pytest.raises(UserError, match="--data"):
        load_sources(bare)
    (tmp_path / "bare" / "run.json").write_text('{"data": {"dir": "%s"}}' % (tmp_path / "run"))
    assert load_sources(bare).feature_map.hash == load_sources(paths).feature_map.hash
    other = tiny_run(tmp_path / "other", dataset_id="other")
    with pytest.raises(UserError, match="not the one the members were trained on"):
        load_sources(bare, data=tmp_path / "other" / "feature_map.json")
    assert len(load_sources([tmp_path / "run"]).members) == 2  # a run folder stands for its members
    with pytest.raises(UserError, match="twice"):
        load_sources([paths[0], paths[0]])
    assert other


def test_parse_m_list() -> None:
    assert parse_m_list(None) is None
    assert parse_m_list("1, 2,4") == [1, 2, 4]
    with pytest.raises(UserError):
        parse_m_list(",")


@pytest.mark.slow
def test_console_script_exit_code(tmp_path: Path) -> None:
    """The installed `tts-export` entry point itself: one line on stderr, exit 2."""
    exe = Path(sys.executable).with_name("tts-export")
    proc = subprocess.run([str(exe), str(tmp_path / "missing.pt"), "--out", str(tmp_path / "repo")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


def test_every_artefact_switch_is_a_flag_that_reaches_export_config(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    """`SWITCHES` is where an artefact's flag is declared: the CLI offers each (before --force) and hands
    it to the `ExportConfig` field of that name."""
    import dataclasses

    from typer.testing import CliRunner

    from ttsrec.cli import export as cli_export
    from ttsrec.export.writer import SWITCHES, ExportConfig

    fields = {f.name for f in dataclasses.fields(ExportConfig)}
    assert [s.field for s in SWITCHES] == ["raw_inputs", "cascade"] and {s.field for s in SWITCHES} <= fields
    seen: list[ExportConfig] = []

    def stop(checkpoints, out, serving, config, **kwargs):
        seen.append(config)
        raise UserError("stopped")

    monkeypatch.setattr("ttsrec.export.export_repository", stop)
    for args, expected in (([], (False, False)), (["--raw-inputs", "--cascade"], (True, True)),
                           (["--no-raw-inputs", "--cascade"], (False, True))):
        result = CliRunner().invoke(cli_export.app, [str(tmp_path), *args])
        assert isinstance(result.exception, UserError), result.output
        assert (seen[-1].raw_inputs, seen[-1].cascade) == expected


def test_the_job_description_is_a_leaf() -> None:
    """`export/job.py` (Job, Member, Draft, Artefact) imports no export module but the gates' plain data, so
    every writer can import it and it imports none of them back."""
    import ast

    import ttsrec.export.job as job

    tree = ast.parse(Path(job.__file__).read_text())
    imported = {f"{n.module}.{a.name}" if n.module == "ttsrec.export" else n.module
                for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module for a in n.names}
    assert {m for m in imported if m.startswith("ttsrec.export")} <= {
        "ttsrec.export.parity", "ttsrec.export.gate", "ttsrec.export.precision"}
