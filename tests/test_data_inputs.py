"""Many inputs: folders, globs and lists of plain or gzip files read in a defined order, with the same
output as one file holding the same rows; bad input sets are one line naming the file, exit 2."""

from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

import polars as pl
import pytest

from data_fixtures import same_output
from ttsrec.data.prepare import prepare
from ttsrec.data.prepared import PreparedData
from ttsrec.data.readers import Shard, iter_shard, plan_shards
from ttsrec.data.spec import resolve_spec
from ttsrec.data.synth import write_synthetic_criteo
from ttsrec.errors import UserError


@pytest.fixture(scope="module")
def day_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """One synthetic file and the same rows as three day files (the middle one gzipped)."""
    root = tmp_path_factory.mktemp("days")
    whole = write_synthetic_criteo(root / "whole.tsv", rows=6000, seed=3)
    lines = whole.read_bytes().splitlines(keepends=True)
    days = root / "days"
    days.mkdir()
    (days / "day_0.tsv").write_bytes(b"".join(lines[:2500]))
    with gzip.open(days / "day_1.tsv.gz", "wb") as fh:
        fh.write(b"".join(lines[2500:4000]))
    (days / "day_2.tsv").write_bytes(b"".join(lines[4000:]))
    return whole, sorted(days.iterdir())


def test_folder_glob_and_list_equal_one_file(day_files: tuple[Path, list[Path]], tmp_path: Path) -> None:
    whole, days = day_files
    prepare("criteo", [whole], tmp_path / "one")
    listed = prepare("criteo", days, tmp_path / "listed")
    prepare("criteo", [days[0].parent], tmp_path / "folder")
    globbed = prepare("criteo", [days[0].parent / "day_*"], tmp_path / "glob")
    assert listed.inputs == globbed.inputs == [str(p) for p in days], "sorted by name"
    for other in ("listed", "folder", "glob"):
        same_output(tmp_path / "one", tmp_path / other)
    assert PreparedData(tmp_path / "glob").summary["rows_read"] == 6000


def test_byte_spans_read_every_line_once(day_files: tuple[Path, list[Path]]) -> None:
    whole, _ = day_files
    spec = resolve_spec("criteo")
    size = whole.stat().st_size
    for shard_bytes in (size // 7, 4096, size):
        shards = plan_shards(spec, [whole], shard_bytes)
        got = [c for s in shards for c in iter_shard(spec, s, chunk_bytes=50_000)]
        assert sum(c.frame.height for c in got) == 6000
        assert sum(c.lines for c in got) == 6000
        labels = pl.concat([c.frame.get_column("label") for c in got])
        first = next(iter_shard(spec, Shard(whole), chunk_bytes=10**9)).frame.get_column("label")
        assert labels.equals(first)


def test_byte_spans_give_the_same_output(day_files: tuple[Path, list[Path]], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The local runner over spans (as Ray shards them) writes the same bytes as over whole files."""
    import ttsrec.data.prepare as module

    whole, _ = day_files
    prepare("criteo", [whole], tmp_path / "whole")
    real = module.plan_shards
    monkeypatch.setattr(module, "plan_shards", lambda spec, files, _: real(spec, files, 100_000))
    summary = prepare("criteo", [whole], tmp_path / "spans", chunk_bytes=30_000)
    assert summary.shards > 5
    same_output(tmp_path / "whole", tmp_path / "spans")


def test_bad_rows_in_a_later_span_are_named_by_their_file_line(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import ttsrec.data.prepare as module

    src = write_synthetic_criteo(tmp_path / "s.tsv", rows=3000, seed=1)
    lines = src.read_text().splitlines()
    lines[2400] = "\t".join(lines[2400].split("\t")[:-2])
    src.write_text("\n".join(lines) + "\n")
    real = module.plan_shards
    monkeypatch.setattr(module, "plan_shards", lambda spec, files, _: real(spec, files, 50_000))
    with pytest.raises(UserError, match=r"s\.tsv:2401: wrong number of columns \(expected 40, got 38\)"):
        prepare("criteo", [src], tmp_path / "out", on_bad_row="fail")
    summary = prepare("criteo", [src], tmp_path / "out")
    assert summary.skipped_by_reason == {"wrong number of columns (expected 40, got 38)": 1}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "input file not found: .*day_9.tsv"),
        ("no match", "no input file matches .*nothing_\\*"),
        ("empty folder", "input folder holds no files: .*empty"),
        ("parquet among text", "day_x.parquet: a parquet file among tsv inputs"),
        ("csv among tsv", "day_x.csv: a csv file among tsv inputs"),
        ("columns change", "day_x.tsv: 39 columns where .*day_0.tsv has 40"),
    ],
)
def test_bad_input_sets_are_one_line_naming_the_file(case: str, message: str,
                                                     day_files: tuple[Path, list[Path]], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ttsrec.cli.data import main

    _, days = day_files
    inputs: list[str | Path] = [days[0], days[2]]
    if case == "missing":
        inputs.append(days[0].parent / "day_9.tsv")
    elif case == "no match":
        inputs.append(tmp_path / "nothing_*")
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        inputs.append(tmp_path / "empty")
    elif case == "parquet among text":
        pl.DataFrame({"a": [1]}).write_parquet(tmp_path / "day_x.parquet")
        inputs.append(tmp_path / "day_x.parquet")
    elif case == "csv among tsv":
        (tmp_path / "day_x.csv").write_text("1,2\n")
        inputs.append(tmp_path / "day_x.csv")
    else:
        rows = [line.rsplit("\t", 1)[0] for line in days[0].read_text().splitlines()[:50]]
        (tmp_path / "day_x.tsv").write_text("\n".join(rows) + "\n")
        inputs.insert(1, tmp_path / "day_x.tsv")
    args = ["tts-data", "prepare", "--out", str(tmp_path / "out")]
    for p in inputs:
        args += ["--input", str(p)]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exit_:
        main()
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "out").exists()


def test_summary_reports_rows_per_s_memory_and_passes(day_files: tuple[Path, list[Path]],
                                                     tmp_path: Path) -> None:
    _, days = day_files
    summary = prepare("criteo", days, tmp_path / "out").to_dict()
    assert summary["rows_per_s"] > 0 and summary["executor"] == "local" and summary["shards"] == 3
    assert set(summary["pass_seconds"]) == {"read", "vocabulary", "encode"}
    assert summary["peak_rss_mb"]["driver"] > 0
    assert sum(summary["splits"].values()) == 6000
