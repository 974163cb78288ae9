"""INT8 Q/DQ ONNX in the form TensorRT accepts, calibrated with ONNX Runtime's static quantizer.

TensorRT only takes symmetric INT8 Q/DQ (zero-point 0) with per-channel weight scales; quantize_static's
defaults give asymmetric activations (non-zero zero-points), so the options below are set explicitly. They
are the ones NVIDIA ModelOpt passes for its "TensorRT-guided" INT8 PTQ.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from segdeploy.errors import SegdeployError
from segdeploy.errors import describe_error
from segdeploy.export.onnx_export import INPUT_NAME
from segdeploy.fileio import atomic_target, commit

CALIB_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}

TENSORRT_QDQ_OPTIONS = {
    "ActivationSymmetric": True,  # zero-point 0 for activations
    "WeightSymmetric": True,
    "QuantizeBias": False,  # TensorRT fuses float biases itself
    "AddQDQPairToWeight": True,  # weights stay float behind a Q->DQ pair, the explicit-quantization form
    "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},
    "ForceQuantizeNoInputCheck": True,
    "DedicatedQDQPair": False,
    "QDQDisableWeightAdjustForInt32Bias": True,
}


# Q/DQ goes in front of the layers TensorRT runs in INT8 (the weighted ones); it fuses the elementwise ops
# around them. Left to its defaults ORT also quantizes LayerNormalization's scale per-tensor.
QUANTIZED_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds preprocessed images (N, C, S, S) to the calibrator one at a time."""

    def __init__(self, images: np.ndarray):
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.rewind()

    def get_next(self) -> dict | None:
        if self._next >= len(self.images):
            return None
        self._next += 1
        return {INPUT_NAME: self.images[self._next - 1:self._next]}

    def rewind(self) -> None:
        self._next = 0


def preprocess_for_quantization(fp32_path: str | Path, out_path: Path) -> tuple[Path, dict]:
    """``quant_pre_process`` (shape inference + graph optimisation, ORT's recommended first step) into
    ``out_path``; if it fails, the plain FP32 model is used and the reason returned as ``preprocess_error``.
    Deterministic, so node names found in its output (see int8_auto) name the same nodes on every call."""
    try:
        quant_pre_process(str(fp32_path), str(out_path))
        return out_path, {"preprocessed": True}
    except Exception as e:  # symbolic shape inference does not cover every op; quantizing without it works
        return Path(fp32_path), {"preprocessed": False, "preprocess_error": describe_error(e)}


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calib_images: np.ndarray,
                  method: str = "minmax", nodes_to_exclude: list[str] | None = None) -> dict:
    """Write a TensorRT-style INT8 Q/DQ model of ``fp32_path`` calibrated on ``calib_images``; the nodes named in
    ``nodes_to_exclude`` (names in the pre-processed graph) stay in floating point."""
    if method not in CALIB_METHODS:
        raise SegdeployError(f"unknown calibration method {method!r}.", fix=f"use one of {', '.join(CALIB_METHODS)}.")
    if len(calib_images) == 0:
        raise SegdeployError("no calibration images.", fix="pass --calib-images N with N >= 1.")
    out_path = Path(out_path)
    info: dict = {"calibration": {"method": method, "images": int(len(calib_images))}}
    with tempfile.TemporaryDirectory(prefix="segdeploy-int8-") as tmp:
        source, pre = preprocess_for_quantization(fp32_path, Path(tmp) / "preprocessed.onnx")
        info.update(pre)
        target = atomic_target(out_path)
        quantize_static(str(source), str(target), ArrayCalibrationReader(calib_images),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CALIB_METHODS[method],
                        nodes_to_exclude=list(nodes_to_exclude or []), extra_options=dict(TENSORRT_QDQ_OPTIONS))
        commit(target, out_path)
    if nodes_to_exclude:
        info["excluded_nodes"] = list(nodes_to_exclude)
    return info


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def qdq_report(onnx_path: str | Path) -> dict:
    """What TensorRT cares about in a Q/DQ model.

    ``all_zero_points_zero``: every Q/DQ zero-point is 0 (a missing zero-point counts as 0 but means uint8);
    ``int8_only``: every zero-point is an explicit int8 tensor; ``per_channel_weights``: every quantized
    weight (a QuantizeLinear whose input is an initializer) has a 1-D per-channel scale.
    """
    model = onnx.load(str(onnx_path))
    constants = _constants(model)
    initializers = {t.name for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    zero_points_zero = int8_only = True
    weight_scale_ndims = []
    for node in qdq:
        zero_point = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero_point is None:
            int8_only = False  # ONNX defaults a missing zero-point to uint8
        else:
            int8_only &= zero_point.dtype == np.int8
            zero_points_zero &= bool(np.all(zero_point == 0))
        if node.op_type == "QuantizeLinear" and node.input[0] in initializers:
            weight_scale_ndims.append(constants[node.input[1]].ndim)
    return {
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in qdq),
        "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in qdq),
        "quantized_weights": len(weight_scale_ndims),
        "all_zero_points_zero": zero_points_zero,
        "per_channel_weights": bool(weight_scale_ndims) and all(d == 1 for d in weight_scale_ndims),
        "int8_only": int8_only and bool(qdq),
    }
