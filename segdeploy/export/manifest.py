"""``RUN_DIR/onnx/manifest.json``: what each export wrote (files, hashes, exporter, parity, Q/DQ report), read and
written here only."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from segdeploy.fileio import atomic_write_json, read_json


def read_manifest(run_dir: str | Path) -> dict:
    """The run's ``onnx/manifest.json``, or ``{}`` before the first export."""
    from segdeploy.runs import manifest_path

    path = manifest_path(run_dir)
    return read_json(path) if path.is_file() else {}


def write_manifest(run_dir: str | Path, manifest: dict) -> None:
    from segdeploy.runs import manifest_path

    atomic_write_json(manifest_path(run_dir), manifest)


def manifest_header(run) -> dict:
    """The manifest's top-level fields for ``run``'s export now: model, run, time, library versions and the I/O
    contract every exported file keeps (float32 ``input`` and ``logits``, dynamic batch)."""
    meta = run.meta
    imported = meta.extra.get("imported")
    # an imported model: where it came from and how its masks agreed with its own library's at import
    origin = {"imported": {k: imported.get(k) for k in ("format", "source", "parity")}} if imported else {}
    return {"model": meta.model, "run": run.name, "created": now(), **_versions(), **origin,
            "input": {"name": "input", "shape": ["batch", *run.input_shape], "dtype": "float32"},
            "output": {"name": "logits", "shape": ["batch", meta.num_classes, *run.input_shape[1:]],
                       "dtype": "float32"}}


def _versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
