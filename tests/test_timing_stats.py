"""Timings that bear their statistics: percentiles only where the count supports them, a loop that runs to its
minimum count, the noisy flag, memory only from a process of its own, and the bench table at 120 columns."""

from __future__ import annotations

import numpy as np
import pytest

from segdeploy.bench.latency import measure, noise, summarize
from segdeploy.records import BenchRow


@pytest.mark.parametrize("n, supported", [(5, set()), (15, {"p90"}), (50, {"p90", "p95"}),
                                          (150, {"p90", "p95", "p99"})])
def test_a_percentile_is_null_where_its_count_does_not_support_it(n, supported):
    times = np.arange(1, n + 1, dtype=float)  # 1..n ms: the k-th percentile is ceil(k/100 n)
    s = summarize(np.random.default_rng(n).permutation(times))
    assert s["n"] == n and s["max"] == n and s["p50"] == pytest.approx((n + 1) / 2)
    for p in (90, 95, 99):
        key = f"p{p}"
        if key in supported:
            assert s[key] == np.ceil(p / 100 * n) and s[key] < s["max"]  # an observed timing below the maximum
        else:
            assert s[key] is None
    assert s["cv"] == pytest.approx(np.std(times) / np.mean(times))


def test_the_loop_runs_to_its_minimum_count_after_its_duration():
    calls = []
    out = measure(lambda: calls.append(1), warmup_s=0.0, warmup_iters=1, duration_s=1e-6, min_iters=37)
    assert out["n"] == 37 and len(calls) == 38
    assert measure(lambda: None, warmup_s=0.0, warmup_iters=1, duration_s=1e-6)["n"] == 20  # default: p95 holds
    assert measure(lambda: None, warmup_s=0.0, warmup_iters=1, duration_s=1e-6)["p95"] is not None


def _summary(times):
    return summarize(np.asarray(times, dtype=float))


def test_noisy_flags_scatter_and_an_overloaded_host():
    quiet = _summary(np.linspace(10.0, 10.8, 20))  # CV 2.4%, p90/p50 1.04
    assert noise({"latency": quiet}, host_load=1.9, cores=2) == (False, None)
    # one call in ten three times as slow: p90/p50 stays 1.0, the CV is 50% (mean 12, sd 6)
    outlier = _summary([10.0] * 18 + [30.0] * 2)
    noisy, why = noise({"latency": quiet, "batch-8": outlier})
    assert noisy and why == "batch-8 CV 50% > 10%"
    # a bimodal loop (unet torch fp32 in the cost study: p50 495, p90 1213 ms)
    bimodal = _summary([495.0] * 16 + [1213.0] * 4)
    noisy, why = noise({"latency": bimodal})
    assert noisy and "latency p90/p50 2.45 > 1.5" in why
    # a quiet loop on a host loaded beyond its cores
    noisy, why = noise({"latency": quiet}, host_load=3.4, cores=2)
    assert noisy and why == "host load 3.4 > 2 cores"
    # just under both thresholds
    assert noise({"latency": _summary([10.0] * 10 + [11.9] * 10)})[0] is False
    # nothing to judge: unknown, not quiet
    assert noise({"latency": None}) == (None, None)


def _ok_row(**kw):
    lat = _summary([10.0] * 18 + [30.0] * 2)
    base = dict(dataset="d", model="m", backend="onnxruntime", precision="fp32", status="ok", batch=8,
                latency_ms=lat, batch_latency_ms=lat, compute_timer="host", host_load_1m=1.0,
                env={"cpu_cores": 2}, peak_memory_mb=300.0, peak_memory_delta_mb=1.0, load_memory_mb=0.5,
                host_peak_rss_mb=300.0, baseline_memory_mb=299.0)
    return BenchRow(**{**base, **kw})


def test_a_row_measured_in_a_shared_process_has_no_memory_figure_and_says_why():
    from segdeploy.bench.runner import judge_row

    shared = _ok_row(isolation="none")
    shared.update(judge_row(shared))
    assert shared.peak_memory_delta_mb is None and shared.load_memory_mb is None and shared.peak_memory_mb is None
    assert "shared process" in shared.memory_note
    assert shared.noisy is True and shared.noisy_reason == "latency CV 50% > 10%; batch-8 CV 50% > 10%"
    own = _ok_row(isolation="process")
    own.update(judge_row(own))
    assert own.peak_memory_delta_mb == 1.0 and own.memory_note is None
    # rows written before the flag existed load with it unknown
    old = BenchRow.from_json({"schema": "segdeploy.bench/2", "status": "ok", "latency_ms": {"p50": 1.0}})
    assert old.noisy is None and old.noisy_reason is None and old.memory_note is None


@pytest.mark.parametrize("value, spec, text", [(-0.00001, "+.4f", "0.0000"), (0.0, "+.4f", "0.0000"),
                                               (-0.0, ".2f", "0.00"), (-0.00004, ".1%", "0.0%"),
                                               (-0.0123, "+.4f", "-0.0123"), (0.0123, "+.4f", "+0.0123"),
                                               (None, ".2f", "-"), (float("nan"), ".2f", "-")])
def test_a_value_that_rounds_to_zero_has_no_sign(value, spec, text):
    from segdeploy.numerics import fmt_num

    assert fmt_num(value, spec) == text


def _demo_rows():
    """The demo's 12 configurations: 2 models x torch/onnxruntime x fp32/fp16/int8, torch fp16/int8 unavailable
    on a CPU, one ort int8 with fewer timings than p95 needs, one noisy, one failed."""
    rows = []
    for model, family in (("unet-tiny", "specialized"), ("segformer-tiny", "general")):
        for backend in ("torch", "onnxruntime"):
            for precision in ("fp32", "fp16", "int8"):
                base = dict(dataset="synthetic", split="test", n_images=24, model=model, family=family,
                            backend=backend, precision=precision, run=f"runs/{model}", run_name=model, batch=8,
                            device="cpu", isolation="process")
                if backend == "torch" and precision != "fp32":
                    rows.append({**base, "status": "unavailable",
                                 "reason": f"torch {precision} needs CUDA (this machine has none); on CPU use "
                                           f"onnxruntime --precisions {precision}"})
                    continue
                if (model, backend, precision) == ("segformer-tiny", "onnxruntime", "fp16"):
                    rows.append({**base, "status": "failed", "reason": "RuntimeError: " + "x" * 300})
                    continue
                n = 15 if precision == "int8" else 40
                lat = _summary(np.linspace(1234.5678, 1300.0, n))
                rows.append({**base, "status": "ok", "dice": 0.912345, "dice_vs_torch_fp32": -1e-6,
                             "latency_ms": lat, "batch_latency_ms": lat, "compute_ms": lat, "compute_timer": "host",
                             "throughput_ips": 1234.56, "peak_memory_delta_mb": 12345.6, "file_size_mb": 123.4,
                             "engine_info": {"threads": 16}, "threads": 16, "host_load_1m": 13.45,
                             "env": {"cpu_cores": 16}, "noisy": precision == "fp16",
                             "noisy_reason": "batch-8 CV 45% > 10%" if precision == "fp16" else None})
    return rows


def test_the_demo_table_fits_120_columns_with_unavailable_configurations_as_one_line():
    from rich.console import Console

    from segdeploy.bench.table import print_tables

    console = Console(record=True, width=250)  # a wide log: the table still keeps to 120
    print_tables(_demo_rows(), console)
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= 120
    rows = [line for line in lines if line.startswith(("unet-tiny", "segformer-tiny"))]
    assert len(rows) == 7  # the ok configurations only, none cut short
    assert not any("…" in line for line in rows)
    p50 = f"{_summary(np.linspace(1234.5678, 1300.0, 40))['p50']:.2f}"
    assert all(f" {p50} " in line and " 1234.6 " in line and " 12346 " in line and " 0.9123 " in line
               for line in rows)
    assert sum("not run here" in line for line in lines) == 1
    assert "not run here: torch fp16/int8 — needs CUDA (this machine has none)" in lines
    assert sum(line.startswith("failed: segformer-tiny onnxruntime fp16") for line in lines) == 1
    int8 = [line for line in rows if " int8 " in line]
    assert all(" – " in line for line in int8)  # p95 of 15 timings is blank
    assert "– in p95: p95 needs ≥ 20 timed iterations (bench --min-iters)" in lines
    assert sum(line.rstrip().endswith("noisy") for line in rows) == 1
    assert "noisy: unet-tiny onnxruntime fp16 — batch-8 CV 45% > 10%" in lines
    assert "-0.0000" not in "\n".join(lines)
    # iterations, threads, batch and load beside each figure
    fp32 = next(line for line in rows if line.startswith("unet-tiny") and " torch " in line)
    assert fp32.split()[-4:] == ["40", "16", "8", "13.4"]


def test_the_report_cost_table_shows_what_timings_rest_on_and_marks_noisy_rows():
    from segdeploy.report.document import Paragraph, Table
    from segdeploy.report.study_report import _cost_section
    from segdeploy.analysis.rows import from_record
    from segdeploy.analysis.summary import summarize as study_summary

    def raw(model, family, noisy, n, memory):
        lat = _summary(np.linspace(10.0, 10.5, n))
        return {"schema": "segdeploy.bench/3", "model": model, "family": family, "dataset": "synthetic",
                "backend": "onnxruntime", "precision": "fp32", "device": "cpu", "status": "ok", "dice": None,
                "dice_status": "not measured", "split": "all", "n_images": 4, "batch": 8, "latency_ms": lat,
                "throughput_ips": 90.0, "peak_memory_delta_mb": memory, "host_load_1m": 3.4, "threads": 2,
                "engine_info": {"threads": 2}, "noisy": noisy, "noisy_reason": "host load 3.4 > 2 cores" if noisy
                else None, "memory_note": None if memory else "not measured: shared process",
                "env": {"cpu": "x", "cpu_cores": 2}, "run": f"/runs/{model}", "run_name": model}

    rows = [from_record(raw("unet", "specialized", True, 15, None)),
            from_record(raw("segformer-b3", "general", False, 40, 50.0))]
    section = _cost_section(study_summary(rows, n_resamples=100))
    (table,) = [b for b in section.blocks if isinstance(b, Table)]
    cells = {r[0]: dict(zip(table.header, r)) for r in table.rows}
    assert cells["unet"]["p95 ms"] == "-" and cells["segformer-b3"]["p95 ms"] == "10.5"
    assert (cells["unet"]["iters"], cells["unet"]["threads"], cells["unet"]["batch"], cells["unet"]["load"]) == \
        ("15", "2", "8", "3.4")
    assert cells["unet"]["timing"] == "noisy" and cells["segformer-b3"]["timing"] == "ok"
    assert cells["unet"]["memory MB"] == "-" and cells["segformer-b3"]["memory MB"] == "50"
    notes = " ".join(b.text for b in section.blocks if isinstance(b, Paragraph))
    assert "p95 needs ≥ 20 timed iterations" in notes and "memory blank: measured in a shared process" in notes
    assert "unet onnxruntime fp32: host load 3.4 > 2 cores" in notes


def test_a_wide_gpu_table_moves_shared_columns_to_its_title_and_never_cuts_a_number():
    from rich.console import Console

    from segdeploy.bench.table import print_tables

    lat = _summary(np.linspace(1234.5, 1300.0, 40))
    rows = [dict(dataset="d", split="test", n_images=24, model=model, family="specialized", backend=backend,
                 precision="fp16", run=f"r/{model}", batch=32, device="cuda:0", status="ok", dice=0.9,
                 latency_ms=lat, compute_ms=lat, compute_timer="cuda-events", batch_latency_ms=lat,
                 throughput_ips=12345.6, peak_memory_delta_mb=12345.0, file_size_mb=1234.5,
                 energy_j_per_image=0.123, roofline_fraction=0.45, threads=16, host_load_1m=12.3)
            for model in ("transnext-t-upernet", "unet") for backend in ("onnxruntime-cuda", "tensorrt")]
    console = Console(record=True, width=300)
    print_tables(rows, console)
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 120 and "…" not in text
    assert "all rows: family specialized, batch 32, threads 16" in text
    body = [line for line in text.splitlines() if "1296.64" in line]
    assert len(body) == 4 and all("12345.6" in line and "0.123" in line and " 45 " in line for line in body)


def test_configurations_that_cannot_run_group_by_backend_and_reason():
    from segdeploy.bench.table import not_run_lines

    def unavailable(model, precision, reason):
        return BenchRow(model=model, backend="torch", precision=precision, status="unavailable", reason=reason)

    int8 = "torch int8 is not benchmarked: INT8 runs from the Q/DQ ONNX on onnxruntime, openvino or tensorrt"
    rows = [unavailable(m, p, f"torch {p} needs CUDA (this machine has none); on CPU use onnxruntime --precisions {p}")
            for m in ("a", "b") for p in ("fp16", "bf16")] + [unavailable("a", "int8", int8)]
    assert not_run_lines(rows, {"a", "b"}) == [
        "not run here: torch fp16/bf16 — needs CUDA (this machine has none)",
        "not run here: torch int8 (a) — not benchmarked: INT8 runs from the Q/DQ ONNX on onnxruntime, openvino or "
        "tensorrt"]


def test_rows_written_before_bench3_show_no_unsupported_percentile():
    from segdeploy.analysis.rows import from_record

    old = {"schema": "segdeploy.bench/2", "model": "m", "dataset": "d", "backend": "torch", "precision": "fp32",
           "device": "cpu", "status": "ok", "latency_ms": {"p50": 495.0, "p90": 1213.0, "p95": 1464.0,
                                                            "p99": 1464.0, "max": 1464.0, "n": 10}}
    row = from_record(old)
    assert row.latency_p50_ms == 495.0 and row.latency_p95_ms is None and row.latency_p99_ms is None
    enough = from_record({**old, "latency_ms": {**old["latency_ms"], "n": 20}})
    assert enough.latency_p95_ms == 1464.0 and enough.latency_p99_ms is None
