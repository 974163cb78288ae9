"""``RUN_DIR/onnx/manifest.json``: what each export wrote (files, hashes, exporter, parity, Q/DQ report), as the
typed, schema-versioned :class:`ExportManifest`, read and written here only.

Manifests written before the schema was versioned have no ``schema`` key: they load as ``segdeploy.manifest/1``
(the fields are the same). Keys this version does not know are kept (``extra``) and written back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from segdeploy.errors import SegdeployError
from segdeploy.fileio import atomic_write_json, read_json
from segdeploy.run.folder import manifest_path

MANIFEST_SCHEMA = "segdeploy.manifest/1"


@dataclass
class ExportManifest:
    """One run's exports. ``precisions``: precision -> its entry (``status`` ok|failed, ``file``, ``sha256``,
    ``size_mb``, ``parity``, ``exporter``, ``opset``, ``created``; int8: ``forms``, ``qdq``, ``int8_auto``)."""

    schema: str = MANIFEST_SCHEMA
    model: str | None = None
    run: str | None = None
    created: str | None = None
    torch: str | None = None  # the library versions of the last export
    onnx: str | None = None
    onnxruntime: str | None = None
    input: dict = field(default_factory=dict)  # the I/O contract: name, shape, dtype
    output: dict = field(default_factory=dict)
    imported: dict | None = None  # an imported model's format, source and parity with its own library
    precisions: dict[str, dict] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, path: Path | None = None) -> ExportManifest:
        if not isinstance(data, dict):
            raise SegdeployError("not an export manifest (a JSON object).", path=path,
                                 fix="delete it and re-export the run (segdeploy export RUN).")
        schema = data.get("schema", MANIFEST_SCHEMA)  # unversioned: written before the schema key, same fields
        if not str(schema).startswith("segdeploy.manifest/"):
            raise SegdeployError(f"schema {schema!r} is not an export manifest.", path=path,
                                 fix="delete it and re-export the run (segdeploy export RUN).")
        names = {f.name for f in fields(cls)} - {"extra", "schema"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names and k != "schema"}
        return cls(schema=str(schema), **known, extra=extra)

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        if out["imported"] is None:
            del out["imported"]  # a zoo model's manifest reads as before imports existed
        return {**out, **self.extra}

    def entry(self, precision: str) -> dict:
        """The entry of ``precision`` ({} when it was never exported)."""
        return self.precisions.get(precision) or {}

    def is_ok(self, precision: str) -> bool:
        return self.entry(precision).get("status") == "ok"


def read_manifest(run_dir: str | Path) -> ExportManifest:
    """The run's ``onnx/manifest.json``, or an empty manifest before the first export."""
    path = manifest_path(run_dir)
    return ExportManifest.from_json(read_json(path), path) if path.is_file() else ExportManifest()


def write_manifest(run_dir: str | Path, manifest: ExportManifest) -> None:
    atomic_write_json(manifest_path(run_dir), manifest.to_json())


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
