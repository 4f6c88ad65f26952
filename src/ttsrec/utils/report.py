"""How the libraries report to a person without drawing on the terminal themselves.

A library function takes a `Reporter` (default: `SILENT`) and hands it notes, tables and progress
events; the CLI provides the one that draws them (`ttsrec.cli.reporter.RichReporter`), a test or a
notebook may pass its own. Tables are plain data (`Table`), so the same rows go to the screen, to
markdown and to logs, and the drawing side decides how to fit them into 80 columns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

Unit = Literal["items", "bytes"]
Tone = Literal["info", "note", "warning", "ok"]


@dataclass(frozen=True)
class Column:
    header: str
    numeric: bool = True
    """Right-aligned and never wrapped (numbers stay whole); text columns may wrap."""


@dataclass
class Table:
    """A titled table of already formatted cells: what a person reads, also written to markdown."""

    title: str
    columns: list[Column]
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""

    def add_row(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(["" if c is None else str(c) for c in cells])

    def markdown(self) -> str:
        """A GitHub markdown table (numbers right-aligned)."""
        head = "| " + " | ".join(c.header for c in self.columns) + " |"
        rule = "|" + "|".join("---:" if c.numeric else "---" for c in self.columns) + "|"
        body = ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join([head, rule, *body])


def table(title: str, text_columns: Sequence[str], numeric_columns: Sequence[str],
          caption: str = "") -> Table:
    """A table whose first columns are text and the rest numbers."""
    columns = [Column(h, numeric=False) for h in text_columns] + [Column(h) for h in numeric_columns]
    return Table(title, columns, caption=caption)


class Task:
    """One progress bar; `fields` are short live values shown next to it (loss, AUC)."""

    def update(self, *, advance: float = 0, completed: float | None = None, description: str | None = None,
               **fields: str) -> None:
        """Move the bar and/or change its label and fields."""


class Board:
    """A set of progress bars drawn together while the work runs."""

    def task(self, description: str, total: float | None, **fields: str) -> Task:
        return Task()


class Reporter:
    """Receives what a library has to say to a person; this base class says nothing (`SILENT`)."""

    def note(self, text: str, tone: Tone = "info") -> None:
        """One line (a note, a warning, a result)."""

    def table(self, table: Table) -> None:
        """A finished table."""

    def lines(self, text: str) -> None:
        """Preformatted text (a layout tree, a summary block), printed as is."""

    @contextlib.contextmanager
    def progress(self, unit: Unit = "items", fields: Sequence[str] = (),
                 transient: bool = False) -> Iterator[Board]:
        """Bars counting `unit` with live `fields`, shown for the duration of the `with` block."""
        yield Board()


SILENT = Reporter()
