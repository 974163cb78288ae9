"""Jetson monitoring through tegrastats: line parsing, and the power and memory readers run against a fake
``tegrastats`` executable that prints what the test writes to a file, in JetPack 6's format."""

from __future__ import annotations

import os
import stat
import sys
import textwrap
import time

import pytest

from segdeploy.bench import memory, tegrastats
from segdeploy.bench.power import PowerMeter

MIB = 1024 * 1024


def test_parse_jetpack_formats():
    jp6 = ("11-22-2026 10:00:00 RAM 2048/7620MB (lfb 2x4MB) CPU [3%@729,1%@729] GR3D_FREQ 0% cpu@47C "
           "VDD_IN 4567mW/4321mW VDD_CPU_GPU_CV 500mW/480mW VDD_SOC 1200mW/1190mW")
    jp4 = "RAM 1500/3964MB (lfb 63x4MB) SWAP 0/1982MB CPU [10%@102] POM_5V_IN 3120/3050 POM_5V_GPU 40/40"
    assert tegrastats.parse_power_w(jp6) == pytest.approx(4.567)
    assert tegrastats.parse_power_w(jp4) == pytest.approx(3.120)
    assert tegrastats.parse_power_w("RAM 1500/3964MB CPU [10%@102]") is None
    assert tegrastats.parse_ram_used_bytes(jp6) == 2048 * MIB
    assert tegrastats.parse_ram_used_bytes(jp4) == 1500 * MIB
    assert tegrastats.parse_ram_used_bytes("SWAP 0/1982MB (cached 0MB)") is None  # SWAP is not RAM


@pytest.fixture
def fake_tegrastats(tmp_path, monkeypatch):
    """Puts a ``tegrastats`` on PATH; returns ``set(ram_mb, milliwatts)`` that changes what it prints next."""
    state = tmp_path / "state"
    state.write_text("1000 5000")
    exe = tmp_path / "bin" / "tegrastats"
    exe.parent.mkdir()
    exe.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys, time
        interval = int(sys.argv[sys.argv.index("--interval") + 1]) / 1000
        while True:
            ram, mw = open({str(state)!r}).read().split()
            print(f"11-22-2026 10:00:00 RAM {{ram}}/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) "
                  f"CPU [3%@729] GR3D_FREQ 0% VDD_IN {{mw}}mW/{{mw}}mW VDD_SOC 1200mW/1190mW", flush=True)
            time.sleep(interval)
        """))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # NVML absent, as on a Jetson

    def set_state(ram_mb: int, milliwatts: int = 5000) -> None:
        tmp = state.with_suffix(".tmp")
        tmp.write_text(f"{ram_mb} {milliwatts}")
        tmp.replace(state)  # atomic, so the fake never reads a half-written file

    return set_state


def _wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "tegrastats fake produced no matching line in time"
        time.sleep(0.01)


def test_tegrastats_memory_keeps_the_peak_between_samples(fake_tegrastats):
    reader = tegrastats.TegrastatsMemory(interval_ms=10)
    try:
        assert reader.read() == 1000 * MIB
        fake_tegrastats(1800)
        _wait_until(lambda: reader.latest == 1800 * MIB)
        fake_tegrastats(1200)
        _wait_until(lambda: reader.latest == 1200 * MIB)
        assert reader.read() == 1800 * MIB
    finally:
        reader.close()


def test_memory_probe_falls_back_to_tegrastats_without_nvml(fake_tegrastats, monkeypatch):
    import torch

    # a Jetson as MemoryProbe sees it: CUDA present, NVML absent; torch's own counters are not consulted for
    # a non-torch backend
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda i: 0)
    probe = memory.MemoryProbe("auto")  # baseline: 1000 MiB in use before the engine exists
    fake_tegrastats(1300)  # the engine is loaded
    with probe.track("cuda:0", "tensorrt"):
        fake_tegrastats(1750)  # its activations during the timed loop
        _wait_until(lambda: probe._gpu_reader() == 1750 * MIB)
        fake_tegrastats(1300)
        time.sleep(0.05)
    res = probe.result()
    assert res["peak_memory_method"] == "tegrastats-ram"
    assert res["peak_memory_mb"] == pytest.approx(1750)
    assert res["peak_memory_delta_mb"] == pytest.approx(750)


def test_power_meter_reads_the_input_rail_without_nvml(fake_tegrastats):
    fake_tegrastats(1000, milliwatts=6500)
    with PowerMeter("cuda:0", interval_s=0.01) as meter:
        _wait_until(lambda: len(meter._samples) >= 3)
    res = meter.result(images=20)
    assert res["power_method"] == "tegrastats" and res["avg_power_w"] == pytest.approx(6.5)
    assert res["energy_j_per_image"] == pytest.approx(6.5 * (meter._t1 - meter._t0) / 20)
