"""Which dtype training autocasts to: ``--amp auto|bf16|fp16|off``; without ``--amp``, auto on CUDA and off on CPU.

* CUDA: ``auto`` is bf16 on sm80+ and fp16 (with loss scaling) before, as the study trains on GPUs.
* CPU: ``auto`` is bf16 only where the CPU computes bf16 natively (AMX-BF16 or AVX512-BF16, from
  :func:`segdeploy.machine.cpuinfo.cpu_isa`); elsewhere bf16 is emulated and slower than fp32, so ``auto`` stays in fp32.
  ``bf16`` forces it on any CPU (to reproduce a bf16 run elsewhere); fp16 autocast is refused on the CPU.
  The CPU default is fp32: on a shared 2-vCPU AMX Xeon, benchmarks/train_throughput.py showed no speed-up of bf16
  beyond the load noise for unet-tiny and segformer-tiny at 128 px, and fp32 keeps the numbers of earlier runs.

bf16 autocast keeps the weights, the optimizer state and the loss in fp32; only the matmuls and convolutions run
in bf16. It is deterministic on one machine class, but its weights differ from an fp32 run's, so a baseline
recorded in fp32 (``make check``) is compared with fp32 training (the demo trains with ``amp="off"``).
"""

from __future__ import annotations

import torch

from segdeploy.errors import SegdeployError

AMP_MODES = ("auto", "bf16", "fp16", "off")
# the bf16 paths of cpuinfo.BF16_PATHS that PyTorch's CPU kernels (oneDNN) use for bf16 convolutions and matmuls
CPU_NATIVE_BF16 = ("AMX-BF16", "AVX512-BF16")


def amp_mode(value, device: torch.device | None = None) -> str:
    """The mode of a TrainConfig's ``amp``: a mode name, a bool as older configs and records hold it, or None (the
    default: auto on CUDA, off elsewhere)."""
    if value is None:
        return "auto" if device is not None and device.type == "cuda" else "off"
    if isinstance(value, bool):
        return "auto" if value else "off"
    if value not in AMP_MODES:
        raise SegdeployError(f"--amp {value!r} is not a mixed-precision mode.",
                             fix=f"pass one of {', '.join(AMP_MODES)} (auto: bf16 where the device computes it "
                                 "natively, else fp16 on older GPUs and fp32 on CPUs).")
    return value


def cpu_bf16_path() -> str | None:
    """The native bf16 path of this CPU (``AMX-BF16`` / ``AVX512-BF16``), or None."""
    from segdeploy.machine.cpuinfo import cpu_isa

    path = cpu_isa()["bf16"]
    return path if path in CPU_NATIVE_BF16 else None


def autocast_dtype(device: torch.device, amp) -> torch.dtype | None:
    """The dtype to autocast to on ``device`` for ``amp`` (None: fp32)."""
    mode = amp_mode(amp, device)
    if mode == "off":
        return None
    if device.type == "cuda":
        from segdeploy.machine.envinfo import has_native_bf16

        if mode == "auto":
            return torch.bfloat16 if has_native_bf16(device) else torch.float16
        return torch.bfloat16 if mode == "bf16" else torch.float16
    if device.type == "cpu":
        if mode == "fp16":
            raise SegdeployError("--amp fp16: PyTorch trains in fp16 on CUDA only.",
                                 fix="pass --amp bf16 (or auto) on a CPU, or --amp off.")
        if mode == "bf16" or cpu_bf16_path() is not None:
            return torch.bfloat16
        return None
    return None  # other devices: fp32
