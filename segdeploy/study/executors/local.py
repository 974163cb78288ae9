"""The local executor: every cell in the driver's own process, one after the other."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from segdeploy.study.cell import CellOutcome, run_cell
from segdeploy.study.config import StudyConfig
from segdeploy.study.plan import Cell


class LocalExecutor:
    name = "local"
    parallelism = 1

    def __init__(self, config: StudyConfig, study_dir: str | Path):
        self.config, self.study_dir = config, Path(study_dir)

    def run(self, cells: Sequence[Cell], on_start: Callable[[Cell], None],
            on_finish: Callable[[Cell, CellOutcome], None]) -> None:
        for cell in cells:
            on_start(cell)
            on_finish(cell, run_cell(self.config, cell, self.study_dir))

    def close(self) -> None:
        pass
