"""``segdeploy export``: a trained run -> ONNX fp32 / fp16 / int8 (Q/DQ), each checked against PyTorch.

    RUN_DIR/onnx/model.fp32.onnx   dynamo export (legacy TorchScript exporter as fallback), dynamic batch
    RUN_DIR/onnx/model.fp16.onnx   onnxruntime.transformers.float16, float32 inputs/outputs kept
    RUN_DIR/onnx/model.int8.onnx   TensorRT-style Q/DQ (int8 weights, DQ only), calibrated on training images
    RUN_DIR/onnx/model.int8-cpu.onnx   the same calibration in the CPU runtimes' form (uint8 activations)
    RUN_DIR/onnx/manifest.json     files, hashes, exporter, parity vs PyTorch fp32, Q/DQ report

Modules: ``pipeline`` (``export_run``: the orchestration), ``calibration`` (the run's images for parity and
calibration), ``manifest`` (manifest I/O), ``onnx_export`` / ``precision`` / ``quantize`` / ``int8_auto`` (one
step each). Heavy libraries are imported on first use so that the CLI starts fast.
"""

from __future__ import annotations

import importlib

from segdeploy.backends import DEFAULT_INT8_FORM, INT8_FORM_BACKENDS, int8_form_for
from segdeploy.export.calibration import load_images
from segdeploy.export.pipeline import MIN_OPSET, export_run
from segdeploy.run.folder import EXPORT_PRECISIONS
from segdeploy.run.manifest import read_manifest

# public names that live in modules importing torch/onnx/onnxruntime, resolved on first access (PEP 562)
_LAZY = {
    "export_onnx": "segdeploy.export.onnx_export",
    "parity": "segdeploy.export.onnx_export",
    "ExportFailed": "segdeploy.export.onnx_export",
    "convert_fp16": "segdeploy.export.precision",
    "quantize_int8": "segdeploy.export.quantize",
    "qdq_report": "segdeploy.export.quantize",
}
__all__ = ["DEFAULT_INT8_FORM", "EXPORT_PRECISIONS", "INT8_FORM_BACKENDS", "MIN_OPSET", "export_run",
           "int8_form_for", "load_images", "read_manifest", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
