"""Progress of a training run: one bar per member with its live loss and validation AUC, drawn by
whatever `Reporter` the caller passes (the CLI's rich one, or none)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ttsrec.utils.report import SILENT, Board, Reporter, Task

FIELDS = ("loss", "AUC")


class TrainProgress:
    """Receives `(member, kind, fields)` events from in-process or worker training."""

    def __init__(self, board: Board, total_members: int, done: int = 0) -> None:
        self.board = board
        self.overall = board.task("members", total_members, loss="", AUC="")
        self.overall.update(advance=done)
        self.tasks: dict[int, Task] = {}
        self.labels: dict[int, str] = {}
        self.totals: dict[int, int] = {}

    def label(self, key: int, text: str) -> None:
        self.labels[key] = text

    def event(self, key: int, kind: str, fields: dict[str, Any]) -> None:
        if kind == "start":
            self.totals[key] = fields["total"]
            self.tasks[key] = self.board.task(self.labels.get(key, f"member {key}"), fields["total"],
                                              loss="-", AUC="-")
        elif key in self.tasks and kind == "step":
            self.tasks[key].update(advance=1, loss=f"{fields['loss']:.4f}")
        elif key in self.tasks and kind == "eval":
            self.tasks[key].update(AUC=f"{fields['auc']:.4f}")

    def member_done(self, key: int, count: int = 1) -> None:
        if key in self.tasks:
            self.tasks[key].update(completed=self.totals[key])
        self.overall.update(advance=count)

    def callback(self, key: int):
        return lambda kind, **fields: self.event(key, kind, fields)


@contextlib.contextmanager
def train_progress(reporter: Reporter, total_members: int, done: int = 0) -> Iterator[TrainProgress]:
    """Bars for `total_members` members (`done` of them already trained), shown while the block runs."""
    with (reporter or SILENT).progress(fields=FIELDS) as board:
        yield TrainProgress(board, total_members, done)
