"""Fake backends for tests/test_isolate.py. They are registered in ``segdeploy.engines.BACKENDS`` under this
module's name, which bench workers import in their own process (``Job.backend_module``).

* ``segfault`` / ``oom``: the worker dies while loading, by SIGSEGV (a runtime's segfault) or SIGKILL (what the
  kernel's out-of-memory killer sends); ``disk-full``: loading raises ``WriteFailed``, which stops a suite;
* ``arena-big`` / ``arena-small``: an engine holding ``WEIGHTS_MIB`` of weights whose inference takes
  ``WORKSPACE_MIB`` from a module-level arena that grows but never shrinks, as ONNX Runtime's CPU arena and
  glibc's heap keep memory once freed: in one shared process, the second configuration's workspace is hidden by
  the first one's;
* ``hang``: loading never returns (a runtime stuck in a kernel);
* ``nan``: an engine whose logits are NaN (an fp16 overflow), which bench refuses with a failed row.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from segdeploy.engines.base import BaseEngine
from segdeploy.errors import WriteFailed

PRECISIONS = ("fp32",)
MIB = 1024 * 1024
WEIGHTS_MIB = {"arena-big": 40, "arena-small": 24, "nan": 1}
WORKSPACE_MIB = {"arena-big": 240, "arena-small": 120, "nan": 1}
ARENA: list[np.ndarray] = []


def _workspace(n_bytes: int) -> np.ndarray:
    if not ARENA or ARENA[0].nbytes < n_bytes:
        ARENA[:] = [np.ones(n_bytes // 8)]  # written, so resident
    return ARENA[0]


class ArenaEngine(BaseEngine):
    DEVICE_KINDS = ("cpu",)

    @classmethod
    def check(cls, precision, device="auto", *, backend, run=None):
        return None if precision in PRECISIONS else f"{backend} has no {precision}"

    def load(self):
        if self.backend == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if self.backend == "oom":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.backend == "hang":
            while True:
                time.sleep(1)
        if self.backend == "disk-full":
            raise WriteFailed("no space left on device.", path="/nowhere/engine.cache", fix="free some space.")
        self.num_classes = self.source.meta.num_classes
        self.weights = np.ones(WEIGHTS_MIB[self.backend] * MIB // 8)
        self.info = {"provider": "arena"}

    def infer(self, x):
        _workspace(WORKSPACE_MIB[self.backend] * MIB)[::512] += 1.0  # touch the workspace
        b, _, h, w = x.shape
        return np.full((b, self.num_classes, h, w), np.nan if self.backend == "nan" else 0.0, np.float32)

    def release(self):
        self.weights = None


# the segdeploy.engines.BACKENDS entry of every fake backend
SPEC = f"{__name__}:{ArenaEngine.__name__}"
