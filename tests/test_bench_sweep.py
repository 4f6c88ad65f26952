"""`tts-bench` end to end: real exported members, real tritonservers, every mode, outputs checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ttsrec.export.writer import ExportConfig

pytestmark = pytest.mark.slow

SHORT = "-p 250 --max-trials 4 -s 50 --warmup-request-count 5"


@pytest.fixture(scope="module")
def repos(member_checkpoints: list[Path], prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A repository with M = 1, 2 and a 2-shard export of the same two members."""
    from ttsrec.export import export_repository

    root = tmp_path_factory.mktemp("bench")
    two = member_checkpoints[:2]
    repo = export_repository(two, root / "repo", config=ExportConfig(m_list=[1, 2]), data=prepared_dir)
    shards = export_repository(two, root / "shards", config=ExportConfig(shards=2), data=prepared_dir)
    return repo, shards


def bench(args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `tts-bench` with space-separated arguments (the paths here have no spaces)."""
    cmd = [sys.executable, "-m", "ttsrec.cli.bench", *args.split()]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=400)


def test_sweep_every_mode_writes_sane_csv_json_png(repos, prepared_dir: Path, tmp_path: Path) -> None:
    repo, shards = repos
    out = tmp_path / "results"
    done = bench(
        f"--repository {repo} --shards-repository {shards} --mode ensemble,fused,sharded,inprocess "
        f"--m-list 1,2 -b 8 --concurrency-range 2 {SHORT} -f {out}/r.csv --json {out}/r.json "
        f"--plot {out}/r.png --markdown {out}/r.md --eval-data {prepared_dir} --eval-rows 1000",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    rows = pl.read_csv(out / "r.csv")
    expected = {
        (mode, m) for mode in ("ensemble", "fused", "inprocess_members", "inprocess_fused") for m in (1, 2)
    }
    expected.add(("sharded", 2))
    assert set(zip(rows["mode"], rows["m"], strict=True)) == expected
    assert rows.height == len(expected)  # one row per combination
    assert (rows["batch"] == 8).all() and (rows["Concurrency"] == 2).all()
    assert (rows["Inferences/Second"] > 0).all()
    assert (rows["p50 latency"] <= rows["p99 latency"]).all()
    assert (rows["p50 latency"] > 0).all() and (rows["client_cpu"] >= 0).all()
    served = rows.filter(pl.col("mode").is_in(["ensemble", "fused"]))
    assert (served["Server Compute Infer"] > 0).all()  # from Triton's statistics API
    assert (served["server_cpu"] > 0).all()  # the server process tree did the work

    report = json.loads((out / "r.json").read_text())
    assert report["versions"]["onnx"] and report["machine"]["logical_cores"] >= 1
    assert "git_commit" in report and report["manifest"]["format"].startswith("ttsrec.repository")
    roof = report["roofline"]  # measured in the run, before the rows
    assert roof["read_bw_memory"] > 0 and roof["cache_bytes"] >= 0
    assert all(roof["ort_macs"][p] > 0 for p in ("fp32", "int8"))
    assert all(roof["torch_macs"][p] > 0 for p in ("fp32", "bf16"))
    assert set(roof["roofs"]) == {"fp32", "int8"}
    for r in report["rows"]:
        if r["mode"] == "sharded":  # another export's members: no MAC count of its own here
            assert r["macs_per_row"] is None
            continue
        assert r["macs_per_row"] > 0, r
        achieved, fp32 = r["macs_per_row"] * r["throughput"], roof["roofs"]["fp32"]
        assert r["runtime_roof_fraction"] == pytest.approx(achieved / fp32["runtime_macs_per_s"])
        assert r["hardware_roof_fraction"] == pytest.approx(achieved / fp32["hardware_macs_per_s"])
    macs = {r["m"]: r["macs_per_row"] for r in report["rows"] if r["mode"] == "inprocess_fused"}
    assert macs[2] > macs[1]
    assert len(report["summary"]["compute_roof"]) == len(expected) - 1
    assert "runtime_roof_fraction" in rows.columns
    assert len(report["rows"]) == len(expected)
    assert {r["model"].split(" ")[0] for r in report["shard_rows"]} == {"shard"}  # each shard alone
    (fanout,) = report["summary"]["fanout_overhead"]
    assert fanout["m"] == 2 and fanout["sharded_p50_us"] > 0
    assert {a["m"] for a in report["accuracy"]} == {1, 2}
    assert all(0.3 < a["auc"] < 1.0 and a["logloss"] > 0 for a in report["accuracy"])

    assert (out / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "r.png").stat().st_size > 10_000
    text = (out / "r.md").read_text()
    assert "| sharded | fp32 | native | 2 | 8 | 2 |" in text and "fan-out overhead" in text
    assert "Roofline measured in this run" in text and "Achieved fraction of the compute roof" in text


def test_running_server_over_http_and_bad_arguments(repos, prepared_dir: Path, tmp_path: Path) -> None:
    from ttsrec.serve import TritonServer
    from ttsrec.serve.ports import free_port

    repo, _ = repos
    with TritonServer(repo) as server:
        done = bench(
            f"-u {server.http_url} -i http --repository {repo} --mode fused --m-list 2 -b 1 "
            f"--concurrency-range 1:2 {SHORT} -f r.csv --data {prepared_dir}",
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        rows = pl.read_csv(tmp_path / "r.csv")
        assert rows["Concurrency"].to_list() == [1, 2] and (rows["protocol"] == "http").all()
        assert (rows["Inferences/Second"] > 0).all()

        missing_m = bench(
            f"-u {server.grpc_url} --repository {repo} --mode ensemble --m-list 1,4", cwd=tmp_path
        )
        assert missing_m.returncode == 2 and "M=4 not in" in missing_m.stderr
        assert "Traceback" not in missing_m.stderr

    port = free_port("127.0.0.1")
    down = bench(f"--repository {repo} -u 127.0.0.1:{port} --mode fused", cwd=tmp_path)
    assert down.returncode == 1 and "unreachable" in down.stderr, down.stderr  # a runtime fault
    assert "Traceback" not in down.stderr
    for args, message in (
        ("--mode ensemble,warp", "unknown mode warp"),
        ("--m-list 3", "M=3 not in"),
        (f"--mode sharded --shards-repository {repo}", "shards.json is missing"),
    ):
        done = bench(f"--repository {repo} {args}", cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
