"""What a model importer returns and what ``model.json`` records about an imported model.

An importer only reads its format (rebuilding the model from the kept files is :mod:`segdeploy.models.imported`,
below every stage that needs it): it names the files a run must keep to rebuild the model (copied into
``RUN/source/``), every file it read (their sha256 go into ``model.json``), the classes, input channels and
preprocessing. :mod:`segdeploy.models.importers` writes the run folder and measures parity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from segdeploy.errors import SegdeployError
from segdeploy.models.imported import (SOURCE_DIR, ImportRecord, NoTorchOriginal,  # noqa: F401 -- re-exported
                                       read_json_file, require_extra)

IMPORT_FAMILIES = ("specialized", "general")
PARITY_TARGET = 0.999  # share of pixels whose class must agree with the original library's prediction


@dataclass
class ImportOptions:
    family: str | None = None  # None: the format's default
    mean: list[float] | None = None
    std: list[float] | None = None
    size: int | None = None
    classes: list[str] | None = None
    in_chans: int | None = None
    allow_pickle: bool = False
    folds: str | None = None  # nnunet: "0,1" or "all"
    checkpoint: str = "final"  # nnunet: final | best
    preprocessed: Path | None = None  # nnunet: the preprocessed dataset folder (splits_final.json)
    mirroring: bool = True  # nnunet: test-time mirroring over the checkpoint's allowed axes
    tile_step: float = 0.5  # nnunet: sliding-window step, a fraction of the patch (nnU-Net's default 0.5)
    spec: Path | None = None  # onnx: a JSON with mean/std/size/classes/in_chans


@dataclass
class Imported:
    """One importer's reading of SRC."""
    format: str
    model: str  # what the run's rows call the model, e.g. "smp:Unet(resnet18)"
    family: str
    classes: list[str]
    in_chans: int
    img_size: int
    mean: list[float]
    std: list[float]
    keep: dict[str, Path | bytes]  # file name under RUN/source/ -> file in SRC (or its bytes)
    read: list[Path]  # every file read (sha256 in model.json); includes ``keep``
    preprocessing: dict  # how inputs are made, in the format's own words (scheme, size, mean/std)
    details: dict = field(default_factory=dict)  # format-specific record (nnunet folds, pipeline, ...)
    notes: list[str] = field(default_factory=list)


def refuse_pickle(path: Path, allow: bool, fmt: str) -> None:
    """A ``.bin``/``.pth``/``.pt`` weights file is a pickle: loading it can run any code its author put in it."""
    if not allow:
        raise SegdeployError(f"the weights are a pickle ({path.name}); loading a pickle can execute arbitrary code "
                             "stored in it, so segdeploy reads safetensors only.", path=path,
                             fix=f"re-save the model with safetensors (save_pretrained(..., safe_serialization=True)),"
                                 f" or pass --allow-pickle if you trust whoever wrote the file ({fmt}).")


def family_or(options: ImportOptions, default: str) -> str:
    family = options.family or default
    if family not in IMPORT_FAMILIES:
        raise SegdeployError(f"unknown family {family!r}.", fix=f"use --family {' or '.join(IMPORT_FAMILIES)}.")
    return family


def class_names(options: ImportOptions, count: int, found: list[str] | None, src: Path) -> list[str]:
    classes = options.classes or found or [f"class_{i}" if i else "background" for i in range(count)]
    if len(classes) != count:
        raise SegdeployError(f"{len(classes)} class names given for a model with {count} outputs.", path=src,
                             fix=f"pass --classes with {count} comma-separated names.")
    return list(classes)
