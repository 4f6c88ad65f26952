"""Launcher checks that load no model: the bundle, repository checks, ports, shm, the CLI's refusals."""

from __future__ import annotations

import json
import mmap
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from ttsrec.errors import UserError
from ttsrec.serve import check_repository, find_bundle, find_shards
from ttsrec.serve import shm as shm_mod
from ttsrec.serve.ports import check_ports, free_port, port_is_free

TTS_SERVE = str(Path(sys.executable).parent / "tts-serve")


def write_config(model_dir: Path, cfg: pb.ModelConfig) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(cfg))


def ort_repository(root: Path) -> Path:
    """An onnxruntime-flavour member config, as a stock Triton (NGC container) would load it."""
    cfg = pb.ModelConfig(name="member_00_fnn", platform="onnxruntime_onnx", backend="onnxruntime",
                         max_batch_size=64)
    cfg.input.add(name="feat_ids", data_type=pb.TYPE_INT64, dims=[39])
    cfg.output.add(name="logit", data_type=pb.TYPE_FP32, dims=[1])
    write_config(root / "member_00_fnn", cfg)
    return root


def python_repository(root: Path) -> Path:
    cfg = pb.ModelConfig(name="m", backend="python", max_batch_size=8)
    cfg.input.add(name="feat_ids", data_type=pb.TYPE_INT64, dims=[3])
    cfg.output.add(name="logit", data_type=pb.TYPE_FP32, dims=[1])
    write_config(root / "m", cfg)
    return root


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TTS_SERVE, *args], capture_output=True, text=True, timeout=timeout)


def test_bundle_has_server_backend_and_matching_stub():
    bundle = find_bundle()
    assert bundle.binary.is_file() and os.access(bundle.binary, os.X_OK)
    files = {p.name for p in (bundle.backend_dir / "python").iterdir()}
    assert {"libtriton_python.so", "triton_python_backend_utils.py", "triton_python_backend_stub"} <= files
    env = bundle.env({"PATH": "/usr/bin"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert str(bundle.libs_dir) in env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert find_bundle() is bundle  # prepared once


def test_check_repository_accepts_python_flavour(tmp_path: Path):
    assert list(check_repository(python_repository(tmp_path))) == ["m"]


def test_check_repository_refuses_onnxruntime_flavour_with_docker_command(tmp_path: Path):
    with pytest.raises(UserError, match=r"onnxruntime.*docker run .*nvcr\.io/nvidia/tritonserver:.*-py3"):
        check_repository(ort_repository(tmp_path))


def test_check_repository_reads_manifest_flavour(tmp_path: Path):
    (tmp_path / "tts_manifest.json").write_text(json.dumps({"flavour": "onnxruntime"}))
    with pytest.raises(UserError, match="onnxruntime-flavour"):
        check_repository(tmp_path)


def test_check_repository_refuses_missing_and_sharded(tmp_path: Path):
    with pytest.raises(UserError, match="not found"):
        check_repository(tmp_path / "nope")
    (tmp_path / "shards.json").write_text(json.dumps({"shards": ["shard_00"]}))
    with pytest.raises(UserError, match="--shards"):
        check_repository(tmp_path)


def test_find_shards_reads_index_and_checks_folders(tmp_path: Path):
    for name in ("shard_00", "shard_01"):
        python_repository(tmp_path / name)
    (tmp_path / "shards.json").write_text(json.dumps({"shards": [{"dir": "shard_00"}, {"dir": "shard_01"}]}))
    assert find_shards(tmp_path) == [tmp_path / "shard_00", tmp_path / "shard_01"]
    (tmp_path / "shards.json").write_text(json.dumps({"shards": ["shard_00", "shard_07"]}))
    with pytest.raises(UserError, match="shard_07"):
        find_shards(tmp_path)
    with pytest.raises(UserError, match="not a sharded export"):
        find_shards(tmp_path / "shard_00")


def test_invalid_config_is_a_user_error(tmp_path: Path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.pbtxt").write_text("name: 'bad' max_batch_size: lots")
    with pytest.raises(UserError, match="not a valid Triton model config"):
        check_repository(tmp_path)


def test_ports_free_and_busy():
    port = free_port()
    assert port_is_free("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not port_is_free("127.0.0.1", port)
        with pytest.raises(UserError, match=f"http port {port} .* already in use"):
            check_ports("127.0.0.1", {"http": port})
    with pytest.raises(UserError, match="not a valid port"):
        check_ports("127.0.0.1", {"grpc": 70000})


def test_stale_shm_regions_removed_but_mapped_ones_kept():
    prefix = f"{shm_mod.REGION_PREFIX}ttstest{uuid.uuid4().hex[:8]}_"
    stale, live, fresh = (shm_mod.SHM_DIR / f"{prefix}{n}" for n in ("stale", "live", "fresh"))
    for path in (stale, live, fresh):
        path.write_bytes(b"\0" * 4096)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(live, (old, old))
    try:
        with open(live, "r+b") as fh, mmap.mmap(fh.fileno(), 4096):
            removed = shm_mod.remove_stale_regions(prefix)
        assert removed == [stale]
        assert live.exists() and fresh.exists() and not stale.exists()
        assert sorted(shm_mod.remove_regions(prefix)) == sorted([live, fresh])
    finally:
        for path in (stale, live, fresh):
            path.unlink(missing_ok=True)


def test_cli_onnxruntime_repository_exits_2_with_docker_hint(tmp_path: Path):
    result = run_cli(str(ort_repository(tmp_path)), "--http-port", "0", "--grpc-port", "0",
                     "--metrics-port", "0")
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "docker run" in result.stderr
    assert "nvcr.io/nvidia/tritonserver" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_busy_port_exits_2(tmp_path: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli(str(python_repository(tmp_path)), "--http-port", str(port), "--grpc-port", "0",
                         "--metrics-port", "0")
    assert result.returncode == 2, result.stderr
    assert f"http port {port}" in result.stderr and "already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_missing_repository_and_bad_port_exit_2(tmp_path: Path):
    result = run_cli(str(tmp_path / "missing"), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0")
    assert result.returncode == 2 and "not found" in result.stderr
    result = run_cli(str(tmp_path), "--http-port", "99999")
    assert result.returncode == 2 and "out of range" in result.stderr


def test_missing_wheel_is_a_user_error(monkeypatch: pytest.MonkeyPatch):
    import importlib.metadata

    from ttsrec.serve import bundle

    def not_installed(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    bundle.find_bundle.cache_clear()
    try:
        with pytest.raises(UserError, match=r"nvidia-pytriton wheel is not installed.*pip install"):
            bundle.find_bundle()
    finally:
        monkeypatch.undo()
        bundle.find_bundle.cache_clear()
