"""The part every backend shares, in the spirit of polygraphy's ``BaseRunner``: an engine is constructed cheaply
(nothing loaded), ``activate()`` checks that it can run here and loads it, ``infer`` computes, ``deactivate()``
frees it; ``with engine:`` does both ends.

A backend is one module with one :class:`BaseEngine` subclass that fills in

* ``check(precision, device, *, backend, run)`` (classmethod): the one-line reason it cannot run here, or None;
  cheap, no model loaded (``segdeploy engines list`` and bench planning call it for every configuration);
* ``load()``: load the model onto ``self.device`` and fill ``self.info`` (and ``self.compute_stream``);
* ``infer(handle)``: compute only, inputs already where the engine reads them;

and, where its inputs do not stay on the host, ``to_device``/``to_host``/``synchronize``/``release``. The check,
the device rule (:mod:`segdeploy.machine.device`) and ``run`` are written here once.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from segdeploy.backends import backend_info
from segdeploy.machine.device import KINDS, resolve_device
from segdeploy.errors import BackendUnavailable

if TYPE_CHECKING:
    from segdeploy.run.folder import Run


class BaseEngine(abc.ABC):
    """A model on one backend. ``run(x) == to_host(infer(to_device(x)))``; the split form lets a benchmark time
    device compute (``infer`` + ``synchronize``) apart from end-to-end latency (``run``)."""

    # the device kinds of a backend segdeploy.backends does not list (a test double), preferred first
    DEVICE_KINDS: ClassVar[tuple[str, ...]] = KINDS

    def __init__(self, run: Run, precision: str, device: str = "auto", *, backend: str, threads: int | None = None):
        self.backend = backend
        self.precision = precision
        # host threads for a CPU runtime (--threads), None for the runtime's default; a backend that computes
        # elsewhere ignores it. ``info`` records what was used.
        self.threads = threads
        self.requested_device = device
        self.device = resolve_device(device, self.device_kinds(backend))  # "cpu" or "cuda:N"
        self.source = run  # the run directory's model (``run`` is the inference call)
        self.info: dict = {}  # what the row should carry: provider, onnx, file_size_mb, engine, ...
        # the torch.cuda.Stream that ``infer`` enqueues on, or None (CPU, or a runtime that picks its own streams):
        # where there is one, GPU compute time is taken from CUDA events on it (segdeploy.bench.latency)
        self.compute_stream: Any = None
        self.is_active = False

    @classmethod
    def device_kinds(cls, backend: str) -> tuple[str, ...]:
        """What ``auto`` may resolve to for ``backend`` (one class may serve backends on different devices)."""
        info = backend_info(backend)
        return info.device_kinds if info else cls.DEVICE_KINDS

    # -- what a backend fills in ---------------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def check(cls, precision: str, device: str = "auto", *, backend: str, run: Run | None = None) -> str | None:
        """Why ``precision`` cannot run on ``device`` here (one line), or None. With ``run``, its artifacts too."""

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model onto ``self.device``; fill ``self.info``. Called by :meth:`activate` after the check."""

    @abc.abstractmethod
    def infer(self, handle: Any) -> Any:
        """Compute only: inputs already resident, outputs stay on the device. May return before the device has
        finished; call ``synchronize`` before reading a clock."""

    def release(self) -> None:
        """Free what :meth:`load` holds (called by :meth:`deactivate`)."""

    # -- the shared lifecycle ------------------------------------------------------------------------------------
    def activate(self) -> BaseEngine:
        """Check, then load; a configuration that cannot run here raises the check's one line as
        :class:`BackendUnavailable`. Activating an active engine does nothing."""
        if not self.is_active:
            reason = self.check(self.precision, self.requested_device, backend=self.backend, run=self.source)
            if reason:
                raise BackendUnavailable(reason)
            self.load()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self.is_active = False
            self.release()

    def close(self) -> None:  # the name bench and the Engine protocol use
        self.deactivate()

    def __enter__(self) -> BaseEngine:
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # -- inference ---------------------------------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, H, W) float32 normalised host array -> (B, K, H, W) float32 logits on the host."""
        return self.to_host(self.infer(self.to_device(batch)))

    def to_device(self, batch: np.ndarray) -> Any:
        """Copy a host batch to where ``infer`` reads it (cast to the model's input type); returns a handle.
        Default: a contiguous float32 host array."""
        return np.ascontiguousarray(batch, dtype=np.float32)

    def to_host(self, handle: Any) -> np.ndarray:
        """Device output -> float32 host array (waits for the computation)."""
        return np.asarray(handle, dtype=np.float32)

    def synchronize(self) -> None:
        """Wait for the work ``infer`` queued (nothing to wait for on a synchronous runtime)."""

    def __repr__(self) -> str:
        state = "active" if self.is_active else "inactive"
        return f"<{type(self).__name__} {self.backend} {self.precision} on {self.device}, {state}>"
