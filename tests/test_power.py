"""Energy measurement and NVML lookups: RAPL counters (a fake sysfs tree), NVML sampling (a fake module)."""

from __future__ import annotations

import os
import sys
import time
import types

import pytest

from segdeploy.bench.power import PowerMeter, rapl_packages


class FakeClock:
    """Seconds that pass only when the test says so: timings that do not depend on how busy the machine is."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


def _fake_rapl(root, energies_uj, max_uj=2**32):
    for i, e in enumerate(energies_uj):
        zone = root / f"intel-rapl:{i}"
        zone.mkdir(parents=True)
        (zone / "energy_uj").write_text(f"{e}\n")
        (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
        sub = zone / f"intel-rapl:{i}:0"  # a sub-zone (core): must not be counted twice
        sub.mkdir()
        (sub / "energy_uj").write_text("5\n")
    return root


def test_rapl_energy_over_the_loop_and_counter_wrap(tmp_path):
    root = _fake_rapl(tmp_path / "powercap", [1_000_000, 2_000_000])
    assert [p.name for p in rapl_packages(root)] == ["intel-rapl:0", "intel-rapl:1"]
    clock = FakeClock()
    with PowerMeter("cpu", rapl_root=root, clock=clock) as meter:
        # 3 J on package 0 and 1 J on package 1 while the half-second "loop" runs
        (root / "intel-rapl:0" / "energy_uj").write_text("4000000\n")
        (root / "intel-rapl:1" / "energy_uj").write_text("3000000\n")
        clock.now += 0.5
    res = meter.result(images=8)
    assert res["power_method"] == "rapl"
    assert res["avg_power_w"] == pytest.approx(8.0)
    assert res["energy_j_per_image"] == pytest.approx(4.0 / 8)

    wrap_root = _fake_rapl(tmp_path / "wrap", [9_000_000], max_uj=10_000_000)
    with PowerMeter("cpu", rapl_root=wrap_root) as meter:
        (wrap_root / "intel-rapl:0" / "energy_uj").write_text("500000\n")  # wrapped past 10 J
    assert meter.result(images=1)["energy_j_per_image"] == pytest.approx(1.5)


def test_no_source_gives_nulls_and_a_reason(tmp_path):
    with PowerMeter("cpu", rapl_root=tmp_path / "none") as meter:
        pass
    res = meter.result(images=4)
    assert res["avg_power_w"] is None and res["energy_j_per_image"] is None and "RAPL" in res["power_reason"]


def fake_nvml(monkeypatch, *, uuid_lookup: bool = True):
    """NVML with two GPUs in PCI order, while CUDA (CUDA_VISIBLE_DEVICES=1) calls the second one cuda:0. Power
    and per-process memory differ per GPU, so reading the wrong one shows."""
    import torch

    gpus = {"GPU-aaaa": {"pci": "00000000:3B:00.0", "mw": 70_000, "procs": []},
            "GPU-bbbb": {"pci": "00000000:AF:00.0", "mw": 250_000, "procs": [(os.getpid(), 3 * 2**30), (1, 2**30)]}}
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: None
    fake.nvmlDeviceGetHandleByIndex = lambda i: list(gpus)[i]  # NVML's order: must not be used for cuda:N

    def by_uuid(uuid):
        if not uuid_lookup or uuid not in gpus:
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        return uuid

    fake.nvmlDeviceGetHandleByUUID = by_uuid
    fake.nvmlDeviceGetHandleByPciBusId = lambda bus: next(u for u, g in gpus.items() if g["pci"] == bus)
    fake.nvmlDeviceGetPowerUsage = lambda handle: gpus[handle]["mw"]
    fake.nvmlDeviceGetComputeRunningProcesses = lambda handle: [
        types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in gpus[handle]["procs"]]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    cuda0 = types.SimpleNamespace(uuid="bbbb", pci_domain_id=0, pci_bus_id=0xAF, pci_device_id=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: [cuda0][i])
    return fake


def _until_sampled(meter: PowerMeter, n: int, timeout_s: float = 30.0) -> None:
    # the sampling thread may be scheduled late on a busy machine: wait for its samples, not a fixed time
    deadline = time.monotonic() + timeout_s
    while len(meter._samples) < n and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize("uuid_lookup", [True, False], ids=["by-uuid", "by-pci-address"])
def test_nvml_finds_the_gpu_cuda_means_not_nvml_index(monkeypatch, uuid_lookup):
    from segdeploy.bench import memory

    fake_nvml(monkeypatch, uuid_lookup=uuid_lookup)
    with PowerMeter("cuda:0", interval_s=0.01) as meter:
        _until_sampled(meter, 1)
    assert meter.result(images=1)["avg_power_w"] == pytest.approx(250.0)
    read = memory._nvml_reader("cuda:0")
    assert read is not None and read() == 3 * 2**30  # this process only, on the right GPU


def test_nvml_samples_board_power(monkeypatch):
    fake_nvml(monkeypatch)
    with PowerMeter("cuda:0", interval_s=0.01) as meter:
        _until_sampled(meter, 2)
    res = meter.result(images=10)
    assert res["power_method"] == "nvml" and res["power_samples"] >= 2
    assert res["avg_power_w"] == pytest.approx(250.0)
    assert res["energy_j_per_image"] == pytest.approx(250.0 * (meter._t1 - meter._t0) / 10)


@pytest.mark.parametrize("cuda_initialized", [True, False])
def test_memory_falls_back_when_nvml_cannot_see_this_process(monkeypatch, cuda_initialized):
    """In a container without the host's PID namespace NVML lists host PIDs, so this process reads 0 bytes even
    with an engine loaded; the probe must then use the device-wide counter, with that counter's own baseline."""
    import torch

    from segdeploy.bench import memory

    fake = fake_nvml(monkeypatch)
    fake.nvmlDeviceGetComputeRunningProcesses = lambda handle: [types.SimpleNamespace(pid=1, usedGpuMemory=2**30)]
    used = {"bytes": 500 * 2**20}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d: 0)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (80 * 2**30 - used["bytes"], 80 * 2**30))
    # with a CUDA context already there (an earlier torch row) the device-wide baseline is free to take; without
    # one it is not taken, so the row has a peak but no delta
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: cuda_initialized)
    probe = memory.MemoryProbe("cuda:0")
    used["bytes"] = 800 * 2**20  # the engine is loaded
    with probe.track("cuda:0", "tensorrt"):
        used["bytes"] = 1100 * 2**20  # activations while timing
        deadline = time.monotonic() + 10
        while probe._gpu_peak < used["bytes"] and time.monotonic() < deadline:  # until the sampler has seen it
            time.sleep(0.01)
        used["bytes"] = 800 * 2**20
    res = probe.result()
    assert res["peak_memory_method"] == "cuda-mem-get-info"
    assert res["peak_memory_mb"] == pytest.approx(1100)
    assert res["peak_memory_delta_mb"] == (pytest.approx(600) if cuda_initialized else None)


def test_nvml_energy_counter_gives_the_loop_average(monkeypatch):
    """Volta+ GPUs: the millijoule counter read at both ends of the loop, not the 1-second-averaged power reading.
    The counter runs on the meter's own clock, so energy and time come from the same window; a window computed
    wrongly (a counter read outside the loop, seconds from another clock) gives another figure."""
    fake = fake_nvml(monkeypatch)
    clock = FakeClock()
    fake.nvmlDeviceGetTotalEnergyConsumption = lambda handle: int(180_000 * clock.now) + 10**9  # 180 W, in mJ
    with PowerMeter("cuda:0", clock=clock) as meter:
        clock.now += 2.5  # the timed loop
    clock.now += 7.0  # after the loop: must not count
    res = meter.result(images=50)
    assert res["power_method"] == "nvml-energy"
    assert res["avg_power_w"] == pytest.approx(180.0, rel=1e-9)  # not the 250 W the power reading says
    assert res["energy_j_per_image"] == pytest.approx(180.0 * 2.5 / 50, rel=1e-9)


@pytest.mark.parametrize("backend,method,peak_mb", [("torch", "torch.cuda.max_memory_allocated", 300),
                                                    ("torch-compile", "torch.cuda.max_memory_reserved", 700)])
def test_torch_backends_read_the_right_allocator_counter(monkeypatch, backend, method, peak_mb):
    """CUDA-graph replays (torch-compile on GPU) allocate from a private pool that only the reserved counter
    sees; eager torch is measured by what it allocates."""
    import torch

    from segdeploy.bench import memory

    mib = 2**20
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d: 100 * mib)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: 200 * mib)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (1000 * mib, 2000 * mib))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: 300 * mib)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda d: 700 * mib)
    probe = memory.MemoryProbe("cuda")
    with probe.track("cuda:0", backend):
        pass
    res = probe.result()
    assert res["peak_memory_method"] == method and res["peak_memory_mb"] == pytest.approx(peak_mb)
    assert res["peak_memory_delta_mb"] == pytest.approx(peak_mb - (100 if backend == "torch" else 200))
