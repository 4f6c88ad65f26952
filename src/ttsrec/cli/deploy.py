"""`tts-deploy`: generations of a served repository, rolled out and back under load.

    tts-deploy add RUN --repo REPO [--data DATA]        export RUN as the next generation (nothing live yet)
    tts-deploy rollout REPO --to N [--url HOST:PORT]     load N beside the live one, switch, retire, record
    tts-deploy rollout REPO --to N-1                     roll back the same way
    tts-deploy status REPO [--url HOST:PORT]             generations, state, which is live

`--url` is a running server's HTTP endpoint (tts-serve's, default 127.0.0.1:8000); a sharded export takes
one `--url` per shard, in shard order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ttsrec.cli.common import console, reporter, results, run_app
from ttsrec.errors import UserError
from ttsrec.utils.report import Column, Table

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
KEY_HEADER = "tts-admin-key"


@app.command()
def add(
    run: Annotated[list[Path], typer.Argument(help="Member checkpoints or tts-train run folders.")],
    repo: Annotated[Path, typer.Option("--repo", help="The served repository (tts-export --out).")],
    data: Annotated[Path | None, typer.Option(help="Prepared data (gates, merge and cascade fits).")] = None,
) -> None:
    """Export RUN as the next generation of REPO: every export gate runs first, unchanged members are not
    written again, and nothing is loaded until `tts-deploy rollout`."""
    from ttsrec.deploy.add import add_generation

    for path in run:
        if not path.exists():
            raise UserError(f"checkpoint or run folder not found: {path}")
    added = add_generation(run, repo, data=data, reporter=reporter)
    results.note(f"generation {added.generation} added to {repo}: {added.members_written} member(s) written, "
                 f"{added.members_kept} kept as they were, {added.bytes_added / 1e6:.1f} MB added; "
                 f"roll it out with `tts-deploy rollout {repo} --to {added.generation}`")


def _targets(repo: Path, urls: list[str]) -> list[object]:
    from ttsrec.deploy import state
    from ttsrec.deploy.rollout import Target

    roots = state.roots(repo)
    urls = urls or ["127.0.0.1:8000"]
    if len(urls) != len(roots):
        raise UserError(f"{repo} has {len(roots)} shard(s) but {len(urls)} --url were given (one per shard, "
                        "in shard order)")
    key = os.environ.get("TTSREC_ADMIN_KEY")
    header = (KEY_HEADER, key) if key else None
    return [Target(root, url.removeprefix("http://"), admin_header=header)
            for root, url in zip(roots, urls, strict=True)]


@app.command()
def rollout(
    repo: Annotated[Path, typer.Argument(help="The served repository (or sharded export).")],
    to: Annotated[int, typer.Option("--to", help="The generation to make live (an older one rolls back).")],
    url: Annotated[list[str] | None, typer.Option(help="Server HTTP endpoint(s), one per shard.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan, change nothing.")] = False,
    free_mb: Annotated[float | None, typer.Option(
        help="Free memory on the server's machine (default: this machine's MemAvailable).")] = None,
    prune: Annotated[bool, typer.Option(
        "--prune", help="Afterwards delete generations older than the last two from disk.")] = False,
) -> None:
    """Load generation TO beside the live one, switch every model to it, let requests in flight finish,
    unload the old one and record TO live. Rerun it after an interruption: it finishes the job."""
    from ttsrec.deploy.prune import prune_generations
    from ttsrec.deploy.rollout import free_memory
    from ttsrec.deploy.rollout import rollout as run_rollout

    targets = _targets(repo, url or [])
    free = int(free_mb * 1e6) if free_mb is not None else free_memory()
    plan = run_rollout(targets, to, free_bytes=free, dry_run=dry_run, reporter=reporter)  # type: ignore[arg-type]
    if dry_run:
        head = f"plan: generation {plan.live} -> {plan.to}, ~{plan.need_bytes / 1e6:.0f} MB to load, " \
               f"{free / 1e6:.0f} MB free"
        results.lines("\n".join([head, *plan.lines]))
        return
    results.note(f"generation {to} is live on {len(targets)} server(s)")
    if prune:
        for line in prune_generations(repo, keep=2):
            results.note(line)


@app.command()
def status(
    repo: Annotated[Path, typer.Argument(help="The repository (or sharded export).")],
    url: Annotated[list[str] | None, typer.Option(help="Server HTTP endpoint(s): also show what is loaded.")]
        = None,
) -> None:
    """The generations of REPO, their state, which is live (and, with --url, what each server holds)."""
    from ttsrec.deploy import state
    from ttsrec.deploy.rollout import status_rows

    targets = _targets(repo, url) if url else []
    for k, root in enumerate(state.roots(repo)):
        manifest = state.load(root)
        rows = status_rows(targets[k] if targets else None, manifest)  # type: ignore[arg-type]
        if not rows:
            results.note(f"{root}: one generation (exported before generations; `tts-deploy add` adds one)")
            continue
        table = Table(f"{root}  (live: {manifest.get('live')})",
                      [Column("gen"), Column("state", numeric=False), Column("created", numeric=False),
                       Column("members"), Column("new"), Column("MB added"),
                       *([Column("loaded", numeric=False)] if targets else [])])
        for r in rows:
            table.add_row(r["generation"], r["state"], r["created"][:19], r["members"], r["new_members"],
                          f"{r['bytes_added'] / 1e6:.1f}", *([r["loaded"]] if targets else []))
        results.table(table)
    console.print("")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
