"""OpenVINO on the same ``onnx/model.<precision>.onnx`` files: the CPU always, Intel GPUs and NPUs where OpenVINO
lists them (``Core().available_devices``).

Backend -> OpenVINO device: ``openvino`` -> CPU, ``openvino-gpu`` -> GPU, ``openvino-npu`` -> NPU. ``--device`` keeps
segdeploy's rule: ``auto`` is the backend's own device, ``cpu`` is accepted by ``openvino`` only, CUDA by none.

Precision (``INFERENCE_PRECISION_HINT``, always set: left alone, the CPU plugin computes in bf16 on CPUs with
AVX512_BF16 or AMX, so an "fp32" row would measure bf16):

* fp32: model.fp32.onnx, hint f32;
* fp16: model.fp16.onnx, hint f16, where the device lists FP16 in ``OPTIMIZATION_CAPABILITIES`` (Intel GPUs; CPUs
  with AVX512-FP16/AMX-FP16; Arm);
* bf16: model.fp32.onnx, hint bf16, where the device lists BF16 (no bf16 ONNX is exported; as in the torch backend
  bf16 is computed from the fp32 weights);
* int8: model.int8-cpu.onnx (uint8 activations; OpenVINO's low-precision transformations turn its Q/DQ into int8
  convolutions and fully connected layers), hint f32 for the layers left in floating point. The TensorRT form
  (model.int8.onnx, int8 activations) ran about 12% faster on SegFormer-B3 but far less exactly (71% of pixels kept
  their torch fp32 class, against 97% on the uint8 form and 96% for onnxruntime on either form:
  benchmarks/cpu_int8.py); it is loaded only where the CPU form was not exported, and the row then says so
  (``onnx_form_fallback``).

``PERFORMANCE_HINT`` is LATENCY (one stream, one synchronous infer request: what a batch-1 latency means, and what
``benchmark_app -hint latency`` measures); ``INFERENCE_NUM_THREADS`` is ``--threads`` on the CPU. The compiled
model's own values of these properties are read back into ``info``, with how many weighted layers run at which
precision (``weighted_layer_precisions``), so an int8 row shows that int8 kernels ran.
"""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np

from segdeploy.engines import missing_onnx_reason, onnx_for_backend, onnx_size_mb
from segdeploy.engines.base import BaseEngine
from segdeploy.engines.integrity import verify_onnx
from segdeploy.errors import SegdeployError
from segdeploy.machine.device import CPU
from segdeploy.run.folder import Run

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
BACKEND_DEVICES = {"openvino": "CPU", "openvino-gpu": "GPU", "openvino-npu": "NPU"}
# what the row's ``device`` says (CPU rows stay "cpu" so that memory and energy are measured as for any CPU engine)
ROW_DEVICES = {"CPU": "cpu", "GPU": "intel-gpu", "NPU": "intel-npu"}
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}
ONNX_PRECISION = {"fp32": "fp32", "fp16": "fp16", "bf16": "fp32", "int8": "int8"}  # the file each one reads
CAPABILITY = {"fp16": "FP16", "bf16": "BF16", "int8": "INT8"}  # OPTIMIZATION_CAPABILITIES entry each one needs
PERFORMANCE_HINT = "LATENCY"
# runtime layer types whose precision says whether the heavy arithmetic ran in int8
_WEIGHTED_LAYERS = {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul"}


@functools.cache
def _core():
    import openvino as ov

    return ov.Core()


def _device_listed(core, target: str) -> bool:
    # GPUs are listed as GPU or GPU.0, GPU.1 ... when there are several
    return any(d.split(".")[0] == target for d in core.available_devices)


def _property(compiled, name: str):
    """A compiled model's property as JSON: element types as OpenVINO spells them (``f32``), lists as lists."""
    try:
        value = compiled.get_property(name)
    except RuntimeError:  # a device that does not report it
        return None
    if hasattr(value, "to_string"):
        return value.to_string()
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def weighted_layer_precisions(compiled) -> dict[str, int]:
    """How many convolutions / fully connected layers of the compiled model run at each precision (u8/i8 = int8)."""
    counts: Counter = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt_info = op.get_rt_info()
        if "layerType" in rt_info and rt_info["layerType"].astype(str) in _WEIGHTED_LAYERS:
            counts[rt_info["runtimePrecision"].astype(str) if "runtimePrecision" in rt_info else "?"] += 1
    return dict(counts)


class OpenVinoEngine(BaseEngine):
    """One compiled model and its synchronous infer request. NPUs compile static shapes only: there a model is
    compiled per input shape on first use (``static_shapes``)."""

    def __init__(self, run: Run, precision: str, device: str = "auto", *, backend: str, threads: int | None = None):
        target = BACKEND_DEVICES.get(backend, "CPU")
        # the row's own name for an Intel device (intel-gpu) is accepted like auto; anything else is the device rule's
        super().__init__(run, precision, "auto" if device == ROW_DEVICES[target] else device, backend=backend,
                         threads=threads)
        self.requested_device = device
        if device in ("auto", ROW_DEVICES[target]):  # the backend's own OpenVINO device
            self.device = ROW_DEVICES[target]
        self._target = target
        self._static = target == "NPU"
        self._requests: dict = {}
        self._core = self._model = self._config = None

    @classmethod
    def check(cls, precision: str, device: str = "auto", *, backend: str, run: Run | None = None) -> str | None:
        if backend not in BACKEND_DEVICES:
            return f"{backend} is not an openvino backend ({', '.join(BACKEND_DEVICES)})"
        if precision not in PRECISIONS:
            return f"{backend} has no precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        target = BACKEND_DEVICES[backend]
        if device not in ("auto", ROW_DEVICES[target]):
            other = "; use openvino-gpu/openvino-npu for Intel accelerators" if target == "CPU" else \
                "; use the openvino backend for the CPU"
            return f"{backend} runs on OpenVINO's {target} device (--device {device} requested): use --device auto{other}"
        try:
            import openvino as ov
        except ImportError:
            return f"{backend}: openvino is not installed (pip install 'segdeploy[openvino]')"
        core = _core()
        if not _device_listed(core, target):
            return (f"{backend}: OpenVINO {ov.__version__} lists no {target} device here "
                    f"(available: {', '.join(core.available_devices) or 'none'})")
        if precision in CAPABILITY:
            capabilities = list(core.get_property(target, "OPTIMIZATION_CAPABILITIES"))
            if CAPABILITY[precision] not in capabilities:
                return (f"{backend} {precision}: OpenVINO's {target} device does not list {CAPABILITY[precision]} in "
                        f"its OPTIMIZATION_CAPABILITIES ({', '.join(capabilities)})")
        if run is not None:
            return missing_onnx_reason(run, ONNX_PRECISION[precision])
        return None

    def load(self) -> None:
        import openvino as ov


        run, target, threads = self.source, self._target, self.threads
        onnx_precision = ONNX_PRECISION[self.precision]
        path, form_info = onnx_for_backend(run, onnx_precision, self.backend)
        verify_onnx(run, onnx_precision, form_info.get("onnx_form"))  # the file the manifest describes
        config = {"PERFORMANCE_HINT": PERFORMANCE_HINT, "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[self.precision]}
        if threads and target == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = _core()
        try:
            self.compile_model(core, core.read_model(str(path)), config)
            compiled = self.compiled((1, *run.input_shape))  # compile now: a failure is a load failure
        except RuntimeError as e:
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise SegdeployError(f"OpenVINO cannot compile the model for {target}: {first_line}", path=path,
                                 fix=f"re-export it: segdeploy export {run.dir}") from e
        self.info = {
            "openvino": ov.__version__, "ov_device": target,
            "full_device_name": str(core.get_property(target, "FULL_DEVICE_NAME")),
            "execution_devices": _property(compiled, "EXECUTION_DEVICES"),
            "onnx": str(path), **form_info, "file_size_mb": onnx_size_mb(path),
            "inference_precision": _property(compiled, "INFERENCE_PRECISION_HINT"),
            "performance_hint": _property(compiled, "PERFORMANCE_HINT"),
            "num_streams": _property(compiled, "NUM_STREAMS"),
            "threads": _property(compiled, "INFERENCE_NUM_THREADS") if target == "CPU" else None,
            "threads_requested": threads,
            "cpu_pinning": _property(compiled, "ENABLE_CPU_PINNING") if target == "CPU" else None,
            "static_shapes": self._static,
            "weighted_layer_precisions": weighted_layer_precisions(compiled),
        }

    def compile_model(self, core, model, config: dict, *, static_shapes: bool | None = None) -> None:
        """Take ``model`` (an ``ov.Model``) to compile with ``config``, on first use of each input shape where
        ``static_shapes`` (the NPU's rule; default: this engine's device's)."""
        self._core, self._model, self._config = core, model, config
        if static_shapes is not None:
            self._static = static_shapes
        self._requests = {}

    def compiled(self, shape: tuple[int, ...] | None = None):
        """The compiled model for ``shape`` (any shape unless ``static_shapes``), compiling on first use."""
        key = tuple(shape) if self._static else None
        if key not in self._requests:
            model = self._model
            if self._static:
                model = model.clone()
                model.reshape({0: list(key)})
            compiled = self._core.compile_model(model, self._target, self._config)
            self._requests[key] = (compiled, compiled.create_infer_request())
        return self._requests[key][0]

    def infer(self, handle: np.ndarray):
        self.compiled(handle.shape)
        request = self._requests[tuple(handle.shape) if self._static else None][1]
        # shared buffers: no copy in, and the output is a view of the request's tensor until the next call
        return request.infer({0: handle}, share_inputs=True, share_outputs=True)[0]

    def to_host(self, handle) -> np.ndarray:
        return np.array(handle, dtype=np.float32, copy=True)

    def release(self) -> None:
        self._requests.clear()
        self._model = None
