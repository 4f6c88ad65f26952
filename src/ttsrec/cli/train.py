"""`tts-train`: train member models (independent, `--jobs` parallel, or `--group` joint) on prepared data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ttsrec.cli.common import console, results, run_app
from ttsrec.cli.reporter import RichReporter
from ttsrec.utils.report import Column, Table

app = typer.Typer(add_completion=False, help=__doc__)
_STOP_SHORT = {"patience": "patience", "epoch_cap_improving": "cap+", "epoch_cap": "cap"}


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="Prepared data dir (tts-data prepare).")],
    members: Annotated[str, typer.Option("--members", help="e.g. 'dcnv2*8' or 'wukong+rankmixer+dcnv2'.")],
    out: Annotated[Path, typer.Option("--out", help="Run dir, e.g. runs/NAME.")],
    seeds: Annotated[str | None, typer.Option(
        help="One seed per member (0,1,2,...) or one base seed (default: 0, 1, ... per backbone).")] = None,
    group: Annotated[bool, typer.Option("--group", help="Joint training: loss on the merged logit.")] = False,
    epochs: Annotated[int, typer.Option(
        help="Epoch cap, a safety net: members train until validation AUC stops improving (--patience); "
             "pass a small cap for a short run.")] = 30,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="Adam weight decay (all parameters).")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 4096,
    patience: Annotated[int, typer.Option(
        help="Validation checks in a row without AUC gain before stopping (plateaus shorter than this are "
             "outlasted).")] = 4,
    evals_per_epoch: Annotated[int, typer.Option(help="Validation checks per epoch.")] = 2,
    train_limit: Annotated[int | None, typer.Option(help="Use only the first N training rows.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Members trained in parallel processes.")] = 1,
    threads: Annotated[int | None, typer.Option(
        help="torch threads per training process (default: torch's, or cores/jobs; 1 is often faster "
             "on a busy machine).")] = None,
    hparam: Annotated[list[str] | None, typer.Option(
        "--hparam", help="Model hparam key=JSON (repeatable); 'backbone.key=...' for one backbone.")] = None,
    embedding_init: Annotated[str | None, typer.Option(
        help="xavier (the paper's: Xavier over the concatenated table) | xavier_field (per field) | normal "
             "(N(0, 1e-4), FuxiCTR's and DeepCTR's); recorded in every checkpoint. Default: xavier.")] = None,
    device: Annotated[str, typer.Option(
        help="cpu | cuda | cuda:N | auto (GPU when torch sees one); with --jobs and several GPUs each "
             "worker owns one GPU.")] = "cpu",
    precision: Annotated[str, typer.Option(
        help="fp32 | bf16 (autocast; fast only on CPUs with avx512_bf16/amx_bf16, or GPUs) | fp16 (CUDA, "
             "GradScaler).")] = "fp32",
    data_order: Annotated[str, typer.Option(
        help="per-seed: each member shuffles rows with its own seed; fixed: one order for all members "
             "(the official TTS4CTR loader).")] = "per-seed",
    group_series: Annotated[str | None, typer.Option(
        help="e.g. 1,2,4,8: one jointly trained group of the first M members per M, into --out/m<M>/ "
             "(the paper's heterogeneous group series).")] = None,
    executor: Annotated[str, typer.Option(
        help="local (processes here) | ray (one Ray task per member; data on storage every node reads).")
    ] = "local",
    ray_address: Annotated[str | None, typer.Option(
        help="Ray cluster address (e.g. 10.0.0.1:6379 or auto); default: a new local Ray instance.")] = None,
    max_retries: Annotated[int, typer.Option(help="Ray: retries of a failed member task.")] = 2,
    distill_from: Annotated[Path | None, typer.Option(
        "--distill-from", help="Teacher run: train students on its members' merged logit.")] = None,
    distill_m: Annotated[int | None, typer.Option(
        help="Teacher: the run's first M members (default all).")] = None,
    distill_alpha: Annotated[float | None, typer.Option(
        help="Weight of the teacher term (the rest: BCE on the labels); default 0.5.")] = None,
    distill_temperature: Annotated[float | None, typer.Option(
        help="Distillation temperature; default 1.")] = None,
    width_mult: Annotated[float | None, typer.Option(
        help="With --distill-from: the student's width knobs times this (2, 4).")] = None,
    distill_calibrate: Annotated[bool, typer.Option(
        "--distill-calibrate", help="Teacher probability Platt-scaled on the validation split.")] = False,
    distill_cache: Annotated[Path | None, typer.Option(
        help="Keep the teacher's training-row logits here for later students (default: a temp file in "
             "--out).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing run dir.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train members; writes member_XX_<backbone>_s<seed>.pt checkpoints and run.json into --out."""
    from ttsrec.train import TrainOptions
    from ttsrec.train.options import parse_hparams
    from ttsrec.utils.common import parse_int_list

    hparams = parse_hparams(hparam)
    if embedding_init is not None:
        hparams["embedding_init"] = embedding_init
    options = TrainOptions(epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                           patience=patience, evals_per_epoch=evals_per_epoch, train_limit=train_limit,
                           precision=precision, data_order=data_order, hparams=hparams)
    series = parse_int_list(group_series, "--group-series")
    common = {"seeds": parse_int_list(seeds, "--seeds", positive=False), "threads": threads, "force": force,
              "resume": resume, "options": options, "reporter": RichReporter(console,
                                                                             show_progress=not quiet),
              "device": device}
    distill = {"teacher": distill_from, "m": distill_m, "alpha": distill_alpha,
               "temperature": distill_temperature, "width_mult": width_mult,
               "calibrate": distill_calibrate or None, "cache_dir": distill_cache}
    parallel = {"jobs": jobs, "executor": executor, "ray_address": ray_address, "max_retries": max_retries}
    try:
        _dispatch(data, members, out, group, series, distill, parallel, common)
    except KeyboardInterrupt:
        # Typer turns KeyboardInterrupt into a *returned* 130 in non-standalone mode, which run_app drops.
        console.print(f"[yellow]interrupted[/]: finished members are kept in {out} (continue with --resume)")
        raise SystemExit(130) from None
    runs = [out / f"m{m}" for m in sorted(set(series))] if series else [out]
    for run_dir in runs:
        _print_run(run_dir)
    console.print(f"[green]wrote[/] {out} ({len(runs)} run(s), run.json)")


def _dispatch(data: Path, members: str, out: Path, group: bool, series: list[int], distill: dict[str, Any],
              parallel: dict[str, Any], common: dict[str, Any]) -> None:
    """A distilled student, a group series or a plain run (imported here so tests can stub them)."""
    import ttsrec.train

    if any(v is not None for v in distill.values()):
        from ttsrec.train.student import train_distilled

        teacher = distill.pop("teacher")
        distill["calibrate"] = bool(distill["calibrate"])
        train_distilled(data, members, out, teacher, **distill, group=group, series=series, **parallel,
                        **common)
    elif series:
        ttsrec.train.train_group_series(data, members, out, series, **common)
    else:
        ttsrec.train.train_members(data, members, out, group=group, **parallel, **common)


def _print_run(run_dir: Path) -> None:
    """The members' table and, when any stopped at the cap still improving, a note saying so."""
    from ttsrec.ensemble.runs import load_run

    run = load_run(run_dir)
    results.table(summary_table(run))
    capped = [m for m in run["members"] if m.get("still_improving")]
    if capped:
        console.print(f"[yellow]note:[/] {len(capped)} of {len(run['members'])} member(s) still improving at "
                      "the epoch cap (best state at the last check of the last epoch): more --epochs would "
                      "probably help")


def summary_table(run: dict[str, Any]) -> Table:
    """One row per member: where its best state came from and what it scores."""
    title = f"{run['members_spec']}{' (group)' if run['group'] else ''} {run.get('precision', 'fp32')}"
    table = Table(title, [Column("#"), Column("backbone", numeric=False),
                          *map(Column, ("seed", "val AUC", "test AUC", "test LL", "ep")),
                          Column("stop", numeric=False), *map(Column, ("rows/s", "s"))],
                  caption="ep: epoch of the best state (*: the last, still improving); stop: why training "
                          "stopped (patience: AUC stopped improving; cap+: epoch cap, still improving; cap: "
                          "epoch cap on a plateau); s: seconds")
    for m in run["members"]:
        table.add_row(f"{m['index']:02d}", m["backbone"], m["seed"], f"{m['valid']['auc']:.4f}",
                      f"{m['test']['auc']:.4f}", f"{m['test']['logloss']:.4f}",
                      f"{m['best'].get('epoch', 0)}{'*' if m.get('still_improving') else ''}",
                      _stop(m), f"{m['samples_per_s']:,.0f}", f"{m['train_time_s']:.1f}")
    if run.get("group_metrics"):
        g = run["group_metrics"]
        table.add_row("", "merged", "", f"{g['valid']['auc']:.4f}", f"{g['test']['auc']:.4f}",
                      f"{g['test']['logloss']:.4f}", "", _stop(g), "", f"{g['train_time_s']:.1f}")
    return table


def _stop(record: dict[str, Any]) -> str:
    """Why a member stopped, short; runs from before `stop_reason` was recorded say it with two flags."""
    capped = "epoch_cap_improving" if record.get("still_improving") else "epoch_cap"
    reason = record.get("stop_reason") or ("patience" if record.get("stopped_early") else capped)
    return _STOP_SHORT.get(reason, reason)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
