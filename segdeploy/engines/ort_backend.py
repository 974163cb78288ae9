"""ONNX Runtime on its CPU, CUDA and TensorRT execution providers.

Precision lives in the ONNX file (``onnx/model.<precision>.onnx``): the TensorRT EP runs with its fp16/int8 flags
off, which makes ONNX Runtime build strongly typed TensorRT networks that follow the file's types. INT8 on the CPU
EP loads the form made for ONNX Runtime's CPU kernels (``model.int8-cpu.onnx``, uint8 activations) where it was
exported; the CUDA and TensorRT EPs load the TensorRT form (``engines.onnx_for_backend``). A session
whose requested provider failed to load (missing CUDA/cuDNN/TensorRT libraries) silently falls back to the CPU;
that is reported as unavailable rather than benchmarked under the wrong name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segdeploy.engines import missing_onnx_reason, onnx_for_backend, onnx_size_mb
from segdeploy.engines.base import BaseEngine
from segdeploy.engines.integrity import verify_onnx
from segdeploy.engines.profiles import DEFAULT_BATCH, onnx_input_name, profile_shapes
from segdeploy.errors import BackendUnavailable, SegdeployError
from segdeploy.machine.device import CPU, CUDA, cuda_index, resolve_device
from segdeploy.run.folder import PRECISIONS, Run

PROVIDERS = {
    "onnxruntime": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-trt": "TensorrtExecutionProvider",
}
_INSTALL_HINT = {
    "CUDAExecutionProvider": "install onnxruntime-gpu",
    "TensorrtExecutionProvider": "install onnxruntime-gpu and TensorRT",
}
# ONNX tensor type -> numpy dtype of the host array fed to / read from the session
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
TRT_CACHE_DIR = Path("engines") / "ort-trt-cache"


def trt_profile_options(input_name: str, shapes) -> dict:
    """The TensorRT EP's explicit optimization profile (onnxruntime >= 1.15), the same min/opt/max batches as the
    native engines; without it the EP builds for the first shape it sees and rebuilds for every new one."""
    keys = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
    return {key: f"{input_name}:{'x'.join(str(d) for d in shape)}" for key, shape in zip(keys, shapes)}


def provider_chain(backend: str, device_id: int, trt_cache: Path, compute_stream: int | None = None,
                   trt_profile: dict | None = None) -> list[tuple[str, dict]]:
    """Providers in priority order; the CPU closes every chain so unsupported nodes still run.

    ``compute_stream``: a CUDA stream handle (``torch.cuda.Stream.cuda_stream``) for the CUDA EP to run on, so
    CUDA events recorded on it time the GPU work (onnxruntime >= 1.17; the legacy default stream, 0, is
    rejected by onnxruntime, hence a stream of our own).
    """
    cuda = ("CUDAExecutionProvider", {"device_id": device_id})
    if compute_stream:
        cuda[1]["user_compute_stream"] = str(compute_stream)
    cpu = ("CPUExecutionProvider", {})
    if backend == "onnxruntime-trt":
        # the TensorRT EP and the CUDA EP that runs the nodes TensorRT rejects share the one stream
        stream = {"has_user_compute_stream": True, "user_compute_stream": str(compute_stream)} if compute_stream else {}
        trt = ("TensorrtExecutionProvider", {
            **stream,
            **(trt_profile or {}),
            "device_id": device_id,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(trt_cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(trt_cache),
            # precision comes from the ONNX file; the flags would switch TensorRT to weak typing
            "trt_fp16_enable": False,
            "trt_int8_enable": False,
        })
        return [trt, cuda, cpu]
    if backend == "onnxruntime-cuda":
        return [cuda, cpu]
    return [cpu]




def _session_load_errors():
    # onnxruntime raises one pybind exception type per status code, none derived from a common error class
    from onnxruntime.capi import onnxruntime_pybind11_state as status

    return (status.Fail, status.InvalidArgument, status.NoSuchFile, status.InvalidProtobuf, status.InvalidGraph,
            status.NotImplemented, status.EPFail, status.RuntimeException), status.NotImplemented


class OrtEngine(BaseEngine):
    @classmethod
    def check(cls, precision: str, device: str = "auto", *, backend: str, run: Run | None = None) -> str | None:
        if backend not in PROVIDERS:
            return f"{backend} is not an onnxruntime backend ({', '.join(PROVIDERS)})"
        if precision not in PRECISIONS:
            return f"{backend} has no precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        target = resolve_device(device, cls.device_kinds(backend))
        if backend == "onnxruntime" and target != CPU:
            return f"onnxruntime runs on the CPU execution provider ({target} requested); use onnxruntime-cuda"
        if backend != "onnxruntime" and target == CPU:
            return f"{backend} runs on a CUDA GPU (device cpu requested); use onnxruntime for the CPU"
        try:
            import onnxruntime as ort
        except ImportError:
            return f"{backend}: onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for CUDA)"
        provider = PROVIDERS[backend]
        # AzureExecutionProvider (remote inference, in every CPU wheel) says nothing about local hardware
        available = [p for p in ort.get_available_providers() if p != "AzureExecutionProvider"]
        if provider not in available:
            return (f"{backend}: {provider} not available (installed onnxruntime {ort.__version__} offers "
                    f"{', '.join(available)}); {_INSTALL_HINT[provider]}")
        if run is not None:
            return missing_onnx_reason(run, precision)
        return None

    def load(self) -> None:
        import onnxruntime as ort


        run, backend, precision, target = self.source, self.backend, self.precision, self.device
        path, form_info = onnx_for_backend(run, precision, backend)
        # the file the manifest describes, not another run's export copied over it
        verify_onnx(run, precision, form_info.get("onnx_form"))
        trt_cache = run.dir / TRT_CACHE_DIR
        if backend == "onnxruntime-trt":
            trt_cache.mkdir(parents=True, exist_ok=True)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # provider fallbacks are detected below and reported as one line
        if self.threads:
            options.intra_op_num_threads = self.threads  # 0 (the default): one thread per physical core
        requested = PROVIDERS[backend]
        load_errors, not_implemented = _session_load_errors()
        stream = None
        if backend in ("onnxruntime-cuda", "onnxruntime-trt"):  # a stream of our own, for CUDA events to time on
            import torch

            stream = torch.cuda.Stream(target) if torch.cuda.is_available() else None

        trt_profile = None
        if backend == "onnxruntime-trt":
            trt_profile = trt_profile_options(onnx_input_name(path), profile_shapes(DEFAULT_BATCH, run.input_shape))

        def session_on(user_stream):
            chain = provider_chain(backend, cuda_index(target) or 0, trt_cache,
                                   user_stream.cuda_stream if user_stream else None, trt_profile)
            return ort.InferenceSession(str(path), options, providers=chain)

        stream_error = None
        try:
            try:
                session = session_on(stream)
            except load_errors as e:
                if stream is None:
                    raise
                # an onnxruntime that rejects the stream option still runs the model, timed on the host instead
                stream, stream_error = None, f"{type(e).__name__}: {str(e).strip()[:200]}"
                session = session_on(None)
        except load_errors as e:
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            if isinstance(e, not_implemented):
                raise BackendUnavailable(f"{backend} {precision}: {requested} lacks a kernel this model needs "
                                         f"({first_line})") from e
            raise SegdeployError(f"onnxruntime cannot load the model: {first_line}", path=path,
                                 fix=f"re-export it: segdeploy export {run.dir} --precisions {precision}") from e
        used = session.get_providers()
        if used[0] != requested:
            raise BackendUnavailable(f"{backend}: {requested} failed to initialise and the session fell back to "
                                     f"{used[0]} (missing CUDA/cuDNN/TensorRT libraries?); check segdeploy env")
        self.info = {"provider": used[0], "providers": used, "onnx": str(path), **form_info,
                     "file_size_mb": onnx_size_mb(path), "onnxruntime": ort.__version__,
                     "input_type": session.get_inputs()[0].type,
                     # intra-op threads; None: onnxruntime's default (one per physical core), which it does not report
                     "threads": self.threads or None, "threads_requested": self.threads}
        if backend == "onnxruntime-trt":
            self.info.update(trt_cache=str(trt_cache), trt_profile=trt_profile)
        if stream_error:
            self.info["compute_stream_error"] = stream_error
        self._ort = ort
        self.session = session
        self._input = session.get_inputs()[0]
        self._output = session.get_outputs()[0]
        self._input_dtype = _NUMPY_TYPES.get(self._input.type, np.float32)
        self._device_id = cuda_index(target)
        self._binding = None
        self.compute_stream = stream

    def to_device(self, batch: np.ndarray):
        x = np.ascontiguousarray(batch, dtype=self._input_dtype)
        if self._device_id is None:
            return x
        return self._ort.OrtValue.ortvalue_from_numpy(x, "cuda", self._device_id)

    def infer(self, handle):
        if self._device_id is None:
            return self.session.run([self._output.name], {self._input.name: handle})[0]
        # io_binding keeps input and output on the GPU, so this times compute without host copies
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self._input.name, handle)
        binding.bind_output(self._output.name, "cuda", self._device_id)
        self.session.run_with_iobinding(binding)
        self._binding = binding
        return binding.get_outputs()[0]

    def to_host(self, handle) -> np.ndarray:
        host = handle if isinstance(handle, np.ndarray) else handle.numpy()
        return np.asarray(host, dtype=np.float32)

    def synchronize(self) -> None:
        # CPU sessions return finished results; on CUDA, wait for the outputs of the last bound run
        if self._binding is not None:
            self._binding.synchronize_outputs()

    def release(self) -> None:
        self._binding = None
        self.session = None
