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

from segdeploy.machine.device import CPU, missing_device_reason, resolve_device
from segdeploy.engines.base import BaseEngine
from segdeploy.machine.envinfo import has_native_bf16
from segdeploy.run.folder import Run

PRECISIONS = ("fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def has_triton() -> bool:
    from torch.utils._triton import has_triton as available  # inductor's own test for CUDA code generation

    return available()


class TorchEngine(BaseEngine):
    @classmethod
    def check(cls, precision: str, device: str = "auto", *, backend: str = "torch",
              run: Run | None = None) -> str | None:
        if precision == "int8":
            return f"{backend} int8 is not benchmarked: INT8 runs from the Q/DQ ONNX on onnxruntime, openvino or tensorrt"
        if precision not in PRECISIONS:
            return f"{backend} has no precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        target = resolve_device(device, cls.device_kinds(backend))
        if target != CPU:
            missing = missing_device_reason(target)
            if missing:
                return f"{backend}: {missing}; use device cpu"
            if precision == "bf16" and not has_native_bf16(target):
                return f"{backend} bf16 needs an sm80+ GPU ({torch.cuda.get_device_name(target)} only emulates " \
                       "bfloat16); use fp16"
            if backend == "torch-compile" and not has_triton():
                return "torch-compile on CUDA needs triton, which this torch build lacks (NVIDIA's Jetson wheels " \
                       "ship without it); pip install triton, or use the torch backend"
        elif precision != "fp32":
            if torch.cuda.is_available():
                return f"{backend} {precision} runs on CUDA only (device cpu was requested); use device cuda, or " \
                       f"onnxruntime --precisions {precision} on CPU"
            return f"{backend} {precision} needs CUDA (this machine has none); on CPU use onnxruntime " \
                   f"--precisions {precision}"
        return None

    def load(self) -> None:
        """``self.threads``: torch's intra-op threads (``torch.set_num_threads``, process-wide) while the engine is
        active; the previous count is restored by ``release``."""
        target, dtype, on_cuda = self.device, DTYPES[self.precision], self.device != CPU
        model = self.source.build_model().to(target, dtype=dtype)
        if on_cuda:
            model = model.to(memory_format=torch.channels_last)
        weights = self.source.weights_path
        self._restore_threads = None  # the process's intra-op thread count before --threads set it
        if self.threads:  # after the model is built, so that a load that fails leaves the thread count alone
            self._restore_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        self.info = {"torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."),
                     "weights": str(weights), "file_size_mb": round(weights.stat().st_size / 1e6, 3),
                     "memory_format": "channels_last" if on_cuda else "contiguous",
                     "threads": torch.get_num_threads(), "threads_requested": self.threads}
        if on_cuda:
            self.info["gpu"] = torch.cuda.get_device_name(target)
        if self.backend == "torch-compile":
            mode = "reduce-overhead" if on_cuda else "default"
            model = torch.compile(model, mode=mode, dynamic=False)
            self.info["compile_mode"] = mode
        self.model = model
        self._dtype = dtype
        self._memory_format = torch.channels_last if on_cuda else torch.contiguous_format
        # eager kernels and CUDA-graph replays go to the current stream: GPU compute time is timed there
        self.compute_stream = torch.cuda.current_stream(target) if on_cuda else None

    def to_device(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        return x.to(self.device, dtype=self._dtype, memory_format=self._memory_format)

    def infer(self, handle: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(handle)

    def to_host(self, handle: torch.Tensor) -> np.ndarray:
        # .cpu() waits for the device; channels_last outputs come back as a strided view, hence the copy
        return np.ascontiguousarray(handle.float().cpu().numpy())

    def synchronize(self) -> None:
        if self.device != CPU:
            torch.cuda.synchronize(self.device)

    def release(self) -> None:
        self.model = None
        if self.device != CPU:
            torch.cuda.empty_cache()
        if getattr(self, "_restore_threads", None) is not None:
            torch.set_num_threads(self._restore_threads)
            self._restore_threads = None
