"""One interface for every inference backend: ``load_engine(backend, run, precision, device).run(batch)``.

A backend is one module in this package with one :class:`segdeploy.engines.base.BaseEngine` subclass: its
``check`` says in one line why a configuration cannot run here (cheap, no model loaded), ``load`` loads it,
``infer`` computes. Heavy libraries (onnxruntime, tensorrt) are imported inside those methods, so a missing one
costs a one-line :class:`BackendUnavailable`, not an ImportError at start-up. What a device name means is
:mod:`segdeploy.machine.device`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from segdeploy.backends import BACKENDS as BACKEND_TABLE
from segdeploy.backends import DEFAULT_INT8_FORM, int8_form_for
from segdeploy.errors import BackendUnavailable
from segdeploy.run.artifacts import onnx_digest, onnx_files, onnx_size_mb  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # segdeploy.run.folder imports torch; `segdeploy engines --help` should not
    import numpy as np

    from segdeploy.engines.base import BaseEngine
    from segdeploy.run.folder import Run

# backend name -> "module:EngineClass" implementing it (from the one table, segdeploy.backends; the module is
# imported on first use)
BACKENDS: dict[str, str] = {b.name: b.engine for b in BACKEND_TABLE}


class Engine(Protocol):
    """What bench and latency use of an engine (see :class:`~segdeploy.engines.base.BaseEngine`, which every
    backend subclasses, for the meaning of each member); a test double need only have these."""

    backend: str
    precision: str
    device: str  # "cpu" or "cuda:N"
    info: dict
    compute_stream: Any

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def to_device(self, batch: np.ndarray) -> Any: ...

    def infer(self, handle: Any) -> Any: ...

    def to_host(self, handle: Any) -> np.ndarray: ...

    def synchronize(self) -> None: ...

    def close(self) -> None: ...


def engine_class(backend: str) -> type[BaseEngine]:
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r}.", fix=f"choose from {', '.join(BACKENDS)}.")
    module, name = BACKENDS[backend].split(":")
    return getattr(importlib.import_module(module), name)


def check_backend(backend: str, precision: str, device: str = "auto", run: Run | None = None) -> str | None:
    """Why ``backend``/``precision`` cannot run on ``device`` here (one line), or None. With ``run`` the
    run's artifacts (ONNX file) are checked too."""
    return engine_class(backend).check(precision, device, backend=backend, run=run)


def load_engine(backend: str, run: Run, precision: str, device: str = "auto", *,
                threads: int | None = None) -> BaseEngine:
    """The engine, checked and loaded (``activate``d); ``close()`` it, or use it as a context manager.
    ``threads``: host threads for the CPU runtimes (None: the runtime's default; the engine's ``info`` records
    what was used)."""
    return engine_class(backend)(run, precision, device, backend=backend, threads=threads).activate()


# --- helpers shared by the backends -------------------------------------------------------------------------

def missing_onnx_reason(run: Run, precision: str) -> str | None:
    """The one-line reason when the ONNX file an ONNX backend needs has not been exported."""
    from segdeploy.run.folder import EXPORT_PRECISIONS, onnx_path

    if onnx_path(run.dir, precision).is_file():
        return None
    if precision not in EXPORT_PRECISIONS:  # bf16: the exporter writes no such file, so do not suggest one
        return (f"no {precision} ONNX: export writes {', '.join(EXPORT_PRECISIONS)}; "
                f"{precision} runs on the torch and torch-compile backends")
    return (f"no onnx/model.{precision}.onnx in {run.dir}; "
            f"run segdeploy export {run.dir} --precisions {precision}")


def onnx_for_backend(run: Run, precision: str, backend: str) -> tuple[Path, dict]:
    """The ONNX file ``backend`` loads for ``precision``, and what the row should say about it (``onnx_form``).

    INT8 comes in forms made for different runtimes (segdeploy.backends). Where a backend's own
    form was not exported (an older export, ``--int8-forms tensorrt``, or its quantization failed) the backend
    loads model.int8.onnx and ``onnx_form_fallback`` says why, so the row cannot pass for the other form."""
    from segdeploy.run.folder import onnx_path

    if precision != "int8":
        return onnx_path(run.dir, precision), {}
    form = int8_form_for(backend)
    if form != DEFAULT_INT8_FORM:
        path = onnx_path(run.dir, precision, form)
        if path.is_file():
            return path, {"onnx_form": form}
        fallback = {"onnx_form": DEFAULT_INT8_FORM,
                    "onnx_form_fallback": f"no {path.name} (made for {backend}); loaded the {DEFAULT_INT8_FORM} form"}
        return onnx_path(run.dir, precision), fallback
    return onnx_path(run.dir, precision), {"onnx_form": form}
