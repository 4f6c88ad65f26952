"""`tts-export CHECKPOINTS... --out model_repository`: members -> ONNX -> a Triton model repository."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ttsrec.cli.common import console, reporter, run_app
from ttsrec.errors import UserError
from ttsrec.export.writer import SWITCHES, ExportConfig
from ttsrec.repository.config import Serving
from ttsrec.utils.common import parse_int_list
from ttsrec.utils.report import Column, Table, table

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _with_switches(command: Callable[..., None]) -> Callable[..., None]:
    """One `--x/--no-x` option per artefact switch (`ttsrec.export.writer.SWITCHES`), declared before
    `--force`; typer hands them to `**switches`."""
    signature = inspect.signature(command, eval_str=True)
    params = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    options = [inspect.Parameter(s.field, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                 default=getattr(ExportConfig, s.field),
                                 annotation=Annotated[bool, typer.Option(s.flags, help=s.help)])
               for s in SWITCHES]
    command.__signature__ = signature.replace(parameters=[*params[:-1], *options, params[-1]])  # type: ignore[attr-defined]
    return command


@app.command()
@_with_switches
def export(
    checkpoints: Annotated[list[Path], typer.Argument(
        help="Member checkpoints (.pt), or tts-train run folders (all their member_*.pt).",
        show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Repository folder to write.")] = Path(
        "model_repository"),
    data: Annotated[Path | None, typer.Option(
        help="Prepared data folder (or its feature_map.json); found through the run's run.json if omitted. "
             "Its test rows feed the parity gate.")] = None,
    backend: Annotated[str, typer.Option(
        help="onnxruntime: Triton's ORT backend (NGC container, GPU). python: python-backend model.py "
             "running the same model.onnx (the server bundled with nvidia-pytriton).")] = Serving.backend,
    m_list: Annotated[str | None, typer.Option(
        "--m-list", help="Ensemble sizes, e.g. 1,2,4,8,16 (default: those, capped at the number of "
        "members).")] = None,
    max_batch_size: Annotated[int, typer.Option(
        help="max_batch_size of every model.")] = Serving.max_batch_size,
    instance_count: Annotated[int, typer.Option(
        help="Instances per member / merge / fused model.")] = Serving.instance_count,
    instance_kind: Annotated[str, typer.Option(
        help="cpu or gpu (KIND_CPU / KIND_GPU).")] = Serving.instance_kind,
    dynamic_batching: Annotated[bool, typer.Option(
        "--dynamic-batching/--no-dynamic-batching", help="Dynamic batching on members, merges, fused graphs "
        "(never on ensembles).")] = Serving.dynamic_batching,
    max_queue_delay_us: Annotated[int, typer.Option(
        help="Dynamic batcher delay; 0 batches only what queued while an instance was "
        "busy.")] = Serving.max_queue_delay_us,
    intra_op_threads: Annotated[int, typer.Option(
        help="onnxruntime intra-op threads per member / merge instance.")] = Serving.intra_op_threads,
    fused_intra_op_threads: Annotated[int | None, typer.Option(
        help="Intra-op threads of the fused graphs (default: "
        "--intra-op-threads).")] = Serving.fused_intra_op_threads,
    fused_instance_count: Annotated[int, typer.Option(
        help="Instances of each fused graph (it does all M members' work: one instance uses one "
        "core).")] = Serving.fused_instance_count,
    queue_max: Annotated[int, typer.Option(
        help="Requests each member / fused graph may queue; one more is rejected at once "
        "(0: unbounded, no queue policy: the bundled Triton 2.51 stalls requests 500 ms with "
        "one).")] = Serving.queue_max,
    queue_timeout_ms: Annotated[int, typer.Option(
        help="A request queued longer is rejected (0: never); a client's own deadline may "
        "shorten it.")] = Serving.queue_timeout_ms,
    precision: Annotated[str, typer.Option(
        help="fp32, fp16 (GPU: CUDA/TensorRT EPs; on CPU it only halves bytes) or int8 (onnxruntime "
        "quantization, the CPU path). fp16/int8 need --data: the accuracy gate scores its "
        "test split.")] = ExportConfig.precision,
    fp16: Annotated[bool, typer.Option("--fp16", help="Same as --precision fp16.")] = False,
    merge: Annotated[str, typer.Option(
        help="mean (the paper: equal weights), weighted (non-negative weights fitted by validation logloss) "
        "or selection (greedy ensemble selection with replacement); fitted per M on the validation split "
        "and written into the merge steps and fused graphs.")] = ExportConfig.merge,
    int8_mode: Annotated[str, typer.Option(
        help="qdq: static, per-channel weights, activations calibrated on train rows (no batch coupling). "
        "dynamic: activation scales per call from the whole batch.")] = ExportConfig.int8_mode,
    gate_rows: Annotated[int | None, typer.Option(
        help="Test rows the accuracy gate scores (default: the whole test split).")] = ExportConfig.gate_rows,
    max_auc_drop: Annotated[float, typer.Option(
        help="Largest |test AUC change| vs fp32 allowed for any member or fused "
        "graph.")] = ExportConfig.max_auc_drop,
    fused: Annotated[bool, typer.Option(
        "--fused/--no-fused", help="Also write fused_mM graphs.")] = ExportConfig.fused,
    shards: Annotated[int, typer.Option(
        help="Split members round-robin into K shard repositories (out/shard_XX/ with a shard_sum "
        "ensemble each).")] = ExportConfig.shards,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    into: Annotated[Path | None, typer.Option(
        "--into", help="Add the members to this served repository as its next generation instead "
        "(tts-deploy add: the repository's own export options; roll out with tts-deploy rollout).")] = None,
    **switches: Any,
) -> None:
    """Export members into a Triton model repository whose ensembles average their logits."""
    from ttsrec.export import export_repository
    from ttsrec.repository.manifest import read_manifest

    if into is not None:
        from ttsrec.deploy.add import add_generation

        added = add_generation(checkpoints, into, data=data, reporter=reporter)
        console.print(f"[green]added[/] generation {added.generation} to {into} ({added.members_written} "
                      f"member(s) written, {added.members_kept} kept); `tts-deploy rollout {into} --to "
                      f"{added.generation}` makes it live")
        return

    if fp16:  # the old spelling of --precision fp16
        if precision not in ("fp32", "fp16"):
            raise UserError(f"--fp16 contradicts --precision {precision}")
        precision = "fp16"
    serving = Serving(backend=backend, max_batch_size=max_batch_size, instance_count=instance_count,
                      instance_kind=instance_kind, dynamic_batching=dynamic_batching,
                      max_queue_delay_us=max_queue_delay_us, queue_max=queue_max,
                      queue_timeout_ms=queue_timeout_ms, intra_op_threads=intra_op_threads,
                      fused_intra_op_threads=fused_intra_op_threads,
                      fused_instance_count=fused_instance_count)
    config = ExportConfig(m_list=parse_m_list(m_list), precision=precision, int8_mode=int8_mode,
                          gate_rows=gate_rows, max_auc_drop=max_auc_drop, merge=merge, fused=fused,
                          shards=shards, **switches)
    path = export_repository(checkpoints, out, serving, config, data=data, force=force, reporter=reporter)
    repos = [path] if shards == 1 else sorted(path.glob("shard_*"))
    _report([read_manifest(r) for r in repos])
    console.print(f"[green]wrote[/] {path} ({backend} flavour, {precision})")


def _report(manifests: list[dict]) -> None:
    """The members, the accuracy gate, the cascades and the fitted merges, as exported."""
    reporter.table(_summary(manifests))
    if "gate" in manifests[0]:
        reporter.table(_gate_table(manifests))
    if manifests[0].get("cascades"):
        reporter.table(_cascade_table(manifests[0]))
    fit = manifests[0].get("merge_fit")
    if fit:
        for m, f in fit["per_m"].items():
            weights = ", ".join(f"{w:.3f}" for w in f["weights"])
            console.print(f"{fit['kind']} merge M={m}: validation AUC {f['valid_auc']:.5f} (mean "
                          f"{f['valid_auc_mean']:.5f}), weights {weights}")


def _cascade_table(manifest: dict) -> Table:
    entries = manifest["cascades"]
    out = table(f"cascades: members per row and test AUC on {entries[0]['gate']['rows']:,} test rows "
                "(equal to the in-process cascade)", ["model", "rule"],
                ["members/row", "AUC", "AUC full", "ΔAUC"])
    for c in entries:
        g = c["gate"]
        out.add_row(c["name"], c["rule"], f"{c['test_members_per_row']:.2f} of {c['m']}", f"{g['auc']:.5f}",
                    f"{g['auc_full']:.5f}", f"{g['auc_change']:+.1e}")
    return out


def parse_m_list(text: str | None) -> list[int] | None:
    """`"1,2,4"` -> [1, 2, 4]; anything else (an empty list included) is a one-line error."""
    if text is None:
        return None
    values = parse_int_list(text, "--m-list")
    if not values:
        raise UserError("--m-list is empty")
    return values


def _summary(manifests: list[dict]) -> Table:
    table = Table(f"exported members, {manifests[0]['precision']} (max |diff|: onnx vs torch, gate batches)",
                  [Column("member", numeric=False),
                              *map(Column, ("seed", "params", "MACs/row", "ONNX MB", "max |diff|"))])
    for manifest in manifests:
        for m in manifest["members"]:
            table.add_row(m["name"], m["seed"], f"{m['cost'].get('params', 0):,}",
                          f"{m['cost'].get('macs_per_sample', 0):,}", f"{m['onnx']['bytes'] / 1e6:.1f}",
                          f"{m['parity']['max_abs_diff']:.1e}")
    return table


def _gate_table(manifests: list[dict]) -> Table:
    """Test AUC of each graph in fp32 and in the export's precision; the mean drift is in the manifest."""
    gate, precision = manifests[0]["gate"], manifests[0]["precision"]
    table = Table(f"accuracy gate: {precision} vs fp32 on {gate['rows']:,} test rows (limit |ΔAUC| <= "
                  f"{gate['max_auc_drop']:g})",
                  [Column("graph", numeric=False),
                   *map(Column, ("AUC fp32", f"AUC {precision}", "ΔAUC", "Δlogloss", "max drift"))],
                  caption=f"max drift: largest |{precision} logit - fp32 logit| over the rows")
    for manifest in manifests:
        for entry in manifest["members"] + manifest["fused"]:
            g = entry["gate"]
            table.add_row(entry["name"], f"{g['auc_fp32']:.5f}", f"{g['auc']:.5f}", f"{g['auc_change']:+.1e}",
                          f"{g['logloss_change']:+.1e}", f"{g['max_logit_drift']:.1e}")
    return table


def main() -> None:
    run_app(app)
