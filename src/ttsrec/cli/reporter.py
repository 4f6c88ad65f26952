"""The reporter the CLIs hand to the libraries: rich progress bars, notes and tables on stderr.

Tables keep every number whole: numeric columns never wrap or shrink below their widest cell, text
columns wrap, and a table that still cannot fit a console that is not a terminal (CI logs, pipes: 80
columns) is drawn wider instead of cut.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table as RichTable

from ttsrec.utils.report import Board, Reporter, Table, Task, Tone, Unit

_TONES = {"info": "", "note": "[yellow]note:[/] ", "warning": "[yellow]warning:[/] ", "ok": "[green]ok:[/] "}


class RichReporter(Reporter):
    def __init__(self, console: Console | None = None, *, show_progress: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress

    def note(self, text: str, tone: Tone = "info") -> None:
        self.console.print(_TONES[tone] + escape(text), highlight=False, soft_wrap=True)

    def lines(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def table(self, table: Table) -> None:
        """The table, then a blank line (boxless tables in a row need one between them)."""
        rendered, minimum = render_table(table, self.console.width)
        if minimum <= self.console.width or self.console.is_terminal:
            self.console.print(rendered)
        else:
            width = self.console.width  # a log or a pipe: draw it wider rather than cut a number
            natural = Measurement.get(self.console, self.console.options.update(width=10_000), rendered)
            self.console.width = max(minimum, min(natural.maximum, 132))
            try:
                self.console.print(rendered)
            finally:
                self.console.width = width
        self.console.print()

    @contextlib.contextmanager
    def progress(self, unit: Unit = "items", fields: Sequence[str] = (),
                 transient: bool = False) -> Iterator[Board]:
        columns: list[ProgressColumn | str] = [TextColumn("{task.description:<22}"), BarColumn(bar_width=28)]
        if unit == "bytes":
            columns += [DownloadColumn(), TimeRemainingColumn()]
        else:
            columns += [MofNCompleteColumn()]
        columns += [TextColumn(f"{name} {{task.fields[{name}]}}") for name in fields]
        columns += [TimeElapsedColumn()]
        progress = Progress(*columns, console=self.console, transient=transient,
                            disable=not self.show_progress)
        with progress:
            yield _RichBoard(progress, fields)


class _RichTask(Task):
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress, self._task = progress, task

    def update(self, *, advance: float = 0, completed: float | None = None, description: str | None = None,
               **fields: str) -> None:
        self._progress.update(self._task, advance=advance or None, completed=completed,
                              description=description, **fields)


class _RichBoard(Board):
    def __init__(self, progress: Progress, fields: Sequence[str]) -> None:
        self._progress, self._fields = progress, fields

    def task(self, description: str, total: float | None, **fields: str) -> Task:
        values = {name: fields.get(name, "") for name in self._fields}
        return _RichTask(self._progress, self._progress.add_task(description, total=total, **values))


GAPS = {3: (0, 1), 2: (0, 1, 0, 0), 1: (0, 0)}
"""Spaces between two columns -> the cell padding that gives them (the box's divider is one space)."""
TEXT_MIN = 16
"""A text column wraps down to its longest word, or to this many characters (folding longer words)."""


def render_table(table: Table, width: int | None = None) -> tuple[RichTable, int]:
    """The rich table, and the width it needs: numeric columns as wide as their widest cell (every number
    whole), text columns wrapped down to their longest word (at most `TEXT_MIN` characters). Columns are
    three spaces apart, or two or one: the widest spacing at which nothing wraps in `width`, else at
    which the table fits by wrapping text."""
    natural, minimum = [], []
    for k, column in enumerate(table.columns):
        cells = [column.header, *(row[k] for row in table.rows)]
        natural.append(max(map(len, cells)))
        if column.numeric:
            minimum.append(natural[-1])
        else:
            minimum.append(min(TEXT_MIN, max((len(w) for cell in cells for w in cell.split()), default=1)))
    spaces = len(table.columns) - 1
    gap = next((g for widths in (natural, minimum) for g in GAPS
                if width is None or sum(widths) + g * spaces <= width), 1)
    out = RichTable(title=table.title or None, caption=table.caption or None, box=box.SIMPLE_HEAD,
                    pad_edge=False, show_edge=False, padding=GAPS[gap], title_justify="left",
                    caption_justify="left", show_header=any(c.header for c in table.columns))
    for column, w in zip(table.columns, minimum, strict=True):
        if column.numeric:
            out.add_column(column.header, justify="right", no_wrap=True, min_width=w)
        else:
            out.add_column(column.header, justify="left", overflow="fold", min_width=w)
    for row in table.rows:
        out.add_row(*(escape(cell) for cell in row))
    return out, sum(minimum) + gap * spaces
