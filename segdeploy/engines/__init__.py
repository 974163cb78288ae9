"""One interface for every inference backend: ``load_engine(backend, run, precision, device).run(batch)``.

A backend is one module in this package exposing ``PRECISIONS``, ``check(precision, device, *, backend, run)``
(the one-line reason it cannot run here, or None; cheap, no model loaded) and
``load(run, precision, device, *, backend) -> Engine``. Heavy libraries (onnxruntime, tensorrt) are imported
inside those functions, so a missing one costs a one-line :class:`BackendUnavailable`, not an ImportError at
start-up.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from segdeploy.errors import BackendUnavailable

if TYPE_CHECKING:  # segdeploy.runs imports torch; `segdeploy engines --help` should not
    import numpy as np

    from segdeploy.runs import Run

# backend name -> module implementing it
BACKENDS: dict[str, str] = {
    "torch": "segdeploy.engines.torch_backend",
    "torch-compile": "segdeploy.engines.torch_backend",  # torch.compile (inductor; CUDA graphs on GPU)
    "onnxruntime": "segdeploy.engines.ort_backend",  # CPU execution provider
    "onnxruntime-cuda": "segdeploy.engines.ort_backend",  # CUDA execution provider
    "onnxruntime-trt": "segdeploy.engines.ort_backend",  # TensorRT execution provider
    "tensorrt": "segdeploy.engines.trt_backend",  # native TensorRT through polygraphy
}


class Engine(Protocol):
    """A loaded model on one backend. ``run(x) == to_host(infer(to_device(x)))``; the split form lets a
    benchmark time GPU compute (``infer`` + ``synchronize``) apart from end-to-end latency (``run``)."""

    backend: str
    precision: str
    device: str  # "cpu" or "cuda:N"
    info: dict  # what the row should carry: provider, onnx, file_size_mb, engine, ...
    # the torch.cuda.Stream that ``infer`` enqueues on, or None (CPU, or a runtime that picks its own streams):
    # where there is one, GPU compute time is taken from CUDA events on it (segdeploy.bench.latency)
    compute_stream: Any

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, H, W) float32 normalised host array -> (B, K, H, W) float32 logits on the host."""

    def to_device(self, batch: np.ndarray) -> Any:
        """Copy a host batch to where ``infer`` reads it (cast to the model's input type); returns a handle."""

    def infer(self, handle: Any) -> Any:
        """Compute only: inputs already resident, outputs stay on the device. May return before the device has
        finished; call ``synchronize`` before reading a clock."""

    def to_host(self, handle: Any) -> np.ndarray:
        """Device output -> float32 host array (waits for the computation)."""

    def synchronize(self) -> None: ...

    def close(self) -> None: ...


def _module(backend: str):
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r}.", fix=f"choose from {', '.join(BACKENDS)}.")
    return importlib.import_module(BACKENDS[backend])


def check_backend(backend: str, precision: str, device: str = "auto", run: Run | None = None) -> str | None:
    """Why ``backend``/``precision`` cannot run on ``device`` here (one line), or None. With ``run`` the
    run's artifacts (ONNX file) are checked too."""
    return _module(backend).check(precision, device, backend=backend, run=run)


def load_engine(backend: str, run: Run, precision: str, device: str = "auto") -> Engine:
    return _module(backend).load(run, precision, device, backend=backend)


# --- helpers shared by the backends -------------------------------------------------------------------------

def cuda_index(device: str) -> int | None:
    """"cpu" -> None, "cuda"/"cuda:N" -> N; anything else is a caller error."""
    if device == "cpu":
        return None
    if device == "cuda":
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise BackendUnavailable(f"unknown device {device!r}.", fix="use auto, cpu, cuda or cuda:N.")


def missing_onnx_reason(run: Run, precision: str) -> str | None:
    """The one-line reason when the ONNX file an ONNX backend needs has not been exported."""
    from segdeploy.export import EXPORT_PRECISIONS
    from segdeploy.runs import onnx_path

    if onnx_path(run.dir, precision).is_file():
        return None
    if precision not in EXPORT_PRECISIONS:  # bf16: the exporter writes no such file, so do not suggest one
        return (f"no {precision} ONNX: export writes {', '.join(EXPORT_PRECISIONS)}; "
                f"{precision} runs on the torch and torch-compile backends")
    return (f"no onnx/model.{precision}.onnx in {run.dir}; "
            f"run segdeploy export {run.dir} --precisions {precision}")


def onnx_files(path: Path) -> list[Path]:
    """The ONNX graph file and the external-data files its weights live in (the torch dynamo exporter
    writes ``model.onnx.data``), so sizes and hashes cover the weights, not only the graph."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    from segdeploy.errors import SegdeployError

    model = onnx.load(str(path), load_external_data=False)
    locations = sorted({ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)})
    folder = Path(path).resolve().parent
    for loc in locations:
        # onnxruntime refuses these too: a model file must not make a tool read (or hash) files elsewhere
        if Path(loc).is_absolute() or folder not in (folder / loc).resolve().parents:
            raise SegdeployError(f"external data location {loc!r} points outside the model's folder {folder}.",
                                 path=path, fix="re-export the model (segdeploy export RUN); external data files "
                                                "must lie beside the .onnx file.")
    return [Path(path)] + [Path(path).parent / loc for loc in locations]


def onnx_size_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in onnx_files(path)) / 1e6, 3)
