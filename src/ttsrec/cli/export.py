"""`tts-export CHECKPOINTS... --out model_repository`: members -> ONNX -> a Triton model repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ttsrec.cli.common import console, run_app
from ttsrec.errors import UserError
from ttsrec.utils.common import parse_int_list

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.command()
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
             "running the same model.onnx (the server bundled with nvidia-pytriton).")] = "python",
    m_list: Annotated[str | None, typer.Option(
        "--m-list", help="Ensemble sizes, e.g. 1,2,4,8,16 (default: those, capped at the number of "
        "members).")] = None,
    max_batch_size: Annotated[int, typer.Option(help="max_batch_size of every model.")] = 4096,
    instance_count: Annotated[int, typer.Option(help="Instances per member / merge / fused model.")] = 1,
    instance_kind: Annotated[str, typer.Option(help="cpu or gpu (KIND_CPU / KIND_GPU).")] = "cpu",
    dynamic_batching: Annotated[bool, typer.Option(
        "--dynamic-batching/--no-dynamic-batching", help="Dynamic batching on members, merges, fused graphs "
        "(never on ensembles).")] = True,
    max_queue_delay_us: Annotated[int, typer.Option(
        help="Dynamic batcher delay; 0 batches only what queued while an instance was busy.")] = 0,
    intra_op_threads: Annotated[int, typer.Option(
        help="onnxruntime intra-op threads per member / merge instance.")] = 1,
    fused_intra_op_threads: Annotated[int | None, typer.Option(
        help="Intra-op threads of the fused graphs (default: --intra-op-threads).")] = None,
    fused_instance_count: Annotated[int, typer.Option(
        help="Instances of each fused graph (it does all M members' work: one instance uses one core).")] = 2,
    queue_max: Annotated[int, typer.Option(
        help="Requests each member / fused graph may queue; one more is rejected at once "
        "(0: unbounded, no queue policy: the bundled Triton 2.51 stalls requests 500 ms with one).")] = 0,
    queue_timeout_ms: Annotated[int, typer.Option(
        help="A request queued longer is rejected (0: never); a client's own deadline may "
        "shorten it.")] = 0,
    precision: Annotated[str, typer.Option(
        help="fp32, fp16 (GPU: CUDA/TensorRT EPs; on CPU it only halves bytes) or int8 (onnxruntime "
        "quantization, the CPU path). fp16/int8 need --data: the accuracy gate scores its "
        "test split.")] = "fp32",
    fp16: Annotated[bool, typer.Option("--fp16", help="Same as --precision fp16.")] = False,
    merge: Annotated[str, typer.Option(
        help="mean (the paper: equal weights), weighted (non-negative weights fitted by validation logloss) "
        "or selection (greedy ensemble selection with replacement); fitted per M on the validation split "
        "and written into the merge steps and fused graphs.")] = "mean",
    int8_mode: Annotated[str, typer.Option(
        help="qdq: static, per-channel weights, activations calibrated on train rows (no batch coupling). "
        "dynamic: activation scales per call from the whole batch.")] = "qdq",
    gate_rows: Annotated[int | None, typer.Option(
        help="Test rows the accuracy gate scores (default: the whole test split).")] = None,
    max_auc_drop: Annotated[float, typer.Option(
        help="Largest |test AUC change| vs fp32 allowed for any member or fused graph.")] = 5e-4,
    fused: Annotated[bool, typer.Option("--fused/--no-fused", help="Also write fused_mM graphs.")] = True,
    shards: Annotated[int, typer.Option(
        help="Split members round-robin into K shard repositories (out/shard_XX/ with a shard_sum "
        "ensemble each).")] = 1,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
) -> None:
    """Export members into a Triton model repository whose ensembles average their logits."""
    from ttsrec.export import export_repository
    from ttsrec.repository.manifest import read_manifest

    path = export_repository(
        checkpoints, out, backend=backend, m_list=parse_m_list(m_list), max_batch_size=max_batch_size,
        instance_count=instance_count, instance_kind=instance_kind, dynamic_batching=dynamic_batching,
        max_queue_delay_us=max_queue_delay_us, queue_max=queue_max, queue_timeout_ms=queue_timeout_ms,
        intra_op_threads=intra_op_threads, fused_intra_op_threads=fused_intra_op_threads,
        fused_instance_count=fused_instance_count, precision=precision, fp16=fp16, int8_mode=int8_mode,
        gate_rows=gate_rows, max_auc_drop=max_auc_drop, merge=merge, fused=fused, shards=shards, force=force,
        data=data, console=console)
    repos = [path] if shards == 1 else sorted(path.glob("shard_*"))
    manifests = [read_manifest(r) for r in repos]
    console.print(_summary(manifests))
    if "gate" in manifests[0]:
        console.print(_gate_table(manifests))
    fit = manifests[0].get("merge_fit")
    if fit:
        for m, f in fit["per_m"].items():
            weights = ", ".join(f"{w:.3f}" for w in f["weights"])
            console.print(f"{fit['kind']} merge M={m}: validation AUC {f['valid_auc']:.5f} (mean "
                          f"{f['valid_auc_mean']:.5f}), weights {weights}")
    console.print(f"[green]wrote[/] {path} ({backend} flavour, {manifests[0]['precision']})")


def parse_m_list(text: str | None) -> list[int] | None:
    """`"1,2,4"` -> [1, 2, 4]; anything else (an empty list included) is a one-line error."""
    if text is None:
        return None
    values = parse_int_list(text, "--m-list")
    if not values:
        raise UserError("--m-list is empty")
    return values


def _summary(manifests: list[dict]) -> Table:
    table = Table(title="exported members (parity: max |onnx - torch| on the gate's batches)")
    table.add_column("member", no_wrap=True)
    for column in ("seed", "params", "MACs/row", "ONNX MB", "max |diff|"):
        table.add_column(column, justify="right", no_wrap=True)
    for manifest in manifests:
        for m in manifest["members"]:
            table.add_row(m["name"], str(m["seed"]), f"{m['cost'].get('params', 0):,}",
                          f"{m['cost'].get('macs_per_sample', 0):,}", f"{m['onnx']['bytes'] / 1e6:.1f}",
                          f"{m['parity']['max_abs_diff']:.1e}")
    return table


def _gate_table(manifests: list[dict]) -> Table:
    gate = manifests[0]["gate"]
    table = Table(title=f"accuracy gate: {manifests[0]['precision']} vs fp32 on {gate['rows']:,} test rows "
                        f"(limit |ΔAUC| <= {gate['max_auc_drop']:g})")
    table.add_column("graph", no_wrap=True)
    for column in ("AUC fp32", "AUC", "ΔAUC", "Δlogloss", "max |drift|", "mean |drift|"):
        table.add_column(column, justify="right", no_wrap=True)
    for manifest in manifests:
        for entry in manifest["members"] + manifest["fused"]:
            g = entry["gate"]
            table.add_row(entry["name"], f"{g['auc_fp32']:.5f}", f"{g['auc']:.5f}", f"{g['auc_change']:+.1e}",
                          f"{g['logloss_change']:+.1e}", f"{g['max_logit_drift']:.1e}",
                          f"{g['mean_logit_drift']:.1e}")
    return table


def main() -> None:
    run_app(app)
