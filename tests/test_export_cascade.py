"""`tts-export --cascade`: `cascade_mM` fitted on validation, gated on test, and served by a real
tritonserver exactly as the in-process cascade computes it (same rows stopped, same logits)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export_fixtures import tiny_run
from serve_fixtures import RepoSpec
from ttsrec.client import Client
from ttsrec.data.prepared import PreparedData
from ttsrec.ensemble.cascade import Cascade, cascade_inprocess
from ttsrec.ensemble.session import ort_session
from ttsrec.export.writer import ExportConfig
from ttsrec.repository import naming, read_manifest
from ttsrec.repository.config import get_parameters, read_config
from ttsrec.repository.graphs import onnx_file
from ttsrec.serve import TritonServer

ROWS = 3000
REPO = RepoSpec("cascade", options={"m_list": [1, 2, 4], "fused": False, "cascade": True,
                                    "max_auc_drop": 5e-3})


def _inprocess(repo: Path, record: dict, ids: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    cascade = Cascade.from_dict(record["cascade"])
    sessions = [ort_session(onnx_file(repo / name / naming.VERSION)) for name in record["members"]]
    parts = [cascade_inprocess(sessions, ids[i:i + batch], cascade) for i in range(0, len(ids), batch)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@pytest.mark.slow
def test_cascades_recorded_in_manifest_and_config(repo: Path) -> None:
    manifest = read_manifest(repo)
    cascades = {c["name"]: c for c in manifest["cascades"]}
    assert sorted(cascades) == [naming.cascade_name(2), naming.cascade_name(4)]  # none for M=1
    for name, c in cascades.items():
        assert c["gate"]["equal_to_inprocess"] and c["gate"]["split"] == "test"
        assert 1.0 <= c["test_members_per_row"] <= c["m"]
        assert c["stages"][-1] == c["m"] and c["rule"] in ("se", "delta", "rank")
        config = read_config(repo / name / "config.pbtxt")
        params = get_parameters(config)
        assert params["cascade_rule"] == c["rule"]
        assert params["cascade_stages"] == ",".join(map(str, c["stages"]))
        assert float(params["cascade_threshold"]) == c["threshold"]
        assert [o.name for o in config.output] == [naming.LOGIT, naming.PROB, naming.MEMBERS_USED]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_cascade_equals_inprocess_exactly(repo: Path, prepared_dir: Path, protocol: str) -> None:
    ids = np.asarray(PreparedData(prepared_dir).ids("test")[:ROWS], dtype=np.int64)
    record = next(c for c in read_manifest(repo)["cascades"] if c["m"] == 4)
    batch = 64
    want_logit, want_used = _inprocess(repo, record, ids, batch)
    with TritonServer(repo) as server, Client(server.url(protocol), protocol, record["name"]) as client:
        outs = [client.infer(ids[i:i + batch]) for i in range(0, len(ids), batch)]
        one = client.infer(ids[:1])
    logit = np.concatenate([o[naming.LOGIT].reshape(-1) for o in outs])
    used = np.concatenate([o[naming.MEMBERS_USED].reshape(-1) for o in outs])
    np.testing.assert_array_equal(logit, want_logit)
    np.testing.assert_array_equal(used.astype(np.int64), want_used)
    single = _inprocess(repo, record, ids[:1], 1)
    np.testing.assert_array_equal(one[naming.LOGIT].reshape(-1), single[0])
    stopped = float(np.mean(want_used < 4))
    print(f"{protocol}: cascade_m4 == in-process on {len(ids)} rows; {stopped:.0%} stopped early, "
          f"{want_used.mean():.2f} members per row")


def test_cascade_refusals(tmp_path: Path) -> None:
    """Without --data (nothing to fit on), with shards, and over members of different feature maps:
    one line, exit 2."""
    a = tiny_run(tmp_path / "a", ("fnn", "dcnv2"))
    b = tiny_run(tmp_path / "b", ("fnn",), dataset_id="other")
    for args, message in (([str(p) for p in a], "--cascade needs the prepared data"),
                          ([str(a[0]), str(b[0])], "feature map"),
                          ([str(p) for p in a] + ["--shards", "2"], "--cascade does not apply to --shards")):
        proc = subprocess.run([str(Path(sys.executable).parent / "tts-export"), *args, "--cascade", "--out",
                               str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(Exception, match="--cascade does not apply"):
        ExportConfig(cascade=True, shards=2).validate()


@pytest.mark.slow
def test_bench_cascade_rows_carry_members_per_row(repo: Path, prepared_dir: Path, tmp_path: Path) -> None:
    """`tts-bench --mode cascade`: rows for cascade_m2 and cascade_m4 (none for M=1), each with the average
    members per row the served answers report and the MACs per row that implies."""
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "tts-bench"), "--repository", str(repo),
         "--mode", "cascade,ensemble", "-b", "64", "--concurrency-range", "1",
         "--measurement-interval", "300", "--max-trials", "3", "--data", str(prepared_dir),
         "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    cascade = {r["m"]: r for r in rows if r["mode"] == "cascade"}
    ensemble = {r["m"]: r for r in rows if r["mode"] == "ensemble"}
    assert sorted(cascade) == [2, 4] and sorted(ensemble) == [1, 2, 4]
    for m, r in cascade.items():
        assert r["model"] == naming.cascade_name(m) and r["throughput"] > 0
        assert 1.0 <= r["members_per_row"] <= m
        assert 0 < r["macs_per_row"] <= ensemble[m]["macs_per_row"]
        assert ensemble[m]["members_per_row"] is None
