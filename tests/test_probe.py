"""segdeploy.machine.roofline: the GEMM/bandwidth probe (rates computed from a fake clock, products checked), its cache
keyed by device, and the rows' achieved GMAC/s and roofline fraction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segdeploy.machine import roofline
from segdeploy.records import BenchRow

STEP = 2.0**-10  # seconds per clock reading: a binary fraction, so differences are exact


class FakeClock:
    """Each reading is STEP later than the previous one: every timed call lasts exactly STEP seconds."""

    def __init__(self):
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return self.readings * STEP


def test_gemm_rate_is_flops_over_time_of_the_best_call():
    m, n, k = 3, 5, 7
    times = iter([0.0, 0.5, 1.0, 1.2, 2.0, 2.25])  # calls of 0.5, 0.2 and 0.25 s
    calls = []
    rate = roofline.gemm_rate(lambda: calls.append(1), m, n, k, repeats=3, warmup=1, clock=lambda: next(times))
    flops = 2 * m * n * k
    assert len(calls) == 4  # one untimed warm-up, three timed
    assert rate == pytest.approx(flops / 0.2 / 2 / 1e9, rel=1e-12)  # GMAC/s = GFLOP/s / 2


def test_measure_device_rates_follow_from_the_clock(monkeypatch):
    clock = FakeClock()
    record = roofline.measure_device("cpu", sizes=(16,), repeats=2, copy_bytes=2**20, clock=clock)
    expected = 16**3 / STEP / 1e9  # every call lasted STEP
    libs = record["gemm_gmacs_per_s"]
    assert "numpy@16" in libs["fp32"] and "onnxruntime@16" in libs["int8"]
    assert all(r == pytest.approx(expected, rel=1e-12) for by_lib in libs.values() for r in by_lib.values())
    assert record["fp32_gmacs_per_s"] == pytest.approx(expected) and record["int8_gmacs_per_s"] == pytest.approx(expected)
    assert record["copy_gbs"] == pytest.approx(2 * 2**20 / STEP / 1e9)  # bytes read + bytes written
    assert record["key"].startswith("cpu|") and record["threads"] >= 1


def test_the_probed_products_are_right():
    rng = np.random.default_rng(1)
    a8 = rng.integers(0, 256, (33, 65), dtype=np.uint8)
    b8 = rng.integers(-128, 128, (65, 17), dtype=np.int8)
    exact = a8.astype(np.int64) @ b8.astype(np.int64)
    # MatMulInteger: u8 x s8 -> s32, exact on an int32-accumulating int8 path (VNNI, AMX); where pairs of products
    # saturate to int16 (AVX2's vpmaddubsw) within the bound that saturation allows, and exact where it cannot occur
    from segdeploy.machine.cpuinfo import cpu_isa, u8s8_matmul_error_bound

    bound = u8s8_matmul_error_bound(a8, b8, cpu_isa())
    assert np.all(np.abs(roofline.ort_matmul(a8, b8)() - exact) <= bound)
    a, b = rng.standard_normal((33, 65), np.float32), rng.standard_normal((65, 17), np.float32)
    np.testing.assert_allclose(roofline.ort_matmul(a, b)(), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
    for precision, calls in roofline._cpu_candidates(64).items():
        for lib, fn in calls.items():
            out = np.asarray(fn())
            assert out.shape == (64, 64), (precision, lib)


def test_the_cache_is_keyed_by_cpu_model_and_threads(monkeypatch, tmp_path):
    import segdeploy.machine.envinfo as envinfo

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    monkeypatch.setattr(roofline, "cpu_threads", lambda: 2)
    monkeypatch.setattr(envinfo, "cpu_model", lambda: "CPU A")
    measured = []

    def fake_measure(device):
        measured.append(device)
        return {"key": roofline.device_key(device), "fp32_gmacs_per_s": 50.0, "int8_gmacs_per_s": 300.0}

    assert roofline.cached("cpu") is None
    record = roofline.probe("cpu", measure=fake_measure)
    assert roofline.cached("cpu") == record and measured == ["cpu"]
    on_disk = json.loads((tmp_path / roofline.PROBE_FILE).read_text())
    assert on_disk["devices"]["cpu|CPU A|2t"]["int8_gmacs_per_s"] == 300.0
    assert roofline.cached("cpu", threads=1) is None  # another thread count is another roofline
    monkeypatch.setattr(envinfo, "cpu_model", lambda: "CPU B")
    assert roofline.cached("cpu") is None
    roofline.probe("cpu", measure=fake_measure)  # a second machine kind joins the first
    assert set(json.loads((tmp_path / roofline.PROBE_FILE).read_text())["devices"]) == {"cpu|CPU A|2t",
                                                                                         "cpu|CPU B|2t"}
    (tmp_path / roofline.PROBE_FILE).write_text("{not json")
    assert roofline.cached("cpu") is None  # a corrupt cache is no cache


def _row(**fields) -> BenchRow:
    base = dict(status="ok", device="cpu", precision="int8", gmacs=2.5, throughput_ips=40.0,
                latency_ms={"p50": 20.0, "p90": 25.0})
    return BenchRow(**{**base, **fields})


def test_row_gmacs_per_s_is_gmacs_times_throughput_and_its_roofline_fraction():
    probe = {"fp32_gmacs_per_s": 50.0, "int8_gmacs_per_s": 400.0, "int8_library": "onnxruntime@512",
             "fp32_library": "torch@512", "measured": "then"}
    out = roofline.derived_fields(_row(), probe)
    assert out["gmacs_per_s"] == 2.5 * 40.0
    assert out["roofline_fraction"] == 100.0 / 400.0 and out["roofline_gmacs_per_s"] == 400.0
    assert out["roofline_basis"].startswith("int8 GEMM (onnxruntime@512")
    assert out["latency_spread"] == 25.0 / 20.0
    assert roofline.derived_fields(_row(precision="fp32"), probe)["roofline_fraction"] == 100.0 / 50.0
    cpu_fp16 = roofline.derived_fields(_row(precision="fp16"), probe)  # no CPU fp16 probe: no fraction
    assert cpu_fp16["gmacs_per_s"] == 100.0 and "roofline_fraction" not in cpu_fp16
    assert roofline.derived_fields(_row(status="failed", throughput_ips=None, latency_ms=None), probe) == {}
    no_probe = roofline.derived_fields(_row(gmacs=None), probe)
    assert "gmacs_per_s" not in no_probe and no_probe["latency_spread"] == 1.25


def test_bench_rows_carry_the_fraction_of_the_cached_probe(tmp_path, monkeypatch):
    import isolate_backends
    import segdeploy.bench.runner as runner
    import segdeploy.engines as engines
    from segdeploy.bench.runner import run_bench
    from segdeploy.data import open_dataset

    from helpers import make_meta, make_run

    ds = open_dataset("synthetic:24")
    run = make_run(tmp_path / "run", make_meta(ds, spec="synthetic:24", split={"k": 2}))
    monkeypatch.setitem(engines.BACKENDS, "arena-small", isolate_backends.SPEC)
    monkeypatch.setattr(runner, "_model_cost", lambda run: {"params_m": 1.0, "gmacs": 2.0, "gflops": 4.0})
    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path / "cache"))
    roofline.probe("cpu", measure=lambda d: {"key": roofline.device_key(d), "fp32_gmacs_per_s": 80.0,
                                             "fp32_library": "fake", "measured": "now"})
    try:
        (row,) = run_bench([run], "synthetic:24", "arena-small", "fp32", tmp_path / "r.jsonl", batch=2,
                           device="cpu", max_images=2, progress=False, isolate="none", warmup=0.0,
                           warmup_iters=1, duration=0.0, min_iters=10)  # 10: p90 is supported
    finally:
        isolate_backends.ARENA.clear()
    assert row.status == "ok", row.reason
    assert row.gmacs_per_s == pytest.approx(2.0 * row.throughput_ips)
    assert row.roofline_fraction == pytest.approx(row.gmacs_per_s / 80.0)
    assert row.latency_spread == pytest.approx(row.latency_ms["p90"] / row.latency_ms["p50"])
    stored = BenchRow.from_json(json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0]))
    assert stored.roofline_fraction == row.roofline_fraction and stored.load_memory_mb == row.load_memory_mb

    from rich.console import Console

    from segdeploy.bench.table import render

    console = Console(record=True, width=260)
    console.print(*render([row]))
    text = console.export_text()
    assert "% peak" in text and f"{100 * row.roofline_fraction:.0f}" in text
    console.print(*render([BenchRow.from_json({**row.to_json(), "roofline_fraction": None})]))
    assert console.export_text().count("% peak") == 0  # no probe: no column


def test_env_probe_prints_and_caches(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from segdeploy.commands.app import app

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    monkeypatch.setattr(roofline, "measure_device",
                        lambda d: {"key": "cpu|X|1t", "device": d, "int8_gmacs_per_s": 123.0})
    result = CliRunner().invoke(app, ["env", "--probe", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["probe"]["int8_gmacs_per_s"] == 123.0
    assert "cpu|X|1t" in json.loads((tmp_path / roofline.PROBE_FILE).read_text())["devices"]
