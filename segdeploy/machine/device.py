"""What a device name means, for every stage: training, each inference backend, and the memory and power probes.

Names a user may pass: ``cpu``, ``cuda:N``, ``cuda`` and ``auto``.

* ``cuda`` is ``cuda:0``, the same GPU in every stage (torch alone would read it as "the current device", which
  differs between processes that called ``set_device``);
* ``auto`` picks, among the device kinds a stage can run on (its order of preference), the first one this machine
  has: a CUDA GPU when torch sees one, else the CPU. A stage that runs on one kind only (the onnxruntime CPU EP; the
  GPU backends) resolves ``auto`` to that kind without looking, so its check can then say why it cannot run.

:func:`resolve_device` only names the device; whether it is present is :func:`missing_device_reason`, so cheap
checks can report "no cuda:1 here" as a reason instead of an exception. The current CUDA device is changed only
for a block (:func:`cuda_device`), never left switched for whoever runs next. torch is imported inside functions:
``segdeploy engines --help`` must not pay for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from segdeploy.errors import SegdeployError

CPU = "cpu"
CUDA = "cuda"
KINDS = (CUDA, CPU)  # what "auto" may become, in order of preference, for a stage that runs on both


def cuda_index(device: str) -> int | None:
    """``cpu`` -> None, ``cuda`` -> 0, ``cuda:N`` -> N; anything else is a user error."""
    if device == CPU:
        return None
    if device == CUDA:
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise SegdeployError(f"unknown device {device!r}.", fix="use auto, cpu, cuda or cuda:N.")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(requested: str, kinds: Sequence[str] = KINDS) -> str:
    """``requested`` as ``cpu`` or ``cuda:N``, for a stage that runs on ``kinds`` (``cuda``/``cpu``, preferred
    first). Only ``auto`` depends on the machine; explicit names are returned as named, even where the stage
    cannot run them (its check says so)."""
    if requested == "auto":
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"device kinds must be among {KINDS}, got {tuple(kinds)}")
        # a stage with one kind gets it unasked; otherwise the first kind present (the CPU always is)
        kind = kinds[0] if len(kinds) == 1 else next(k for k in kinds if k == CPU or cuda_available())
        return CPU if kind == CPU else f"{CUDA}:0"
    index = cuda_index(requested)
    return CPU if index is None else f"{CUDA}:{index}"


def missing_device_reason(device: str) -> str | None:
    """Why ``device`` (a resolved name) is not on this machine, as torch sees it; None when it is (the CPU
    always is)."""
    index = cuda_index(device)
    if index is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return f"{device} asked for, but torch sees no CUDA GPU on this machine"
    count = torch.cuda.device_count()
    if index >= count:
        return f"no {device} (this machine has {count} CUDA device(s))"
    return None


@contextmanager
def cuda_device(device: str) -> Iterator[None]:
    """Make ``device`` the current CUDA device inside the block and restore the previous one after it (TensorRT
    builds and deserialises onto the current device). A no-op for the CPU."""
    index = cuda_index(device)
    if index is None:
        yield
        return
    import torch

    with torch.cuda.device(index):  # torch's own guard: set on entry, the previous device restored on exit
        yield
