"""One cell of a study, start to finish: train (or, cost-only, initialise) -> export -> bench on the test split and
on every cross-dataset target -> optional Grad-CAM; returns the cell's rows.

This is what an executor runs (in the driver's process, or in a Ray worker), so it writes artifacts only inside the
cell's own folder and never the study's results file: the driver appends the returned rows. Every stage resumes:
a complete model.json skips training, ``train_state.pt`` continues it (``train_model(resume=True)``), exported
precisions are kept, bench skips configurations already in the cell's ``bench.jsonl``, an existing ``cam.json``
skips Grad-CAM. Any exception becomes one ``failed`` row with the stage and the reason (the study goes on).
"""

from __future__ import annotations

import errno
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from segdeploy.backends import reads_onnx
from segdeploy.errors import SegdeployError, WriteFailed
from segdeploy.fileio import atomic_write_json, atomic_write_text
from segdeploy.records import BenchRow
from segdeploy.study.config import CrossTarget, StudyConfig
from segdeploy.study.plan import CELL_RECORD, STATUS, Cell, cell_dir, fingerprint, train_fingerprint

BENCH_FILE = "bench.jsonl"
CAM_DIR = "cam"


@dataclass
class CellOutcome:
    cell_id: str
    status: str  # ok | failed
    rows: list[dict]
    seconds: float
    stage: str
    reason: str | None = None
    host: str = field(default_factory=socket.gethostname)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _limit_threads(n: int) -> None:
    """The same intra-op thread count in every executor, so CPU training reduces in the same order everywhere."""
    import torch

    torch.set_num_threads(n)


def run_cell(config: StudyConfig, cell: Cell, study_dir: str | Path) -> CellOutcome:
    folder = cell_dir(study_dir, cell)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    started = _now()
    stage = "start"

    def enter(name: str) -> None:
        nonlocal stage
        stage = name
        atomic_write_json(folder / STATUS, {"stage": name, "started": started, "host": socket.gethostname(),
                                            "pid": os.getpid()})

    try:
        atomic_write_json(folder / CELL_RECORD, {"cell": cell.study_field(), "fingerprint": fingerprint(config, cell),
                                                 "train_fingerprint": train_fingerprint(config, cell)})
        _limit_threads(config.resources.num_cpus)
        if cell.imported:  # a model trained elsewhere: imported with the cell's dataset, never trained
            from segdeploy.study.imported import import_into
            from segdeploy.study.plan import imported_entry

            enter("import")
            meta = import_into(imported_entry(config, cell), cell.dataset, folder, seed=config.seed, k=config.k)
        else:
            enter("train" if config.train else "init")
            meta = train_cell(config, cell, folder) if config.train else _init_untrained(config, cell, folder)
        val_dice = (meta.val or {}).get("dice") if config.train and not cell.imported else None
        if any(reads_onnx(b) for b in config.backends):
            enter("export")
            export_cell(config, folder)
        enter("bench")
        curve = training_curve(folder, meta) if config.train else None
        rows = [_tag(r, cell, val_dice, target=cell.dataset_name, train_curve=curve)
                for r in _bench(config, folder, cell.dataset, "test")]
        for cross in (c for c in config.cross if c.source == cell.dataset):
            enter(f"bench {cross.name}")
            rows += [_tag(r, cell, val_dice, target=cross.name) for r in _bench_cross(config, cell, folder, cross)]
        if config.gradcam:
            enter("gradcam")
            cam = _gradcam(config, cell, folder)
            for row in rows:
                row.update(cam)
        if not config.train:
            for row in rows:
                row.update(dice=None, dice_status="not measured")
        status, reason = "ok", None
    except Exception as e:  # noqa: BLE001 -- one broken cell must not end the study
        reason = str(e) if isinstance(e, SegdeployError) else f"{type(e).__name__}: {e}"
        if isinstance(e, WriteFailed):  # train/export/bench say how to go on by hand; in a study, the study does
            reason = str(WriteFailed(e.message, path=e.path, fix=rerun_fix(config, study_dir)))
        elif isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            reason = str(WriteFailed(f"cannot write ({e.strerror}).", path=e.filename,
                                     fix=rerun_fix(config, study_dir)))
        atomic_write_text(folder / "error.txt", f"stage {stage}\n{traceback.format_exc()}")
        rows = [failed_row(config, cell, stage, reason)]
        status = "failed"
    return CellOutcome(cell.cell_id, status, rows, time.perf_counter() - t0, stage, reason)


def rerun_fix(config: StudyConfig, study_dir: str | Path) -> str:
    """The way on after a full disk (or a read-only folder) in a cell: the study resumes or restarts the cell's
    training by itself (``_train``), so neither ``train --resume`` nor ``--restart`` is the user's step."""
    study = config.path or "STUDY.toml"
    return (f"free disk space (or fix the permissions), then re-run the study: segdeploy study run {study} --out "
            f"{study_dir} (finished cells are kept; this one continues from what it saved).")


def _tag(row: dict, cell: Cell, val_dice: float | None, *, target: str, train_curve: dict | None = None) -> dict:
    """A bench row with the cell's study fields, written through the record (segdeploy.records.BenchRow)."""
    record = BenchRow.from_json(row)
    record.update(study=cell.study_field(), val_dice=val_dice, train_dataset=cell.dataset_name, target=target,
                  train_curve=train_curve)
    return record.to_json()


def training_curve(folder: Path, meta) -> dict | None:
    """Per-epoch training loss and validation Dice from the run's ``history.jsonl`` (rounded: a curve to draw and
    to judge convergence by, not to recompute anything from), and whether training stopped early; carried in the
    cell's in-domain rows so the report needs only the results file."""
    from segdeploy.fileio import iter_jsonl
    from segdeploy.run.folder import HISTORY

    path = folder / HISTORY
    if not path.is_file():
        return None
    epochs = [e for e in iter_jsonl(path) if isinstance(e, dict)]

    def r(v):
        return None if v is None else round(float(v), 5)

    return {"loss": [r(e.get("loss")) for e in epochs], "val_dice": [r(e.get("val_dice")) for e in epochs],
            "stopped_early": bool(getattr(meta, "stopped_early", False)),
            "best_epoch": getattr(meta, "best_epoch", None)}


def failed_row(config: StudyConfig, cell: Cell, stage: str, reason: str) -> dict:
    from segdeploy.bench.runner import SCHEMA

    row = BenchRow(schema=SCHEMA, timestamp=_now(), status="failed", reason=f"{stage}: {reason}",
                   model=cell.model, dataset=cell.dataset_name, run_name=cell.cell_id,
                   train_dataset=cell.dataset_name, target=cell.dataset_name,
                   dice_status=None if config.train else "not measured", extra={"stage": stage})
    row.update(study=cell.study_field())
    return row.to_json()


def train_cell(config: StudyConfig, cell: Cell, folder: Path, *, progress: bool = False):
    """The cell's trained run (a ``RunMeta``): trained here, continued from its last epoch, or found complete.
    The one set of training resume rules (``segdeploy demo`` runs its cells through it too)."""
    from segdeploy.run.folder import HISTORY, META, TRAIN_STATE, WEIGHTS, read_meta
    from segdeploy.train.loop import TrainConfig, train_model

    if (folder / META).is_file():
        meta = read_meta(folder)
        if meta.complete:
            return meta
    resume = (folder / TRAIN_STATE).is_file()
    # killed after the first best checkpoint but before the first training state: nothing to continue from, so
    # train's --restart discards the stale checkpoint (it removes training outputs only, not the cell's records)
    restart = not resume and any((folder / name).exists() for name in (WEIGHTS, META, HISTORY))
    cfg = TrainConfig(data=cell.dataset, model=cell.model, out=folder, epochs=config.epochs, img_size=config.img_size,
                      batch_size=config.batch_size, lr=cell.lr, device=config.device, seed=config.seed,
                      patience=config.patience, k=config.k, fold=cell.fold, augment=config.augment,
                      pretrained=config.pretrained, max_train_images=config.max_train_images, resume=resume,
                      restart=restart, class_map=config.class_maps.get(cell.dataset))
    return train_model(cfg, progress=progress)  # the demo shows training's progress bar; a study its live view


def _init_untrained(config: StudyConfig, cell: Cell, folder: Path):
    """Cost only: the registered model from a seeded random initialisation, saved as a run (model.json says
    ``trained: false``) so export and bench treat it like any other."""
    import torch

    from segdeploy.data import open_dataset
    from segdeploy.data.class_map import class_map_record
    from segdeploy.models import count_params, create_model, model_info
    from segdeploy.run.splits import write_splits
    from segdeploy.run.folder import META, read_meta, save_checkpoint

    if (folder / META).is_file() and read_meta(folder).complete:
        return read_meta(folder)
    torch.manual_seed(config.seed)
    ds = open_dataset(cell.dataset, class_map=config.class_maps.get(cell.dataset))
    info = model_info(cell.model)
    model = create_model(cell.model, num_classes=ds.num_classes, in_chans=ds.in_chans, img_size=config.img_size)
    # a dict is validated as a RunMeta by save_checkpoint; "trained" and "init" are kept in its extra keys
    split_kw = dict(seed=config.seed, k=config.k, fold=0)
    split = ds.split_info(**split_kw)
    # the ids export calibrates on (train) and checks parity with (test), recorded as training records them
    split["ids_sha256"] = write_splits(folder, {s: ds.split(s, **split_kw) for s in ("train", "val", "test")},
                                       dataset=ds)
    meta = {"model": cell.model, "family": info.family, "run_name": folder.name, "num_classes": ds.num_classes,
            "classes": ds.classes, "in_chans": ds.in_chans, "img_size": config.img_size,
            "mean": [0.5] * ds.in_chans, "std": [0.5] * ds.in_chans, "fixed_size": info.fixed_size,
            "params_m": round(count_params(model) / 1e6, 4),
            "dataset": {"spec": cell.dataset, "name": ds.name, "root": str(ds.root), "n_images": len(ds.ids),
                        **class_map_record(ds)},
            "split": split, "seed": config.seed, "device": "cpu",
            "amp": None, "trained": False, "init": f"random, torch.manual_seed({config.seed})", "val": None,
            "complete": True}
    save_checkpoint(folder, model, meta)
    return read_meta(folder)


def export_todo(config: StudyConfig, folder: Path) -> list[str]:
    """The precisions still to export: those the run's manifest does not hold as exported."""
    from segdeploy.export import EXPORT_PRECISIONS, read_manifest

    manifest = read_manifest(folder)
    return [p for p in config.precisions if p in EXPORT_PRECISIONS and not manifest.is_ok(p)]


def export_cell(config: StudyConfig, folder: Path) -> None:
    """Export what :func:`export_todo` names; exported precisions are kept (the one export resume rule)."""
    from segdeploy.export import export_run

    todo = export_todo(config, folder)
    if todo:
        export_run(folder, todo)  # a precision that fails is a manifest entry; bench makes it a row


def bench_cell(config: StudyConfig, folder: Path, data: str, split: str, results: Path, **extra):
    """Bench rows (``BenchRow``) of the cell's run on ``data`` with the study's bench settings, appended to
    ``results`` (configurations already there are skipped: bench's own resume rule); ``extra`` adds or overrides
    run_bench arguments (the demo: one results file for all its runs, predictions, its own thread default)."""
    from segdeploy.bench.runner import run_bench

    kwargs = dict(split=split, batch=config.bench_batch, device=config.device, duration=config.duration,
                  progress=False, threads=config.bench_threads, isolate=config.isolate, timeout=config.timeout)
    if not config.train:
        kwargs["measure_accuracy"] = False
    return run_bench([folder], data, config.backends, config.precisions, results, **{**kwargs, **extra})


def _bench(config: StudyConfig, folder: Path, data: str, split: str, **extra) -> list[dict]:
    """Bench rows of the cell's run on ``data`` as JSON objects. Bench writes each scored row's per-image
    confusions beside the cell's bench.jsonl; ``per_image`` is re-based here to the study folder."""
    rows = [r.to_json() for r in bench_cell(config, folder, data, split, folder / BENCH_FILE, **extra)]
    for row in rows:
        if row.get("per_image"):
            row["per_image"] = f"{folder.parent.name}/{folder.name}/{row['per_image']}"
    return rows


def _bench_cross(config: StudyConfig, cell: Cell, folder: Path, cross: CrossTarget) -> list[dict]:
    """Rows for one cross-dataset target (through its class map, if any); a target that cannot be scored is one
    failed row saying why."""
    from segdeploy.bench.runner import SCHEMA

    try:
        return _bench(config, folder, cross.target, cross.split, class_map=cross.class_map)
    except SegdeployError as e:
        return [{"schema": SCHEMA, "timestamp": _now(), "model": cell.model, "run_name": cell.cell_id,
                 "dataset": cross.name, "data": cross.target, "split": cross.split, "backend": None,
                 "precision": None, "dice": None, "status": "failed", "reason": str(e)}]


def _gradcam(config: StudyConfig, cell: Cell, folder: Path) -> dict:
    """``gradcam``: cam.json's path relative to the study folder (None with ``gradcam_error`` when it failed)."""
    from segdeploy.xai.gradcam import CAM_JSON, gradcam_run

    out = folder / CAM_DIR
    rel = f"{folder.parent.name}/{folder.name}/{CAM_DIR}/{CAM_JSON}"
    if not (out / CAM_JSON).is_file():
        try:
            gradcam_run(folder, cell.dataset, out, worst=config.gradcam_worst, random=0, seed=config.seed)
        except Exception as e:  # noqa: BLE001 -- explanations are optional; the measured rows stand
            return {"gradcam": None, "gradcam_error": f"{type(e).__name__}: {e}"}
    return {"gradcam": rel}
