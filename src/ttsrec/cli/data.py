"""`tts-data`: synthesise Criteo-format data and prepare raw logs into model-ready splits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ttsrec.cli.common import console, reporter, run_app
from ttsrec.utils.report import Column, Table

app = typer.Typer(
    help="Data: synthetic Criteo TSV, dataset presets, preparation into id splits.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="TSV file to write (Criteo format).")],
    rows: Annotated[int, typer.Option("--rows", help="Number of rows.")] = 200_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same file).")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing file that synth did not write.")
    ] = False,
    max_vocab: Annotated[
        int | None,
        typer.Option("--max-vocab", help="Cap every categorical field's vocabulary (e.g. 12: a "
                     "small-vocabulary dataset of about 800 ids after prepare)."),
    ] = None,
    tags: Annotated[
        int, typer.Option("--tags", help="Add a last column `tags`: up to N '|'-separated tags per row that "
                          "carry signal, a list field; writes OUT.spec.yaml to prepare it with.")
    ] = 0,
) -> None:
    """Write synthetic rows in the exact Criteo TSV format (label, I1..I13, C1..C26)."""
    from ttsrec.data.synth import check_synth_args, write_synthetic_criteo

    check_synth_args(out, rows, seed, force, max_vocab)
    columns = (TextColumn("synthesising"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("rows", total=rows)
        write_synthetic_criteo(
            out, rows=rows, seed=seed, on_rows=lambda n: bar.advance(task, n), force=force,
            max_vocab=max_vocab, tags=tags,
        )
    console.print(f"wrote {rows:,} rows to {out} ({out.stat().st_size / 1e6:.1f} MB)")
    if tags:
        import yaml

        from ttsrec.data.synth import synth_spec
        from ttsrec.utils.atomic import atomic_write_text

        spec_path = out.with_name(out.name + ".spec.yaml")
        atomic_write_text(spec_path, yaml.safe_dump(synth_spec(), sort_keys=False))
        console.print(f"prepare it with: tts-data prepare --preset csv --spec {spec_path} --input {out} ...")


@app.command()
def prepare(
    inputs: Annotated[
        list[Path], typer.Option("--input", "-i", help="Input file, folder or glob (repeatable; in order; "
                                 "movielens: the folder).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    preset: Annotated[
        str, typer.Option("--preset", "-p", help="criteo | avazu | kdd12 | movielens | csv.")
    ] = "criteo",
    spec: Annotated[
        Path | None, typer.Option("--spec", help="YAML dataset spec (needed for --preset csv).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the 8:1:1 split.")] = 0,
    on_bad_row: Annotated[
        str, typer.Option("--on-bad-row", help="skip (count them) or fail (name file:line).")
    ] = "skip",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output folder.")] = False,
    executor: Annotated[str, typer.Option(
        "--executor", help="local (this process) | ray (shards as Ray tasks; inputs and output on "
        "storage every node reads).")] = "local",
    address: Annotated[str | None, typer.Option(
        "--address", help="Ray cluster to join (ray://host:10001, host:6379 or auto); default: start a "
        "local instance.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", help="CPUs of the local Ray instance (default: all).", min=1)] = None,
    shard_mb: Annotated[int, typer.Option(
        "--shard-mb", help="Ray: plain text files are cut into shards of this many MB.", min=1)] = 128,
    max_retries: Annotated[int, typer.Option(
        "--max-retries", help="Ray: reruns of a shard whose worker died.", min=0)] = 3,
) -> None:
    """Two streaming passes (count, encode): id splits + feature_map.json + summary.json in OUT."""
    from ttsrec.data.prepare import prepare as run_prepare

    summary = run_prepare(preset, inputs, out, force=force, seed=seed, spec=spec, on_bad_row=on_bad_row,
                          reporter=reporter, executor=executor, address=address, workers=workers,
                          shard_bytes=shard_mb << 20, max_retries=max_retries)
    reporter.table(summary_table(summary.to_dict()))


@app.command()
def summary(data: Annotated[Path, typer.Argument(help="Prepared dataset folder.")]) -> None:
    """Show the summary of a prepared dataset."""
    from ttsrec.data.prepared import PreparedData

    reporter.table(summary_table(PreparedData(data).summary))


@app.command()
def presets() -> None:
    """List the dataset presets and their fields."""
    from ttsrec.data.spec import preset_names, resolve_spec

    text = [Column(h, numeric=False) for h in ("preset", "format", "fields", "label")]
    table = Table("dataset presets", [*text, Column("min count")])
    for name in preset_names():
        ds = resolve_spec(name)
        table.add_row(
            name,
            ds.format,
            f"{len(ds.fields)}: " + ", ".join(f.name for f in ds.fields),
            ds.label,
            str(ds.min_count),
        )
    table.add_row("csv", "any", "from --spec FILE.yaml", "", "")
    reporter.table(table)


def summary_table(s: dict) -> Table:
    table = Table(f"prepared {s.get('dataset_id', '?')} -> {s.get('out', '')}",
                  [Column("", numeric=False), Column("")])
    table.add_row("rows read", f"{s.get('rows_read', 0):,}")
    table.add_row("rows kept", f"{s.get('rows_kept', 0):,}")
    table.add_row("rows skipped", f"{s.get('rows_skipped', 0):,}")
    for reason, n in s.get("skipped_by_reason", {}).items():
        table.add_row(f"  {reason}", f"{n:,}")
    for name, n in s.get("splits", {}).items():
        table.add_row(f"split {name}", f"{n:,}")
    vocab = s.get("vocab_sizes", {})
    table.add_row("fields", str(len(vocab)))
    table.add_row("total vocabulary (incl. OOV ids)", f"{sum(vocab.values()):,}")
    table.add_row("time", f"{s.get('seconds', 0):.2f} s ({s.get('rows_per_s', 0):,.0f} rows/s)")
    if "executor" in s:
        where = f"{s.get('workers', 1)} workers, {s.get('shards', 1)} shards"
        table.add_row("executor", f"{s['executor']} ({where})")
    for stage, seconds in s.get("pass_seconds", {}).items():
        table.add_row(f"  {stage}", f"{seconds:.2f} s")
    for process, mb in s.get("peak_rss_mb", {}).items():
        table.add_row(f"peak RSS {process}", f"{mb:,.0f} MB")
    table.add_row("feature map", str(s.get("feature_map_hash", "")))
    return table


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
