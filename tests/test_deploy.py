"""Generations, rollout and rollback against a real tritonserver on loopback (`tts-deploy`).

Two generations of four tiny members differ visibly (two members retrained with new seeds), so an answer
that mixed them could not equal either: every answer under load must equal, bit for bit, the in-process
answer of the generation it names."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deploy_fixtures import Load, Reference, check_answers, inputs, two_runs
from ttsrec.errors import UserError
from ttsrec.repository import generations as gens
from ttsrec.repository import naming

pytestmark = pytest.mark.slow
MODELS = ("ensemble_m4", "fused_m4", "ensemble_m2")


def _export(checkpoints: list[Path], out: Path) -> Path:
    from ttsrec.export import export_repository
    from ttsrec.export.writer import ExportConfig
    from ttsrec.repository.config import Serving

    return export_repository(checkpoints, out, Serving(max_batch_size=64), ExportConfig(m_list=[1, 2, 4]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path]]:
    return two_runs(tmp_path_factory.mktemp("deploy-runs"))


@pytest.fixture(scope="module")
def base(runs: tuple[list[Path], list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generation 1 only, as `tts-export` wrote it (copied by the tests that change it)."""
    return _export(runs[0], tmp_path_factory.mktemp("deploy-base") / "repo")


@pytest.fixture(scope="module")
def repo(base: Path, runs: tuple[list[Path], list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ttsrec.deploy.add import add_generation

    out = tmp_path_factory.mktemp("deploy-repo") / "repo"
    shutil.copytree(base, out)
    added = add_generation(runs[1], out)
    assert (added.generation, added.members_written, added.members_kept) == (2, 2, 2)
    return out


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[Any]:
    from ttsrec.serve import TritonServer

    with TritonServer(repo) as srv:
        yield srv


def _manifest(repo: Path) -> dict[str, Any]:
    return json.loads((repo / naming.MANIFEST_FILE).read_text())


def _tree(repo: Path) -> dict[str, bytes]:
    return {p.relative_to(repo).as_posix(): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}


def _held(server: Any) -> dict[str, set[int]]:
    held: dict[str, set[int]] = {}
    for m in server.models():
        if m.get("state") == "READY":
            held.setdefault(m["name"], set()).add(int(m["version"]))
    return held


def _assert_serving(server: Any, repo: Path, generation: int, pinned: bool = True) -> None:
    """The server holds exactly generation `generation` (plus its `.gN` ensembles after a rollout)."""
    record = gens.generation_record(_manifest(repo), generation)
    held = _held(server)
    want = {n: {v} for n, v in record["versions"].items()}
    want.update({n: {generation} for n in record["ensembles"]})
    assert held == want
    import tritonclient.http as http

    client = http.InferenceServerClient(server.http_url)  # `.gN` copies are not in the repository index
    for other in (1, 2):
        ready = [client.is_model_ready(gens.generation_model(n, other)) for n in sorted(record["ensembles"])]
        assert ready == [pinned and other == generation] * len(ready), (other, ready)
    client.close()


def _rollout(repo: Path, server: Any, to: int, **kw: Any) -> Any:
    from ttsrec.deploy.rollout import Target, rollout

    return rollout([Target(repo, server.http_url)], to, free_bytes=None, **kw)


def _callers(server: Any) -> list[tuple[str, Any]]:
    from ttsrec.client import Client

    calls = []
    for k, model in enumerate(MODELS):
        protocol = ("grpc", "http")[k % 2]
        client = Client(server.url(protocol), protocol, model, timeout_s=30)
        calls.append((f"{model}/{protocol}", lambda ids, c=client: tuple(c.predict_generation(ids))[1:]))
    return calls


def _expected(repo: Path) -> Any:
    reference, ids = Reference(repo, _manifest(repo)), inputs()
    cache: dict[tuple[str, int, int], np.ndarray] = {}

    def expected(name: str, generation: int, batch: int) -> np.ndarray:
        key = (name.split("/")[0], generation, batch)
        if key not in cache:
            cache[key] = reference.logit(key[0], generation, ids[batch])
        return cache[key]

    return expected


def test_a_generation_shares_unchanged_members(repo: Path, base: Path) -> None:
    manifest = _manifest(repo)
    assert manifest["live"] == 1 and [g["generation"] for g in manifest["generations"]] == [1, 2]
    second = gens.generation_record(manifest, 2)
    versions = {m["name"]: m["version"] for m in second["members"]}
    assert versions == {"member_00_fnn": 1, "member_01_dcnv2": 2, "member_02_fnn": 1, "member_03_dcnv2": 2}
    for name, version in versions.items():  # unchanged members: no second copy on disk
        assert gens.version_dirs(repo, name) == sorted({1, version})
    assert gens.version_dirs(repo, "fused_m4") == [1, 2] and gens.version_dirs(repo, "ensemble_m4") == [1, 2]
    new_bytes = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file() and "/2/" in p.as_posix())
    old_bytes = sum(p.stat().st_size for p in base.rglob("*") if p.is_file())
    assert new_bytes < old_bytes  # two of four members, the merges and fused graphs: not a second copy
    assert gens.server_args(repo)[0] == "--model-control-mode=explicit"
    steps = {s.model_name: s.model_version for s in gens.ensemble_config(second, "ensemble_m4")
             .ensemble_scheduling.step}
    assert steps["member_00_fnn"] == 1 and steps["member_03_dcnv2"] == 2 and steps["merge_mean_m4"] == 2


def test_rollout_and_rollback_under_load(repo: Path, server: Any) -> None:
    _assert_serving(server, repo, 1, pinned=False)
    expected = _expected(repo)
    with Load(_callers(server)) as load:
        load.wait_for(30)
        for to in (2, 1, 2):
            _rollout(repo, server, to)
            assert _manifest(repo)["live"] == to and "rollout" not in _manifest(repo)
            _assert_serving(server, repo, to)
            load.wait_for(30)
    assert not load.errors, load.errors[:5]
    counts = check_answers(load, expected)
    assert {g for (_, g) in counts} == {1, 2}, counts
    assert _manifest(repo)["live"] == 2


def test_a_client_pins_a_generation(repo: Path, server: Any) -> None:
    from ttsrec.client import Client, ClientRuntimeError

    _rollout(repo, server, 2)
    ids, expected = inputs()[7], _expected(repo)
    ensemble = Client(server.grpc_url, "grpc", "ensemble_m4").predict_generation(ids, generation=2)
    fused = Client(server.http_url, "http", "fused_m4").predict_generation(ids, generation=2)
    assert ensemble.generation == fused.generation == 2
    assert np.array_equal(ensemble.logit, expected("ensemble_m4", 2, 7))
    with pytest.raises(ClientRuntimeError):  # generation 1 is no longer loaded
        Client(server.grpc_url, "grpc", "fused_m4").predict_generation(ids, generation=1)


_KILL = """
import os, sys
from pathlib import Path
from ttsrec.deploy.rollout import Target, rollout
repo, url, to, step = sys.argv[1:5]
rollout([Target(Path(repo), url)], int(to), pause=lambda s: os.kill(os.getpid(), 9) if s == step else None)
"""


@pytest.mark.parametrize("step", ["check", "stage", "switch", "retire", "record"])
def test_a_killed_rollout_leaves_whole_generations_and_a_rerun_finishes_it(
        repo: Path, server: Any, step: str) -> None:
    live = _manifest(repo)["live"]
    to = 1 if live == 2 else 2
    expected = _expected(repo)
    with Load(_callers(server)) as load:
        load.wait_for(10)
        proc = subprocess.run([sys.executable, "-c", _KILL, str(repo), server.http_url, str(to), step],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        load.wait_for(20)
        assert _manifest(repo)["live"] == (to if step == "record" else live)
        _rollout(repo, server, to)  # the same command again finishes it
        load.wait_for(10)
    assert not load.errors, load.errors[:5]
    check_answers(load, expected)
    _assert_serving(server, repo, to)
    assert "rollout" not in _manifest(repo)


def test_a_generation_that_fails_its_gate_never_becomes_visible(
        repo: Path, server: Any, runs: tuple[list[Path], list[Path]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ttsrec.deploy.add import add_generation
    from ttsrec.export import parity

    before, served = _tree(repo), _held(server)
    real = parity.compare

    def failing(name: str, *args: Any, **kw: Any) -> Any:
        if name.startswith("fused_m4"):
            raise UserError(f"{name}: parity gate failed (injected)")
        return real(name, *args, **kw)

    monkeypatch.setattr(parity, "compare", failing)
    with pytest.raises(UserError, match="injected"):
        add_generation(runs[1], repo)
    assert _tree(repo) == before and _held(server) == served
    assert not list(repo.parent.glob(f".{repo.name}.gen-*"))


_KILL_ADD = """
import os, shutil, sys
from pathlib import Path
import ttsrec.deploy.add as add
calls = []
def copy_then_die(src, dst, *a, **kw):
    out = shutil.copytree(src, dst, *a, **kw)
    calls.append(dst)
    if len(calls) == 2:
        os.kill(os.getpid(), 9)
    return out
add.shutil = type("S", (), {"copytree": staticmethod(copy_then_die), "rmtree": staticmethod(shutil.rmtree)})
add.add_generation([Path(p) for p in sys.argv[2:]], Path(sys.argv[1]))
"""


def test_a_killed_export_leaves_the_repository_as_it_was(
        base: Path, runs: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    from ttsrec.deploy.add import add_generation
    from ttsrec.serve import TritonServer

    repo = tmp_path / "repo"
    shutil.copytree(base, repo)
    manifest = (repo / naming.MANIFEST_FILE).read_bytes()
    proc = subprocess.run([sys.executable, "-c", _KILL_ADD, str(repo), *map(str, runs[1])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (repo / naming.MANIFEST_FILE).read_bytes() == manifest
    ids = inputs()[7]
    with TritonServer(repo) as srv:  # loads and answers as before: generation 1, every model
        from ttsrec.client import Client

        got = Client(srv.grpc_url, "grpc", "ensemble_m4").predict_generation(ids)
        assert got.generation == 1
    added = add_generation(runs[1], repo)  # the next add cleans up and takes number 2
    assert added.generation == 2
    leftovers = [p for p in repo.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ttsrec.cli.deploy", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_dry_run_status_and_refusals(repo: Path, server: Any) -> None:
    live = _manifest(repo)["live"]
    other = 1 if live == 2 else 2
    plan = _cli("rollout", str(repo), "--to", str(other), "--url", server.http_url, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert f"generation {live} -> {other}" in plan.stdout and "switch" in plan.stdout
    status = _cli("status", str(repo), "--url", server.http_url)
    assert status.returncode == 0 and "live" in status.stdout, status.stderr
    tight = _cli("rollout", str(repo), "--to", str(other), "--url", server.http_url, "--free-mb", "1")
    assert tight.returncode == 2 and tight.stderr.count("error:") == 1 and "free" in tight.stderr
    missing = _cli("rollout", str(repo), "--to", "9", "--url", server.http_url)
    assert missing.returncode == 2 and "no generation 9" in missing.stderr
    assert _manifest(repo)["live"] == live
    _assert_serving(server, repo, live)
