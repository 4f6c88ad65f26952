"""`tts-export CHECKPOINTS... --out model_repository`: members -> ONNX -> a Triton model repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ttsrec.cli.common import console, run_app
from ttsrec.errors import UserError

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
    fp16: Annotated[bool, typer.Option(
        "--fp16", help="Half-precision members (int64 ids in, fp32 logits out); needs the prepared data "
        "for the AUC check.")] = False,
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
        max_queue_delay_us=max_queue_delay_us, intra_op_threads=intra_op_threads,
        fused_intra_op_threads=fused_intra_op_threads, fused_instance_count=fused_instance_count,
        fp16=fp16, fused=fused,
        shards=shards, force=force, data=data, console=console)
    repos = [path] if shards == 1 else sorted(path.glob("shard_*"))
    console.print(_summary([read_manifest(r) for r in repos]))
    console.print(f"[green]wrote[/] {path} ({backend} flavour)")


def parse_m_list(text: str | None) -> list[int] | None:
    """`"1,2,4"` -> [1, 2, 4]; anything else is a one-line error."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise UserError(f"--m-list must be comma-separated integers like 1,2,4,8, got {text!r}") from None
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


def main() -> None:
    run_app(app)
