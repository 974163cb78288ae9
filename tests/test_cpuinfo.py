"""CPU features that decide int8/bf16 speed, parsed from /proc/cpuinfo text of real machine kinds."""

from __future__ import annotations

import pytest

from segdeploy.machine.cpuinfo import cpu_features, cpu_isa

# the flags lines below are abridged from real machines (only flags that matter here, plus neighbours)
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx_vnni amx_bf16 avx512_fp16 amx_tile amx_int8
processor\t: 1
flags\t\t: fpu
"""
ZEN4 = """model name\t: AMD EPYC 9654
flags\t\t: fpu avx2 fma avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vnni avx512_bitalg
"""
SKYLAKE = "model name\t: Intel(R) Xeon(R) Gold 6148\nflags\t\t: fpu avx2 fma avx512f avx512bw avx512cd\n"
HASWELL = "model name\t: Intel(R) Core(TM) i7-4770\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
NEOVERSE_V1 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp sve i8mm bf16
CPU implementer\t: 0x41
"""
CORTEX_A72 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"


@pytest.mark.parametrize("text, int8, bf16, fp16", [
    (SAPPHIRE_RAPIDS, "AMX-INT8", "AMX-BF16", "AVX512-FP16"),
    (ZEN4, "AVX512-VNNI", "AVX512-BF16", None),
    (SKYLAKE, "AVX512BW", None, None),
    (HASWELL, "AVX2", None, None),
    (NEOVERSE_V1, "I8MM", "BF16", "NEON-FP16"),
    (CORTEX_A72, "NEON", None, None),
])
def test_best_int8_bf16_fp16_paths(tmp_path, text, int8, bf16, fp16):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    isa = cpu_isa(path)
    assert (isa["int8"], isa["bf16"], isa["fp16"]) == (int8, bf16, fp16)
    assert isa["logical_cpus"] >= 1


def test_features_come_from_the_first_processor_and_keep_a_fixed_order(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(SAPPHIRE_RAPIDS)
    assert cpu_features(path) == ["AVX2", "FMA", "AVX512F", "AVX512BW", "AVX512-VNNI", "AVX-VNNI", "AVX512-BF16",
                                  "AVX512-FP16", "AMX", "AMX-INT8", "AMX-BF16"]
    path.write_text(NEOVERSE_V1)
    assert cpu_features(path) == ["NEON", "NEON-DOTPROD", "I8MM", "BF16", "NEON-FP16", "SVE"]


def test_unreadable_cpuinfo_is_unknown_not_absent(tmp_path):
    isa = cpu_isa(tmp_path / "missing")
    assert isa["features"] is None and isa["int8"] is None and isa["bf16"] is None


def test_environment_record_carries_the_isa():
    from segdeploy.machine.envinfo import environment

    record = environment()
    assert set(record["cpu_isa"]) == {"arch", "logical_cpus", "features", "int8", "bf16", "fp16"}
    assert record["cpu_isa"] == cpu_isa()


def _vpmaddubsw_matmul(a, b, order):
    """u8 x s8 -> int32 as AVX2 computes it: products of K in the given order, adjacent pairs summed with
    saturation to int16, the pair sums added in int32."""
    import numpy as np

    prod = a.astype(np.int64)[:, order, None] * b.astype(np.int64)[None, order, :]
    if prod.shape[1] % 2:
        prod = np.concatenate([prod, np.zeros_like(prod[:, :1])], axis=1)
    pairs = np.clip(prod[:, 0::2] + prod[:, 1::2], -32768, 32767)
    return pairs.sum(axis=1)


@pytest.mark.parametrize("int8,exact", [("AMX-INT8", True), ("AVX512-VNNI", True), ("AVX-VNNI", True),
                                        ("AVX512BW", False), ("AVX2", False), (None, False), ("I8MM", True)])
def test_the_int8_guarantee_follows_the_path(int8, exact):
    from segdeploy.machine.cpuinfo import int8_exact, int8_noise_factor

    isa = {"arch": "x86_64", "int8": int8}
    assert int8_exact(isa) is exact
    assert int8_noise_factor(isa) == (1.0 if exact else 2.0)
    assert int8_exact(None) is False and int8_noise_factor(None) == 2.0  # unknown: the weakest guarantee


def test_the_u8s8_bound_holds_for_any_pairing_and_is_reached():
    import numpy as np

    from segdeploy.machine.cpuinfo import u8s8_matmul_error_bound

    avx2, vnni = {"int8": "AVX2"}, {"int8": "AVX512-VNNI"}
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (9, 33), dtype=np.uint8)
    b = rng.integers(-128, 128, (33, 7), dtype=np.int8)
    exact = a.astype(np.int64) @ b.astype(np.int64)
    bound = u8s8_matmul_error_bound(a, b, avx2)
    assert not u8s8_matmul_error_bound(a, b, vnni).any()
    saturated = 0
    for order in [np.arange(33)] + [rng.permutation(33) for _ in range(20)]:
        error = np.abs(_vpmaddubsw_matmul(a, b, order) - exact)
        assert np.all(error <= bound)
        saturated += int(error.any())
    assert saturated  # random full-range operands do saturate some pairs: the bound is not vacuous
    # the worst pair, 255 x -128 twice, loses 65280 - 32768 = 32512: exactly the bound
    a1, b1 = np.full((1, 2), 255, np.uint8), np.full((2, 1), -128, np.int8)
    assert abs(_vpmaddubsw_matmul(a1, b1, np.arange(2)) - (-65280))[0, 0] == 32512
    assert u8s8_matmul_error_bound(a1, b1, avx2)[0, 0] == 32512
    # small operands never saturate: bound 0, exact on any path
    assert not u8s8_matmul_error_bound(a // 4, b // 2, avx2).any()
