"""FP16 ONNX from the FP32 export.

ONNX Runtime's converter (onnxruntime.transformers.float16) rather than onnxconverter_common's: the latter
clamps constants to +-1e4 and keeps Resize in FP32 by default, which changes what TensorRT builds. With
``keep_io_types`` the file still takes and returns float32, with Cast nodes at the boundary.
"""

from __future__ import annotations

from pathlib import Path

from segdeploy.export.onnx_export import save_onnx

FP16_CONVERTER = "onnxruntime.transformers.float16 (keep_io_types=True)"


def convert_fp16(fp32_path: str | Path, out_path: str | Path) -> dict:
    """Write an FP16 copy of ``fp32_path`` to ``out_path``; returns what the manifest records about it."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(fp32_path))
    fp16 = OnnxModel(convert_float_to_float16(model, keep_io_types=True))
    # the converter appends the input Casts at the end of the node list: ORT runs that, onnx.checker and
    # TensorRT's parser want nodes in topological order
    fp16.topological_sort(is_deterministic=True)
    save_onnx(fp16.model, out_path)
    onnx.checker.check_model(str(out_path))
    return {"converter": FP16_CONVERTER}
