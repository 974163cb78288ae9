"""segdeploy.run.manifest: the export manifest is typed and versioned; manifests written before the schema key load."""

from __future__ import annotations

import json

import pytest

from segdeploy.errors import SegdeployError
from segdeploy.run.folder import manifest_path
from segdeploy.run.manifest import MANIFEST_SCHEMA, ExportManifest, read_manifest, write_manifest

OLD = {  # an onnx/manifest.json as segdeploy wrote it before the schema key (fields cut to the ones read here)
    "model": "unet-tiny", "run": "unet-tiny", "created": "2026-11-29T14:01:32+00:00", "torch": "2.14.1",
    "onnx": "1.23.2", "onnxruntime": "1.32.0", "input": {"name": "input", "shape": ["batch", 1, 64, 64]},
    "output": {"name": "logits"}, "precisions": {"fp32": {"status": "ok", "sha256": "ab" * 32, "size_mb": 2.1},
                                                 "int8": {"status": "failed", "error": "no"}},
    "future_key": [1, 2],
}


def test_an_unversioned_manifest_loads_and_round_trips_with_its_unknown_keys(tmp_path):
    manifest_path(tmp_path).parent.mkdir(parents=True)
    manifest_path(tmp_path).write_text(json.dumps(OLD))
    m = read_manifest(tmp_path)
    assert m.schema == MANIFEST_SCHEMA and m.model == "unet-tiny" and m.is_ok("fp32") and not m.is_ok("int8")
    assert m.entry("fp16") == {} and m.entry("fp32")["size_mb"] == 2.1 and m.extra == {"future_key": [1, 2]}
    write_manifest(tmp_path, m)
    assert json.loads(manifest_path(tmp_path).read_text()) == {**OLD, "schema": MANIFEST_SCHEMA}


def test_no_manifest_is_an_empty_one_and_another_file_is_one_line(tmp_path):
    assert read_manifest(tmp_path) == ExportManifest() and not read_manifest(tmp_path).precisions
    manifest_path(tmp_path).parent.mkdir(parents=True)
    manifest_path(tmp_path).write_text(json.dumps({"schema": "segdeploy.bench/2"}))
    with pytest.raises(SegdeployError, match="not an export manifest"):
        read_manifest(tmp_path)
