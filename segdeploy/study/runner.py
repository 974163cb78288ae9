"""``run_study``: the driver. Plans the cells, hands the pending ones to an executor, and is the only writer of the
study's results file, markers and lr selection.

    DIR/plan.json        every cell, its folder and settings fingerprint (open it, diff it)
    DIR/study.toml       a copy of the study file
    DIR/results.jsonl    bench rows + study, val_dice, target, train_dataset, per_image (see segdeploy.study.cell)
    DIR/selection.json   the lr chosen per model x dataset (best mean validation Dice over folds)
    DIR/cells/<id>/      one cell: its run directory, bench.jsonl, cam/, status.json, done.json

Resumable at any moment: a cell's rows are written (whole file, atomic rename), then its ``done.json``; a cell with
an ``ok`` marker for the current settings is never run again, rows of a cell without a marker are dropped when the
study starts, failed cells are tried again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from segdeploy.errors import SegdeployError
from segdeploy.locks import hold
from segdeploy.study.cell import CellOutcome
from segdeploy.study.config import StudyConfig, load_study
from segdeploy.study.executors import check_executor, make_executor
from segdeploy.study.plan import Cell, expand, fingerprint, is_done, prepare, read_marker, write_marker
from segdeploy.study.results import RESULTS, drop_cells, replace_cell_rows, write_selection


@dataclass
class StudyRun:
    study_dir: Path
    results: Path
    n_cells: int
    done_before: int
    ok: int
    failed: int
    seconds: float


def _check_datasets(config: StudyConfig) -> None:
    """Open every dataset (cheap structural checks) with its class map, and check that each cross-dataset target,
    through its own class map, has the classes and channels of its source: before any cell starts, errors naming
    the study key."""
    from segdeploy.data import open_dataset

    def opened(key: str, spec: str, class_map: str | None, map_key: str):
        try:
            dataset = open_dataset(spec)
        except SegdeployError as e:
            where = f" ({e.path})" if e.path and e.path != spec else ""
            raise SegdeployError(f"`{key}` entry {spec!r}{where}: {e.message}", path=config.path,
                                 fix=e.fix or "correct the entry in the study file.") from None
        if class_map is None:
            return dataset
        try:
            return dataset.with_class_map(class_map)
        except SegdeployError as e:
            raise SegdeployError(f"`{map_key}` {class_map!r} does not fit {dataset.name}: {e.message}",
                                 path=config.path, fix=e.fix or "correct the class map.") from None

    sources = {d: opened("datasets", d, config.class_maps.get(d), f"class_maps.{d}") for d in config.datasets}
    for cross in config.cross:
        source = sources[cross.source]
        target = opened("cross.target", cross.target, cross.class_map, "cross.class_map")
        if source.classes != target.classes or source.in_chans != target.in_chans:
            mapped = f" (mapped with {cross.class_map!r})" if cross.class_map else ""
            raise SegdeployError(
                f"`cross` target {cross.name!r} has classes {target.classes}{mapped} ({target.in_chans}-channel "
                f"images), runs trained on {source.name!r} predict {source.classes} ({source.in_chans}-channel): "
                "they cannot be scored on it.", path=config.path,
                fix='give that [[cross]] table a class_map naming the runs\' classes in their order from the '
                    'target\'s labels (e.g. class_map = "polyp=1"), or choose a target with the same channels.')


def _repair(study_dir: Path, config: StudyConfig, cells: list[Cell], stale: list[str]) -> None:
    """Keep only rows of cells whose marker exists for the current settings (drops a cell killed between its rows
    and its marker, and the cells a forced re-plan made stale)."""
    current = {c.cell_id: c for c in cells}

    def keep(cell_id: str) -> bool:
        cell = current.get(cell_id)
        if cell is None or cell_id in stale:
            return False
        marker = read_marker(study_dir, cell)
        return bool(marker and marker.get("fingerprint") == fingerprint(config, cell))

    drop_cells(study_dir / RESULTS, keep)


def run_study(study: str | Path | StudyConfig, out: str | Path, *, executor: str = "local",
              address: str | None = None, force: bool = False, console=None) -> StudyRun:
    from rich.console import Console


    check_executor(executor, address)
    config = study if isinstance(study, StudyConfig) else load_study(study)
    console = console or Console()
    study_dir = Path(out).resolve()
    cells = expand(config)
    _check_datasets(config)
    # one driver per study folder: a second would interleave its rewrites of the results file with ours
    with hold(study_dir / ".segdeploy-study.lock", "study run", study_dir):
        return _run(config, study_dir, cells, executor=executor, address=address, force=force, console=console)


def _run(config: StudyConfig, study_dir: Path, cells: list[Cell], *, executor: str, address: str | None,
         force: bool, console) -> StudyRun:
    from rich.live import Live

    from segdeploy.study.view import StudyView

    stale = prepare(study_dir, config, cells, force=force)
    _repair(study_dir, config, cells, stale)
    results = study_dir / RESULTS
    pending = [c for c in cells if not is_done(study_dir, config, c)]
    done_before = len(cells) - len(pending)
    t0 = time.perf_counter()
    outcomes: dict[str, CellOutcome] = {}
    console.print(f"study [bold]{config.name}[/]: {len(cells)} cells ({done_before} done earlier), executor "
                  f"{executor} -> {study_dir}")
    runner = make_executor(executor, config, study_dir, address=address) if pending else None
    try:
        view = StudyView(study_dir, len(cells), done_before, runner.parallelism if runner else 1,
                         config.epochs if config.train else None)

        def on_finish(cell: Cell, outcome: CellOutcome) -> None:
            rows = replace_cell_rows(results, cell.cell_id, outcome.rows)
            write_marker(study_dir, config, cell, status=outcome.status, n_rows=len(outcome.rows),
                         seconds=outcome.seconds, reason=outcome.reason)
            if config.train:
                write_selection(study_dir, rows, config.lr, config.folds)
            outcomes[cell.cell_id] = outcome
            console.print(view.finish(cell, outcome), highlight=False)

        if runner is not None:
            with Live(view, console=console, refresh_per_second=1, transient=True):
                runner.run(pending, view.start, on_finish)
    finally:
        if runner is not None:
            runner.close()
    if config.train:
        from segdeploy.study.results import read_rows

        write_selection(study_dir, read_rows(results), config.lr, config.folds)
    failed = sum(o.status != "ok" for o in outcomes.values())
    return StudyRun(study_dir=study_dir, results=results, n_cells=len(cells), done_before=done_before,
                    ok=len(outcomes) - failed, failed=failed, seconds=time.perf_counter() - t0)
