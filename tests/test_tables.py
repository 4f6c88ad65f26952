"""The tables a person reads keep every number whole at 80 columns (a CI log, a pipe) and say the precision.

Each real table (tts-eval's AUC per M, tts-export's accuracy gate, tts-bench's rows and derived figures)
is built from small fabricated results shaped like the real ones and drawn by the CLI's `RichReporter`
into a console that is not a terminal, 80 columns wide.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from ttsrec.bench import analysis
from ttsrec.bench.config import SweepConfig
from ttsrec.bench.outputs import OutputPaths, finish, report_budget
from ttsrec.bench.report import markdown as bench_markdown
from ttsrec.bench.report import summary_tables, table
from ttsrec.bench.result import SweepResult, combine
from ttsrec.bench.roofline import Roofline
from ttsrec.bench.row import Row
from ttsrec.cli.export import _gate_table, _summary
from ttsrec.cli.reporter import RichReporter, render_table
from ttsrec.errors import UserError
from ttsrec.evaluate.report import markdown as eval_markdown
from ttsrec.evaluate.report import tables as eval_tables
from ttsrec.utils.report import SILENT, Column, Reporter, Table

MIB = 1 << 20
WIDTH = 80


def draw(t: Table, width: int = WIDTH, terminal: bool = False) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=terminal, color_system=None)
    RichReporter(console).table(t)
    return console.file.getvalue()  # type: ignore[attr-defined]


def assert_whole(t: Table, width: int = WIDTH) -> str:
    """Every numeric cell appears in full, nothing is cut, and the table fits `width` without widening."""
    assert t.rows, f"{t.title}: no rows to check"
    for terminal in (False, True):
        text = draw(t, width, terminal)
        assert "…" not in text, text
        widest = max(len(line.rstrip()) for line in text.splitlines())
        assert widest <= width, f"{t.title!r} is {widest} columns wide:\n{text}"
        lines = text.splitlines()
        for row in t.rows:
            cells = [cell for cell, column in zip(row, t.columns, strict=True) if column.numeric and cell]
            # the row's numbers appear whole, in order, on one line of the drawing
            assert any(_in_order(cells, line) for line in lines), f"{row} is not whole in:\n{text}"
    return draw(t, width)


def _in_order(cells: list[str], line: str) -> bool:
    at = 0
    for cell in cells:
        at = line.find(cell, at)
        if at < 0:
            return False
        at += len(cell)
    return True


def headers(t: Table) -> list[str]:
    return [c.header for c in t.columns]


def precision_column(t: Table) -> list[str]:
    return [row[headers(t).index("prec")] for row in t.rows]


# -- tts-eval -----------------------------------------------------------------------------------------


def eval_result(loose_bf16: bool = False) -> dict:
    """Three groups as `make demo` evaluates them (dcnv2*8 fp32, dcnv2*2 bf16, a four-backbone mix),
    every merge and a soup per M; `loose_bf16`: the bf16 members given as loose checkpoints, so the
    parameter-scaled models are trained in the default fp32 beside bf16 merges."""
    groups, rows = [], []
    specs = [("homogeneous", ["dcnv2"] * 8, "fp32", "tts"),
             ("homogeneous_bf16", ["dcnv2"] * 2, "bf16", "tts"),
             ("heterogeneous", ["wukong", "rankmixer", "dcnv2", "finalmlp"], "fp32", "tts_balanced")]
    for name, backbones, precision, kind in specs:
        members = [{"name": f"member_{i:02d}_{b}_s{i}", "backbone": b, "seed": i, "precision": precision,
                    "auc": 0.712345 + i * 1e-3, "logloss": 0.512345, "macs_per_sample": 1_234_567,
                    "params": 12_345_678} for i, b in enumerate(backbones)]
        ms = [m for m in (1, 2, 4, 8) if m <= len(members)]
        for m in ms:
            for merge in ("mean", "weighted", "selection"):
                rows.append({"group": name, "kind": kind, "merge": merge, "M": m, "auc": 0.7123456 + m * 1e-3,
                             "auc_std": 0.0012345, "logloss": 0.4876543, "auc_gain": 0.0123456 * (m > 1),
                             "logloss_gain": -0.0012, "js_mean": 0.0123456 if m > 1 else None,
                             "macs_per_sample": m * 1_234_567.0, "precision": precision,
                             "best_member_auc": 0.713})
            if m > 1:
                rows.append({"group": name, "kind": "soup", "merge": "weights", "M": m, "auc": 0.6987654,
                             "auc_std": 0.0, "logloss": 0.5012345, "auc_gain": -0.0135791,
                             "logloss_gain": 0.0012, "js_mean": None, "macs_per_sample": 1_234_567.0,
                             "precision": precision})
        if kind == "tts_balanced":
            rows.append({"group": name, "kind": "best_backbone", "merge": "mean", "M": 2, "auc": 0.7201234,
                         "auc_std": 0.0, "logloss": 0.48, "auc_gain": 0.0034567, "logloss_gain": -0.001,
                         "js_mean": 0.00456, "macs_per_sample": 2_469_134.0, "precision": precision})
        param_precision = "fp32" if loose_bf16 else precision
        for scaled in ("param_depth", "param_width", "param_module_depth", "param_module_width"):
            rows.append({"group": name, "kind": scaled, "merge": "none", "M": 2, "auc": 0.7156789,
                         "auc_std": 0.0, "logloss": 0.49, "auc_gain": 0.0045678, "logloss_gain": -0.002,
                         "js_mean": None, "macs_per_sample": 2_469_000.0, "precision": param_precision,
                         "params": 23_456_789, "embedding_params": 12_000_000})
        groups.append({"name": name, "homogeneous": kind == "tts", "joint": False, "series": "group runs",
                       "precision": precision, "m_list": ms, "members": members,
                       "reference": {"kind": "mean_single" if kind == "tts" else "best_single",
                                     "backbone": backbones[0], "auc": 0.7123456, "logloss": 0.51},
                       "js_mean": 0.0123456, "gain": {"M": ms[-1], "auc": 0.0123456, "logloss": -0.0012}})
    data = {"dir": "out/demo/data", "test_rows": 10_000, "feature_map_hash": "sha256:0123456789abcdef"}
    return {"data": data,
            "options": {"subsets": 10}, "groups": groups, "rows": rows}


def test_eval_tables_keep_auc_and_say_the_precision() -> None:
    result = eval_result()
    tables = eval_tables(result)
    assert [t.title.split(" ")[0] for t in tables] == ["homogeneous", "homogeneous_bf16", "heterogeneous"]
    for t, precision in zip(tables, ("fp32", "bf16", "fp32"), strict=True):
        text = assert_whole(t)
        assert f", {precision}):" in t.title and "prec" not in headers(t)  # one precision: in the title
        assert "0.7143" in text and "…" not in text and t.title.split(" ")[0] in text
    kinds = {row[0] for row in tables[2].rows}
    assert {"mix mean", "mix selection", "best mean", "soup", "stacked modules"} <= kinds


def test_eval_table_gets_a_precision_column_where_its_rows_differ() -> None:
    tables = eval_tables(eval_result(loose_bf16=True))
    bf16 = tables[1]
    assert headers(bf16)[0] == "prec" and set(precision_column(bf16)) == {"bf16", "fp32"}
    assert_whole(bf16)


def test_eval_markdown_keeps_its_tables() -> None:
    report = eval_markdown(eval_result())
    assert ("| kind | merge | M | AUC | ± std | logloss | AUC gain | logloss gain | JS (bits) "
            "| MACs/sample |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n") in report
    assert ("| merge M members | mean | 8 | 0.7203 | 0.0012 | 0.4877 | +0.0123 | -0.0012 | 0.0123 "
            "| 9.88M |") in report
    assert "| member_00_dcnv2_s0 | dcnv2 | 0 | fp32 | 0.7123 | 0.5123 | 1.23M | 12,345,678 |" in report
    assert "| M | mean | weighted | selection | best of the M alone (chosen on validation) |" in report
    assert "| homogeneous | 2 | 0.7143, 2.47M, ≤24,691,356 |" in report  # parameter scaling, merge M cell


def cascade_result() -> dict:
    """`eval_result` evaluated with `--cascade` (the 8-member group's cascades on synthetic logits shaped like
    seeds: a shared signal plus member noise) and a distilled 2x student given next to it."""
    import numpy as np

    from ttsrec.evaluate.cascade import evaluate_cascades

    result = eval_result()
    rng = np.random.default_rng(0)
    signal = rng.normal(size=6000)
    labels = (rng.random(6000) < 1 / (1 + np.exp(-signal))).astype(np.float64)
    logits = (signal + rng.normal(scale=0.6, size=(8, 6000))).astype(np.float32)
    result["cascade"] = evaluate_cascades(logits[:, :3000], labels[:3000], logits[:, 3000:], labels[3000:],
                                          group="homogeneous", backbones=["dcnv2"] * 8,
                                          member_macs=[1_234_567] * 8, points=20)
    student = {**result["groups"][0], "name": "student_w2", "m_list": [1],
               "members": result["groups"][0]["members"][:1],
               "distilled": {"run": "runs/dcnv2x8", "m": 8, "width_mult": 2.0, "alpha": 0.5,
                             "temperature": 1}}
    result["groups"].append(student)
    result["rows"].append({"group": "student_w2", "kind": "tts", "merge": "mean", "M": 1, "auc": 0.7187654,
                           "auc_std": 0.0, "logloss": 0.4912345, "auc_gain": 0.0, "logloss_gain": 0.0,
                           "js_mean": None, "macs_per_sample": 2_555_555.0, "precision": "fp32"})
    return result


def test_eval_cascade_and_frontier_tables_keep_their_numbers() -> None:
    result = cascade_result()
    tables = eval_tables(result)
    cascade = titled(tables, "homogeneous: cascaded merging")
    text = assert_whole(cascade)
    assert headers(cascade)[4:] == ["members", "MACs/row", "AUC", "Δ mean", "logloss"]
    whats = [row[0] for row in cascade.rows]
    assert whats.count("cascade") == 4 and whats.count("full") == 2 and "M-merge" in whats
    assert "+0.00000" in text and "-0.00000" not in text  # the full mean against itself
    frontier = titled(tables, "the compute-AUC frontier")
    assert_whole(frontier)
    methods = {(row[0], row[1]) for row in frontier.rows}
    assert ("student_w2", "distilled 2x (of M=8)") in methods and ("homogeneous", "merge mean") in methods
    assert {m for g, m in methods if m.startswith("cascade")} == {
        f"cascade {merge}/{order}/{rule}" for merge, order, rule in
        {(r["merge"], r["order"], r["rule"]) for r in result["cascade"] if r["kept"]}}
    assert "distilled 2x" in titled(tables, "student_w2").title
    report = eval_markdown(result)
    assert "### Cascaded merging (`--cascade`)" in report and "## The compute-AUC frontier" in report
    assert "| group | method | M | members | MACs/row | AUC | logloss | front |" in report


# -- tts-export -----------------------------------------------------------------------------------------


def manifests(precision: str = "int8") -> list[dict]:
    def gate(k: int) -> dict:
        return {"auc_fp32": 0.7123456, "auc": 0.7119876 - k * 1e-5, "auc_change": -3.58e-4,
                "logloss_change": 2.1e-4, "max_logit_drift": 3.14e-2, "mean_logit_drift": 4.5e-3}

    members = [{"name": f"member_{i:02d}_rankmixer_s{i}", "seed": i,
                "cost": {"params": 12_345_678, "macs_per_sample": 1_234_567},
                "onnx": {"bytes": 49_382_712}, "parity": {"max_abs_diff": 2.4e-7}, "gate": gate(i)}
               for i in range(8)]
    fused = [{"name": f"fused_m{m}", "gate": gate(m)} for m in (1, 2, 4, 8, 16)]
    return [{"precision": precision, "members": members, "fused": fused,
             "gate": {"rows": 1_000_000, "max_auc_drop": 2e-3}}]


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_export_gate_keeps_both_aucs(precision: str) -> None:
    t = _gate_table(manifests(precision))
    text = assert_whole(t)
    assert headers(t)[1:3] == ["AUC fp32", f"AUC {precision}"]
    assert "0.71235" in text and "0.71199" in text and "-3.6e-04" in text


def test_export_summary_says_the_precision() -> None:
    t = _summary(manifests())
    assert_whole(t)
    assert "int8" in t.title


# -- tts-bench ------------------------------------------------------------------------------------------


def roofline() -> Roofline:
    return Roofline(cache_bytes=32 * MIB, threads=2, read_bw_memory=12.3e9, memory_buffer_bytes=256 * MIB,
                    read_bw_cached={4 * MIB: 45.6e9, 16 * MIB: 30.1e9},
                    ort_macs={"fp32": 98.7e9, "int8": 345.6e9},
                    torch_macs={"fp32": 123.4e9, "bf16": 567.8e9}, seconds=4.2,
                    notes={"memory_buffer": "256 MiB, under twice the cache: memory rate overstated"})


def sweep(precision: str) -> SweepResult:
    """`tts-bench --repository fp32,int8 --m-list 1,4,8 -b 1,64 --eval-data ...` as `make demo` runs it."""
    repository = f"out/demo/model_repository_{precision}"
    speed = 2.5 if precision == "int8" else 1.0
    rows = []
    for mode in ("ensemble", "fused", "inprocess_members", "inprocess_fused"):
        for m in (1, 4, 8):
            for batch in (1, 64):
                tput = speed * 123_456.7 * batch / (64 * m)
                p50 = 1e6 / tput * batch
                row = Row(mode=mode, m=m, batch=batch, concurrency=1, throughput=tput, avg_us=p50 * 1.1,
                          p50_us=p50, p90_us=p50 * 1.5, p95_us=p50 * 1.8, p99_us=p50 * 2.3, stable=m != 8,
                          client_cpu=87.6, server_cpu=None if mode.startswith("inprocess") else 112.3,
                          precision=precision, repository=repository, model=f"{mode}_m{m}",
                          engine="perf_analyzer" if mode == "fused" and batch == 1 else "native",
                          server_queue_us=12.0 if mode in ("ensemble", "fused") else 0.0,
                          server_compute_infer_us=p50 * 0.6 if mode in ("ensemble", "fused") else 0.0)
                analysis.set_roof_fractions(row, 2_345_678 * m, roofline())
                rows.append(row)
    accuracy = [{"m": m, "precision": precision, "model": f"ensemble_m{m}", "rows": 20_000,
                 "auc": 0.7123456 + m * 1e-3 - (precision == "int8") * 1e-4, "logloss": 0.4876543,
                 "repository": repository} for m in (1, 4, 8)]
    return SweepResult(config=SweepConfig(modes=["ensemble", "fused", "inprocess"]), rows=rows, shard_rows=[],
                       roofline=roofline(), accuracy=accuracy, manifest=None, notes={},
                       weight_bytes={1: 3 * MIB, 4: 12 * MIB, 8: 24 * MIB} if precision == "fp32"
                       else {1: MIB, 4: 3 * MIB, 8: 6 * MIB},
                       metadata={"machine": {"cpu_model": "test cpu", "usable_cores": 2}})


def both() -> SweepResult:
    return combine([sweep("fp32"), sweep("int8")])


def titled(tables: list[Table], start: str) -> Table:
    return next(t for t in tables if t.title.startswith(start))


def test_bench_rows_table_has_a_precision_column_and_whole_numbers() -> None:
    result = both()
    t = table(result.rows, ["fp32", "int8"])
    text = assert_whole(t)
    assert set(precision_column(t)) == {"fp32", "int8"}
    assert "fused (pa)" in text and "inprocess_members" in text and "*" in text  # perf_analyzer, unstable
    one = table(sweep("fp32").rows)
    assert "prec" not in headers(one) and "tts-bench, fp32:" in one.title
    assert_whole(one)


def test_bench_summary_tables_keep_numbers_and_precision() -> None:
    tables = summary_tables(both())
    assert [t.title.split(":")[0] for t in tables] == [
        "scaling efficiency", "best Triton mode", "roofline measured in this run (before the rows)",
        "batch-1 floor", "compute roof", "what each M buys"]
    for t in tables:
        assert_whole(t)
    for start in ("scaling efficiency", "best Triton mode", "batch-1 floor", "compute roof",
                  "what each M buys"):
        t = titled(tables, start)
        assert "prec" in headers(t) and set(precision_column(t)) == {"fp32", "int8"}, start
        assert len({tuple(row) for row in t.rows}) == len(t.rows), f"{start}: rows look duplicated"
    roof = titled(tables, "roofline")
    assert "memory rate overstated" in roof.caption and "note" not in " ".join(r[0] for r in roof.rows)


def test_bench_summary_of_one_precision_says_it_in_the_titles() -> None:
    tables = summary_tables(sweep("int8"))
    for t in tables:
        assert_whole(t)
        assert "prec" not in headers(t)
    assert titled(tables, "scaling efficiency, int8:") and titled(tables, "best Triton mode, int8:")


def test_bench_markdown_says_the_precision_of_every_figure() -> None:
    text = bench_markdown(both())
    assert "| mode | precision | batch | conc | M | efficiency |" in text
    assert "| M | precision | batch | conc | best mode | ratio |" in text
    assert "| ensemble | int8 | 1 | 1 | 4 | " in text and "| ensemble | fp32 | 1 | 1 | 4 | " in text
    assert "| note: memory_buffer | 256 MiB, under twice the cache: memory rate overstated |" in text


class Recorder(Reporter):
    def __init__(self) -> None:
        self.said: list[str] = []
        self.tables: list[Table] = []

    def note(self, text: str, tone: str = "info") -> None:  # type: ignore[override]
        self.said.append(text)

    def table(self, table: Table) -> None:
        self.tables.append(table)


def test_finish_writes_what_the_cli_writes(tmp_path) -> None:
    """The Python API gets tts-bench's files and closing report: summary tables, `wrote` lines, budget."""
    result = both()
    paths = OutputPaths(csv=tmp_path / "r.csv", json=tmp_path / "r.json", plot=tmp_path / "r.png",
                        markdown=tmp_path / "r.md", frontier=tmp_path / "f.png")
    recorder = Recorder()
    written = finish(result, paths, recorder, budget_ms=1.0)
    assert written == [paths.csv, paths.json, paths.plot, paths.markdown, paths.frontier]
    assert all(p.stat().st_size > 0 for p in written)
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG" == (tmp_path / "f.png").read_bytes()[:4]
    assert [t.title for t in recorder.tables] == [t.title for t in summary_tables(result)]
    assert recorder.said[:5] == [f"wrote {p}" for p in written]
    budget = recorder.said[5]
    assert budget.startswith("budget 1 ms, batch 1, concurrency 1: ensemble M=1 int8 (AUC 0.7132, p99 ")
    assert budget.endswith(" infer/s) from out/demo/model_repository_int8")
    assert report_budget(result, 1e-6, SILENT) == []
    with pytest.raises(UserError, match="is a directory"):
        OutputPaths(json=tmp_path).check()


# -- the drawing side ---------------------------------------------------------------------------------


def test_a_table_too_wide_for_a_log_is_drawn_wider_not_cut() -> None:
    t = Table("wide", [*(Column(f"c{k}") for k in range(12))])
    t.add_row(*(f"{k:,}" * 1 + "123456" for k in range(12)))
    text = draw(t)
    assert "…" not in text and all(cell in text for cell in t.rows[0])
    assert max(len(line) for line in text.splitlines()) > WIDTH


def test_columns_close_up_before_anything_is_cut() -> None:
    """Three spaces between columns, else two, else one; text wraps only when one space is not enough."""
    t = Table("gaps", [Column("mode", numeric=False), *(Column(f"n{k}") for k in range(7))])
    t.add_row("inprocess_members", *(["12,345,678"] * 7))
    for width, gap in ((200, 3), (108, 3), (107, 2), (101, 2), (94, 1), (93, 1)):
        rendered, minimum = render_table(t, width)
        assert rendered.padding == {3: (0, 1, 0, 1), 2: (0, 1, 0, 0), 1: (0, 0, 0, 0)}[gap], width
        assert minimum == 16 + 7 * 10 + 7 * gap  # the text column may fold down to 16 characters
    assert "inprocess_members" in draw(t, 94)
    assert_whole(t, 93)
