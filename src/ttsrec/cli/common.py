"""Shared CLI plumbing: user mistakes exit 2, runtime faults exit 1, one red line each, no traceback."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from ttsrec.cli.reporter import RichReporter
from ttsrec.errors import RuntimeFailure, UserError

console = Console(stderr=True)
reporter = RichReporter(console)
"""What the CLIs hand to the libraries: progress, notes and tables drawn on stderr."""
results = RichReporter(Console(highlight=False))
"""A command's result tables (tts-train's members, tts-eval's AUC per M, tts-serve's models): stdout."""


def run_app(app: typer.Typer) -> None:
    """Run a Typer app: `UserError` (and unreadable files) exit 2, `RuntimeFailure` (and other OS errors,
    e.g. a full disk) exit 1, one line each."""
    try:
        # Without standalone mode, Typer returns (not raises) the code of `typer.Exit` and Ctrl-C.
        code = app(standalone_mode=False)
    except UserError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except RuntimeFailure as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except OSError as err:  # the machine's fault, not the user's: disk full, connection refused, ...
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as err:
        # Usage errors (unknown flag, bad value) are click exceptions; Typer may bundle its own
        # copy of click, so recognise them by shape rather than by import.
        if callable(getattr(err, "format_message", None)) and hasattr(err, "exit_code"):
            message = " ".join(err.format_message().split())
            console.print(f"[bold red]error:[/] {message} (see --help)", highlight=False, soft_wrap=True)
            sys.exit(2)
        raise
    if isinstance(code, int) and code:
        if code == 130:
            console.print("[yellow]interrupted[/]")
        sys.exit(code)
