"""Rich progress for a training run: one bar per member with its live loss and validation AUC."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class TrainProgress:
    """Receives `(member, kind, fields)` events from in-process or worker training."""

    def __init__(self, console: Console, total_members: int, enabled: bool = True) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<22}"), BarColumn(bar_width=28), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("valid AUC {task.fields[auc]}"),
            TimeElapsedColumn(), console=console, disable=not enabled, transient=False,
        )
        self.overall = self.progress.add_task("members", total=total_members, loss="", auc="")
        self.tasks: dict[int, TaskID] = {}
        self.labels: dict[int, str] = {}
        self.totals: dict[int, int] = {}

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.stop()

    def label(self, key: int, text: str) -> None:
        self.labels[key] = text

    def event(self, key: int, kind: str, fields: dict[str, Any]) -> None:
        if kind == "start":
            self.totals[key] = fields["total"]
            self.tasks[key] = self.progress.add_task(self.labels.get(key, f"member {key}"),
                                                     total=fields["total"], loss="-", auc="-")
        elif key in self.tasks and kind == "step":
            self.progress.update(self.tasks[key], advance=1, loss=f"{fields['loss']:.4f}")
        elif key in self.tasks and kind == "eval":
            self.progress.update(self.tasks[key], auc=f"{fields['auc']:.4f}")

    def member_done(self, key: int, count: int = 1) -> None:
        if key in self.tasks:
            self.progress.update(self.tasks[key], completed=self.totals[key])
        self.progress.advance(self.overall, count)

    def callback(self, key: int):
        return lambda kind, **fields: self.event(key, kind, fields)
