"""The live view of a running study: done / running / failed / pending cells, each running cell's stage (and
epoch while it trains) and an ETA. Stages are read from the cells' ``status.json`` (written by the cell wherever it
runs) and epochs from their ``history.jsonl``, so the view works the same for local and Ray cells."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from segdeploy.study.cell import CellOutcome
from segdeploy.study.plan import STATUS, Cell, cell_dir


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class StudyView:
    def __init__(self, study_dir: Path, total: int, done_before: int, parallelism: int, epochs: int | None):
        self.study_dir, self.total, self.done_before = Path(study_dir), total, done_before
        self.parallelism, self.epochs = parallelism, epochs
        self.t0 = time.time()
        self.submitted: dict[str, tuple[Cell, float]] = {}
        self.finished: dict[str, CellOutcome] = {}

    def start(self, cell: Cell) -> None:
        self.submitted[cell.cell_id] = (cell, time.time())

    def finish(self, cell: Cell, outcome: CellOutcome) -> str:
        self.submitted.pop(cell.cell_id, None)
        self.finished[cell.cell_id] = outcome
        n = self.done_before + len(self.finished)
        what = "[green]done[/]" if outcome.status == "ok" else f"[red]failed[/] at {outcome.stage}: {outcome.reason}"
        return f"[{n}/{self.total}] {cell.cell_id} {what} in {_duration(outcome.seconds)} ({len(outcome.rows)} rows)"

    def _stage(self, cell: Cell) -> tuple[str, float | None]:
        """(stage text, start time) from the cell's status file when it started in this session, else queued."""
        folder = cell_dir(self.study_dir, cell)
        try:
            status = json.loads((folder / STATUS).read_text())
            started = datetime.fromisoformat(status["started"]).timestamp()
        except (OSError, ValueError, KeyError, TypeError):
            return "queued", None
        if started < self.t0 - 1:
            return "queued", None
        stage = status.get("stage", "?")
        if stage == "train" and self.epochs:
            history = folder / "history.jsonl"
            epochs = sum(1 for _ in history.open()) if history.is_file() else 0
            stage = f"train epoch {min(epochs + 1, self.epochs)}/{self.epochs}"
        return stage, started

    def eta(self) -> str:
        remaining = self.total - self.done_before - len(self.finished)
        if not remaining:
            return "-"
        if not self.finished:
            return "after the first cell"
        per_cell = sum(o.seconds for o in self.finished.values()) / len(self.finished)
        return _duration(remaining * per_cell / self.parallelism)

    def __rich__(self):
        failed = sum(o.status != "ok" for o in self.finished.values())
        ok = self.done_before + len(self.finished) - failed
        running = [(c, *self._stage(c)) for c, _ in self.submitted.values()]
        active = [r for r in running if r[2] is not None]
        pending = self.total - ok - failed - len(active)
        head = Text.from_markup(f"[bold]{ok}[/] done ([dim]{self.done_before} earlier[/]), [bold]{len(active)}[/] "
                                f"running, [bold red]{failed}[/] failed, {pending} pending of {self.total} cells   "
                                f"elapsed {_duration(time.time() - self.t0)}   ETA {self.eta()}")
        table = Table(box=None, show_header=bool(active), pad_edge=False)
        for column in ("running cell", "stage", "for"):
            table.add_column(column)
        now = time.time()
        for cell, stage, started in active:
            table.add_row(cell.cell_id, stage, _duration(now - started))
        return Group(head, table) if active else head
