"""One interface for every inference backend: ``load_engine(backend, run, precision, device).run(batch)``.

A backend is one module in this package exposing ``BACKEND`` (its name), ``PRECISIONS`` and
``load(run, precision, device) -> Engine``. Heavy libraries (onnxruntime, tensorrt) are imported inside
``load`` so that a missing one costs a one-line :class:`BackendUnavailable`, not an ImportError at start-up.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from segdeploy.errors import BackendUnavailable
from segdeploy.runs import Run

# backend name -> module implementing it
BACKENDS: dict[str, str] = {
    "torch": "segdeploy.engines.torch_backend",
    "onnxruntime": "segdeploy.engines.ort_backend",  # CPU execution provider
    "onnxruntime-cuda": "segdeploy.engines.ort_backend",  # CUDA execution provider
    "onnxruntime-trt": "segdeploy.engines.ort_backend",  # TensorRT execution provider
    "tensorrt": "segdeploy.engines.trt_backend",  # native TensorRT through polygraphy
}


class Engine(Protocol):
    backend: str
    precision: str
    device: str  # "cpu" or "cuda:N"
    info: dict  # what the row should carry: provider, file, file_size_mb, ...

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, H, W) float32 normalised host array -> (B, K, H, W) float32 logits on the host."""

    def close(self) -> None: ...


def load_engine(backend: str, run: Run, precision: str, device: str = "auto") -> Engine:
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r}.", fix=f"choose from {', '.join(BACKENDS)}.")
    module = importlib.import_module(BACKENDS[backend])
    return module.load(run, precision, device, backend=backend)
