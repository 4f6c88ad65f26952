"""`tts-data prepare --executor ray` against a real local Ray instance (loopback, 2 CPUs): the same bytes as
the local path, a killed worker retried, nothing half-written after a failure, and without Ray one line."""

from __future__ import annotations

import gzip
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from data_fixtures import same_output
from ttsrec.data.prepare import prepare
from ttsrec.data.shard import FAIL_ONCE_ENV
from ttsrec.data.synth import write_synthetic_criteo
from ttsrec.errors import UserError


@pytest.fixture(scope="module")
def local_ray() -> Iterator[object]:
    ray = pytest.importorskip("ray", reason="the optional `ray` extra is not installed "
                                            "(pip install -e '.[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small day files (one gzipped, one with bad rows)."""
    root = tmp_path_factory.mktemp("ray_days")
    lines = write_synthetic_criteo(root / "all.tsv", rows=4000, seed=5).read_text().splitlines(keepends=True)
    lines[3100] = "x" + lines[3100]  # an unreadable label
    lines[3500] = "\t".join(lines[3500].split("\t")[:-3]) + "\n"  # short
    (root / "day_0.tsv").write_text("".join(lines[:1500]))
    with gzip.open(root / "day_1.tsv.gz", "wt") as fh:
        fh.write("".join(lines[1500:2500]))
    (root / "day_2.tsv").write_text("".join(lines[2500:]))
    return [root / "day_0.tsv", root / "day_1.tsv.gz", root / "day_2.tsv"]


@pytest.mark.slow
def test_ray_output_equals_local(local_ray: object, days: list[Path], tmp_path: Path) -> None:
    local = prepare("criteo", days, tmp_path / "local")
    remote = prepare("criteo", days, tmp_path / "ray", executor="ray", shard_bytes=100_000,
                     chunk_bytes=60_000)
    same_output(tmp_path / "local", tmp_path / "ray")
    assert remote.shards > len(days), "the plain files were cut into byte spans"
    for key in ("rows_read", "rows_kept", "skipped_by_reason", "splits", "vocab_sizes", "feature_map_hash"):
        assert getattr(local, key) == getattr(remote, key), key
    assert remote.executor == "ray" and remote.workers == 2 and "count" in remote.pass_seconds
    assert any(k.startswith("worker ") for k in remote.peak_rss_mb)
    with pytest.raises(UserError) as local_err:
        prepare("criteo", days, tmp_path / "f1", on_bad_row="fail")
    with pytest.raises(UserError) as ray_err:
        prepare("criteo", days, tmp_path / "f2", on_bad_row="fail", executor="ray", shard_bytes=100_000)
    assert str(local_err.value) == str(ray_err.value) and "day_2.tsv:601: " in str(ray_err.value)
    assert not (tmp_path / "f2").exists() and not list(tmp_path.glob(".f2*"))


@pytest.mark.slow
def test_a_killed_worker_is_retried(local_ray: object, days: list[Path], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(FAIL_ONCE_ENV, str(marker))
    prepare("criteo", days, tmp_path / "ray", executor="ray", max_retries=2)
    assert marker.read_text().startswith("killed pid"), "one task's worker must have died and been retried"
    monkeypatch.delenv(FAIL_ONCE_ENV)
    prepare("criteo", days, tmp_path / "local")
    same_output(tmp_path / "local", tmp_path / "ray")


@pytest.mark.slow
def test_a_worker_that_keeps_dying_fails_the_run_and_writes_nothing(local_ray: object, days: list[Path],
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ttsrec.errors import RuntimeFailure

    monkeypatch.setenv(FAIL_ONCE_ENV, str(tmp_path / "no" / "marker"))  # cannot be written: every task dies
    with pytest.raises(RuntimeFailure, match=r"failed after 1 retries") as err:
        prepare("criteo", days, tmp_path / "out", executor="ray", max_retries=1)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_without_ray_one_line_with_the_install_hint(days: list[Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from ttsrec.cli.data import main

    monkeypatch.setitem(sys.modules, "ray", None)  # Ray is installed here: simulate its absence
    monkeypatch.setattr(sys, "argv", ["tts-data", "prepare", "--input", str(days[0]), "--out",
                                      str(tmp_path / "out"), "--executor", "ray"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(err) == 1, err
    assert "needs Ray" in err[0] and "pip install 'ttsrec[ray]'" in err[0]
    assert not (tmp_path / "out").exists()
