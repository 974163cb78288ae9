"""Where cells run. An executor takes the pending cells and calls back as each one starts and finishes; only the
driver (the caller of ``run``) writes the study's results file and markers.

    local  in the driver's process, one cell at a time (the default; nothing to start)
    ray    one Ray task per cell (``pip install segdeploy[cluster]``), on a local instance or a cluster
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from segdeploy.errors import SegdeployError
from segdeploy.study.cell import CellOutcome
from segdeploy.study.config import StudyConfig
from segdeploy.study.plan import Cell

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    name: str
    parallelism: int  # how many cells can run at once (for the ETA)

    def run(self, cells: Sequence[Cell], on_start: Callable[[Cell], None],
            on_finish: Callable[[Cell, CellOutcome], None]) -> None: ...

    def close(self) -> None: ...


def check_executor(name: str, address: str | None = None) -> None:
    """Fail before any work when the executor cannot be used here (unknown name, Ray not installed)."""
    import importlib.util

    if name not in EXECUTORS:
        raise SegdeployError(f"unknown executor {name!r}.", fix=f"use one of {', '.join(EXECUTORS)}.")
    if name == "local" and address:
        raise SegdeployError("--address is for --executor ray.", fix="drop --address, or add --executor ray.")
    if name == "ray" and importlib.util.find_spec("ray") is None:
        from segdeploy.study.executors.ray import EXTRA

        raise SegdeployError("--executor ray needs Ray, which is not installed.",
                             fix=f"{EXTRA} (or use --executor local).")


def make_executor(name: str, config: StudyConfig, study_dir: str | Path, *, address: str | None = None) -> Executor:
    if name == "local":
        if address:
            raise SegdeployError("--address is for --executor ray.", fix="drop --address, or add --executor ray.")
        from segdeploy.study.executors.local import LocalExecutor

        return LocalExecutor(config, study_dir)
    if name == "ray":
        from segdeploy.study.executors.ray import RayExecutor

        return RayExecutor(config, study_dir, address=address)
    raise SegdeployError(f"unknown executor {name!r}.", fix=f"use one of {', '.join(EXECUTORS)}.")
