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
