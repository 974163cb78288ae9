"""The plan: a study expanded into cells (model, dataset, fold, lr), written to ``DIR/plan.json``.

Like nnU-Net's generated command lists, the plan is a file a person can open and diff. A study folder belongs to
one study: running another study file into it is refused, naming the first key that differs, unless ``force``; then
only the cells whose settings changed are redone (their rows dropped), the others are kept. The same holds for the
datasets' content (:mod:`segdeploy.study.content`): a dataset changed since the plan was written is refused, naming
what changed, unless ``force`` redoes the cells it affects.

Each cell owns ``DIR/cells/<cell_id>/``: it is the cell's run directory (model.safetensors, model.json, onnx/)
plus ``bench.jsonl`` (bench's own resumable file), ``cam/``, ``status.json`` (stage, for the live view) and
``done.json`` (the marker, written by the driver after the cell's rows).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from segdeploy.errors import SegdeployError
from segdeploy.fileio import atomic_write_json, atomic_write_text, dumps, read_json
from segdeploy.study.config import (BENCH_KEYS, DEPRECATED_KEYS, TRAIN_KEYS, StudyConfig, dataset_key,
                                    upgrade_keys)

PLAN = "plan.json"
PLAN_SCHEMA = "segdeploy.study-plan/1"
CELLS = "cells"
MARKER = "done.json"
STATUS = "status.json"
CELL_RECORD = "cell.json"  # the cell's settings fingerprints, written when it starts

# settings that change what training produces (num_cpus: torch's thread count changes CPU reductions), and what
# bench produces: the study's own keys and those TrainConfig/BenchConfig own (segdeploy.study.config)
_TRAIN_KEYS = ("train", *TRAIN_KEYS)
_BENCH_KEYS = ("backends", "precisions", *BENCH_KEYS, "gradcam", "gradcam_worst")
# a key renamed since cells were first planned keeps its old name in the fingerprint (else every resumed study
# would redo its finished cells); `timeout` is left out on purpose (test_study's isolation test): it changes no
# measured number, only whether a hung configuration ends as a failed row (bench re-runs those when the cell runs)
_DIGEST_NAME = {new: old for old, new in DEPRECATED_KEYS.items()}
_NOT_FINGERPRINTED = ("timeout",)


def _settings(d: dict, keys: tuple[str, ...]) -> dict:
    return {_DIGEST_NAME.get(k, k): d[k] for k in keys if k not in _NOT_FINGERPRINTED}


@dataclass(frozen=True)
class Cell:
    cell_id: str
    model: str
    dataset: str  # the spec: a resolved folder or a registered name
    dataset_name: str  # how rows name it (bench's ``dataset``)
    fold: int | None  # None in a cost-only study (nothing trained)
    lr: float | None
    imported: str | None = None  # the [[imported]] model's name: imported, not trained

    def study_field(self) -> dict:
        """The ``study`` object of every row this cell writes."""
        return {"model": self.model, "dataset": self.dataset_name, "fold": self.fold, "lr": self.lr,
                "cell_id": self.cell_id}


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def expand(config: StudyConfig) -> list[Cell]:
    """Every cell of the study, in a stable order: dataset, model, lr, fold (a model's folds run together, so
    its lr selection is complete early)."""
    cells = []
    for spec in config.datasets:
        name = dataset_key(spec)
        for model in config.models:
            if not config.train:
                cells.append(Cell(f"{safe_name(name)}--{model}--untrained", model, spec, name, None, None))
                continue
            for lr in config.lr:
                for fold in config.folds:
                    cells.append(Cell(f"{safe_name(name)}--{model}--f{fold}--lr{lr:g}", model, spec, name, fold, lr))
        for entry in config.imported:
            cells.append(Cell(f"{safe_name(name)}--{safe_name(entry.name)}--imported", entry.name, spec, name, None,
                              None, imported=entry.name))
    return cells


def imported_entry(config: StudyConfig, cell: Cell):
    """The [[imported]] table of an imported cell."""
    return next(e for e in config.imported if e.name == cell.imported)


def cell_dir(study_dir: str | Path, cell: Cell | str) -> Path:
    return Path(study_dir) / CELLS / (cell if isinstance(cell, str) else cell.cell_id)


def _digest(obj: Any) -> str:
    return hashlib.sha256(dumps(obj).encode()).hexdigest()[:16]


def train_fingerprint(config: StudyConfig, cell: Cell) -> str:
    d = config.as_dict()
    cell_d = asdict(cell)
    if cell.imported is None:
        cell_d.pop("imported")  # trained cells keep the fingerprints they had before imported models existed
    else:
        cell_d["imported"] = asdict(imported_entry(config, cell))
    return _digest({"cell": cell_d, "num_cpus": config.resources.num_cpus,
                    "class_map": config.class_maps.get(cell.dataset), **_settings(d, _TRAIN_KEYS)})


def fingerprint(config: StudyConfig, cell: Cell) -> str:
    """Everything that changes the cell's rows; a marker with another fingerprint is stale."""
    d = config.as_dict()
    cross = [c for c in d["cross"] if c["source"] == cell.dataset]
    return _digest({"train": train_fingerprint(config, cell), "cross": cross, **_settings(d, _BENCH_KEYS)})


def _first_difference(old: Any, new: Any, key: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=lambda k: (k not in new, k)):
            diff = _first_difference(old.get(k), new.get(k), f"{key}.{k}" if key else k)
            if diff:
                return diff
        return None
    return None if old == new else (key, old, new)


def read_marker(study_dir: str | Path, cell: Cell) -> dict | None:
    path = cell_dir(study_dir, cell) / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):  # markers are written atomically; a broken one is redone
        return None


def is_done(study_dir: str | Path, config: StudyConfig, cell: Cell) -> bool:
    marker = read_marker(study_dir, cell)
    return bool(marker and marker.get("status") == "ok" and marker.get("fingerprint") == fingerprint(config, cell))


def write_marker(study_dir: str | Path, config: StudyConfig, cell: Cell, *, status: str, n_rows: int,
                 seconds: float, reason: str | None = None) -> Path:
    return atomic_write_json(cell_dir(study_dir, cell) / MARKER, {
        "cell_id": cell.cell_id, "status": status, "reason": reason, "fingerprint": fingerprint(config, cell),
        "n_rows": n_rows, "seconds": round(seconds, 1),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def prepare(study_dir: str | Path, config: StudyConfig, cells: list[Cell], *, force: bool = False) -> list[str]:
    """Write (or check) ``plan.json`` and copy the study file beside it. Returns the ids of cells whose earlier
    results are stale (a forced re-plan changed their settings): the caller drops their rows."""
    from segdeploy.study import content

    study_dir = Path(study_dir)
    plan_file = study_dir / PLAN
    stale: list[str] = []
    old: dict = {}
    diff = None
    if plan_file.is_file():
        old = read_json(plan_file)
        if isinstance(old.get("study"), dict):  # a plan written before a key was renamed
            old["study"] = upgrade_keys(old["study"])
        diff = _first_difference(old.get("study"), config.as_dict())
        if diff and not force:
            key, was, now = diff
            raise SegdeployError(
                f"this folder holds the plan of another study: key `{key}` differs (planned: {json.dumps(was)}, "
                f"{config.path or 'this study'}: {json.dumps(now)}).", path=plan_file,
                fix="run into a new --out folder, or pass --force to re-plan this one (cells whose settings changed "
                    "are redone and their old rows dropped).")
    # checked before anything is invalidated (a refused run changes nothing)
    fingerprints, changed = content.survey(study_dir, config, planned=old.get("datasets"), force=force)
    if diff:
        stale = _invalidate(study_dir, config, cells, old)
    if changed:
        stale += [c for c in _invalidate_datasets(study_dir, config, cells, changed) if c not in stale]
    study_dir.mkdir(parents=True, exist_ok=True)
    datasets = content.record(study_dir, fingerprints)
    if config.path:
        atomic_write_text(study_dir / "study.toml", Path(config.path).read_text(encoding="utf-8"))
    plan = {"schema": PLAN_SCHEMA, "study_file": config.path, "study": config.as_dict(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "n_cells": len(cells),
            "datasets": datasets,
            "cells": [{**asdict(c), "dir": f"{CELLS}/{c.cell_id}", "fingerprint": fingerprint(config, c)}
                      for c in cells]}
    if {**plan, "created": None} != {**old, "created": None}:  # an unchanged plan keeps its file (and date)
        atomic_write_json(plan_file, plan)
    return stale


def _invalidate_datasets(study_dir: Path, config: StudyConfig, cells: list[Cell], changed: list[str]) -> list[str]:
    """After a forced re-plan over changed datasets: cells trained on one lose their folder (their splits moved);
    cells scored on one as a cross-dataset target keep their model but lose their bench rows."""
    stale = []
    for cell in cells:
        targets = {c.target for c in config.cross if c.source == cell.dataset}
        if cell.dataset in changed:
            shutil.rmtree(cell_dir(study_dir, cell), ignore_errors=True)
        elif targets & set(changed):
            _drop_bench(cell_dir(study_dir, cell))
        else:
            continue
        stale.append(cell.cell_id)
    return stale


def _drop_bench(folder: Path) -> None:
    for name in (MARKER, "bench.jsonl"):
        (folder / name).unlink(missing_ok=True)
    for name in ("cam", "bench.per_image"):  # bench's per-image sidecars live beside its bench.jsonl
        shutil.rmtree(folder / name, ignore_errors=True)


def _invalidate(study_dir: Path, config: StudyConfig, cells: list[Cell], old_plan: dict) -> list[str]:
    """After a forced re-plan: a cell whose training settings changed loses its folder; one whose bench settings
    changed keeps its model and ONNX files but loses its bench rows, per-image files and Grad-CAM; cells gone from
    the plan keep their folders but their rows are dropped."""
    stale = []
    current = {c.cell_id: c for c in cells}
    for entry in old_plan.get("cells", []):
        cid = entry["cell_id"]
        cell = current.get(cid)
        if cell is None:
            stale.append(cid)
            continue
        if entry.get("fingerprint") == fingerprint(config, cell):
            continue
        stale.append(cid)
        folder = cell_dir(study_dir, cell)
        record = folder / CELL_RECORD
        same_training = record.is_file() and read_json(record).get("train_fingerprint") == train_fingerprint(config,
                                                                                                              cell)
        if same_training:
            _drop_bench(folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return stale
