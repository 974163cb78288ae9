"""PyTorch eager inference: the reference every exported backend is compared against.

fp32 runs on CPU or CUDA; fp16/bf16 cast the module and its input (``model.to(dtype)``) and run on CUDA only:
CPU half-precision kernels are slow or missing, so a CPU fp16 row would measure the wrong thing (fp16 on CPU is
onnxruntime's job). On CUDA the model runs channels_last, which cuDNN prefers for convolutions.
INT8 is not a PyTorch eager configuration here: it runs from the Q/DQ ONNX file.

``torch-compile`` is the same model through ``torch.compile`` (inductor): on CUDA with ``mode="reduce-overhead"``,
which captures CUDA graphs where the graph allows; on CPU with inductor's C++ code generation. Compilation happens
on the first call of each input shape (the accuracy pass, before anything is timed).
"""

from __future__ import annotations

import numpy as np
import torch

from segdeploy.engines import cuda_index
from segdeploy.envinfo import has_native_bf16
from segdeploy.errors import BackendUnavailable
from segdeploy.runs import WEIGHTS, Run

PRECISIONS = ("fp32", "fp16", "bf16")


def has_triton() -> bool:
    from torch.utils._triton import has_triton as available  # inductor's own test for CUDA code generation

    return available()

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    index = cuda_index(device)
    return "cpu" if index is None else f"cuda:{index}"


def check(precision: str, device: str = "auto", *, backend: str = "torch", run: Run | None = None) -> str | None:
    if precision == "int8":
        return f"{backend} int8 is not benchmarked: INT8 runs from the Q/DQ ONNX on onnxruntime/tensorrt"
    if precision not in PRECISIONS:
        return f"{backend} has no precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
    has_cuda = torch.cuda.is_available()
    target = resolve_device(device)
    if target.startswith("cuda"):
        if not has_cuda:
            return f"{backend} on {target} needs CUDA (this machine has none); use device cpu"
        if cuda_index(target) >= torch.cuda.device_count():
            return f"{backend}: no {target} (this machine has {torch.cuda.device_count()} CUDA device(s))"
        if precision == "bf16" and not has_native_bf16(target):
            return f"{backend} bf16 needs an sm80+ GPU ({torch.cuda.get_device_name(target)} only emulates " \
                   "bfloat16); use fp16"
        if backend == "torch-compile" and not has_triton():
            return "torch-compile on CUDA needs triton, which this torch build lacks (NVIDIA's Jetson wheels " \
                   "ship without it); pip install triton, or use the torch backend"
    elif precision != "fp32":
        if has_cuda:
            return f"{backend} {precision} runs on CUDA only (device cpu was requested); use device cuda, or " \
                   f"onnxruntime --precisions {precision} on CPU"
        return f"{backend} {precision} needs CUDA (this machine has none); on CPU use onnxruntime --precisions {precision}"
    return None


class TorchEngine:
    def __init__(self, model: torch.nn.Module, precision: str, device: str, info: dict, backend: str = "torch",
                 restore_threads: int | None = None):
        self.backend = backend
        self._restore_threads = restore_threads  # the process's intra-op thread count before --threads set it
        self.model = model
        self.precision = precision
        self.device = device
        self.info = info
        self._dtype = DTYPES[precision]
        self._memory_format = torch.channels_last if device.startswith("cuda") else torch.contiguous_format
        # eager kernels and CUDA-graph replays go to the current stream: GPU compute time is timed there
        self.compute_stream = torch.cuda.current_stream(device) if device.startswith("cuda") else None

    def to_device(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        return x.to(self.device, dtype=self._dtype, memory_format=self._memory_format)

    def infer(self, handle: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(handle)

    def to_host(self, handle: torch.Tensor) -> np.ndarray:
        # .cpu() waits for the device; channels_last outputs come back as a strided view, hence the copy
        return np.ascontiguousarray(handle.float().cpu().numpy())

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.to_host(self.infer(self.to_device(batch)))

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        if self._restore_threads is not None:
            torch.set_num_threads(self._restore_threads)
            self._restore_threads = None


def load(run: Run, precision: str, device: str = "auto", *, backend: str = "torch",
         threads: int | None = None) -> TorchEngine:
    """``threads``: torch's intra-op threads (``torch.set_num_threads``, process-wide) while the engine is open;
    the previous count is restored by ``close``."""
    reason = check(precision, device, backend=backend, run=run)
    if reason:
        raise BackendUnavailable(reason)
    target = resolve_device(device)
    model = run.build_model().to(target, dtype=DTYPES[precision])
    if target.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    weights = run.dir / WEIGHTS
    restore = None
    if threads:  # last, so that a load that fails leaves the process's thread count alone
        restore = torch.get_num_threads()
        torch.set_num_threads(threads)
    info = {"torch": torch.__version__, "dtype": str(DTYPES[precision]).removeprefix("torch."),
            "weights": str(weights), "file_size_mb": round(weights.stat().st_size / 1e6, 3),
            "memory_format": "channels_last" if target.startswith("cuda") else "contiguous",
            "threads": torch.get_num_threads(), "threads_requested": threads}
    if target.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(target)
    if backend == "torch-compile":
        mode = "reduce-overhead" if target.startswith("cuda") else "default"
        model = torch.compile(model, mode=mode, dynamic=False)
        info["compile_mode"] = mode
    return TorchEngine(model, precision, target, info, backend=backend, restore_threads=restore)
