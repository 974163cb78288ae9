"""segdeploy.backends: the one table every backend list is derived from."""

from __future__ import annotations

from segdeploy import backends
from segdeploy.records import device_kind


def test_the_lists_derived_from_the_table_are_the_ones_the_code_kept_by_hand():
    onnx = {b.name for b in backends.BACKENDS if b.reads_onnx}
    assert onnx == {"onnxruntime", "onnxruntime-cuda", "onnxruntime-trt", "tensorrt", "openvino", "openvino-gpu",
                    "openvino-npu"}
    assert {b.name for b in backends.BACKENDS if b.needs_gpu} == {"onnxruntime-cuda", "onnxruntime-trt", "tensorrt"}
    assert set(backends.INT8_FORM_BACKENDS["tensorrt"]) == {"tensorrt", "onnxruntime-trt", "onnxruntime-cuda"}
    assert set(backends.INT8_FORM_BACKENDS["cpu"]) == {"onnxruntime", "openvino", "openvino-gpu", "openvino-npu"}
    assert backends.int8_form_for("torch") == backends.DEFAULT_INT8_FORM == "tensorrt"


def test_engines_registry_and_device_kinds_come_from_the_table():
    from segdeploy.engines import BACKENDS, engine_class

    assert list(BACKENDS) == [b.name for b in backends.BACKENDS]
    assert engine_class("onnxruntime").device_kinds("onnxruntime") == ("cpu",)
    assert engine_class("onnxruntime-cuda").device_kinds("onnxruntime-cuda") == ("cuda",)
    assert engine_class("torch").device_kinds("torch") == ("cuda", "cpu")
    assert device_kind("auto", "onnxruntime-trt") == "cuda" and device_kind("auto", "torch") == "auto"
