"""Fake backends for tests/test_isolate.py. They are registered in ``segdeploy.engines.BACKENDS`` under this
module's name, which bench workers import in their own process (``Job.backend_module``).

* ``segfault`` / ``oom``: the worker dies while loading, by SIGSEGV (a runtime's segfault) or SIGKILL (what the
  kernel's out-of-memory killer sends);
* ``arena-big`` / ``arena-small``: an engine holding ``WEIGHTS_MIB`` of weights whose inference takes
  ``WORKSPACE_MIB`` from a module-level arena that grows but never shrinks, as ONNX Runtime's CPU arena and
  glibc's heap keep memory once freed: in one shared process, the second configuration's workspace is hidden by
  the first one's.
"""

from __future__ import annotations

import os
import signal

import numpy as np

PRECISIONS = ("fp32",)
MIB = 1024 * 1024
WEIGHTS_MIB = {"arena-big": 40, "arena-small": 24}
WORKSPACE_MIB = {"arena-big": 240, "arena-small": 120}
ARENA: list[np.ndarray] = []


def check(precision, device="auto", *, backend, run=None):
    return None if precision in PRECISIONS else f"{backend} has no {precision}"


def _workspace(n_bytes: int) -> np.ndarray:
    if not ARENA or ARENA[0].nbytes < n_bytes:
        ARENA[:] = [np.ones(n_bytes // 8)]  # written, so resident
    return ARENA[0]


class ArenaEngine:
    precision, device, compute_stream = "fp32", "cpu", None

    def __init__(self, backend: str, num_classes: int):
        self.backend, self.num_classes = backend, num_classes
        self.weights = np.ones(WEIGHTS_MIB[backend] * MIB // 8)
        self.info = {"provider": "arena"}

    def run(self, batch):
        return self.to_host(self.infer(self.to_device(batch)))

    def to_device(self, batch):
        return batch

    def infer(self, x):
        _workspace(WORKSPACE_MIB[self.backend] * MIB)[::512] += 1.0  # touch the workspace
        b, _, h, w = x.shape
        return np.zeros((b, self.num_classes, h, w), np.float32)

    def to_host(self, y):
        return y

    def synchronize(self):
        pass

    def close(self):
        self.weights = None


def load(run, precision, device="auto", *, backend):
    if backend == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if backend == "oom":
        os.kill(os.getpid(), signal.SIGKILL)
    return ArenaEngine(backend, run.meta.num_classes)
