"""Write a whole output folder or file, or nothing, and never destroy what the tool did not write.

`atomic_dir` builds the output in a hidden temp sibling and swaps it in at the end:

- an existing output is replaced only with `force`, and only if it carries the tool's marker file
  (so `--out data --force` cannot delete a folder of raw files the tool never wrote);
- an output that is, holds or lies inside one of the command's inputs is refused outright;
- one writer per output at a time (an exclusive lock next to it; the second writer is told who holds it);
- the swap is one `renameat2(RENAME_EXCHANGE)`, so there is no moment with the output missing;
- temp folders left by a writer that died (SIGKILL, power loss) are removed by the next writer.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ttsrec.errors import RuntimeFailure, UserError

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def check_not_input(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse an output that is, contains, or lies inside any input of the command."""
    target = Path(out).resolve()
    for given in inputs:
        source = Path(given).resolve()
        if target == source:
            raise UserError(f"the output {out} is the input {given}; choose another output")
        if source.is_relative_to(target):
            raise UserError(f"the output {out} holds the input {given}; choose another output")
        if target.is_relative_to(source):
            raise UserError(f"the output {out} lies inside the input {given}; choose another output")


Marker = str | Sequence[str] | Callable[[Path], bool]


def check_replaceable(out: Path, force: bool, marker: Marker, tool: str) -> None:
    """An existing `out` may be replaced only with `force` and only if `tool` wrote it.

    `marker` names the file(s) `tool` always writes at the top of its output (any one suffices), or is
    a predicate for outputs that need more than a file name to be recognised.
    """
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise UserError(f"{out} already exists (pass --force to replace it)")
    if callable(marker):
        ours, what = marker(out), "its files"
    else:
        markers = [marker] if isinstance(marker, str) else list(marker)
        ours, what = any((out / m).is_file() for m in markers), f"no {' or '.join(markers)} in it"
    if out.is_symlink() or not out.is_dir() or not ours:
        raise UserError(f"{out} was not written by {tool} ({what}); refusing to replace it: "
                        "choose another output or remove it yourself")


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on `out` (a `.NAME.lock` sibling, removed on release)."""
    path = out.with_name(f".{out.name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RuntimeFailure(f"another process (pid {holder}) is writing {out}; "
                                 "wait for it to finish or choose another output") from None
        if os.fstat(fd).st_ino != os.stat(path).st_ino:  # unlinked by a writer that just finished
            raise RuntimeFailure(f"another process is writing {out}; try again")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the call or filesystem lacks it."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _clean_stale(out: Path) -> None:
    """Remove temp folders of earlier writers of `out`; called under the lock, so their owners are gone."""
    for pattern in (f".{out.name}.tmp-*", f".{out.name}.old-*"):
        for stale in out.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def atomic_dir(out: Path, force: bool = False, *, marker: Marker, tool: str,
               inputs: Sequence[Path] = ()) -> Iterator[Path]:
    """Yield a temp folder next to `out`; on success it replaces `out`, on failure it is removed.

    `marker` is the file (or any of the files) `tool` always writes into its output: only a folder
    holding it is replaced. `inputs` are every file or folder the command reads.
    """
    out = Path(out).absolute()
    check_not_input(out, inputs)
    check_replaceable(out, force, marker, tool)
    out.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        check_replaceable(out, force, marker, tool)  # again: a writer may have finished meanwhile
        _clean_stale(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if not out.exists():
            os.rename(tmp, out)
        elif _exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # now holds the old output
        else:
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file through a temp sibling so readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, body: Any, *, default: Callable[[Any], Any] | None = None) -> None:
    """A JSON file written whole or not at all (indent 1, keys in insertion order)."""
    atomic_write_text(Path(path), json.dumps(body, indent=1, default=default) + "\n")
