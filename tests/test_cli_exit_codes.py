"""Every CLI's exit code follows the two families (issue 11.5), run as a user runs it: a subprocess.

Bad input: exit 2 and one `error:` line, no traceback. Runtime fault (a busy output, a closed port,
a taken port): exit 1 and one line naming the cause.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ttsrec.utils.atomic import output_lock

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow  # each case starts a CLI process (imports torch): seconds each


def run(tool: str, *args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def one_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode == code, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def closed_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def busy_port() -> Iterator[int]:
    """A port held by a listening socket of this test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


BAD_INPUT = [
    ("tts-data", ["prepare", "--input", "{tmp}/none.tsv", "--out", "{tmp}/out"], "input file not found"),
    ("tts-data", ["synth", "--rows", "0", "--out", "{tmp}/s.tsv"], "--rows must be at least 1"),
    ("tts-data", ["prepare", "--input", "{tmp}/none.tsv", "--out", "{tmp}/o", "--preset", "nope"], "preset"),
    ("tts-data", ["frobnicate"], "No such command"),
    ("tts-train", ["--data", "{tmp}/none", "--members", "dcnv2*2", "--out", "{tmp}/run"], "not a prepared"),
    ("tts-train", ["--data", "{tmp}", "--members", "dcnv2*2"], "--out"),
    ("tts-eval", ["{tmp}/none", "--data", "{tmp}/none", "--out", "{tmp}/rep"], "not a prepared"),
    ("tts-export", ["{tmp}/none.pt", "--out", "{tmp}/repo"], "checkpoint not found"),
    ("tts-export", ["{tmp}/none.pt", "--no-such-flag"], "No such option"),
    ("tts-serve", ["{tmp}/none"], "model repository not found"),
    ("tts-serve", ["{tmp}", "--http-port", "-5"], "out of range"),
    ("tts-bench", ["--batch-size", "0"], "batch-size"),
    ("tts-bench", ["--protocol", "smoke"], "unknown protocol"),
]


def _case_id(index: int, case: object) -> str:
    return f"{(case.values if hasattr(case, 'values') else case)[0]}-{index}"  # type: ignore[index]


@pytest.mark.parametrize(("tool", "args", "message"), BAD_INPUT,
                         ids=[_case_id(i, c) for i, c in enumerate(BAD_INPUT)])
def test_bad_input_exits_2_with_one_line(tool: str, args: list[str], message: str, tmp_path: Path) -> None:
    line = one_line(run(tool, *[a.format(tmp=tmp_path) for a in args]), 2)
    assert message in line


def test_data_prepare_busy_output_exits_1(tmp_path: Path) -> None:
    """A second writer of one output is a runtime fault: exit 1, naming the holder."""
    raw = tmp_path / "raw.tsv"
    assert run("tts-data", "synth", "--rows", "200", "--out", raw).returncode == 0
    with output_lock(tmp_path / "out"):
        line = one_line(run("tts-data", "prepare", "--input", raw, "--out", tmp_path / "out"), 1)
    assert f"another process (pid {os.getpid()}) is writing" in line
    assert not (tmp_path / "out").exists()


def test_export_busy_output_exits_1(tmp_path: Path) -> None:
    from export_fixtures import tiny_run

    tiny_run(tmp_path / "run")
    with output_lock(tmp_path / "repo"):
        line = one_line(run("tts-export", tmp_path / "run", "--out", tmp_path / "repo"), 1)
    assert "is writing" in line


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository exported (python backend) from two untrained tiny members."""
    from export_fixtures import tiny_run

    folder = tmp_path_factory.mktemp("exit_codes")
    tiny_run(folder / "run")
    proc = run("tts-export", folder / "run", "--out", folder / "repo")
    assert proc.returncode == 0, proc.stderr
    return folder / "repo"


def test_bench_against_a_closed_port_exits_1(tiny_repo: Path) -> None:
    """Nothing listens at --url: a runtime fault (exit 1), not the user's typing (exit 2)."""
    proc = run("tts-bench", "-u", f"127.0.0.1:{closed_port()}", "--repository", tiny_repo,
               "--measurement-interval", "200", timeout=60)
    assert "127.0.0.1" in one_line(proc, 1)


def test_serve_on_a_taken_port_is_one_line(tiny_repo: Path, busy_port: int) -> None:
    """tts-serve's owner files a taken port under the user's choices (exit 2, "pick another --http-port")."""
    proc = run("tts-serve", tiny_repo, "--http-port", busy_port, "--grpc-port", 0, "--metrics-port", 0,
               "--check", timeout=120)
    assert f"port {busy_port}" in one_line(proc, 2)
