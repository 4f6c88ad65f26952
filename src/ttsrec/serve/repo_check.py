"""What a repository folder holds, checked before a server is started on it: the bundled server runs
only the `python` flavour, and a sharded export is K repositories, not one."""

from __future__ import annotations

import json
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from ttsrec.errors import UserError
from ttsrec.repository.config import read_config
from ttsrec.repository.manifest import file_sha256
from ttsrec.repository.naming import MANIFEST_FILE, SHARDS_FILE

NGC_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # = tritonserver 2.51, the version bundled here


def model_configs(repo: Path) -> dict[str, model_config_pb2.ModelConfig]:
    """Every model folder's config, by folder name."""
    return {cfg.parent.name: read_config(cfg) for cfg in sorted(Path(repo).glob("*/config.pbtxt"))}


def is_sharded(path: Path) -> bool:
    return (Path(path) / SHARDS_FILE).is_file()


def docker_command(repo: Path) -> str:
    """How to serve an onnxruntime-flavour repository: NGC's container has the onnxruntime backend."""
    return (f"docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 "
            f"-v {Path(repo).resolve()}:/models {NGC_IMAGE} tritonserver --model-repository=/models")


def check_repository(repo: Path) -> dict[str, model_config_pb2.ModelConfig]:
    """Refuse what the bundled server cannot run, with the way to run it instead; return the configs."""
    repo = Path(repo)
    if not repo.is_dir():
        raise UserError(f"model repository not found: {repo}")
    if is_sharded(repo):
        raise UserError(f"{repo} is a sharded export ({SHARDS_FILE}): serve it with "
                        f"`tts-serve {repo} --shards` or `ttsrec.serve.ShardedServers`")
    flavour = _manifest_flavour(repo)
    configs = model_configs(repo)
    ort = [name for name, cfg in configs.items()
           if cfg.backend == "onnxruntime" or cfg.platform == "onnxruntime_onnx"]
    if flavour == "onnxruntime" or ort:
        what = f"models {', '.join(ort[:3])}{'...' if len(ort) > 3 else ''} use" if ort else "it uses"
        raise UserError(
            f"{repo} is an onnxruntime-flavour repository ({what} Triton's onnxruntime backend), which the "
            f"tritonserver bundled in nvidia-pytriton does not have. Serve it in NGC's container: "
            f"`{docker_command(repo)}` (drop --gpus all on a CPU machine), or export the python flavour "
            f"for this machine: `tts-export ... --backend python`")
    return configs


def _manifest_flavour(repo: Path) -> str | None:
    path = repo / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(manifest, dict):
        return None
    flavour = manifest.get("flavour", manifest.get("backend"))
    return flavour if isinstance(flavour, str) else None


def verify_files(repo: Path) -> str:
    """Check every file against the manifest's sha256 map ("files"); refuse a tampered or half-copied
    repository naming the file. Returns what was checked, or why the check was skipped."""
    repo = Path(repo)
    if not repo.is_dir():
        raise UserError(f"model repository not found: {repo}")
    path = repo / MANIFEST_FILE
    if not path.is_file():
        return f"integrity check skipped: {repo} has no {MANIFEST_FILE}"
    try:
        files = json.loads(path.read_text()).get("files")
    except (json.JSONDecodeError, AttributeError) as err:
        raise UserError(f"{path} is not a valid manifest ({err})") from None
    if not isinstance(files, dict):
        return f"integrity check skipped: {path} predates file hashes (no \"files\"); re-export to get them"
    for rel, expected in sorted(files.items()):
        target = repo / rel
        if not target.is_file():
            raise UserError(f"{repo} is incomplete: {rel} is listed in {MANIFEST_FILE} but missing "
                            f"(half-copied?); copy it again or re-export")
        if file_sha256(target) != expected:
            raise UserError(f"{repo} was modified: {rel} does not match its sha256 in {MANIFEST_FILE} "
                            f"(tampered or half-copied); re-export, or pass --skip-integrity if you changed "
                            f"it on purpose")
    extra = [p.relative_to(repo).as_posix() for p in sorted(repo.rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and p.name not in (MANIFEST_FILE, "README.md")
             and p.relative_to(repo).as_posix() not in files]
    if extra:
        raise UserError(f"{repo} holds {extra[0]}, which {MANIFEST_FILE} does not list (added after the "
                        f"export?); remove it, or pass --skip-integrity")
    return f"integrity: {len(files)} files match {MANIFEST_FILE}"
