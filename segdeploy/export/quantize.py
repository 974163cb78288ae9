"""INT8 Q/DQ ONNX, calibrated with ONNX Runtime's static quantizer, in two forms (``INT8_FORMS``).

``tensorrt`` (``onnx/model.int8.onnx``): symmetric int8 activations and per-channel int8 weights, every zero-point 0,
which is the only Q/DQ TensorRT accepts (quantize_static's defaults give asymmetric activations). The options are
the ones NVIDIA ModelOpt passes for its "TensorRT-guided" INT8 PTQ, except that weights are stored as int8
initializers behind a DequantizeLinear alone (ModelOpt's ``--dq_only`` form, which TensorRT also accepts) rather
than as float weights behind a QuantizeLinear -> DequantizeLinear pair: the file is a quarter of fp32 instead of
as large, and the arithmetic is the same (ORT folds Q(W) into the same int8 constant).

``cpu`` (``onnx/model.int8-cpu.onnx``): uint8 asymmetric activations, the same int8 per-channel weights; the form
the CPU runtimes are built for. With int8 activations ORT's x86 graph optimizer leaves some Q/DQ groups unfused
(on SegFormer-B3 31 of 200 MatMuls and 3 Convs run as DequantizeLinear + float op + QuantizeLinear); with uint8
activations every Conv and MatMul becomes QLinearConv/QLinearMatMul (measured with
``SessionOptions.optimized_model_filepath``, see benchmarks/cpu_int8.py). OpenVINO runs both forms at about the same
speed but computes the int8-activation form much less exactly than onnxruntime does. TensorRT rejects this form
(non-zero zero-points). Which backend loads which form: ``segdeploy.backends``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from segdeploy.backends import DEFAULT_INT8_FORM as DEFAULT_FORM  # the form in model.int8.onnx
from segdeploy.errors import SegdeployError, describe_error
from segdeploy.export.onnx_export import INPUT_NAME
from segdeploy.fileio import atomic_target, commit

CALIB_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}
# histogram bins of the entropy calibrator. onnxruntime's defaults to 128 bins, as coarse as the 128 quantized
# levels it compares against: the KL search then has one candidate threshold (the full range) and writes minmax's
# scales exactly. 2048 is TensorRT's entropy calibrator's histogram. quantize_static passes no bin count to its
# calibrator (its extra_options has no such key in onnxruntime 1.32), so these ranges are computed here and handed
# over as its calibration cache. The percentile calibrator already defaults to 2048 bins.
CALIB_NUM_BINS = {"entropy": 2048}

TENSORRT_QDQ_OPTIONS = {
    "ActivationSymmetric": True,  # zero-point 0 for activations
    "WeightSymmetric": True,
    "QuantizeBias": False,  # TensorRT fuses float biases itself
    "AddQDQPairToWeight": False,  # weights stored as int8 initializers behind a DequantizeLinear (--dq_only form)
    "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},
    "ForceQuantizeNoInputCheck": True,
    "DedicatedQDQPair": False,
    "QDQDisableWeightAdjustForInt32Bias": True,
}

CPU_QDQ_OPTIONS = {
    "ActivationSymmetric": False,  # uint8 with a zero-point: the u8 x s8 products x86 VNNI kernels compute
    "WeightSymmetric": True,
    "AddQDQPairToWeight": False,
    "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},
}


@dataclass(frozen=True)
class Int8Form:
    """How one Q/DQ layout of the INT8 model is quantized (which backends load it: segdeploy.backends).

    ``float_activation_matmuls``: MatMuls of two activations (attention's QK^T and its product with V) stay in
    floating point. On x86 CPUs their int8 versions cost more than they save: onnxruntime runs them as
    QLinearMatMul with per-tensor scales and turns the Softmax between them into QLinearSoftmax, both slower than
    the float ops, and OpenVINO falls back around them (full-size models at 256 px, 2 threads, this repository's
    docs/results/README.md: hiformer-b int8 went from 187 to 127 ms on onnxruntime and from 212 to 66 ms on
    OpenVINO, against 160/100 ms in fp32; segformer-b3, vwformer-mit-b3 and missformer gained 3-23%)."""

    name: str
    activation_type: QuantType
    extra_options: dict = field(hash=False)
    description: str
    float_activation_matmuls: bool = False


INT8_FORMS = {
    "tensorrt": Int8Form("tensorrt", QuantType.QInt8, TENSORRT_QDQ_OPTIONS,
                         "int8 symmetric activations, int8 symmetric per-channel weights stored as int8 (DQ only)"),
    "cpu": Int8Form("cpu", QuantType.QUInt8, CPU_QDQ_OPTIONS,
                    "uint8 asymmetric activations, int8 symmetric per-channel weights stored as int8 (DQ only); "
                    "MatMuls of two activations (attention) in float", float_activation_matmuls=True),
}

# ops that turn a constant into another constant on the way to a weight input (after quant_pre_process most are
# folded away; the dynamo exporter's transposed Linear weights are the common case left)
_CONSTANT_PATH_OPS = {"Transpose", "Reshape", "Cast", "Identity", "Unsqueeze", "Squeeze", "DequantizeLinear"}


def activation_matmuls(model_path: str | Path) -> list[str]:
    """Names of the MatMul nodes in ``model_path`` none of whose inputs is a constant (an initializer or a
    Constant, directly or through ``_CONSTANT_PATH_OPS``): products of two activations, such as attention's."""
    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    constant = {t.name for t in graph.initializer}
    constant |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for node in graph.node:  # topological order, so a node's inputs are settled before it
        if node.op_type in _CONSTANT_PATH_OPS and node.input and all(i in constant for i in node.input if i):
            constant.update(node.output)
    return [n.name for n in graph.node if n.op_type == "MatMul" and not any(i in constant for i in n.input)]



# Q/DQ goes in front of the layers TensorRT runs in INT8 (the weighted ones); it fuses the elementwise ops
# around them. Left to its defaults ORT also quantizes LayerNormalization's scale per-tensor. The CPU form uses the
# same selection: quantizing every op (ORT's default) was not faster on ORT and slower on OpenVINO.
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
    fp32_path, out_path = Path(fp32_path).resolve(), Path(out_path).resolve()
    try:
        # in the output's (temporary) folder: when symbolic shape inference fails, onnxruntime saves its partial
        # model as sym_shape_infer_temp.onnx + <uuid>.data (the size of the weights) in the working directory
        with _working_directory(out_path.parent):
            quant_pre_process(str(fp32_path), str(out_path))
        return out_path, {"preprocessed": True}
    except Exception as e:  # symbolic shape inference does not cover every op; quantizing without it works
        return Path(fp32_path), {"preprocessed": False, "preprocess_error": describe_error(e)}


@contextlib.contextmanager
def _working_directory(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


class _PreprocessAdvice(logging.Filter):
    """onnxruntime's quantizer advises, on the root logger and twice per call, to pre-process a model that
    ``quant_pre_process`` could not handle; the manifest already records that and why (``preprocess_error``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()


@contextlib.contextmanager
def _without_preprocess_advice():
    advice = _PreprocessAdvice()
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def histogram_ranges(source: Path, calib_images: np.ndarray, method: str, cache_path: Path) -> Path:
    """Activation ranges of ``source`` from onnxruntime's histogram calibrator for ``method`` with
    ``CALIB_NUM_BINS`` bins, written where quantize_static reads a calibration cache."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    calibrator = create_calibrator(Path(source), list(QUANTIZED_OP_TYPES),
                                   augmented_model_path=str(cache_path.with_name("augmented.onnx")),
                                   calibrate_method=CALIB_METHODS[method],
                                   extra_options={"num_bins": CALIB_NUM_BINS[method]})
    calibrator.collect_data(ArrayCalibrationReader(calib_images))
    save_tensors_data(calibrator.compute_data(), cache_path)
    return cache_path


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calib_images: np.ndarray,
                  method: str = "minmax", nodes_to_exclude: list[str] | None = None, form: str = DEFAULT_FORM) -> dict:
    """Write an INT8 Q/DQ model of ``fp32_path`` in ``form`` (``INT8_FORMS``) calibrated on ``calib_images``; the
    nodes named in ``nodes_to_exclude`` (names in the pre-processed graph) stay in floating point."""
    if form not in INT8_FORMS:
        raise SegdeployError(f"unknown INT8 form {form!r}.", fix=f"use one of {', '.join(INT8_FORMS)}.")
    if method not in CALIB_METHODS:
        raise SegdeployError(f"unknown calibration method {method!r}.", fix=f"use one of {', '.join(CALIB_METHODS)}.")
    if len(calib_images) == 0:
        raise SegdeployError("no calibration images.", fix="pass --calib-images N with N >= 1.")
    out_path = Path(out_path)
    spec = INT8_FORMS[form]
    info: dict = {"calibration": {"method": method, "images": int(len(calib_images))}, "form": form,
                  "form_description": spec.description}
    if method in CALIB_NUM_BINS:
        info["calibration"]["histogram_bins"] = CALIB_NUM_BINS[method]
    with tempfile.TemporaryDirectory(prefix="segdeploy-int8-") as tmp:
        source, pre = preprocess_for_quantization(fp32_path, Path(tmp) / "preprocessed.onnx")
        info.update(pre)
        excluded = list(nodes_to_exclude or [])
        if spec.float_activation_matmuls:
            kept = [n for n in activation_matmuls(source) if n not in excluded]
            info["float_activation_matmuls"] = len(kept)
            excluded += kept
        cache = {}
        if method in CALIB_NUM_BINS:
            cache["calibration_cache_path"] = str(
                histogram_ranges(source, calib_images, method, Path(tmp) / "calibration.json"))
        target = atomic_target(out_path)
        with _without_preprocess_advice():
            quantize_static(str(source), str(target), ArrayCalibrationReader(calib_images),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                            per_channel=True, activation_type=spec.activation_type,
                            weight_type=QuantType.QInt8, calibrate_method=CALIB_METHODS[method],
                            nodes_to_exclude=excluded, extra_options=dict(spec.extra_options),
                            **cache)
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
    """What TensorRT (and a reader of file sizes) cares about in a Q/DQ model.

    ``all_zero_points_zero``: every Q/DQ zero-point is 0 (a missing zero-point counts as 0 but means uint8);
    ``int8_only``: every zero-point is an explicit int8 tensor; ``quantized_weights``: weights behind Q/DQ, either
    float initializers behind a QuantizeLinear -> DequantizeLinear pair or 8-bit initializers behind a
    DequantizeLinear alone; ``weight_storage``: ``int8`` when all are stored as 8-bit integers (DQ only), ``float``
    when all stay float, else ``mixed``; ``per_channel_weights``: every quantized weight has a 1-D scale.
    """
    model = onnx.load(str(onnx_path))
    constants = _constants(model)
    initializers = {t.name for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    zero_points_zero = int8_only = True
    weight_scale_ndims, stored = [], set()
    for node in qdq:
        zero_point = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero_point is None:
            int8_only = False  # ONNX defaults a missing zero-point to uint8
        else:
            int8_only &= zero_point.dtype == np.int8
            zero_points_zero &= bool(np.all(zero_point == 0))
        source = node.input[0]
        if source not in initializers:
            continue
        if node.op_type == "QuantizeLinear":
            stored.add("float")
        elif constants[source].dtype in (np.int8, np.uint8):  # int32 initializers behind a DQ are biases
            stored.add("int8")
        else:
            continue
        weight_scale_ndims.append(constants[node.input[1]].ndim)
    return {
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in qdq),
        "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in qdq),
        "quantized_weights": len(weight_scale_ndims),
        "weight_storage": stored.pop() if len(stored) == 1 else ("mixed" if stored else None),
        "all_zero_points_zero": zero_points_zero,
        "per_channel_weights": bool(weight_scale_ndims) and all(d == 1 for d in weight_scale_ndims),
        "int8_only": int8_only and bool(qdq),
    }
