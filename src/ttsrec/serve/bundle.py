"""The tritonserver bundled in the `nvidia-pytriton` wheel, made runnable here (design §4).

The wheel keeps the python-backend stubs apart from the backend, relies on RPATHs that break once
files are copied, and its stub only sees the venv when the venv's `bin` comes first on PATH.
`find_bundle()` deals with all of that once and hands back a binary, a backend folder and an env.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ttsrec.errors import UserError

WHEEL = "nvidia-pytriton"
_INSTALL_HINT = f"install it with `pip install {WHEEL}==0.7.0` (bundles tritonserver and the python backend)"


@dataclass(frozen=True)
class Bundle:
    """Everything needed to launch the bundled server: binary, `--backend-directory`, environment."""

    binary: Path
    backend_dir: Path
    libs_dir: Path
    version: str

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for tritonserver: venv `bin` first on PATH (the stub ignores PYTHONPATH and finds
        the venv through `python3` on PATH), the wheel's libs and libpython on LD_LIBRARY_PATH."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = _join(str(Path(sys.executable).parent), env.get("PATH", ""))
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = _join(str(self.libs_dir), libdir, env.get("LD_LIBRARY_PATH", ""))
        return env


def _join(*parts: str) -> str:
    return os.pathsep.join(p for p in parts if p)


def cache_root() -> Path:
    """Where prepared backend folders live (`TTSREC_CACHE_DIR` overrides ~/.cache/ttsrec)."""
    return Path(os.environ.get("TTSREC_CACHE_DIR") or Path.home() / ".cache" / "ttsrec")


@lru_cache(maxsize=1)
def find_bundle() -> Bundle:
    """Locate the wheel's tritonserver and prepare (once, cached) a python backend folder with the
    stub matching the running interpreter."""
    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"the {WHEEL} wheel is not installed; {_INSTALL_HINT}") from None
    site = Path(dist.locate_file(""))
    server_dir = site / "pytriton" / "tritonserver"
    binary = server_dir / "bin" / "tritonserver"
    backend_src = server_dir / "backends" / "python"
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / minor / "triton_python_backend_stub"
    libs_dir = site / "nvidia_pytriton.libs"
    needed = [binary, backend_src / "libtriton_python.so", backend_src / "triton_python_backend_utils.py"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise UserError(f"the {WHEEL} wheel at {site} is incomplete (missing {', '.join(missing)}); "
                        f"reinstall it: {_INSTALL_HINT}")
    if not stub.is_file():
        raise UserError(f"the {WHEEL} wheel has no python backend stub for Python {minor} "
                        f"(looked for {stub}); use a Python version it ships a stub for")
    backend_dir = _prepare_backend_dir([*needed[1:], stub], dist.version, minor)
    return Bundle(binary=binary, backend_dir=backend_dir, libs_dir=libs_dir, version=dist.version)


def _prepare_backend_dir(files: list[Path], version: str, minor: str) -> Path:
    """Copy backend + stub into `<cache>/triton-backends/<key>/python/`, built in a temp folder and
    renamed so that concurrent callers never see half of it."""
    key_src = "|".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    key = f"{version}-py{minor}-{hashlib.sha256(key_src.encode()).hexdigest()[:12]}"
    target = cache_root() / "triton-backends" / key
    if (target / "python" / files[-1].name).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=target.parent))
    try:
        (tmp / "python").mkdir()
        for f in files:
            shutil.copy2(f, tmp / "python" / f.name)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; its copy is identical
            if not (target / "python" / files[-1].name).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
