"""What a model importer returns and what ``model.json`` records about an imported model.

An importer only reads its format: it names the files a run must keep to rebuild the model (copied into
``RUN/source/``), every file it read (their sha256 go into ``model.json``), the classes, input channels and
preprocessing. :mod:`segdeploy.models.importers` writes the run folder and measures parity.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from segdeploy.errors import BackendUnavailable, SegdeployError

SOURCE_DIR = "source"  # RUN/source/: the files an imported model is rebuilt from
IMPORT_FAMILIES = ("specialized", "general")
PARITY_TARGET = 0.999  # share of pixels whose class must agree with the original library's prediction


class NoTorchOriginal(BackendUnavailable):
    """The imported model has no PyTorch form (an ONNX file): the torch backend and Grad-CAM cannot run it."""


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


@dataclass
class ImportRecord:
    """``model.json``'s ``imported`` entry."""
    format: str
    source: str  # SRC as given, resolved
    files: dict[str, str]  # path relative to SRC (or absolute) -> sha256
    preprocessing: dict
    details: dict = field(default_factory=dict)
    parity: dict | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ImportRecord:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def require_extra(module: str, extra: str, fmt: str) -> None:
    """Import ``module`` or stop with one line naming the extra that installs it."""
    import contextlib
    import io

    try:
        # nnunetv2 prints three paragraphs about unset nnUNet_* folders on import; segdeploy needs none of them
        with contextlib.redirect_stdout(io.StringIO()):
            importlib.import_module(module)
    except ImportError as e:
        raise SegdeployError(f"format {fmt!r} needs the Python package {module!r} ({e}).",
                             fix=f"pip install 'segdeploy[{extra}]'") from e


def refuse_pickle(path: Path, allow: bool, fmt: str) -> None:
    """A ``.bin``/``.pth``/``.pt`` weights file is a pickle: loading it can run any code its author put in it."""
    if not allow:
        raise SegdeployError(f"the weights are a pickle ({path.name}); loading a pickle can execute arbitrary code "
                             "stored in it, so segdeploy reads safetensors only.", path=path,
                             fix=f"re-save the model with safetensors (save_pretrained(..., safe_serialization=True)),"
                                 f" or pass --allow-pickle if you trust whoever wrote the file ({fmt}).")


def read_json_file(path: Path, what: str) -> dict:
    if not path.is_file():
        raise SegdeployError(f"{what} is missing.", path=path, fix="pass the folder save_pretrained wrote.")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SegdeployError(f"{what} is not readable JSON ({e}).", path=path, fix="restore the file.") from e
    if not isinstance(data, dict):
        raise SegdeployError(f"{what} is not a JSON object.", path=path, fix="restore the file.")
    return data


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
