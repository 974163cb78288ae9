"""Native TensorRT: engines built by :mod:`segdeploy.engines.trt_build`, run by a thin runner on PyTorch CUDA
tensors (``execute_async_v3`` on a dedicated stream, buffers from PyTorch's caching allocator).

The runner is deliberately thin: per-call Python overhead would otherwise show up as "GPU compute" for small
models, and the split form (to_device / infer / to_host) mirrors trtexec's H2D, compute and D2H. ``tensorrt`` is
imported inside functions only, so machines without it get one line from :meth:`TensorRTEngine.check`.
"""

from __future__ import annotations

import numpy as np

from segdeploy.machine.device import CPU, cuda_device, missing_device_reason, resolve_device
from segdeploy.engines import missing_onnx_reason
from segdeploy.engines.base import BaseEngine
from segdeploy.engines.profiles import DEFAULT_BATCH
from segdeploy.engines.trt_build import (BF16_SINCE, build_engine, engine_path, fresh_record, import_tensorrt,
                                         parse_version)
from segdeploy.errors import BackendUnavailable, SegdeployError
from segdeploy.run.folder import PRECISIONS, Run


def _torch_dtype(trt_dtype):
    """TensorRT's data type of a tensor -> the torch dtype of the buffer that holds it (polygraphy's mapping)."""
    from polygraphy.datatype import DataType

    return DataType.to_dtype(DataType.from_dtype(trt_dtype, "tensorrt"), "torch")


def _activation_bytes(trt_engine) -> int:
    # device_memory_size was removed in TensorRT 11; the _v2 property exists since 10.x
    size = getattr(trt_engine, "device_memory_size_v2", None)
    return int(size if size is not None else trt_engine.device_memory_size)


class TensorRTEngine(BaseEngine):
    @classmethod
    def check(cls, precision: str, device: str = "auto", *, backend: str = "tensorrt",
              run: Run | None = None) -> str | None:
        if precision not in PRECISIONS:
            return f"tensorrt has no precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        try:
            trt = import_tensorrt()
        except BackendUnavailable as e:
            return e.message
        target = resolve_device(device, cls.device_kinds(backend))
        if target == CPU:
            return "tensorrt runs on an NVIDIA GPU only (device cpu requested)"
        missing = missing_device_reason(target)
        if missing:  # PyTorch tensors hold the engine's buffers, so PyTorch must see the GPU too
            return f"tensorrt: {missing}; the engine's buffers are PyTorch CUDA tensors"
        if precision == "bf16" and parse_version(trt.__version__) < BF16_SINCE:
            return f"tensorrt bf16 needs TensorRT >= 9.0 (installed {trt.__version__})"
        if run is not None:
            return missing_onnx_reason(run, precision)
        return None

    def load(self) -> None:
        """Load ``engines/model.<precision>.engine``, building it first (batch 1:8:32) when missing or stale.
        ``self.threads`` (--threads) is ignored: TensorRT computes on the GPU."""
        import torch
        from polygraphy.backend.trt import engine_from_path

        run, precision = self.source, self.precision
        with cuda_device(self.device):  # TensorRT deserialises onto the current device
            record, _ = fresh_record(run, precision, self.device)
            status = "reused"
            if record is None:
                record, status = build_engine(run, precision, batch=DEFAULT_BATCH, device=self.device)
            path = engine_path(run.dir, precision)
            trt_engine = engine_from_path(str(path))
            self.info = {"engine": str(path), "file_size_mb": round(path.stat().st_size / 1e6, 3),
                         "onnx": record["onnx"], "tensorrt": record["tensorrt"], "gpu": record["gpu"]["name"],
                         "profile": record["profile"], "strongly_typed": record["strongly_typed"],
                         "engine_status": status, "device_memory_mb": round(_activation_bytes(trt_engine) / 1e6, 3)}
            # enqueue on the legacy default stream makes TensorRT add synchronisations; use a stream of our own
            self.bind(trt_engine, torch.cuda.Stream(self.device))

    def bind(self, trt_engine, stream) -> None:
        """Take ``trt_engine``'s one input and one output tensor, their types and the batch range of its
        optimization profile, and an execution context that enqueues on ``stream``."""
        import tensorrt as trt
        import torch

        names = [trt_engine.get_tensor_name(i) for i in range(trt_engine.num_io_tensors)]
        inputs = [n for n in names if trt_engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if trt_engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:  # the exporter writes one image in, one logits tensor out
            raise SegdeployError(f"the engine has {len(inputs)} inputs and {len(outputs)} outputs; segdeploy runs "
                                 "models with one of each.", path=self.info.get("engine"),
                                 fix="export the model without auxiliary heads, then rebuild the engine.")
        self._torch = torch
        self._engine = trt_engine
        self._context = trt_engine.create_execution_context()
        self._input, self._output = inputs[0], outputs[0]
        self._input_dtype = _torch_dtype(trt_engine.get_tensor_dtype(self._input))
        self._output_dtype = _torch_dtype(trt_engine.get_tensor_dtype(self._output))
        low, _, high = trt_engine.get_tensor_profile_shape(self._input, 0)  # the engine's own min/opt/max
        self._min_batch, self._max_batch = low[0], high[0]
        self._stream = stream
        self.compute_stream = stream

    def to_device(self, batch: np.ndarray):
        if not self._min_batch <= batch.shape[0] <= self._max_batch:
            raise SegdeployError(f"batch {batch.shape[0]} is outside the engine's profile "
                                 f"{self._min_batch}..{self._max_batch}.", path=self.info.get("engine"),
                                 fix=f"rebuild: segdeploy engines build RUN_DIR --precisions {self.precision} "
                                     f"--batch 1:{batch.shape[0]}:{max(batch.shape[0], self._max_batch)}")
        with self._torch.cuda.stream(self._stream):
            x = self._torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            return x.to(self.device).to(self._input_dtype)

    def infer(self, handle):
        context = self._context
        context.set_input_shape(self._input, tuple(handle.shape))
        # inside the stream's context the current device is the stream's (torch switches it and switches back)
        with self._torch.cuda.stream(self._stream):
            out = self._torch.empty(tuple(context.get_tensor_shape(self._output)), dtype=self._output_dtype,
                                    device=self.device)
            context.set_tensor_address(self._input, handle.data_ptr())
            context.set_tensor_address(self._output, out.data_ptr())
            if not context.execute_async_v3(self._stream.cuda_stream):
                raise SegdeployError("TensorRT failed to enqueue the engine.", path=self.info.get("engine"),
                                     fix="see the TensorRT messages above; rebuild with segdeploy engines build "
                                         "--force.")
        return out

    def to_host(self, handle) -> np.ndarray:
        with self._torch.cuda.stream(self._stream):
            return handle.float().cpu().numpy()  # .cpu() waits for the stream

    def synchronize(self) -> None:
        self._stream.synchronize()

    def release(self) -> None:
        self._context = None
        self._engine = None
