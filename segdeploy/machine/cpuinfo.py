"""The CPU instruction-set features that decide how fast int8 and bf16 run on the CPU runtimes.

Read from ``/proc/cpuinfo`` (Linux; x86 ``flags``, Arm ``Features``). What they mean for a benchmark row:

* int8: AMX-INT8 (Sapphire Rapids and later: tile matrix multiply) > AVX512-VNNI / AVX-VNNI (one instruction per
  u8 x s8 dot product of 4; onnxruntime's and OpenVINO's int8 kernels are built on it) > AVX2 alone (vpmaddubsw,
  whose 16-bit intermediate can saturate u8 x s8 products, hence onnxruntime's ``reduce_range`` advice there);
  Arm: I8MM (int8 matrix multiply) > dot product (``asimddp``) > NEON alone.
* bf16: AMX-BF16 > AVX512-BF16 (OpenVINO's CPU plugin then computes in bf16 unless told f32); Arm BF16.
* fp16 arithmetic: AMX-FP16 > AVX512-FP16; Arm ``asimdhp``. Without it fp16 on the CPU is storage only.

Nothing here runs code on the CPU or imports a runtime; elsewhere than Linux the features are unknown (null).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# /proc/cpuinfo flag -> the name a row records
X86_FEATURES = {
    "avx2": "AVX2", "fma": "FMA", "avx512f": "AVX512F", "avx512bw": "AVX512BW", "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI", "avx_vnni_int8": "AVX-VNNI-INT8", "avx512_bf16": "AVX512-BF16",
    "avx512_fp16": "AVX512-FP16", "amx_tile": "AMX", "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16",
    "amx_fp16": "AMX-FP16",
}
ARM_FEATURES = {
    "asimd": "NEON", "asimddp": "NEON-DOTPROD", "i8mm": "I8MM", "bf16": "BF16", "asimdhp": "NEON-FP16",
    "sve": "SVE", "sve2": "SVE2", "sme": "SME",
}
# best first: the first feature present names the path the runtimes' kernels take
INT8_PATHS = ("AMX-INT8", "AVX512-VNNI", "AVX-VNNI", "AVX512BW", "AVX2", "I8MM", "NEON-DOTPROD", "NEON")
BF16_PATHS = ("AMX-BF16", "AVX512-BF16", "BF16")
FP16_PATHS = ("AMX-FP16", "AVX512-FP16", "NEON-FP16")


CPUINFO = Path("/proc/cpuinfo")


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's share), which is what CPU latency depends on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _read(cpuinfo: Path) -> str | None:
    try:
        return cpuinfo.read_text(errors="replace")
    except OSError:
        return None


def _first_field(text: str, keys: tuple[str, ...]) -> str | None:
    """The first non-empty value of any of ``keys`` in /proc/cpuinfo's ``key : value`` lines."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in keys and value.strip():
            return value.strip()
    return None


def cpuinfo_model(cpuinfo: Path = CPUINFO) -> str | None:
    """The CPU's model name as /proc/cpuinfo gives it (x86 ``model name``, some Arm kernels ``Model``)."""
    text = _read(cpuinfo)
    return None if text is None else _first_field(text, ("model name", "Model"))


def cpu_features(cpuinfo: Path = CPUINFO) -> list[str] | None:
    """The features above that this CPU has (x86 and Arm names), or None where /proc/cpuinfo is not readable."""
    text = _read(cpuinfo)
    if text is None:
        return None
    flags = _first_field(text, ("flags",))
    table = X86_FEATURES
    if flags is None:
        flags, table = _first_field(text, ("Features",)), ARM_FEATURES
    present = set((flags or "").split())
    return [name for flag, name in table.items() if flag in present]


def kernel_paths(isa: dict) -> str:
    """The int8, bf16 and fp16 paths of a ``cpu_isa`` record in words: ``int8 AMX-INT8, bf16 AMX-BF16, fp16 -``."""
    return ", ".join(f"{kind} {isa.get(kind) or '-'}" for kind in ("int8", "bf16", "fp16"))


def cpu_isa(cpuinfo: Path = CPUINFO) -> dict:
    """``{arch, logical_cpus, features, int8, bf16, fp16}``: ``int8``/``bf16``/``fp16`` name the fastest path the
    features allow (None: no such instructions, or unknown when ``features`` is None)."""
    features = cpu_features(cpuinfo)
    have = set(features or ())

    def best(paths: tuple[str, ...]) -> str | None:
        return next((p for p in paths if p in have), None)

    return {
        "arch": platform.machine() or None,
        "logical_cpus": usable_cpus(),
        "features": features,
        "int8": best(INT8_PATHS),
        "bf16": best(BF16_PATHS),
        "fp16": best(FP16_PATHS),
    }
