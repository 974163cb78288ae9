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


# -- what a CPU's int8 path guarantees (test tolerances come from here, not from one machine's numbers) ---------

# u8 x s8 dot products accumulated in int32 with no narrower intermediate: VNNI's vpdpbusd (4 products -> int32),
# AMX's tile multiply, Arm's sdot/usdot/usmmla and NEON's widening multiply-accumulate (int16 products of s8/u8
# widened, then int32 sums)
EXACT_INT8_PATHS = ("AMX-INT8", "AVX512-VNNI", "AVX-VNNI", "I8MM", "NEON-DOTPROD", "NEON")
# vpmaddubsw (AVX2, and AVX512BW without VNNI) multiplies u8 x s8 and adds each adjacent pair with signed
# saturation to int16: a pair can reach 2 x 255 x 128 = 65280, twice what int16 holds
_INT16_MAX = 32767


def int8_exact(isa: dict | None) -> bool:
    """Whether this CPU's int8 path accumulates every u8 x s8 product exactly in int32 (an unknown path is
    assumed not to: a tolerance must hold on the weakest machine it may meet)."""
    return bool(isa) and isa.get("int8") in EXACT_INT8_PATHS


def u8s8_matmul_error_bound(a, b, isa: dict | None):
    """Elementwise bound on ``|runtime(a @ b) - exact(a @ b)|`` for a u8 (M, K) x s8 (K, N) product on a path
    whose adjacent products saturate to int16 (vpmaddubsw). A pair ``p1 + p2`` loses
    ``max(0, |p1 + p2| - 32767) <= max(0, |p1| - 16383.5) + max(0, |p2| - 16383.5)``, so whatever pairs of K the
    kernel forms, the error of an output is at most the sum over K of ``max(0, |a_ik b_kj| - 16383.5)``
    (products below half of int16 can never saturate a pair). On an exact path (``int8_exact``) the bound is 0."""
    import numpy as np

    if int8_exact(isa):
        return np.zeros((a.shape[0], b.shape[1]), np.int64)
    products = np.abs(a.astype(np.int64)[:, :, None] * b.astype(np.int64)[None, :, :])  # (M, K, N)
    return np.clip(products - (_INT16_MAX + 1) / 2, 0, None).sum(axis=1)


def int8_noise_factor(isa: dict | None) -> float:
    """How many times larger int8 quantization noise may be on this CPU than on an exact int32 path: 1 on VNNI,
    AMX and Arm's int8 paths; 2 where u8 x s8 pairs go through int16 (AVX2, AVX512BW without VNNI). There
    onnxruntime's kernels saturate the pair sums (``u8s8_matmul_error_bound``) and OpenVINO's oneDNN avoids the
    saturation by halving the weights' range (7-bit weights): either way each weight's quantization step, and so
    the noise it adds to a layer's output, is up to twice the exact path's. A tolerance measured on an exact path
    (pixels that flip class, logit differences) is scaled by it: pixels flip where the two best logits lie closer
    than the noise, a fraction that grows about linearly with the noise for small noise."""
    return 1.0 if int8_exact(isa) else 2.0
