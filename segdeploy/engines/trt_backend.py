"""Native TensorRT: engines built by :mod:`segdeploy.engines.trt_build`, run by a thin runner on PyTorch CUDA
tensors (``execute_async_v3`` on a dedicated stream, buffers from PyTorch's caching allocator).

The runner is deliberately thin: per-call Python overhead would otherwise show up as "GPU compute" for small
models, and the split form (to_device / infer / to_host) mirrors trtexec's H2D, compute and D2H. ``tensorrt`` is
imported inside functions only, so machines without it get one line from :func:`check`.
"""

from __future__ import annotations

import numpy as np

from segdeploy.engines import cuda_index, missing_onnx_reason
from segdeploy.engines.trt_build import (BF16_SINCE, DEFAULT_BATCH, build_engine, engine_path, fresh_record,
                                         import_tensorrt, parse_version)
from segdeploy.errors import BackendUnavailable, SegdeployError
from segdeploy.runs import PRECISIONS, Run


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda:0"
    index = cuda_index(device)
    return "cpu" if index is None else f"cuda:{index}"


def check(precision: str, device: str = "auto", *, backend: str = "tensorrt", run: Run | None = None) -> str | None:
    if precision not in PRECISIONS:
        return f"tensorrt has no precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
    try:
        trt = import_tensorrt()
    except BackendUnavailable as e:
        return e.message
    target = resolve_device(device)
    if target == "cpu":
        return "tensorrt runs on an NVIDIA GPU only (device cpu requested)"
    import torch

    if not torch.cuda.is_available():
        return "tensorrt: PyTorch sees no CUDA GPU (its tensors hold the engine's buffers); " \
               "install a CUDA build of torch on a machine with an NVIDIA GPU"
    if cuda_index(target) >= torch.cuda.device_count():
        return f"tensorrt: no {target} (this machine has {torch.cuda.device_count()} CUDA device(s))"
    if precision == "bf16" and parse_version(trt.__version__) < BF16_SINCE:
        return f"tensorrt bf16 needs TensorRT >= 9.0 (installed {trt.__version__})"
    if run is not None:
        return missing_onnx_reason(run, precision)
    return None


class TensorRTEngine:
    backend = "tensorrt"

    def __init__(self, trt_engine, precision: str, device: str, info: dict):
        import tensorrt as trt
        import torch
        from polygraphy.datatype import DataType

        self.precision = precision
        self.device = device
        self.info = info
        self._torch = torch
        self._engine = trt_engine
        self._context = trt_engine.create_execution_context()
        names = [trt_engine.get_tensor_name(i) for i in range(trt_engine.num_io_tensors)]
        inputs = [n for n in names if trt_engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if trt_engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:  # the exporter writes one image in, one logits tensor out
            raise SegdeployError(f"the engine has {len(inputs)} inputs and {len(outputs)} outputs; segdeploy runs "
                                 "models with one of each.", path=info["engine"],
                                 fix="export the model without auxiliary heads, then rebuild the engine.")
        self._input, self._output = inputs[0], outputs[0]

        def torch_dtype(name):
            return DataType.to_dtype(DataType.from_dtype(trt_engine.get_tensor_dtype(name), "tensorrt"), "torch")

        self._input_dtype, self._output_dtype = torch_dtype(self._input), torch_dtype(self._output)
        self._max_batch = info["profile"]["max"][0]
        self._min_batch = info["profile"]["min"][0]
        # enqueue on the legacy default stream makes TensorRT add synchronisations; use a stream of our own
        self._stream = torch.cuda.Stream(device)
        self.compute_stream = self._stream

    def to_device(self, batch: np.ndarray):
        if not self._min_batch <= batch.shape[0] <= self._max_batch:
            raise SegdeployError(f"batch {batch.shape[0]} is outside the engine's profile "
                                 f"{self._min_batch}..{self._max_batch}.", path=self.info["engine"],
                                 fix=f"rebuild: segdeploy engines build RUN_DIR --precisions {self.precision} "
                                     f"--batch 1:{batch.shape[0]}:{max(batch.shape[0], self._max_batch)}")
        with self._torch.cuda.stream(self._stream):
            x = self._torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            return x.to(self.device).to(self._input_dtype)

    def infer(self, handle):
        context = self._context
        context.set_input_shape(self._input, tuple(handle.shape))
        with self._torch.cuda.stream(self._stream):
            out = self._torch.empty(tuple(context.get_tensor_shape(self._output)), dtype=self._output_dtype,
                                    device=self.device)
        context.set_tensor_address(self._input, handle.data_ptr())
        context.set_tensor_address(self._output, out.data_ptr())
        if not context.execute_async_v3(self._stream.cuda_stream):
            raise SegdeployError("TensorRT failed to enqueue the engine.", path=self.info["engine"],
                                 fix="see the TensorRT messages above; rebuild with segdeploy engines build --force.")
        return out

    def to_host(self, handle) -> np.ndarray:
        with self._torch.cuda.stream(self._stream):
            return handle.float().cpu().numpy()  # .cpu() waits for the stream

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.to_host(self.infer(self.to_device(batch)))

    def synchronize(self) -> None:
        self._stream.synchronize()

    def close(self) -> None:
        self._context = None
        self._engine = None


def load(run: Run, precision: str, device: str = "auto", *, backend: str = "tensorrt",
         threads: int | None = None) -> TensorRTEngine:
    """Load ``engines/model.<precision>.engine``, building it first (batch 1:8:32) when it is missing or stale.
    ``threads`` is accepted like every backend's and ignored: TensorRT computes on the GPU."""
    reason = check(precision, device, backend=backend, run=run)
    if reason:
        raise BackendUnavailable(reason)
    import torch
    from polygraphy.backend.trt import engine_from_path

    target = resolve_device(device)
    torch.cuda.set_device(target)  # TensorRT deserialises onto the current device
    record, _ = fresh_record(run, precision, target)
    status = "reused"
    if record is None:
        record, status = build_engine(run, precision, batch=DEFAULT_BATCH, device=target)
    path = engine_path(run.dir, precision)
    trt_engine = engine_from_path(str(path))
    info = {"engine": str(path), "file_size_mb": round(path.stat().st_size / 1e6, 3), "onnx": record["onnx"],
            "tensorrt": record["tensorrt"], "gpu": record["gpu"]["name"], "profile": record["profile"],
            "strongly_typed": record["strongly_typed"], "engine_status": status,
            "device_memory_mb": round(_activation_bytes(trt_engine) / 1e6, 3)}
    return TensorRTEngine(trt_engine, precision, target, info)


def _activation_bytes(trt_engine) -> int:
    # device_memory_size was removed in TensorRT 11; the _v2 property exists since 10.x
    size = getattr(trt_engine, "device_memory_size_v2", None)
    return int(size if size is not None else trt_engine.device_memory_size)
