"""Safe replacement of outputs: never an input, never a folder another tool wrote, one writer at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ttsrec.errors import RuntimeFailure, UserError
from ttsrec.utils.atomic import atomic_dir, write_json


def _write(out: Path, text: str, **kw) -> None:
    with atomic_dir(out, marker="summary.json", tool="test", **kw) as tmp:
        (tmp / "summary.json").write_text(text)


def test_new_output_then_forced_replacement(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(out, "one")
    with pytest.raises(UserError, match="already exists"):
        _write(out, "two")
    _write(out, "two", force=True)
    assert (out / "summary.json").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp, old or lock left


@pytest.mark.parametrize("what", ["is", "holds", "inside"])
def test_output_never_touches_an_input(tmp_path: Path, what: str) -> None:
    raw = tmp_path / "data" / "raw.tsv"
    raw.parent.mkdir()
    raw.write_text("rows")
    (raw.parent / "summary.json").write_text("{}")  # looks like ours: still refused
    out = {"is": raw, "holds": raw.parent, "inside": raw / "sub"}[what]
    with pytest.raises(UserError, match=what if what != "is" else "is the input"):
        _write(out, "x", force=True, inputs=[raw])
    assert raw.read_text() == "rows"


def test_force_refuses_a_folder_the_tool_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not written by test"):
        _write(out, "x", force=True)
    assert (out / "notes.txt").read_text() == "keep me"


def test_failure_keeps_the_old_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(out, "old")
    with pytest.raises(ValueError), atomic_dir(out, True, marker="summary.json", tool="test") as tmp:
        (tmp / "summary.json").write_text("half")
        raise ValueError("boom")
    assert (out / "summary.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


_HOLD = """
import sys, time
from pathlib import Path
from ttsrec.utils.atomic import atomic_dir
with atomic_dir(Path(sys.argv[1]), True, marker="summary.json", tool="test") as tmp:
    (tmp / "summary.json").write_text("killed")
    print("writing", flush=True)
    time.sleep(60)
"""


def test_second_writer_is_told_and_a_killed_writer_leaves_nothing_for_long(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(out, "old")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "writing"
        with pytest.raises(RuntimeFailure, match=f"pid {holder.pid}"):
            _write(out, "second", force=True)
    finally:
        holder.kill()
        holder.wait(10)
    assert (out / "summary.json").read_text() == "old"
    assert any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir())  # the dead writer's leftovers
    _write(out, "new", force=True)
    assert (out / "summary.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_swap_never_leaves_the_output_missing(tmp_path: Path) -> None:
    """A reader polling during many replacements always finds the output."""
    out = tmp_path / "out"
    _write(out, "0")
    reader = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time\n"
        "end = time.time() + 3; misses = 0\n"
        "while time.time() < end:\n"
        "    misses += not os.path.exists(sys.argv[1])\n"
        "print(misses)\n"), str(out / "summary.json")], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 2.5
    while time.time() < deadline:
        _write(out, str(os.getpid()), force=True)
    assert reader.communicate(timeout=30)[0].strip() == "0"


def test_write_json_is_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.json"
    write_json(path, {"b": 1, "a": [1.5, None]})
    assert path.read_text() == '{\n "b": 1,\n "a": [\n  1.5,\n  null\n ]\n}\n'
    write_json(path, {"when": Path("x")}, default=str)
    assert json.loads(path.read_text()) == {"when": "x"}
    with pytest.raises(TypeError):
        write_json(path, {"when": object()})  # not serialisable: the previous file stays
    assert json.loads(path.read_text()) == {"when": "x"}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]
