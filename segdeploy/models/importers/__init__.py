"""Model importers: a model trained elsewhere -> a segdeploy run folder every later stage accepts. One file per
format, registered by name as the data importers are (:mod:`segdeploy.data.importers`).

A format is a :class:`ModelFormat`: ``scan(src, options) -> Imported`` reads SRC; ``library_predict(src, image,
x, imported)`` is the original library's own prediction on one image, the reference of the parity check;
``pipeline(forward, record, tile_batch)`` (optional) is the format's own inference around the exported graph
(nnunet: sliding window), which bench and parity run instead of one letterboxed forward per image. Rebuilding the
PyTorch original from ``RUN/source/`` is the format's file in :mod:`segdeploy.models.imported`, below the run
folder and export that need it (an ``onnx`` import has none: its file is the fp32 graph export takes as is).
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from segdeploy.errors import SegdeployError
from segdeploy.models import imported
from segdeploy.models.importers.base import (PARITY_TARGET, SOURCE_DIR, ImportOptions, ImportRecord,  # noqa: F401
                                             NoTorchOriginal)  # PARITY_TARGET, NoTorchOriginal: re-exported

_MODULES = ("onnx", "smp", "hf", "nnunet")  # imported on first lookup; each registers itself
_FORMATS: dict[str, "ModelFormat"] = {}
_loaded = False


@dataclass(frozen=True)
class ModelFormat:
    name: str
    library: str  # the Python package of the format (its version goes into model.json)
    extra: str | None  # the pyproject extra that installs it
    scan: Callable
    library_predict: Callable
    # (forward, record, tile_batch) -> image HxWxC -> mask HxW: the format's own inference pipeline around a
    # per-tile forward (nnunet's sliding window); None: one letterboxed forward per image
    pipeline: Callable | None = None


def register_format(fmt: ModelFormat) -> ModelFormat:
    if fmt.name in _FORMATS:
        raise ValueError(f"model format {fmt.name!r} registered twice")
    _FORMATS[fmt.name] = fmt
    return fmt


def _load() -> None:
    global _loaded
    if not _loaded:
        for mod in _MODULES:
            importlib.import_module(f"{__name__}.{mod}")
        _loaded = True


def list_formats() -> list[str]:
    _load()
    return sorted(_FORMATS)


def get_format(name: str) -> ModelFormat:
    _load()
    if name not in _FORMATS:
        raise SegdeployError(f"unknown model format {name!r}.", fix=f"use one of {', '.join(list_formats())}.")
    return _FORMATS[name]


def import_record(run) -> ImportRecord | None:
    return imported.import_record(run.meta)


def row_fields(run) -> dict:
    """What a bench row of an imported run adds: ``imported`` (format, and for nnunet the pipeline settings and
    forwards per image, so latency per image reads as tiles x mirrors x folds)."""
    record = import_record(run)
    if record is None:
        return {}
    return {"imported": {"format": record.format, "pipeline": (record.details or {}).get("pipeline")}}


def run_pipeline(run, forward, tile_batch: int = 1):
    """The imported run's own inference pipeline around ``forward`` (an engine's run), or None where the format
    has none (one letterboxed forward per image, the path every run takes)."""
    record = import_record(run)
    fmt = get_format(record.format) if record else None
    return fmt.pipeline(forward, record, tile_batch) if fmt and fmt.pipeline else None


def refuse_in_sample(run, dataset, ids: list[str]) -> None:
    """Stop when images to be scored are cases an imported model was trained on (nnunet records them): its Dice
    on them would be in-sample. A slice id ``<case>_slice_NNN`` belongs to its case."""
    record = import_record(run)
    cases = set(((record.details or {}).get("training_cases") or {}).get("train") or []) if record else set()
    hit = [i for i in ids if i in cases or i.rsplit("_slice_", 1)[0] in cases]
    if hit:
        raise SegdeployError(f"{len(hit)} of the {len(ids)} images to score from {dataset.name} are cases the "
                             f"imported model was trained on ({', '.join(hit[:4])}{', ...' if len(hit) > 4 else ''}"
                             f"): their Dice would be in-sample.", path=run.dir,
                             fix="score a split the model never saw (its test cases, or its folds' validation "
                                 "cases with --folds of one fold).")


def import_model(fmt_name: str, src: str | Path, run_dir: str | Path, options: ImportOptions, *,
                 data: str | None = None, parity_images: int = 4, split_kw: dict | None = None) -> dict:
    """Read SRC with format ``fmt_name``, write RUN (``source/`` + ``model.json`` [+ ``splits.json``]) and
    measure parity with the original library on ``parity_images`` images (``data``'s test split, else seeded
    synthetic images; ``split_kw``: seed/k/fold of ``data``'s split). Returns the written ``model.json``."""
    from segdeploy.fileio import atomic_write_json, sha256_file
    from segdeploy.models.importers.parity import measure_parity
    from segdeploy.records import DatasetRef, RunMeta, SplitRecord
    from segdeploy.run.folder import META

    fmt = get_format(fmt_name)
    src, run_dir = Path(src).expanduser().resolve(), Path(run_dir)
    if not src.exists():
        raise SegdeployError("the model to import does not exist.", path=src, fix="pass an existing file or folder.")
    if (run_dir / META).exists():
        raise SegdeployError(f"already a run folder ({META} exists).", path=run_dir,
                             fix="import into a new folder, or delete this one first.")
    dataset = splits = None
    if data:  # read first: a data set that cannot be split stops the import before anything is written
        from segdeploy.data import open_dataset

        dataset = open_dataset(data)
        # the data set's own split: test images are the ones parity and bench use, train images calibrate INT8.
        # Whether the model was trained on any of them segdeploy cannot know here (nnunet: see its importer).
        # (split_kw: a study's seed and k, so an imported model is scored on the zoo cells' test images)
        splits = {name: dataset.split(name, **(split_kw or {})) for name in ("train", "val", "test")}
    imp = fmt.scan(src, options)
    files = {}
    for path in imp.read:
        rel = path.relative_to(src).as_posix() if src.is_dir() and path.is_relative_to(src) else path.name
        files[rel] = sha256_file(path)
    source_dir = run_dir / SOURCE_DIR
    if source_dir.exists():
        shutil.rmtree(source_dir)  # a half-written earlier import (model.json, written last, is absent)
    source_dir.mkdir(parents=True)
    for name, path in imp.keep.items():
        (source_dir / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(path, bytes):  # made by the importer (onnx: the normalised graph)
            (source_dir / name).write_bytes(path)
        else:
            shutil.copyfile(path, source_dir / name)
    record = ImportRecord(format=imp.format, source=str(src), files=files, preprocessing=imp.preprocessing,
                          details=imp.details, notes=imp.notes)
    meta = RunMeta(model=imp.model, family=imp.family, run_name=run_dir.name, num_classes=len(imp.classes),
                   classes=imp.classes, in_chans=imp.in_chans, img_size=imp.img_size, mean=imp.mean, std=imp.std,
                   complete=True, versions=_versions(fmt.library), extra={"imported": record.to_json()})
    if dataset is not None:
        from segdeploy.run.splits import write_splits

        if (dataset.in_chans, dataset.num_classes) != (meta.in_chans, meta.num_classes):
            raise SegdeployError(f"the model takes {meta.in_chans}-channel images and predicts {meta.num_classes} "
                                 f"classes; data set {dataset.name} has {dataset.in_chans}-channel images and "
                                 f"{dataset.num_classes} classes.", path=src,
                                 fix="import with --data a data set of the model's classes and channels.")
        meta.dataset = DatasetRef(spec=str(data), name=dataset.name, root=str(dataset.root),
                                  n_images=len(dataset.ids))
        meta.split = SplitRecord(method="dataset", counts={k: len(v) for k, v in splits.items()},
                                 ids_sha256=write_splits(run_dir, splits, dataset=dataset.name))
    if parity_images > 0:
        record.parity = measure_parity(fmt, src, imp, meta, run_dir, dataset, parity_images)
        meta.extra["imported"] = record.to_json()
    atomic_write_json(run_dir / META, meta.to_json())  # last: marks a complete import
    return meta.to_json()


def _versions(library: str) -> dict:
    import torch

    module = importlib.import_module(library)
    return {"torch": torch.__version__, library: getattr(module, "__version__", None)}
