"""Models trained elsewhere in a study: ``[[imported]]`` tables name a model file or folder and its format, as
``segdeploy models import`` takes them, so "my nnU-Net vs a SegFormer on my data" is one study::

    models = ["segformer-b0"]
    datasets = ["data/x"]

    [[imported]]
    name = "my-nnunet"        # how the study's rows and report name the model
    format = "nnunet"         # onnx, smp, hf or nnunet
    source = "nnUNet_results/Dataset001_X/nnUNetTrainer__nnUNetPlans__2d"
    folds = "0"               # the format's options, as models import's flags
    family = "specialized"

Each imported model is one cell per dataset (no training, no folds or learning rates): imported into the cell's
folder with the dataset as ``--data`` (its test split is what bench scores, its train split calibrates INT8),
then exported and benched as every cell is. Its family is the one given (else the format's default). Not
supported: a dataset with a ``[class_maps]`` entry (the import reads the dataset without it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segdeploy.errors import SegdeployError


@dataclass(frozen=True)
class ImportedModel:
    name: str
    format: str
    source: str  # resolved against the study file's folder
    family: str | None = None
    folds: str | None = None
    checkpoint: str = "final"
    mirroring: bool = True
    tile_step: float = 0.5
    size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    classes: tuple[str, ...] | None = None


def _floats(v: Any) -> tuple[float, ...]:
    from segdeploy.study.values import _number

    return tuple(_number(positive=False)(x) for x in (v if isinstance(v, list) else [v]))


def _spec() -> dict:
    from segdeploy.study.values import _bool, _int, _name, _names, _number

    return {
        "name": (_name, 'name = "my-nnunet"'),
        "format": (_name, 'format = "nnunet" (onnx, smp, hf or nnunet)'),
        "source": (_name, 'source = "nnUNet_results/Dataset001_X/nnUNetTrainer__nnUNetPlans__2d"'),
        "family": (_name, 'family = "specialized"'),
        "folds": (lambda v: str(v) if isinstance(v, int) else _name(v), 'folds = "0,1,2,3,4" or "all"'),
        "checkpoint": (_name, 'checkpoint = "final"'),
        "mirroring": (_bool, "mirroring = true"),
        "tile_step": (_number(), "tile_step = 0.5"),
        "size": (_int(16), "size = 256"),
        "mean": (_floats, "mean = [0.485, 0.456, 0.406]"),
        "std": (_floats, "std = [0.229, 0.224, 0.225]"),
        "classes": (_names, 'classes = ["background", "polyp"]'),
    }


def parse_imported(tables: Any, *, models: tuple[str, ...], base: Path | None, path) -> tuple[ImportedModel, ...]:
    """The study file's ``[[imported]]`` tables, every key checked; sources resolved against the study file."""
    from segdeploy.models.importers import list_formats
    from segdeploy.study.values import _checked

    if isinstance(tables, dict):
        tables = [tables]
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise SegdeployError("`imported` must be an array of tables.", path=path,
                             fix='write [[imported]] then name = "...", format = "nnunet", source = "...".')
    out = []
    for table in tables:
        values = _checked(table, _spec(), "imported.", path)
        missing = [k for k in ("name", "format", "source") if k not in values]
        if missing:
            raise SegdeployError(f"an [[imported]] table lacks `{'`, `'.join(missing)}`.", path=path,
                                 fix='write name = "my-model", format = "nnunet", source = "PATH".')
        if values["format"] not in list_formats():
            raise SegdeployError(f"`imported.format` {values['format']!r} is not a model format.", path=path,
                                 fix=f"use one of {', '.join(list_formats())}.")
        if values.get("family") not in (None, "specialized", "general"):
            raise SegdeployError(f"`imported.family` {values['family']!r}.", path=path,
                                 fix='write family = "specialized" or "general".')
        source = Path(values["source"]).expanduser()
        values["source"] = str((base / source).resolve() if base is not None and not source.is_absolute()
                               else source.resolve())
        out.append(ImportedModel(**values))
    names = [m.name for m in out]
    clash = sorted({n for n in names if names.count(n) > 1 or n in models})
    if clash:
        raise SegdeployError(f"model name(s) {', '.join(clash)} used twice (in `models` or [[imported]]).",
                             path=path, fix="give each [[imported]] model a name = \"...\" of its own.")
    return tuple(out)


def import_into(entry: ImportedModel, dataset: str, folder: Path, *, seed: int, k: int):
    """The cell's run: ``entry`` imported into ``folder`` with ``dataset`` as ``--data`` (or found there), split
    with the study's seed and k as its trained cells are (the test split depends on the seed only)."""
    from segdeploy.models.importers import import_model
    from segdeploy.models.importers.base import ImportOptions
    from segdeploy.run.folder import META, read_meta

    if (folder / META).is_file():  # written last by the import: a complete one
        return read_meta(folder)
    options = ImportOptions(family=entry.family, folds=entry.folds, checkpoint=entry.checkpoint,
                            mirroring=entry.mirroring, tile_step=entry.tile_step, size=entry.size,
                            mean=list(entry.mean) if entry.mean else None, std=list(entry.std) if entry.std else None,
                            classes=list(entry.classes) if entry.classes else None)
    import_model(entry.format, entry.source, folder, options, data=dataset, parity_images=2,
                 split_kw={"seed": seed, "k": k, "fold": 0})
    return read_meta(folder)
