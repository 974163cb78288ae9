"""What segdeploy knows about each inference backend, in one table: the engine class implementing it, whether it
reads the exported ONNX files, the device kinds it runs on and the INT8 Q/DQ form it loads.

Every list of backends (which need an export, which run on a GPU only, which INT8 file each loads, which artifact
a row's hash covers) is derived from :data:`BACKENDS`. It sits in the core, below :mod:`segdeploy.records`
(a row's device kind) and :mod:`segdeploy.export` (which backends each INT8 form is for); :mod:`segdeploy.engines`
loads the engines it names.

INT8 forms (how each is quantized: ``segdeploy.export.quantize.INT8_FORMS``), chosen by measurement
(benchmarks/cpu_int8.py): TensorRT accepts only the symmetric int8 form; onnxruntime's CPU kernels run the
uint8-activation form faster (every Conv/MatMul fused); OpenVINO's CPU plugin runs the symmetric int8 form a
little faster but far less exactly (SegFormer-B3: 71% of pixels keep their fp32 class, against 96% for
onnxruntime on the same file and 97% for OpenVINO on the uint8 form). OpenVINO's GPU/NPU plugins share its
low-precision transformations and load the same form (not measured: no such device here). A backend without a
form of its own loads the tensorrt form, model.int8.onnx.
"""

from __future__ import annotations

from dataclasses import dataclass

CPU, CUDA = "cpu", "cuda"  # the device kinds of segdeploy.machine.device
DEFAULT_INT8_FORM = "tensorrt"  # the form in model.int8.onnx, always exported
CPU_INT8_FORM = "cpu"  # model.int8-cpu.onnx: uint8 activations
INT8_FORMS = (DEFAULT_INT8_FORM, CPU_INT8_FORM)


@dataclass(frozen=True)
class Backend:
    name: str
    engine: str  # "module:EngineClass" implementing it (imported on first use)
    reads_onnx: bool  # runs the exported ONNX files (directly, or an engine built from them)
    device_kinds: tuple[str, ...]  # preferred first: what "auto" may resolve to
    int8_form: str | None  # the INT8 Q/DQ form it loads; None: it runs no exported INT8 file
    note: str = ""

    @property
    def needs_gpu(self) -> bool:
        return CPU not in self.device_kinds


_TORCH = "segdeploy.engines.torch_backend:TorchEngine"
_ORT = "segdeploy.engines.ort_backend:OrtEngine"
_OV = "segdeploy.engines.openvino_backend:OpenVinoEngine"
BACKENDS: tuple[Backend, ...] = (
    Backend("torch", _TORCH, False, (CUDA, CPU), None),
    Backend("torch-compile", _TORCH, False, (CUDA, CPU), None, "torch.compile (inductor; CUDA graphs on GPU)"),
    Backend("onnxruntime", _ORT, True, (CPU,), CPU_INT8_FORM, "CPU execution provider"),
    Backend("onnxruntime-cuda", _ORT, True, (CUDA,), DEFAULT_INT8_FORM, "CUDA execution provider"),
    Backend("onnxruntime-trt", _ORT, True, (CUDA,), DEFAULT_INT8_FORM, "TensorRT execution provider"),
    Backend("tensorrt", "segdeploy.engines.trt_backend:TensorRTEngine", True, (CUDA,), DEFAULT_INT8_FORM,
            "native TensorRT through polygraphy"),
    # segdeploy's device rule knows cpu and cuda; OpenVINO's Intel GPUs/NPUs are named by the backend
    Backend("openvino", _OV, True, (CPU,), CPU_INT8_FORM, "OpenVINO on the CPU"),
    Backend("openvino-gpu", _OV, True, (CPU,), CPU_INT8_FORM, "an Intel GPU, where OpenVINO lists one"),
    Backend("openvino-npu", _OV, True, (CPU,), CPU_INT8_FORM, "an Intel NPU, where OpenVINO lists one"),
)
BY_NAME = {b.name: b for b in BACKENDS}


def backend_info(name: str) -> Backend | None:
    """The descriptor of ``name``, or None for a name segdeploy does not know."""
    return BY_NAME.get(name)


def int8_form_for(backend: str) -> str:
    """The INT8 form ``backend`` loads (a backend without a form of its own: the tensorrt form)."""
    info = BY_NAME.get(backend)
    return (info.int8_form if info else None) or DEFAULT_INT8_FORM


def int8_form_backends(form: str) -> tuple[str, ...]:
    """The backends that load INT8 ``form`` (written into the export manifest)."""
    return tuple(b.name for b in BACKENDS if b.int8_form == form)


def reads_onnx(backend: str) -> bool:
    info = BY_NAME.get(backend)
    return bool(info and info.reads_onnx)


def needs_gpu(backend: str | None) -> bool:
    info = BY_NAME.get(backend or "")
    return bool(info and info.needs_gpu)


INT8_FORM_BACKENDS = {form: int8_form_backends(form) for form in INT8_FORMS}
