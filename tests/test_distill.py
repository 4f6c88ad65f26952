"""Distillation (`tts-train --distill-from RUN`): a student trained on a run's merged logit is a normal
member (checkpoint, run.json, export), its loss really uses the teacher, and bad teachers are refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from train_fixtures import QUICK, SMALL, cli, one_error_line, one_thread  # noqa: F401
from ttsrec.cli.train import main as train_main
from ttsrec.data.prepared import PreparedData
from ttsrec.ensemble.metrics import binary_metrics
from ttsrec.ensemble.runs import load_run
from ttsrec.errors import UserError
from ttsrec.models.checkpoint import load_member, load_members, save_member
from ttsrec.train import TrainOptions, train_members
from ttsrec.train.distill import (
    CACHE_PREFIX,
    SHARED_PREFIX,
    fit_calibration,
    student_fit_kwargs,
    student_hparams,
)
from ttsrec.train.member import MemberJob, train_member
from ttsrec.train.metrics import predict_logits, split_labels
from ttsrec.train.student import train_distilled

BRIEF = {"epochs": 1, "train_limit": 4096, **QUICK}
"""The teacher's and the students' schedule: one epoch on 4k rows (4 steps of 1024)."""
BRIEF_FLAGS = ["--epochs", "1", "--train-limit", "4096", "--batch-size", "1024", "--lr", "0.003", "-q"]


@pytest.fixture(scope="module")
def teacher(prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small FNN seeds: the teacher run every test distils from."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_members(prepared_dir, "fnn*2", tmp_path_factory.mktemp("teacher") / "run", **BRIEF)
    finally:
        torch.set_num_threads(threads)


def test_student_hparams_inherit_the_teacher_then_overrides_then_width(teacher: Path) -> None:
    from ttsrec.train.distill import load_teacher

    data = PreparedData(Path(load_run(teacher)["data"]["dir"]))
    info = load_teacher(teacher, data, None)
    num_fields = data.feature_map.num_fields
    same, inherited = student_hparams(["fnn"], info, TrainOptions(), 1.0, num_fields)
    assert same == {"fnn.embed_dim": 8, "fnn.mlp_dims": [64, 32], "fnn.embedding_init": "xavier"}
    assert inherited == {"fnn": "member_00_fnn_s0.pt"}
    wide, _ = student_hparams(["fnn"], info, TrainOptions(), 4.0, num_fields)
    assert wide == {"fnn.embed_dim": 8, "fnn.mlp_dims": [256, 128], "fnn.embedding_init": "xavier"}, \
        "width scales the MLP, not the embedding"
    mine, _ = student_hparams(["fnn"], info, TrainOptions(hparams={"mlp_dims": [16]}), 2.0, num_fields)
    assert mine["fnn.mlp_dims"] == [32]
    other, inherited = student_hparams(["dcnv2"], info, TrainOptions(), 2.0, num_fields)
    assert other["dcnv2.mlp_dims"] == [2048, 1024, 512] and inherited == {}, "a new backbone: defaults"


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_cli_student_is_a_normal_member(prepared_dir: Path, teacher: Path, tmp_path: Path, capsys,
                                        monkeypatch) -> None:
    from ttsrec.export.writer import ExportConfig, export_repository

    out = tmp_path / "student"
    code, _, err = cli(train_main, "tts-train", [
        "--data", prepared_dir, "--members", "fnn", "--out", out, "--distill-from", teacher,
        "--distill-m", "2", "--distill-alpha", "0.7", "--width-mult", "2", *BRIEF_FLAGS], capsys, monkeypatch)
    assert code == 0, err
    assert "teacher M=2" in err
    run = load_run(out)
    assert run["status"] == "complete" and [m["file"] for m in run["members"]] == ["member_00_fnn_s0.pt"]
    source = run["distilled_from"]
    assert source["run"] == str(teacher.resolve()) and source["m"] == 2 and source["alpha"] == 0.7
    data = PreparedData(prepared_dir)
    assert source["feature_map_hash"] == run["feature_map_hash"] == data.feature_map.hash
    teacher_files = ["member_00_fnn_s0.pt", "member_01_fnn_s1.pt"]
    assert source["width_mult"] == 2.0 and source["members"] == teacher_files
    assert sorted(p.name for p in out.iterdir()) == ["member_00_fnn_s0.pt", "run.json"], "no cache left"

    # The teacher's recorded figures are the merged logit of its two members.
    teachers = [m.model for m in load_members([teacher / name for name in teacher_files])]
    merged = predict_logits(teachers, data, "test").mean(0)
    expected = binary_metrics(split_labels(data, "test"), merged)
    assert source["teacher_metrics"]["test"]["auc"] == pytest.approx(expected["auc"], abs=1e-6)

    # A normal checkpoint: weights_only loads it, it records where it came from, it is twice as wide.
    payload = torch.load(out / "member_00_fnn_s0.pt", weights_only=True)
    assert payload["train"]["distilled_from"]["m"] == 2
    assert payload["train"]["options"]["distill"]["alpha"] == 0.7
    student = load_member(out / "member_00_fnn_s0.pt")
    assert student.hparams["mlp_dims"] == [128, 64] and student.hparams["embed_dim"] == 8
    scored = binary_metrics(split_labels(data, "test"), predict_logits([student.model], data, "test")[0])
    assert run["members"][0]["test"]["auc"] == pytest.approx(scored["auc"], abs=1e-6)

    # ... and it exports: the member's ONNX logit equals torch's.
    repo = export_repository([out], tmp_path / "repo", config=ExportConfig(fused=False), data=prepared_dir)
    (onnx_file,) = repo.glob("member_*/1/model.onnx")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    feat_ids = np.asarray(data.ids("test")[:512], dtype=np.int64)
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"feat_ids": feat_ids}),
                       strict=True))
    with torch.inference_mode():
        expected_logit = student.model(torch.from_numpy(feat_ids)).reshape(-1).numpy()
    np.testing.assert_allclose(outputs["logit"].reshape(-1), expected_logit, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_alpha_zero_student_is_the_plain_member_bit_for_bit(prepared_dir: Path, teacher: Path,
                                                            tmp_path: Path) -> None:
    """Same seed, options and labels only: the student's batches are exactly a plain member's."""
    out = train_distilled(prepared_dir, "fnn", tmp_path / "s", teacher, alpha=0.0,
                          options=TrainOptions(**BRIEF))
    plain = load_member(teacher / "member_00_fnn_s0.pt").model.state_dict()
    student = load_member(out / "member_00_fnn_s0.pt").model.state_dict()
    assert plain.keys() == student.keys()
    for key in plain:
        assert torch.equal(plain[key], student[key]), key


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_soft_labels_pull_the_student_to_a_constant_teacher(prepared_dir: Path, tmp_path: Path) -> None:
    data = PreparedData(prepared_dir)
    rows = data.num_rows("train")
    base_rate = float(np.mean(data.labels("train")))

    def mean_prob(teacher_logit: float, alpha: float) -> float:
        cache = tmp_path / f"const{teacher_logit}.npy"
        np.save(cache, np.full(rows, teacher_logit, dtype=np.float32))
        distill = {"cache": str(cache), "rows": rows, "alpha": alpha, "temperature": 1.0}
        options = TrainOptions(epochs=1, evals_per_epoch=1, batch_size=1024, lr=1e-2, hparams=SMALL,
                               distill=distill)
        path = tmp_path / f"m_{teacher_logit}_{alpha}.pt"
        train_member(MemberJob(0, "fnn", 0, str(prepared_dir), str(path), options))
        logits = predict_logits([load_member(path).model], data, "test")[0]
        return float(np.mean(1 / (1 + np.exp(-logits))))

    labels_only = mean_prob(3.0, 0.0)
    assert abs(labels_only - base_rate) < 0.1
    assert mean_prob(3.0, 1.0) > 0.8 > labels_only, "a confident teacher raises every prediction"
    assert mean_prob(-3.0, 1.0) < 0.12 < labels_only, "and a doubtful one lowers them"


def test_loss_is_the_alpha_mix_of_teacher_and_label_terms(prepared_dir: Path, tmp_path: Path) -> None:
    from torch.nn.functional import binary_cross_entropy_with_logits as bce

    data = PreparedData(prepared_dir)
    teacher = np.linspace(-2, 2, 3000, dtype=np.float32)
    np.save(tmp_path / "t.npy", teacher)
    distill = {"cache": str(tmp_path / "t.npy"), "rows": 3000, "alpha": 0.25, "temperature": 2.0}
    options = TrainOptions(batch_size=500, train_limit=3000, distill=distill)
    fns = student_fit_kwargs(MemberJob(0, "fnn", 3, str(prepared_dir), "unused.pt", options), data)
    batches = list(fns["batches"](0))
    assert sum(len(f) for f, _ in batches) == 3000
    feat_ids, target = batches[0]
    # Each teacher logit names its row: every target holds that row's label and features.
    prob = target[:, 1].double().numpy()
    rows = np.rint((2.0 * np.log(prob / (1 - prob)) + 2) / (4 / 2999)).astype(int)
    assert len(set(rows)) == len(rows) and not np.array_equal(rows, np.sort(rows)), "shuffled rows"
    np.testing.assert_array_equal(feat_ids.numpy(), data.ids("train")[rows])
    np.testing.assert_array_equal(target[:, 0].numpy(), data.labels("train")[rows])
    logit = torch.randn(len(target))
    expected = 0.25 * 4.0 * bce(logit / 2.0, target[:, 1]) + 0.75 * bce(logit, target[:, 0])
    assert fns["loss_fn"](logit, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_calibration_recovers_a_known_scale_and_offset() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 0.05, 200_000)  # an under-confident teacher: its logits barely move
    y = (rng.random(z.size) < 1 / (1 + np.exp(-(20 * z - 1.1)))).astype(np.float64)
    scale, offset = fit_calibration(z, y)
    assert scale == pytest.approx(20, rel=0.05) and offset == pytest.approx(-1.1, abs=0.02)


def test_calibrated_targets_use_the_fitted_scale(prepared_dir: Path, tmp_path: Path) -> None:
    data = PreparedData(prepared_dir)
    np.save(tmp_path / "t.npy", np.full(1000, 0.1, dtype=np.float32))
    distill = {"cache": str(tmp_path / "t.npy"), "rows": 1000, "alpha": 1.0, "temperature": 1.0,
               "calibration": {"scale": 10.0, "offset": -0.5}}
    options = TrainOptions(batch_size=1000, train_limit=1000, distill=distill)
    fns = student_fit_kwargs(MemberJob(0, "fnn", 0, str(prepared_dir), "unused.pt", options), data)
    (_, target), = list(fns["batches"](0))
    np.testing.assert_allclose(target[:, 1].numpy(), 1 / (1 + np.exp(-0.5)), rtol=1e-6)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_shared_cache_serves_later_students(prepared_dir: Path, teacher: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    options = TrainOptions(**BRIEF)
    train_distilled(prepared_dir, "fnn", tmp_path / "s1", teacher, cache_dir=cache_dir, options=options)
    (cache,) = cache_dir.glob(f"{SHARED_PREFIX}m2_*.npy")
    before = cache.stat().st_mtime_ns
    logits = np.load(cache)
    assert logits.shape == (4096,) and logits.dtype == np.float32
    data = PreparedData(prepared_dir)
    teachers = [m.model for m in load_members(sorted(teacher.glob("member_*.pt")))]
    expected = predict_logits(teachers, data, "train", limit=4096).mean(0)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    train_distilled(prepared_dir, "fnn", tmp_path / "s2", teacher, cache_dir=cache_dir, width_mult=2,
                    calibrate=True, options=options)
    assert cache.stat().st_mtime_ns == before, "the second student reuses the teacher's logits"
    first, second = (load_run(tmp_path / s)["distilled_from"] for s in ("s1", "s2"))
    assert first["key"] == second["key"] and first["calibration"] is None
    valid = predict_logits(teachers, data, "valid").mean(0)
    fitted = fit_calibration(valid, split_labels(data, "valid"))
    assert [second["calibration"]["scale"], second["calibration"]["offset"]] == pytest.approx(list(fitted))
    valid_figures = second["teacher_metrics"]["valid"]
    assert valid_figures["calibrated_logloss"] <= valid_figures["logloss"]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_an_interrupted_student_run_resumes_with_its_teacher_cache(prepared_dir: Path, teacher: Path,
                                                                   tmp_path: Path, monkeypatch) -> None:
    import ttsrec.train.run as run_module

    real = run_module.train_member

    def failing(job, on_event=None):
        if job.index == 1:
            raise RuntimeError("power cut")
        return real(job, on_event=on_event)

    out = tmp_path / "students"
    options = TrainOptions(**BRIEF)
    monkeypatch.setattr(run_module, "train_member", failing)
    with pytest.raises(RuntimeError, match="power cut"):
        train_distilled(prepared_dir, "fnn*2", out, teacher, options=options)
    (cache,) = out.glob(f"{CACHE_PREFIX}m2_*.npy")
    first = (out / "member_00_fnn_s0.pt").read_bytes()
    monkeypatch.setattr(run_module, "train_member", real)
    with pytest.raises(UserError, match="--resume"):
        train_distilled(prepared_dir, "fnn*2", out, teacher, options=options)
    train_distilled(prepared_dir, "fnn*2", out, teacher, options=options, resume=True)
    run = load_run(out)
    assert run["status"] == "complete" and [m["index"] for m in run["members"]] == [0, 1]
    assert (out / "member_00_fnn_s0.pt").read_bytes() == first, "a finished student is not retrained"
    assert not cache.exists(), "the cache goes once the run is complete"
    # --force over a finished student run wipes it (its files are all run files) and starts again.
    train_distilled(prepared_dir, "fnn", out, teacher, options=options, force=True)
    assert [m["file"] for m in load_run(out)["members"]] == ["member_00_fnn_s0.pt"]


def _other_map_teacher(teacher: Path, root: Path) -> Path:
    """A run folder (no run.json) whose member was trained on another feature map."""
    member = load_member(teacher / "member_00_fnn_s0.pt")
    folder = root / "foreign"
    save_member(folder / "member_00_fnn_s0.pt", member.model, backbone="fnn", hparams=member.hparams, seed=0,
                vocab_sizes=member.vocab_sizes, feature_map_hash="sha256:0000000000000000")
    return folder


def _empty_run(teacher: Path, root: Path) -> Path:
    folder = root / "empty"
    folder.mkdir()
    run = load_run(teacher)
    (folder / "run.json").write_text(json.dumps({**run, "members": []}))
    return folder


def _other_hash_run(teacher: Path, root: Path) -> Path:
    folder = root / "other-hash"
    shutil.copytree(teacher, folder)
    run = load_run(folder)
    (folder / "run.json").write_text(json.dumps({**run, "feature_map_hash": "sha256:ffffffffffffffff"}))
    return folder


REFUSED = [
    (["--distill-from", "{foreign}"], "feature map sha256:0000000000000000"),
    (["--distill-from", "{other_hash}"], "feature map sha256:ffffffffffffffff"),
    (["--distill-from", "{empty}"], "holds no member checkpoints"),
    (["--distill-from", "{bare}"], "holds no member checkpoints"),
    (["--distill-from", "{missing}"], "not a run folder"),
    (["--distill-from", "{teacher}", "--distill-m", "3"], "--distill-m must be within 1..2"),
    (["--distill-from", "{teacher}", "--distill-m", "0"], "--distill-m must be within 1..2"),
    (["--distill-from", "{teacher}", "--distill-alpha", "1.5"], "--distill-alpha"),
    (["--distill-from", "{teacher}", "--distill-temperature", "0"], "--distill-temperature"),
    (["--distill-from", "{teacher}", "--width-mult", "0"], "--width-mult"),
    (["--distill-from", "{teacher}", "--group"], "--group"),
    (["--distill-from", "{teacher}", "--out", "{teacher}", "--force"], "is the teacher run"),
    (["--distill-m", "2"], "--distill-m needs --distill-from"),
    (["--width-mult", "2"], "--width-mult needs --distill-from"),
]


@pytest.mark.parametrize("args, message", REFUSED)
def test_cli_refuses_bad_teachers_in_one_line_exit_2(prepared_dir: Path, teacher: Path, tmp_path: Path,
                                                     capsys, monkeypatch, args: list[str],
                                                     message: str) -> None:
    (tmp_path / "bare").mkdir()
    folders = {"teacher": teacher, "foreign": _other_map_teacher(teacher, tmp_path),
               "other_hash": _other_hash_run(teacher, tmp_path), "empty": _empty_run(teacher, tmp_path),
               "bare": tmp_path / "bare", "missing": tmp_path / "missing"}
    args = [a.format(**folders) for a in args]
    out = tmp_path / "student"
    code, _, err = cli(train_main, "tts-train",
                       ["--data", prepared_dir, "--members", "fnn", "--out", out, *args, "-q"],
                       capsys, monkeypatch)
    assert code == 2, err
    assert message in one_error_line(err)
    assert not out.exists(), "nothing is written for a refused command"
    assert len(load_run(teacher)["members"]) == 2 and len(list(teacher.glob("member_*.pt"))) == 2


@pytest.mark.slow
def test_refusal_through_the_installed_command(prepared_dir: Path, teacher: Path, tmp_path: Path) -> None:
    """As a user runs it (a subprocess): exit 2 and one `error:` line."""
    proc = subprocess.run([str(Path(sys.executable).parent / "tts-train"), "--data", str(prepared_dir),
                           "--members", "fnn", "--out", str(tmp_path / "s"), "--distill-from", str(teacher),
                           "--distill-m", "9"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
                          stdin=subprocess.DEVNULL)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "--distill-m must be within 1..2" in lines[0]
