"""The PyTorch originals of imported models, rebuilt from the files an import kept in ``RUN/source/``.

This is the half of a model format every later stage needs (the run folder, export, the torch backend, Grad-CAM),
one file per library, kept below them; reading a format and checking parity with its library is the importer's
half (:mod:`segdeploy.models.importers`, one file per format, above export). A format whose fp32 graph is the
user's own file (``onnx``) has no PyTorch original: :func:`given_graph` names the file export takes as is.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch.nn as nn

from segdeploy.errors import BackendUnavailable, SegdeployError

SOURCE_DIR = "source"  # RUN/source/: the files an imported model is rebuilt from
GIVEN_ONNX = "model.onnx"  # RUN/source/model.onnx: an imported ONNX model's own graph (segdeploy's I/O names)
_BUILDERS = {"smp": "smp", "hf": "hf", "nnunet": "nnunet"}  # format -> module of this package with build()


class NoTorchOriginal(BackendUnavailable):
    """The imported model has no PyTorch form (an ONNX file): the torch backend and Grad-CAM cannot run it."""


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


def import_record(meta) -> ImportRecord | None:
    """The ``imported`` entry of a run's :class:`~segdeploy.records.RunMeta` (None: trained by segdeploy)."""
    data = meta.extra.get("imported")
    return ImportRecord.from_json(data) if isinstance(data, dict) else None


def require_extra(module: str, extra: str, fmt: str) -> None:
    """Import ``module`` or stop with one line naming the extra that installs it."""
    try:
        # nnunetv2 prints three paragraphs about unset nnUNet_* folders on import; segdeploy needs none of them
        with contextlib.redirect_stdout(io.StringIO()):
            importlib.import_module(module)
    except ImportError as e:
        raise SegdeployError(f"format {fmt!r} needs the Python package {module!r} ({e}).",
                             fix=f"pip install 'segdeploy[{extra}]'") from e


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


def given_graph(run_dir: Path, record: ImportRecord | None) -> Path | None:
    """The imported ONNX file that is the run's fp32 graph, or None where export exports the PyTorch original."""
    return Path(run_dir) / SOURCE_DIR / GIVEN_ONNX if record is not None and record.format == "onnx" else None


def build_imported(run_dir: Path, record: ImportRecord) -> nn.Module:
    """The PyTorch original of an imported run, on CPU, in eval mode."""
    if record.format == "onnx":
        raise NoTorchOriginal("an imported ONNX model has no PyTorch original (torch backend, Grad-CAM).",
                              fix="bench it with onnxruntime/openvino/tensorrt; import the PyTorch model (smp, hf) "
                                  "for the rest.")
    if record.format not in _BUILDERS:
        raise SegdeployError(f"the run was imported from format {record.format!r}, which this segdeploy cannot "
                             "rebuild.", path=Path(run_dir) / "model.json",
                             fix=f"use a segdeploy that knows it, or re-import with one of {', '.join(_BUILDERS)}.")
    module = importlib.import_module(f"{__name__}.{_BUILDERS[record.format]}")
    return module.build(Path(run_dir) / SOURCE_DIR, record).eval()
