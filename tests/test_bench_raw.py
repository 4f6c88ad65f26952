"""`tts-bench --raw`: raw records to `raw_ensemble_mM` / `raw_fused_mM`, rows next to the id rows.

Fast (no server): planning and validation, the raw request pools (their ids are tts-data's, and the
client's raw layout of them encodes back to those ids), the HTTP raw body against tritonclient's, the
analysis and the tables (80 columns, an `inputs` column where rows differ). Slow (a real tritonserver,
python flavour): a `--raw` sweep gives rows for raw_fused and fused with inputs raw/ids over gRPC and
HTTP, and the raw model's served AUC equals the id model's on the same test rows.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from test_tables import assert_whole, headers, roofline
from ttsrec.bench import analysis, inputs
from ttsrec.bench.config import SweepConfig
from ttsrec.bench.loadgen import http_raw_infer_body
from ttsrec.bench.plan import Point, plan, raw_m_values
from ttsrec.bench.report import markdown, summary_tables, table
from ttsrec.bench.result import SweepResult
from ttsrec.bench.row import IDS, RAW, Row
from ttsrec.bench.runner import use_perf_analyzer
from ttsrec.bench.sweep import Sweep
from ttsrec.bench.targets import Target
from ttsrec.cli.bench import app
from ttsrec.data.feature_map import FeatureMap
from ttsrec.errors import UserError
from ttsrec.export.encode_graph import build_encode_graph
from ttsrec.repository import naming
from ttsrec.repository.manifest import FORMAT

IDS_MODELS = {"member_00", "member_01", "merge_mean_m1", "merge_mean_m2", "ensemble_m1", "ensemble_m2",
              "fused_m1", "fused_m2"}
RAW_MODELS = {"raw_encode", "raw_ensemble_m1", "raw_ensemble_m2", "raw_fused_m1", "raw_fused_m2"}


def cfg(modes: list[str], **fields: object) -> SweepConfig:
    return SweepConfig(modes=modes, **fields)  # type: ignore[arg-type]


# -- planning and validation (no server) -------------------------------------------------------------------


def test_raw_rows_follow_their_id_rows_for_ensemble_and_fused_only() -> None:
    points = plan(cfg(["fused", "ensemble", "inprocess"], raw=True, batches=[1, 8], m_list=[2]), None,
                  IDS_MODELS | RAW_MODELS, None)
    served = [p for p in points if p.mode in ("fused", "ensemble")]
    assert served[:4] == [Point("fused", 2, 1, 1), Point("fused", 2, 1, 1, RAW), Point("fused", 2, 8, 1),
                          Point("fused", 2, 8, 1, RAW)]
    assert [p.inputs for p in served] == [IDS, RAW] * 4
    assert {p.inputs for p in points if p.mode.startswith("inprocess")} == {IDS}
    assert str(served[1]) == "fused (raw) M=2 batch=1 c=1" and str(served[0]) == "fused M=2 batch=1 c=1"
    assert plan(cfg(["fused"], m_list=[2]), None, IDS_MODELS | RAW_MODELS, None) == [Point("fused", 2, 1, 1)]
    assert raw_m_values(RAW_MODELS | IDS_MODELS | {"raw_fused_mx"}) == {1, 2}


def test_raw_without_raw_models_is_one_line_naming_what_is_missing() -> None:
    with pytest.raises(UserError, match=r"^--raw: model_repository has no raw_ensemble_mM or raw_fused_mM "
                                        r"models \(export with tts-export --raw-inputs\)$"):
        plan(cfg(["fused"], raw=True), None, IDS_MODELS, None)
    partial = IDS_MODELS | {"raw_encode", "raw_ensemble_m1", "raw_fused_m1"}
    with pytest.raises(UserError, match=r"^--raw needs raw_fused_m2, which model_repository does not have "
                                        r"\(it has raw models for M = 1; tts-export --raw-inputs"):
        plan(cfg(["fused"], raw=True), None, partial, None)
    with pytest.raises(UserError, match="--raw needs raw_ensemble_m2, which h:1 does not have"):
        plan(cfg(["ensemble"], raw=True, url="h:1", m_list=[2]), IDS_MODELS | {"raw_fused_m2"}, None, None)
    plan(cfg(["fused"], raw=True, m_list=[1]), None, partial, None)  # M=1 has them


@pytest.mark.parametrize("fields, args, message", [
    ({"modes": ["inprocess"], "raw": True}, ["--mode", "inprocess", "--raw"],
     "--raw needs --mode ensemble or fused"),
    ({"modes": ["fused"], "raw": True, "engine": "perf_analyzer"}, ["--mode", "fused", "--raw", "--engine",
                                                                    "perf_analyzer"],
     "--raw: the perf_analyzer engine sends ids only"),
])
def test_config_rejects_raw_where_it_cannot_apply(fields: dict, args: list[str], message: str) -> None:
    with pytest.raises(UserError) as err:
        SweepConfig(**fields)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    with pytest.raises(UserError) as cli:
        app(args, standalone_mode=False)
    assert str(cli.value) == str(err.value)


def _fake_repository(root: Path, prepared_dir: Path, models: set[str]) -> Path:
    """Just what the bench reads before it starts a server: manifest, feature map, model folders."""
    root.mkdir()
    (root / naming.MANIFEST_FILE).write_text(json.dumps({"format": FORMAT, "precision": "fp32"}))
    shutil.copy(prepared_dir / naming.FEATURE_MAP_FILE, root / naming.FEATURE_MAP_FILE)
    for name in models:
        (root / name).mkdir()
        (root / name / "config.pbtxt").write_text("")
    return root


def test_cli_raw_against_a_repository_without_raw_models_exits_2(prepared_dir: Path, tmp_path: Path) -> None:
    repo = _fake_repository(tmp_path / "repo", prepared_dir, IDS_MODELS)
    cmd = [sys.executable, "-m", "ttsrec.cli.bench", "--repository", str(repo), "--raw", "--mode", "fused"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--raw:" in done.stderr and "has no raw_ensemble_mM or raw_fused_mM models" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_sweep_loads_raw_pools_of_the_same_rows(prepared_dir: Path, tmp_path: Path) -> None:
    """With --data the raw rows are its test rows read again, and the id rows send those rows' ids;
    without it, vocabulary rows and their ids. Planned before any server starts."""
    repo = _fake_repository(tmp_path / "repo", prepared_dir, IDS_MODELS | RAW_MODELS)
    fmap = FeatureMap.load(prepared_dir)
    sweep = Sweep(cfg(["fused"], raw=True, repository=repo, data=prepared_dir, eval_data=prepared_dir,
                      eval_rows=500))
    src = sweep.sources
    test_rows = min(inputs.POOL_ROWS, len(inputs.data_ids(prepared_dir, inputs.POOL_ROWS)[0]))
    assert src.raw_pool is not None and len(src.raw_pool) == test_rows
    np.testing.assert_array_equal(src.pool, inputs.data_ids(prepared_dir, inputs.POOL_ROWS)[0])
    np.testing.assert_array_equal(src.raw_pool.ids, src.pool)
    assert src.pool_for(RAW) is src.raw_pool.records and src.pool_for(IDS) is src.pool
    assert src.raw_eval is not None and len(src.raw_eval) == 500
    np.testing.assert_array_equal(src.raw_eval.labels, inputs.data_ids(prepared_dir, 500)[1])
    assert [p.inputs for p in sweep.plan(None, None)] == [IDS, RAW] * 2  # M = 1, 2

    vocabulary = Sweep(cfg(["ensemble"], raw=True, repository=repo, m_list=[1])).sources
    assert vocabulary.raw_pool is not None and vocabulary.raw_pool.labels is None
    np.testing.assert_array_equal(vocabulary.pool, vocabulary.raw_pool.ids)
    for j, f in enumerate(fmap.fields):  # the vocabulary rows reach every id of every field
        assert len(np.unique(vocabulary.pool[:, j])) == f.vocab_size or f.kind == "numeric", f.name

    gone = tmp_path / "data"
    shutil.copytree(prepared_dir, gone)
    summary = json.loads((gone / "summary.json").read_text())
    (gone / "summary.json").write_text(json.dumps({**summary, "inputs": [str(tmp_path / "gone.tsv")]}))
    with pytest.raises(UserError, match=r"^--raw: the test rows of .* cannot be read again as raw records: "
                                        r"raw input .*gone.tsv .* is gone$"):
        Sweep(cfg(["fused"], raw=True, repository=repo, data=gone))


def test_raw_requests_encode_back_to_the_pools_ids(prepared_dir: Path) -> None:
    """A batch laid out with the client's raw layout, fed to the encode graph, gives the pool's ids."""
    fmap = FeatureMap.load(prepared_dir)
    graph = build_encode_graph(fmap)
    fields = graph.inputs  # the client lays records out by the export's own raw-input description
    session = graph.session()
    for pool in (inputs.raw_test_records(fmap, prepared_dir, 300), inputs.vocabulary_records(fmap, 300)):
        (batch,) = inputs.batches(pool.records, 64, count=1)
        feed = {}
        for (name, datatype, payload), f in zip(inputs.raw_tensors(fields, batch), fields, strict=True):
            assert name == f.name and datatype == f.datatype
            if datatype == "BYTES":
                from tritonclient.utils import deserialize_bytes_tensor

                values = [v.decode("utf-8") for v in deserialize_bytes_tensor(payload)]
                feed[name] = np.array(values, dtype=object).reshape(-1, 1)
            else:
                feed[name] = np.frombuffer(payload, "<f4" if datatype == "FP32" else "<f8").reshape(-1, 1)
        (ids,) = session.run([naming.FEAT_IDS], feed)
        np.testing.assert_array_equal(ids, pool.ids[:64], err_msg=pool.source)


def test_http_raw_body_is_what_tritonclient_sends() -> None:
    import tritonclient.http as httpclient

    from ttsrec.client.raw import serialize_strings

    (strings,) = serialize_strings([["a", "日本", ""]])
    numbers = np.array([1.5, np.nan, -2.0], "<f4").tobytes()
    tensors = [("C1", "BYTES", strings), ("I1", "FP32", numbers)]
    body, head = http_raw_infer_body(tensors, 3, ["logit", "prob"], timeout_s=2.0)
    length = int(head["Inference-Header-Content-Length"])
    assert body[length:] == strings + numbers
    header = json.loads(body[:length])
    assert [(i["name"], i["shape"], i["datatype"], i["parameters"]["binary_data_size"])
            for i in header["inputs"]] == [("C1", [3, 1], "BYTES", len(strings)), ("I1", [3, 1], "FP32", 12)]
    assert header["parameters"]["timeout"] == 2_000_000

    c1 = httpclient.InferInput("C1", [3, 1], "BYTES")
    c1.set_data_from_numpy(np.array([["a"], ["日本"], [""]], dtype=object), binary_data=True)
    i1 = httpclient.InferInput("I1", [3, 1], "FP32")
    i1.set_data_from_numpy(np.frombuffer(numbers, "<f4").reshape(3, 1), binary_data=True)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("logit", "prob")]
    theirs, their_length = httpclient.InferenceServerClient.generate_request_body([c1, i1], outputs)
    assert body[length:] == theirs[their_length:]  # the binary part byte for byte
    their_header = json.loads(theirs[:their_length])
    assert [i["parameters"] for i in header["inputs"]] == [i["parameters"] for i in their_header["inputs"]]


def test_raw_rows_never_go_to_perf_analyzer() -> None:
    target = Target(mode="fused", m=1, model="raw_fused_m1", make_load=lambda b: None,  # type: ignore
                    url="h:1", inputs=RAW)
    assert not use_perf_analyzer("perf_analyzer", target, Point("fused", 1, 1, 1, RAW))
    target.inputs = IDS
    assert use_perf_analyzer("perf_analyzer", target, Point("fused", 1, 1, 1))


# -- analysis and tables -----------------------------------------------------------------------------------


def _rows() -> list[Row]:
    rows = []
    for m in (1, 8):
        for kind, speed in ((IDS, 1.0), (RAW, 0.92)):
            for mode in ("ensemble", "fused"):
                tput = speed * 123_456.7 / m
                p50 = 256e6 / tput
                model = (f"raw_{mode}_m{m}" if kind == RAW else f"{mode}_m{m}")
                rows.append(Row(mode=mode, m=m, batch=256, concurrency=4, throughput=tput, avg_us=p50 * 1.1,
                                p50_us=p50, p90_us=p50 * 1.5, p95_us=p50 * 1.8, p99_us=p50 * 2.3,
                                stable=True, client_cpu=12.3, server_cpu=187.6, model=model, inputs=kind,
                                server_queue_us=1234.0, server_compute_infer_us=p50 * 0.6,
                                repository="out/raw_inputs/repo"))
    for m in (1, 8):  # the in-process floor (ids)
        rows.append(Row(mode="inprocess_fused", m=m, batch=256, concurrency=4, throughput=130_000.0 / m,
                        avg_us=1.0, p50_us=1.0, p90_us=1.0, p95_us=1.0, p99_us=1.0, stable=True,
                        client_cpu=190.0, model=f"fused_m{m}", repository="out/raw_inputs/repo"))
    for r in rows:
        analysis.set_roof_fractions(r, 2_460_000 * r.m, roofline())
    return rows


def test_analysis_compares_raw_with_raw_and_with_its_id_row() -> None:
    rows = _rows()
    raw = analysis.raw_vs_ids(rows)
    assert [(e["mode"], e["m"], e["model"], e["ids_model"]) for e in raw] == [
        ("ensemble", 1, "raw_ensemble_m1", "ensemble_m1"), ("fused", 1, "raw_fused_m1", "fused_m1"),
        ("ensemble", 8, "raw_ensemble_m8", "ensemble_m8"), ("fused", 8, "raw_fused_m8", "fused_m8")]
    assert all(e["ratio"] == pytest.approx(0.92) for e in raw)
    eff = analysis.scaling_efficiency(rows)  # raw M=8 against raw M=1, ids against ids: both exactly 1
    assert sorted((e["mode"], e["inputs"]) for e in eff) == [
        ("ensemble", IDS), ("ensemble", RAW), ("fused", IDS), ("fused", RAW), ("inprocess_fused", IDS)]
    assert all(e["efficiency"] == pytest.approx(1.0) for e in eff)
    ratio = analysis.serving_ratio(rows)  # ids rows only
    assert {e["best_mode"] for e in ratio} == {"ensemble"} and all(e["ratio"] < 1 for e in ratio)


def _result(rows: list[Row]) -> SweepResult:
    accuracy = [{"m": m, "precision": "fp32", "model": f"{prefix}ensemble_m{m}", "rows": 10_048,
                 "auc": 0.6288, "logloss": 0.5123, "repository": "out/raw_inputs/repo", "inputs": kind}
                for m in (1, 8) for prefix, kind in (("", IDS), ("raw_", RAW))]
    return SweepResult(config=SweepConfig(modes=["ensemble", "fused", "inprocess"], raw=True), rows=rows,
                       shard_rows=[], roofline=roofline(), accuracy=accuracy, manifest=None, notes={},
                       weight_bytes={1: 9_900_000, 8: 79_200_000},
                       metadata={"machine": {"cpu_model": "test cpu", "usable_cores": 2}})


def test_tables_say_inputs_where_rows_differ_and_keep_80_columns() -> None:
    rows = _rows()
    t = table(rows)
    assert headers(t)[:2] == ["mode", "inputs"]
    assert [row[1] for row in t.rows[:4]] == [IDS, IDS, RAW, RAW]
    assert_whole(t)
    assert "inputs" not in headers(table([r for r in rows if r.inputs == IDS]))
    assert "inputs" not in headers(table(rows[:1]))
    several = rows + [dataclasses.replace(r, precision="int8", throughput=r.throughput * 10,
                                          p99_us=r.p99_us * 100) for r in rows]  # + prec, wide numbers
    assert headers(table(several))[:3] == ["mode", "inputs", "prec"]
    assert_whole(table(several))
    tables = summary_tables(_result(rows))
    titles = [t.title.split(":")[0] for t in tables]
    assert "raw records vs ids, fp32" in titles
    for t in tables:
        assert_whole(t)
    raw = next(t for t in tables if t.title.startswith("raw records vs ids"))
    assert headers(raw) == ["mode", "M", "b", "c", "ids/s", "raw/s", "ratio", "ids p50", "raw p50"]
    assert raw.rows[1][:3] == ["fused", "1", "256"] and raw.rows[1][6] == "0.92"
    roof = next(t for t in tables if t.title.startswith("compute roof"))
    assert headers(roof)[:2] == ["mode", "inputs"]
    text = markdown(_result(rows))
    assert "| mode | inputs | precision | engine |" in text and "Raw records vs ids" in text
    assert "| fused | fp32 | 8 | 256 | 4 |" in text


# -- a real server -----------------------------------------------------------------------------------------

SHORT = "-p 250 --max-trials 4 -s 50 --warmup-request-count 5"


@pytest.fixture(scope="module")
def raw_repo(member_checkpoints: list[Path], prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from serve_fixtures import export

    return export(member_checkpoints[:2], tmp_path_factory.mktemp("bench_raw") / "repo", prepared_dir,
                  m_list=[2], raw_inputs=True, fused_instance_count=1)


def bench(args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ttsrec.cli.bench", *args.split()]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=400)


@pytest.mark.slow
def test_raw_sweep_measures_raw_fused_next_to_fused_and_serves_the_same_auc(
        raw_repo: Path, prepared_dir: Path, tmp_path: Path) -> None:
    done = bench(f"--repository {raw_repo} --raw --mode fused --m-list 2 -b 8 --concurrency-range 2 {SHORT} "
                 f"--data {prepared_dir} --eval-data {prepared_dir} --eval-rows 1000 -f r.csv --json r.json "
                 "--markdown r.md", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pl.read_csv(tmp_path / "r.csv")
    assert list(zip(rows["mode"], rows["inputs"], rows["model"], strict=True)) == [
        ("fused", "ids", "fused_m2"), ("fused", "raw", "raw_fused_m2")]
    assert (rows["Inferences/Second"] > 0).all() and (rows["Server Compute Infer"] > 0).all()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["config"]["raw"] is True and "the same rows' ids" in report["notes"]["raw_records"]
    assert report["notes"]["targets"]["raw_fused_m2_c2"]["raw_inputs"] == 39
    (versus,) = report["summary"]["raw_vs_ids"]
    assert versus["model"] == "raw_fused_m2" and versus["ids_model"] == "fused_m2" and versus["ratio"] > 0
    accuracy = {a["inputs"]: a for a in report["accuracy"]}
    assert set(accuracy) == {"ids", "raw"} and accuracy["raw"]["model"] == "raw_ensemble_m2"
    assert accuracy["raw"]["rows"] == accuracy["ids"]["rows"] == 1000
    assert accuracy["raw"]["auc"] == accuracy["ids"]["auc"], "raw and id models serve identical outputs"
    assert accuracy["raw"]["logloss"] == accuracy["ids"]["logloss"]
    assert "raw records vs ids" in done.stdout + done.stderr
    print(f"ids {rows['Inferences/Second'][0]:,.0f} rows/s, raw {rows['Inferences/Second'][1]:,.0f} rows/s, "
          f"AUC {accuracy['raw']['auc']:.4f} both")


@pytest.mark.slow
def test_raw_sweep_over_http_against_a_running_server(raw_repo: Path, tmp_path: Path) -> None:
    from ttsrec.serve import TritonServer

    with TritonServer(raw_repo) as server:
        done = bench(f"-u {server.http_url} -i http --repository {raw_repo} --raw --mode ensemble,fused "
                     f"-b 4 {SHORT} -f r.csv", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        rows = pl.read_csv(tmp_path / "r.csv")
        assert list(zip(rows["model"], rows["inputs"], strict=True)) == [
            ("ensemble_m2", "ids"), ("raw_ensemble_m2", "raw"), ("fused_m2", "ids"), ("raw_fused_m2", "raw")]
        assert (rows["Inferences/Second"] > 0).all() and (rows["protocol"] == "http").all()
        assert server.is_alive()
