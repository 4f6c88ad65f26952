"""`tts-train` device, precision, data order, group series and the still-improving flag.

GPU paths (cuda, fp16 + GradScaler, one GPU per worker) were not run on the CPU-only machine these were
written on; the CUDA test skips without a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from train_fixtures import QUICK, SMALL, cli, one_error_line, one_thread  # noqa: F401
from ttsrec.cli.train import main as train_main
from ttsrec.data.prepared import PreparedData
from ttsrec.ensemble.runs import SERIES_FILE, load_run
from ttsrec.errors import UserError
from ttsrec.export.writer import ExportConfig
from ttsrec.models.checkpoint import load_member
from ttsrec.repository.config import Serving
from ttsrec.train import TrainOptions, train_group_series, train_members
from ttsrec.train.device import check_precision, cpu_bf16_units, resolve_device
from ttsrec.train.metrics import predict_logits

NO_CUDA = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_CUDA, reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_and_auto_falls_back_to_cpu() -> None:
    assert resolve_device("auto") == "cpu" and resolve_device("CPU") == "cpu"
    for spec in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(UserError, match="no CUDA GPU"):
            resolve_device(spec)
    for spec in ("tpu", "cuda:x", "gpu"):
        with pytest.raises(UserError, match="--device"):
            resolve_device(spec)


def test_precision_checks() -> None:
    with pytest.raises(UserError, match="fp16 needs a CUDA"):
        check_precision("fp16", "cpu")
    with pytest.raises(UserError, match="--precision"):
        check_precision("fp8", "cpu")
    assert check_precision("fp32", "cpu") is None
    note = check_precision("bf16", "cpu")
    assert (note is None) == cpu_bf16_units()
    with pytest.raises(UserError, match="data_order"):
        TrainOptions(data_order="random")
    with pytest.raises(UserError, match="precision"):
        TrainOptions(precision="fp64")


@pytest.mark.skipif(not NO_CUDA, reason="checks the refusal on a machine without CUDA")
def test_cli_device_cuda_without_gpu_is_one_line_exit_2(prepared_dir: Path, tmp_path: Path, capsys,
                                                        monkeypatch) -> None:
    base = ["--data", prepared_dir, "--members", "fnn", "--out", tmp_path / "run", "-q"]
    code, _, err = cli(train_main, "tts-train", [*base, "--device", "cuda"], capsys, monkeypatch)
    assert code == 2 and "no CUDA GPU" in one_error_line(err)
    assert not (tmp_path / "run").exists()
    code, _, err = cli(train_main, "tts-train", [*base, "--precision", "fp16"], capsys, monkeypatch)
    assert code == 2 and "fp16 needs a CUDA" in one_error_line(err)


def test_executor_ray_without_ray_is_one_line_exit_2_with_the_install_hint(prepared_dir: Path, tmp_path: Path,
                                                                           capsys, monkeypatch) -> None:
    """Ray is installed in the dev venv, so its absence is simulated: `import ray` raises ImportError."""
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    args = ["--data", prepared_dir, "--members", "fnn", "--out", tmp_path / "run", "--executor", "ray", "-q"]
    code, _, err = cli(train_main, "tts-train", args, capsys, monkeypatch)
    line = one_error_line(err)
    assert code == 2 and "needs Ray" in line and "pip install 'ttsrec[ray]'" in line
    assert not (tmp_path / "run").exists()


def test_data_order_fixed_is_the_same_for_every_seed() -> None:
    fixed, per_seed = TrainOptions(data_order="fixed"), TrainOptions(data_order="per-seed")
    assert fixed.shuffle_seed(0, 1) == fixed.shuffle_seed(7, 1) != fixed.shuffle_seed(7, 2)
    assert per_seed.shuffle_seed(0, 1) != per_seed.shuffle_seed(7, 1)


def _onnx_matches_torch(checkpoint: Path, prepared_dir: Path, tmp_path: Path) -> None:
    """Export through the real writer and compare onnxruntime with the checkpoint's torch logits."""
    from ttsrec.export.writer import export_repository

    repo = export_repository([checkpoint], tmp_path / "repo", serving=Serving(backend="onnxruntime"),
                             config=ExportConfig(fused=False))
    onnx_files = sorted(repo.glob("member_*/1/model.onnx"))
    assert len(onnx_files) == 1
    data = PreparedData(prepared_dir)
    feats = np.asarray(data.ids("test")[:256], dtype=np.int64)
    member = load_member(checkpoint)
    with torch.inference_mode():
        expected = member.model(torch.from_numpy(feats)).reshape(-1).numpy()
    session = ort.InferenceSession(str(onnx_files[0]), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: feats})[0].reshape(-1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_bf16_training_on_cpu_is_recorded_close_to_fp32_and_exports(prepared_dir: Path,
                                                                    tmp_path: Path) -> None:
    """bf16 autocast runs on any CPU torch supports (emulated without bf16 units: correctness only here)."""
    runs = {p: train_members(prepared_dir, "fnn", tmp_path / p, epochs=1, precision=p, train_limit=8192,
                             **QUICK) for p in ("fp32", "bf16")}
    records = {p: load_run(out)["members"][0] for p, out in runs.items()}
    assert load_run(runs["bf16"])["precision"] == "bf16" and records["bf16"]["precision"] == "bf16"
    payload = torch.load(runs["bf16"] / records["bf16"]["file"], weights_only=True)
    assert payload["train"]["precision"] == "bf16" and payload["train"]["device"] == "cpu"
    assert all(v.dtype != torch.bfloat16 and v.device.type == "cpu" for v in payload["state_dict"].values())
    assert abs(records["bf16"]["test"]["auc"] - records["fp32"]["test"]["auc"]) < 0.02
    _onnx_matches_torch(runs["bf16"] / records["bf16"]["file"], prepared_dir, tmp_path)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_still_improving_at_the_epoch_cap_is_flagged(prepared_dir: Path, tmp_path: Path, capsys,
                                                     monkeypatch) -> None:
    """A tiny learning rate keeps improving through one epoch: the summary and run.json must say so."""
    out = tmp_path / "run"
    code, stdout, err = cli(train_main, "tts-train", [
        "--data", prepared_dir, "--members", "fnn", "--out", out, "--epochs", "1", "--batch-size", "1024",
        "--lr", "0.001", "--evals-per-epoch", "2", "--train-limit", "8192", "--hparam", "embed_dim=8",
        "--hparam", "mlp_dims=[32]", "-q"], capsys, monkeypatch)
    assert code == 0, err
    record = load_run(out)["members"][0]
    history = torch.load(out / record["file"], weights_only=True)["train"]["history"]
    assert history[-1]["valid_auc"] == max(p["valid_auc"] for p in history), "scenario must end at its best"
    assert record["still_improving"] and "still improving at the epoch cap" in err
    assert record["stop_reason"] == "epoch_cap_improving" and "cap+" in stdout
    assert "1.0*" in stdout
    early = train_members(prepared_dir, "fnn", tmp_path / "early", epochs=12, lr=0.02, batch_size=256,
                          patience=2, evals_per_epoch=1, train_limit=2048, hparams=SMALL)
    assert not load_run(early)["members"][0]["still_improving"]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_group_series_trains_one_joint_run_per_m(prepared_dir: Path, tmp_path: Path) -> None:
    out = train_group_series(prepared_dir, "fnn+deepfm+dcn", tmp_path / "series", [1, 2], epochs=1,
                             train_limit=4096, **QUICK)
    series = json.loads((out / SERIES_FILE).read_text())
    assert series["format"] == "ttsrec.series/1" and series["runs"] == {"1": "m1", "2": "m2"}
    for m in (1, 2):
        run = load_run(out / f"m{m}")
        assert run["group"] and run["group_series_m"] == m and run["status"] == "complete"
        assert [r["backbone"] for r in run["members"]] == ["fnn", "deepfm"][:m]
    with pytest.raises(UserError, match=r"1\.\.3"):
        train_group_series(prepared_dir, "fnn+deepfm+dcn", tmp_path / "bad", [4])
    with pytest.raises(UserError, match="--force"):
        train_group_series(prepared_dir, "fnn+deepfm+dcn", out, [1], **QUICK)


@pytest.mark.skipif(NO_CUDA, reason="no CUDA GPU here: the GPU training path was not run on this machine")
@pytest.mark.usefixtures("one_thread")
def test_cuda_training_saves_cpu_checkpoints(prepared_dir: Path, tmp_path: Path) -> None:
    out = train_members(prepared_dir, "fnn", tmp_path / "gpu", epochs=1, device="cuda", precision="fp16",
                        train_limit=4096, **QUICK)
    record = load_run(out)["members"][0]
    assert record["device"] == "cuda:0"
    payload = torch.load(out / record["file"], weights_only=True)
    assert all(v.device.type == "cpu" for v in payload["state_dict"].values())
    member = load_member(out / record["file"])
    assert predict_logits([member.model], PreparedData(prepared_dir), "test").shape[0] == 1


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_bf16_trained_members_export_and_serve_unchanged(prepared_dir: Path, tmp_path: Path) -> None:
    """bf16 changes only how training computes: its checkpoints hold fp32 weights, so the real
    tritonserver serves the exported ensemble with the torch checkpoints' fp32 logits."""
    from serve_fixtures import OrtReference, export
    from ttsrec.client import Client
    from ttsrec.serve import TritonServer

    run = train_members(prepared_dir, "fnn*2", tmp_path / "bf16", epochs=1, precision="bf16",
                        train_limit=4096, **QUICK)
    checkpoints = sorted(run.glob("member_*.pt"))
    assert [load_run(run)["members"][i]["precision"] for i in range(2)] == ["bf16", "bf16"]
    repo = export(checkpoints, tmp_path / "repo", prepared_dir, m_list=[1, 2], fused=False)
    rows = np.asarray(PreparedData(prepared_dir).ids("test")[:64], dtype=np.int64)
    with torch.inference_mode():
        expected = np.mean([load_member(p).model(torch.from_numpy(rows)).reshape(-1).numpy()
                            for p in checkpoints], axis=0)
    ort_ref = OrtReference(repo)
    reference = ort_ref.mean_logit(ort_ref.members_of("ensemble_m2"), rows)
    with TritonServer(repo) as server, Client(server.grpc_url, model="ensemble_m2", timeout_s=30) as client:
        prob, logit = client.predict(rows)
    assert np.abs(logit - reference).max() <= 1e-6
    np.testing.assert_allclose(logit, expected, rtol=1e-4, atol=1e-4)
    assert np.all((prob > 0) & (prob < 1))
