"""`tts-train`: options, run dirs, independent/parallel/group training, early stopping, interrupts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from train_fixtures import QUICK, SMALL, cli, one_error_line, one_thread  # noqa: F401
from ttsrec.cli.train import main as train_main
from ttsrec.data.prepared import PreparedData
from ttsrec.ensemble.metrics import binary_metrics
from ttsrec.ensemble.runs import load_run
from ttsrec.errors import UserError
from ttsrec.models.checkpoint import load_member, load_members
from ttsrec.train import TrainOptions, train_members
from ttsrec.train.fit import eval_points
from ttsrec.train.metrics import predict_logits, split_labels
from ttsrec.train.options import parse_hparams
from ttsrec.train.runfile import prepare_out
from ttsrec.utils.common import parse_int_list


def test_parse_hparams_takes_json_values_and_bare_words() -> None:
    got = parse_hparams(["embed_dim=8", "mlp_dims=[64, 32]", "dcnv2.num_cross_layers=2", "name=abc"])
    assert got == {"embed_dim": 8, "mlp_dims": [64, 32], "dcnv2.num_cross_layers": 2, "name": "abc"}
    with pytest.raises(UserError, match="key=value"):
        parse_hparams(["embed_dim"])
    assert parse_int_list("0, 1,2", "--seeds", positive=False) == [0, 1, 2]
    with pytest.raises(UserError, match="--seeds"):
        parse_int_list("0,x", "--seeds", positive=False)


def test_hparams_apply_to_the_backbones_that_have_them() -> None:
    options = TrainOptions(hparams={"embed_dim": 8, "mlp_dims": [16], "dcnv2.num_cross_layers": 1})
    assert options.hparams_for("fm") == {"embed_dim": 8}
    assert options.hparams_for("fnn") == {"embed_dim": 8, "mlp_dims": [16]}
    assert options.hparams_for("dcnv2") == {"embed_dim": 8, "mlp_dims": [16], "num_cross_layers": 1}
    options.check_hparams(["fm", "fnn"])
    with pytest.raises(UserError, match="unknown hparam"):
        TrainOptions(hparams={"mlp_dimz": [16]}).check_hparams(["fnn", "dcnv2"])


def test_options_are_checked() -> None:
    for bad in ({"epochs": 0}, {"lr": 0.0}, {"batch_size": 0}, {"patience": -1}, {"train_limit": 0}):
        with pytest.raises(UserError, match=next(iter(bad))):
            TrainOptions(**bad)


def test_eval_points_spread_over_the_epoch_and_end_it() -> None:
    assert eval_points(10, 1) == {10}
    assert eval_points(10, 2) == {5, 10}
    assert eval_points(3, 8) == {1, 2, 3}


def test_metrics_match_hand_computed_values() -> None:
    labels = np.array([0, 0, 1, 1], dtype=np.float32)
    got = binary_metrics(labels, np.array([-2.0, 1.0, 0.0, 3.0]))
    probs = 1 / (1 + np.exp(-np.array([-2.0, 1.0, 0.0, 3.0])))
    expected_ll = -np.mean(np.log([1 - probs[0], 1 - probs[1], probs[2], probs[3]]))
    assert got["auc"] == pytest.approx(0.75)
    assert got["logloss"] == pytest.approx(expected_ll)
    with pytest.raises(UserError, match="both clicks"):
        binary_metrics(np.ones(3), np.zeros(3))


def test_run_dir_needs_force_and_wipes_only_run_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "member_00_fnn_s0.pt").write_bytes(b"x")
    with pytest.raises(UserError, match="--force"):
        prepare_out(run, force=False, resume=False)
    prepare_out(run, force=True, resume=False)
    assert not any(run.iterdir())
    (run / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="refusing to wipe"):
        prepare_out(run, force=True, resume=False)
    assert (run / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("args, message", [
    (["--members", "nope*2"], "unknown backbone"),
    (["--members", "fnn*2", "--hparam", "mlp_dimz=[8]"], "unknown hparam"),
    (["--members", "fnn*2", "--seeds", "1,2,3"], "3 seeds"),
    (["--members", "fnn", "--epochs", "0"], "epochs"),
    (["--members", "fnn", "--jobs", "0"], "--jobs"),
    (["--members", "fnn+rankmixer", "--hparam", "rankmixer.token_dim=16"], "multiple of the field count"),
])
def test_cli_bad_input_is_one_line_and_exit_2(prepared_dir: Path, tmp_path: Path, capsys, monkeypatch,
                                              args: list[str], message: str) -> None:
    code, _, err = cli(train_main, "tts-train", ["--data", prepared_dir, "--out", tmp_path / "run", *args],
                       capsys, monkeypatch)
    assert code == 2
    assert message in one_error_line(err)
    assert not (tmp_path / "run" / "run.json").exists()


def test_cli_missing_data_dir(tmp_path: Path, capsys, monkeypatch) -> None:
    code, _, err = cli(train_main, "tts-train", ["--data", tmp_path / "nope", "--members", "fnn", "--out",
                                                 tmp_path / "run"], capsys, monkeypatch)
    assert code == 2
    assert "not a prepared dataset" in one_error_line(err)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_cli_trains_members_and_writes_run_json(prepared_dir: Path, tmp_path: Path, capsys,
                                                monkeypatch) -> None:
    out = tmp_path / "run"
    code, stdout, err = cli(train_main, "tts-train", [
        "--data", prepared_dir, "--members", "fnn+deepfm", "--out", out, "--epochs", "1", "--batch-size",
        "1024", "--hparam", "embed_dim=8", "--hparam", "mlp_dims=[32]", "--train-limit", "8192",
        "--lr", "0.01", "-q"],
        capsys, monkeypatch)
    assert code == 0, err
    run = load_run(out)
    assert run["status"] == "complete" and run["members_spec"] == "fnn+deepfm" and not run["group"]
    assert [m["file"] for m in run["members"]] == ["member_00_fnn_s0.pt", "member_01_deepfm_s0.pt"]
    for record in run["members"]:
        member = load_member(out / record["file"])
        assert member.hparams["mlp_dims"] == [32] and member.hparams["embed_dim"] == 8
        assert member.feature_map_hash == run["feature_map_hash"]
        assert member.metrics["test"]["auc"] == pytest.approx(record["test"]["auc"])
        assert 0.5 < record["test"]["auc"] < 1
        assert record["samples_per_s"] > 0 and record["macs_per_sample"] > 0
        assert record["steps"] == 8
    assert ["01", "deepfm", "0"] in [line.split()[:3] for line in stdout.splitlines()]  # the members table
    assert "test AUC" in stdout


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_early_stopping_keeps_the_best_state(prepared_dir: Path, tmp_path: Path) -> None:
    """A big learning rate on 2k rows overfits fast; the checkpoint must hold the best-valid state."""
    out = train_members(prepared_dir, "fnn", tmp_path / "run", epochs=12, lr=0.02, batch_size=256,
                        patience=2, evals_per_epoch=1, train_limit=2048, hparams=SMALL)
    record = load_run(out)["members"][0]
    train = torch.load(out / record["file"], weights_only=True)["train"]
    aucs = [point["valid_auc"] for point in train["history"]]
    assert train["stopped_early"] and len(aucs) < 12, "the scenario must stop early"
    assert aucs[-1] < max(aucs), "the scenario must end past its best point"
    assert train["best"]["valid_auc"] == max(aucs) == record["best"]["valid_auc"]
    data = PreparedData(prepared_dir)
    member = load_member(out / record["file"])
    valid = binary_metrics(split_labels(data, "valid"), predict_logits([member.model], data, "valid")[0])
    assert valid["auc"] == pytest.approx(max(aucs), abs=1e-6)
    assert record["valid"]["auc"] == pytest.approx(max(aucs), abs=1e-6)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_group_training_saves_members_at_the_merged_best(prepared_dir: Path, tmp_path: Path) -> None:
    out = train_members(prepared_dir, "fnn+dcnv2", tmp_path / "group", group=True, epochs=2, **QUICK)
    run = load_run(out)
    assert run["group"] and run["status"] == "complete" and len(run["members"]) == 2
    members = load_members([out / m["file"] for m in run["members"]])
    data = PreparedData(prepared_dir)
    merged = predict_logits([m.model for m in members], data, "test").mean(0)
    got = binary_metrics(split_labels(data, "test"), merged)
    assert got["auc"] == pytest.approx(run["group_metrics"]["test"]["auc"], abs=1e-6)
    assert run["group_metrics"]["test"]["auc"] > 0.55


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_interrupted_run_keeps_finished_members_and_resumes(prepared_dir: Path, tmp_path: Path,
                                                            monkeypatch) -> None:
    import ttsrec.train.run as run_module

    real = run_module.train_member

    def failing(job, on_event=None):
        if job.index == 1:
            raise RuntimeError("power cut")
        return real(job, on_event=on_event)

    out = tmp_path / "run"
    options = {"epochs": 1, "train_limit": 4096, **QUICK}
    monkeypatch.setattr(run_module, "train_member", failing)
    with pytest.raises(RuntimeError, match="power cut"):
        train_members(prepared_dir, "fnn*3", out, **options)
    run = load_run(out)
    assert run["status"] == "failed" and "power cut" in run["error"]
    assert [m["file"] for m in run["members"]] == ["member_00_fnn_s0.pt"]
    assert sorted(p.name for p in out.iterdir()) == ["member_00_fnn_s0.pt", "run.json"]
    first = (out / "member_00_fnn_s0.pt").read_bytes()
    load_member(out / "member_00_fnn_s0.pt")

    monkeypatch.setattr(run_module, "train_member", real)
    with pytest.raises(UserError, match="--resume"):
        train_members(prepared_dir, "fnn*3", out, **options)
    with pytest.raises(UserError, match="differs"):
        train_members(prepared_dir, "fnn*4", out, resume=True, **options)
    train_members(prepared_dir, "fnn*3", out, resume=True, **options)
    run = load_run(out)
    assert run["status"] == "complete" and [m["index"] for m in run["members"]] == [0, 1, 2]
    assert (out / "member_00_fnn_s0.pt").read_bytes() == first, "a finished member is not retrained"


@pytest.mark.slow
def test_parallel_jobs_train_each_member_in_its_own_process(prepared_dir: Path, tmp_path: Path) -> None:
    """Two spawned workers; each member must come back recorded, saved and reproducible from its file."""
    out = train_members(prepared_dir, "fnn*2", tmp_path / "parallel", jobs=2, epochs=1, train_limit=4096,
                        **QUICK)
    run = load_run(out)
    assert run["status"] == "complete" and run["jobs"] == 2
    assert [(m["index"], m["seed"]) for m in run["members"]] == [(0, 0), (1, 1)]
    data = PreparedData(prepared_dir)
    labels = split_labels(data, "test")
    aucs = []
    for record in run["members"]:
        member = load_member(out / record["file"])
        aucs.append(binary_metrics(labels, predict_logits([member.model], data, "test")[0])["auc"])
        assert aucs[-1] == pytest.approx(record["test"]["auc"], abs=1e-6)
    assert aucs[0] != aucs[1], "different seeds train different members"
    assert json.loads((out / "run.json").read_text())["options"]["train_limit"] == 4096


def test_cli_ctrl_c_exits_130_and_points_to_resume(prepared_dir: Path, tmp_path: Path, capsys,
                                                   monkeypatch) -> None:
    import ttsrec.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ttsrec.train, "train_members", interrupted)
    code, _, err = cli(train_main, "tts-train", ["--data", prepared_dir, "--members", "fnn", "--out",
                                                 tmp_path / "run"], capsys, monkeypatch)
    assert code == 130
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err


def test_convergence_is_the_default_and_the_epoch_cap_a_safety_net() -> None:
    options = TrainOptions()
    assert options.epochs >= 20 and options.patience >= 4 and options.evals_per_epoch == 2


def _scripted_fit(prepared_dir: Path, aucs: list[float], monkeypatch, **option_fields):
    """`fit` on real batches whose validation checks answer `aucs` in turn (one check per epoch)."""
    import ttsrec.train.fit as fit_module
    from ttsrec.models import build_model

    answers = iter(aucs)
    monkeypatch.setattr(fit_module, "_validate", lambda *args: {
        "epoch": args[5], "step": args[6], "train_loss": 0.0, "valid_auc": next(answers),
        "valid_logloss": 0.5})
    data = PreparedData(prepared_dir)
    torch.manual_seed(0)
    model = build_model("fnn", data.feature_map, **SMALL)
    options = TrainOptions(batch_size=512, train_limit=512, evals_per_epoch=1, **option_fields)
    return fit_module.fit([model], data, options, seed=0)


@pytest.mark.usefixtures("one_thread")
def test_early_stopping_outlasts_a_plateau_then_stops_and_says_why(prepared_dir: Path, monkeypatch) -> None:
    """Four flat checks (the old patience 1 stopped at the second) and then a gain: default patience waits
    for it, then stops after five checks without one."""
    plateau = [0.60, 0.70, 0.70, 0.69, 0.70, 0.70, 0.72, 0.71, 0.72, 0.70, 0.71, 0.71, 0.99]
    result = _scripted_fit(prepared_dir, plateau, monkeypatch)
    assert result.best["valid_auc"] == 0.72 and result.best["epoch"] == 7.0
    assert len(result.history) == 12 and result.stopped_early
    assert result.stop_reason == "patience" and not result.still_improving
    assert result.to_dict()["stop_reason"] == "patience"


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("aucs", "reason"), [([0.6, 0.61, 0.62], "epoch_cap_improving"),
                                               ([0.6, 0.62, 0.61], "epoch_cap")])
def test_a_run_that_reaches_the_cap_says_whether_it_was_still_improving(
        prepared_dir: Path, monkeypatch, aucs: list[float], reason: str) -> None:
    result = _scripted_fit(prepared_dir, aucs, monkeypatch, epochs=3)
    assert result.stop_reason == reason and not result.stopped_early
    assert result.still_improving == (reason == "epoch_cap_improving")


@pytest.mark.usefixtures("one_thread")
def test_the_run_files_and_the_summary_say_why_each_member_stopped(prepared_dir: Path, tmp_path: Path,
                                                                    capsys, monkeypatch) -> None:
    out = tmp_path / "run"
    code, stdout, err = cli(train_main, "tts-train", [
        "--data", prepared_dir, "--members", "fnn*2", "--out", out, "--epochs", "1", "--batch-size", "1024",
        "--train-limit", "2048", "--hparam", "embed_dim=8", "--hparam", "mlp_dims=[16]",
        "--embedding-init", "normal", "-q"], capsys, monkeypatch)
    assert code == 0, err
    run = load_run(out)
    for record in run["members"]:
        assert record["stop_reason"] in ("epoch_cap", "epoch_cap_improving")
        assert record["hparams"]["embedding_init"] == "normal"
        checkpoint = torch.load(out / record["file"], weights_only=True)
        assert checkpoint["train"]["stop_reason"] == record["stop_reason"]
        assert checkpoint["hparams"]["embedding_init"] == "normal"
        assert load_member(out / record["file"]).hparams["embedding_init"] == "normal"
    assert run["options"]["hparams"]["embedding_init"] == "normal"
    assert "stop" in stdout and ("cap" in stdout)


@pytest.mark.parametrize("flags", [["--embedding-init", "uniform"], ["--hparam", "embedding_init=zeros"]])
def test_an_unknown_embedding_init_is_one_error_line(prepared_dir: Path, tmp_path: Path, capsys, monkeypatch,
                                                     flags: list[str]) -> None:
    code, _, err = cli(train_main, "tts-train", ["--data", prepared_dir, "--members", "fnn", "--out",
                                                 tmp_path / "run", "--epochs", "1", *flags],
                       capsys, monkeypatch)
    assert code == 2
    assert "unknown embedding init" in one_error_line(err) and not (tmp_path / "run").exists()


def test_the_peer_check_says_one_line_when_the_peer_library_is_missing(monkeypatch) -> None:
    """DeepCTR-Torch is optional: without it the benchmark refuses with one `error:` line and exit 2."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "peer_check.py"
    blocker = "import sys; sys.modules['deepctr_torch'] = None; sys.argv = sys.argv[1:]; "
    code = f"{blocker}import runpy; runpy.run_path({str(script)!r}, run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", code, str(script), "/nonexistent"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr + proc.stdout)
    assert "peer library is not installed" in line


def test_synth_max_vocab_makes_a_small_vocabulary_dataset(tmp_path: Path) -> None:
    """The dataset on which a vocabulary-dependent embedding init shows (docs/training.md, issue 24)."""
    from ttsrec.data.synth import write_synthetic_criteo

    path = write_synthetic_criteo(tmp_path / "small.tsv", rows=3000, seed=1, max_vocab=5)
    columns = list(zip(*(line.split("\t") for line in path.read_text().splitlines()), strict=True))
    categorical = [set(c) - {""} for c in columns[14:]]
    assert len(categorical) == 26 and max(len(c) for c in categorical) == 5
    with pytest.raises(UserError, match="--max-vocab"):
        write_synthetic_criteo(tmp_path / "bad.tsv", rows=10, max_vocab=1)
