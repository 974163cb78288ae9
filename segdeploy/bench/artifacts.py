"""What a bench configuration measures, as one sha256 (the row's ``artifact_sha256``, part of its resume key).

A row is only as current as the file it measured: after ``segdeploy export ... --precisions int8`` (again, with
another calibration) the next ``bench`` must measure the new file, not return the row of the old one. So:

- ``torch``, ``torch-compile``: sha256 of ``model.safetensors`` (the checkpoint the module is built from);
- ``onnxruntime*``, ``openvino*``: sha256 of the ONNX file the backend loads (``engines.onnx_for_backend``:
  ``onnx/model.<precision>.onnx``, or for INT8 the form made for that backend, e.g. ``model.int8-cpu.onnx``) and
  its external-data files
  (``segdeploy.engines.trt_build.onnx_digest``; for a single file its plain sha256, as ``onnx/manifest.json``
  records it);
- ``tensorrt``: sha256 of the engine's build record ``engines/model.<precision>.json`` (it names the ONNX sha256,
  TensorRT version, GPU, profile and build time), when that record was built from today's ONNX file; None before
  the engine exists or when it is stale, as ``load`` then (re)builds it and the row records the new one.

None means no artifact exists (yet): the configuration is unavailable, or the backend is not one of these; also
for ONNX files (and engines built from them) exported from another checkpoint than today's ``model.safetensors``
(``segdeploy.engines.integrity``): a row stored for them is not this run's any more, and loading them fails the row.
Hashes are read from the files, not from the manifest, so a file replaced after export is not mistaken for the
one measured. Each file is hashed once per process while its inode, size and times stay the same.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from segdeploy.backends import backend_info
from segdeploy.engines import onnx_files
from segdeploy.run.artifacts import file_sha256

# the ONNX precision each openvino precision reads (bf16 is computed from the fp32 file)
_ONNX_PRECISION = {"bf16": "fp32"}


def onnx_sha256(path: Path) -> str | None:
    """``onnx_digest`` with cached file hashes; None without the file, or for one ONNX cannot read."""

    if not path.is_file():
        return None
    try:
        files = onnx_files(path)
    except Exception:  # noqa: BLE001 -- a corrupt or refused file: loading the engine reports it on a failed row
        return None
    if len(files) == 1:
        return file_sha256(files[0])
    digests = [(f.name, file_sha256(f)) for f in files]
    if any(d is None for _, d in digests):
        return None
    return hashlib.sha256("".join(f"{name}:{d}\n" for name, d in digests).encode()).hexdigest()


def artifact_sha256(run, backend: str, precision: str) -> str | None:
    """The sha256 of what ``backend`` runs for ``run`` at ``precision`` (see the module docstring)."""
    from segdeploy.run.folder import onnx_path

    info = backend_info(backend)
    if info is None:
        return None
    if not info.reads_onnx:
        return file_sha256(run.weights_path)
    from segdeploy.engines.integrity import checkpoint_changed

    if backend != "tensorrt":  # tensorrt runs an engine built from the ONNX file: its record is hashed below
        from segdeploy.engines import onnx_for_backend

        if backend.startswith("openvino"):
            precision = _ONNX_PRECISION.get(precision, precision)
        if checkpoint_changed(run, precision):
            return None
        return onnx_sha256(onnx_for_backend(run, precision, backend)[0])
    from segdeploy.engines.trt_build import engine_path, record_path

    record, onnx = record_path(run.dir, precision), onnx_sha256(onnx_path(run.dir, precision))
    if onnx is None or checkpoint_changed(run, precision) or not (record.is_file()
                                                                  and engine_path(run.dir, precision).is_file()):
        return None
    try:
        built = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged record: load() rebuilds the engine
    if not isinstance(built, dict) or built.get("onnx_sha256") != onnx:
        return None  # built from another ONNX file: load() rebuilds it
    return hashlib.sha256(json.dumps(built, sort_keys=True).encode()).hexdigest()
