"""tts-bench over two precisions in one run, the cost–accuracy frontier, and `-u URL` with no local copy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ttsrec.export.writer import ExportConfig
from ttsrec.repository.config import Serving

pytestmark = pytest.mark.slow

SHORT = "-p 200 --max-trials 3 -s 80 --warmup-request-count 5"


@pytest.fixture(scope="module")
def exports(member_checkpoints: list[Path], prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from ttsrec.export import export_repository

    root = tmp_path_factory.mktemp("precision")
    two = member_checkpoints[:2]
    # No queue timeout: on a shared machine a stalled server process can hold a request past 500 ms.
    fp32 = export_repository(two, root / "fp32", serving=Serving(queue_timeout_ms=0),
                             config=ExportConfig(m_list=[1, 2]), data=prepared_dir)
    int8 = export_repository(two, root / "int8", serving=Serving(queue_timeout_ms=0),
                             config=ExportConfig(m_list=[1, 2], precision="int8",
                                                 max_auc_drop=0.05), data=prepared_dir)
    return fp32, int8


def bench(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ttsrec.cli.bench", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=400)


def test_two_precisions_one_table_frontier_and_budget(exports, prepared_dir: Path, tmp_path: Path) -> None:
    fp32, int8 = exports
    out = tmp_path / "out"
    done = bench(
        [
            "--repository",
            f"{fp32},{int8}",
            "--mode",
            "fused",
            "-b",
            "1",
            *SHORT.split(),
            "--eval-data",
            str(prepared_dir),
            "--eval-rows",
            "500",
            "-f",
            str(out / "r.csv"),
            "--json",
            str(out / "r.json"),
            "--plot",
            str(out / "r.png"),
            "--frontier",
            str(out / "f.png"),
            "--budget-ms",
            "10000",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pl.read_csv(out / "r.csv")
    assert set(zip(rows["precision"], rows["m"], strict=True)) == {
        (p, m) for p in ("fp32", "int8") for m in (1, 2)
    }
    assert (rows["Inferences/Second"] > 0).all()
    report = json.loads((out / "r.json").read_text())
    assert {(a["precision"], a["m"]) for a in report["accuracy"]} == {
        (p, m) for p in ("fp32", "int8") for m in (1, 2)
    }
    assert {e["precision"] for e in report["summary"]["bandwidth_floor"]} == {"fp32", "int8"}
    int8_bytes = report["dense_weight_bytes_per_repository"][str(int8)]["2"]
    assert (
        int8_bytes < report["dense_weight_bytes_per_repository"][str(fp32)]["2"]
    )  # int8 weights are smaller
    assert (out / "f.png").read_bytes()[:4] == b"\x89PNG"
    best = max(report["accuracy"], key=lambda a: a["auc"])
    assert f"fused M={best['m']} {best['precision']}" in (done.stdout + done.stderr).replace("\n", " ")


def test_url_alone_reads_m_members_precision_and_weights_from_the_server(exports, tmp_path: Path) -> None:
    from ttsrec.serve import TritonServer

    _, int8 = exports
    with TritonServer(int8) as server:
        done = bench(
            [
                "-u",
                server.url("grpc"),
                "--repository",
                str(tmp_path / "absent"),
                "--mode",
                "ensemble,fused",
                "-b",
                "1",
                *SHORT.split(),
                "--json",
                str(tmp_path / "r.json"),
            ],
            cwd=tmp_path,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert {(r["mode"], r["m"]) for r in report["rows"]} == {
        (mode, m) for mode in ("ensemble", "fused") for m in (1, 2)
    }
    assert {r["precision"] for r in report["rows"]} == {"int8"}
    weights = {int(k): v for k, v in report["dense_weight_bytes_per_m"].items()}
    assert set(weights) == {1, 2} and 0 < weights[1] < weights[2]
