"""The study's results file and its learning-rate selection.

``DIR/results.jsonl`` is written by the driver only, and always as a whole (atomic rename), once per finished
cell: the cell's earlier rows (a failed try) are replaced by its new ones, then its marker is written. So a
``kill -9`` at any moment leaves either the old file or the new one, never a torn line; rows of a cell whose marker
is missing (killed between the two writes) are dropped when the study starts again and the cell is redone.

``DIR/selection.json``: per model x dataset, the learning rate with the best mean validation Dice over folds
(the reference study's rule; test Dice never chooses), from the ``val_dice`` every row carries.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from segdeploy.evaluation.selection import RULE, select_lr
from segdeploy.fileio import atomic_write_json, atomic_write_text, dumps, iter_jsonl
from segdeploy.records import BenchRow

RESULTS = "results.jsonl"
SELECTION = "selection.json"
SELECTION_RULE = f"{RULE}; a model x dataset is complete when every fold of every lr has finished"


def cell_of(row: dict) -> str | None:
    study = BenchRow.coerce(row).study
    return None if study is None else study.cell_id


def read_rows(path: str | Path) -> list[dict]:
    """Every row, read by the one results reader (:func:`segdeploy.fileio.iter_jsonl`) and checked as a
    :class:`~segdeploy.records.BenchRow` (schema, field types; the error names the line): a torn last line (an
    interrupted write) is skipped with a warning naming it; an invalid line elsewhere is a one-line error."""
    rows = []
    for line, raw in iter_jsonl(path, numbered=True):
        BenchRow.from_json(raw, path, line)
        rows.append(raw)
    return rows


def write_rows(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(dumps(r) + "\n" for r in rows))


def replace_cell_rows(path: str | Path, cell_id: str, rows: list[dict]) -> list[dict]:
    """The file with ``cell_id``'s rows replaced by ``rows``; returns the file's rows."""
    kept = [r for r in read_rows(path) if cell_of(r) != cell_id]
    out = kept + rows
    write_rows(path, out)
    return out


def drop_cells(path: str | Path, keep) -> list[dict]:
    """Rewrite the file without the rows of cells for which ``keep(cell_id)`` is false (rows without a study
    field are not the driver's and are kept); returns the remaining rows."""
    rows = read_rows(path)
    kept = [r for r in rows if cell_of(r) is None or keep(cell_of(r))]
    if len(kept) != len(rows) or len(rows) != _lines(path):  # fewer rows than lines: a torn line to repair
        write_rows(path, kept)
    return kept


def _lines(path: str | Path) -> int:
    path = Path(path)
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip())


def lr_selections(rows: Iterable[dict], lrs: Iterable[float], folds: Iterable[int]) -> list[dict]:
    """The lr choice per model x dataset from the rows' validation Dice (one value per cell)."""
    lrs, folds = list(lrs), list(folds)
    per_cell: dict[str, dict] = {}
    for row in map(BenchRow.coerce, rows):
        study = row.study
        if study is not None and study.lr is not None and row.val_dice is not None:
            per_cell.setdefault(study.cell_id, {"model": study.model, "dataset": study.dataset, "lr": study.lr,
                                                "fold": study.fold, "val_dice": row.val_dice})
    groups: dict[tuple[str, str], dict[float, dict[int, float]]] = {}
    for cell in per_cell.values():
        groups.setdefault((cell["model"], cell["dataset"]), {}).setdefault(cell["lr"], {})[cell["fold"]] = \
            cell["val_dice"]
    out = []
    for (model, dataset), by_lr in sorted(groups.items()):
        candidates = []
        for lr in lrs:
            scores = by_lr.get(lr, {})
            if scores:
                candidates.append({"lr": lr, "mean_val_dice": float(np.mean(list(scores.values()))),
                                   "folds": sorted(scores), "val_dice": [scores[f] for f in sorted(scores)]})
        chosen = select_lr({c["lr"]: c["mean_val_dice"] for c in candidates})
        best = next((c for c in candidates if c["lr"] == chosen), None)
        complete = all(set(by_lr.get(lr, {})) >= set(folds) for lr in lrs)
        out.append({"model": model, "dataset": dataset, "lr": best["lr"] if best else None,
                    "mean_val_dice": best["mean_val_dice"] if best else None, "complete": complete,
                    "candidates": candidates})
    return out


def write_selection(study_dir: str | Path, rows: Iterable[dict], lrs, folds) -> Path:
    return atomic_write_json(Path(study_dir) / SELECTION,
                             {"rule": SELECTION_RULE, "selections": lr_selections(rows, lrs, folds)})
