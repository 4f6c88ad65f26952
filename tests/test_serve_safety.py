"""Integrity check and exposure rules of tts-serve (fast: no server)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ttsrec.cli.serve import KEY_HEADER, exposure_args
from ttsrec.errors import UserError
from ttsrec.serve.repo_check import MANIFEST_FILE, verify_files


def _repo(tmp_path: Path) -> Path:
    """A repository laid out as an export writes it, with the manifest's "files" sha256 map."""
    repo = tmp_path / "repo"
    files = {"member_00/1/model.onnx": b"\x08\x07onnx", "member_00/1/model.py": b"print()\n",
             "member_00/config.pbtxt": b'name: "member_00"\n', "feature_map.json": b"{}"}
    for rel, data in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(data)
    hashes = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    (repo / MANIFEST_FILE).write_text(json.dumps({"files": hashes, "export_id": "x"}))
    (repo / "README.md").write_text("not hashed\n")
    return repo


def test_intact_repository_passes_and_pycache_is_ignored(tmp_path: Path):
    repo = _repo(tmp_path)
    (repo / "member_00/1/__pycache__").mkdir()
    (repo / "member_00/1/__pycache__/model.cpython-311.pyc").write_bytes(b"x")
    assert verify_files(repo) == f"integrity: 4 files match {MANIFEST_FILE}"


@pytest.mark.parametrize("damage, named", [
    (lambda r: (r / "member_00/1/model.py").write_text("import os\n"), "member_00/1/model.py"),
    (lambda r: (r / "member_00/1/model.onnx").write_bytes(b"\x08"), "member_00/1/model.onnx"),  # half-copied
    (lambda r: (r / "feature_map.json").unlink(), "feature_map.json"),
    (lambda r: (r / "member_00/1/evil.py").write_text("x\n"), "member_00/1/evil.py"),
])
def test_tampered_or_half_copied_repository_is_refused_naming_the_file(tmp_path: Path, damage, named: str):
    repo = _repo(tmp_path)
    damage(repo)
    with pytest.raises(UserError, match=named.replace(".", r"\.")):
        verify_files(repo)


def test_old_manifest_without_files_says_the_check_was_skipped(tmp_path: Path):
    repo = _repo(tmp_path)
    (repo / MANIFEST_FILE).write_text(json.dumps({"export_id": "x"}))
    assert "skipped" in verify_files(repo)


def test_loopback_needs_no_flag_and_other_addresses_need_expose():
    assert exposure_args("127.0.0.1", False, "both", None) == ([], None)
    assert exposure_args("::1", False, "grpc", None) == (["--allow-http=false"], None)
    for host in ("0.0.0.0", "10.1.2.3", "example.org"):
        with pytest.raises(UserError, match="--expose"):
            exposure_args(host, False, "both", None)


def test_exposed_server_restricts_admin_apis_behind_a_key():
    args, key = exposure_args("0.0.0.0", True, "both", None)
    assert key and len(key) == 32
    restricted = "shared-memory,model-repository,model-config,logging,trace"
    assert f"--http-restricted-api={restricted}:{KEY_HEADER}={key}" in args
    assert f"--grpc-restricted-protocol={restricted}:{KEY_HEADER}={key}" in args
    args, key = exposure_args("0.0.0.0", True, "grpc", "given")
    assert key == "given" and "--allow-http=false" in args and not any("http-restricted" in a for a in args)
    with pytest.raises(UserError, match="--protocol"):
        exposure_args("127.0.0.1", False, "http2", None)
