"""segdeploy.bench: trtexec percentiles, the timing loop, peak memory, and run_bench end to end (rows, resume,
saved predictions, table)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from segdeploy.bench.latency import find_percentile, measure, measure_engine, summarize
from segdeploy.errors import BackendUnavailable, SegdeployError
from segdeploy.fileio import read_jsonl

FAST = dict(warmup_s=0.0, warmup_iters=1, duration_s=0.0, min_iters=3)  # measure_engine's keywords
BENCH_FAST = dict(warmup=0.0, warmup_iters=1, duration=0.0, min_iters=3)  # run_bench's


# -- latency ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 10, 37, 100, 1000, 1001, 2000])
def test_percentile_follows_trtexecs_exclusion_rule(n):
    """trtexec excludes the top floor((1 - p) n) timings and returns the largest left; here that rule in exact
    rational arithmetic, against the numpy-based implementation (p99.9 of 1000 runs is where floating point
    would slip to the maximum)."""
    from fractions import Fraction
    from math import floor

    x = np.sort(np.random.default_rng(n).gamma(2.0, 3.0, size=n))
    for p in ("0", "50", "90", "95", "99", "99.9", "100"):
        exclude = floor((1 - Fraction(p) / 100) * n)
        assert find_percentile(x, float(p)) == x[max(n - 1 - exclude, 0)], p
    assert find_percentile(np.array([]), 50) == float("inf")


def test_summarize_known_series():
    series = np.random.default_rng(0).permutation(np.arange(1, 101, dtype=float))  # 1..100 in random order
    s = summarize(series)
    cv = s.pop("cv")
    assert s == {"mean": 50.5, "p50": 50.5, "p90": 90.0, "p95": 95.0, "p99": 99.0, "min": 1.0, "max": 100.0,
                 "n": 100}
    assert cv == pytest.approx(np.sqrt((100**2 - 1) / 12) / 50.5)
    odd = summarize([5.0, 1.0, 3.0])
    # fewer than 10 runs: p90 would be the maximum, and is left out
    assert (odd["p50"], odd["p90"], odd["p99"], odd["max"]) == (3.0, None, None, 5.0)


def test_measure_iteration_counts_and_sync():
    calls, syncs = [], []
    out = measure(lambda: calls.append(1), warmup_s=0.0, warmup_iters=1, duration_s=0.0, min_iters=25,
                  sync=lambda: syncs.append(1))
    assert out["n"] == 25
    assert len(calls) == 26 and len(syncs) == 26  # one warm-up call, then the timed ones, each synchronised
    assert out["min"] <= out["p50"] <= out["p90"] <= out["p95"] <= out["max"] and out["p99"] is None  # 25 < 100
    capped = measure(lambda: None, warmup_s=0.0, duration_s=60.0, min_iters=2, max_iters=5)
    assert capped["n"] == 5
    with pytest.raises(ValueError):
        measure(lambda: None, min_iters=0)


def test_warm_up_runs_both_its_iterations_and_its_time():
    import time

    # a slow call: the time is reached after the first call, the iteration count decides
    calls = []
    out = measure(lambda: (calls.append(1), time.sleep(0.01)), warmup_s=0.001, warmup_iters=4, duration_s=0.0,
                  min_iters=2)
    assert len(calls) - out["n"] == 4
    # a fast call: the count is reached at once, the time decides
    stamps = []
    before = time.perf_counter()
    out = measure(lambda: stamps.append(time.perf_counter()), warmup_s=0.05, warmup_iters=3, duration_s=0.0,
                  min_iters=2)
    warm = len(stamps) - out["n"]
    # the first timed call comes only after the warm-up's time has passed since the warm-up began (which is after
    # `before`, and before the first stamp), and the warm-up stopped at the first check past it: call warm-2 was
    # checked inside the warm-up time. Measured from the first stamp, the warm-up may look up to one call short.
    assert warm > 3 and stamps[warm] - before >= 0.05 and stamps[warm - 2] - stamps[0] < 0.05


class CountingEngine:
    """Minimal engine: identity 'logits', and a record of which entry points the measurement used."""

    backend, precision, device = "fake", "fp32", "cpu"

    def __init__(self):
        self.info = {}
        self.batches: list[int] = []
        self.infers = 0

    def run(self, batch):
        self.batches.append(batch.shape[0])
        return batch.copy()

    def to_device(self, batch):
        return batch

    def infer(self, h):
        self.infers += 1
        return h

    def to_host(self, h):
        return h

    def synchronize(self):
        pass

    def close(self):
        pass


def test_measure_engine_uses_batch_1_latency_device_compute_and_batch_b_throughput():
    eng = CountingEngine()
    out = measure_engine(eng, np.zeros((1, 1, 4, 4), np.float32), np.zeros((6, 1, 4, 4), np.float32), **FAST)
    assert set(eng.batches) == {1, 6} and eng.infers == out["compute_ms"]["n"] + 1
    assert out["latency_ms"]["n"] == out["batch_latency_ms"]["n"] == 3
    assert out["throughput_ips"] == pytest.approx(6 / (out["batch_latency_ms"]["p50"] / 1e3))


class FakeDevice:
    """A device clock that only enqueued work advances, and CUDA-event lookalikes that read it: what an event
    timer reports must be this device time, not the (here near-zero) host time."""

    def __init__(self):
        self.now_ms = 0.0
        self.recorded_on: list = []
        self.waits = 0

    def event(self):
        device = self

        class Event:
            def record(self, stream):
                device.recorded_on.append(stream)
                self.at = device.now_ms

            def synchronize(self):
                device.waits += 1

            def elapsed_time(self, end):
                return end.at - self.at

        return Event()


def test_cuda_event_timer_reports_device_time_between_its_events():
    from segdeploy.bench.latency import CudaEventTimer

    device, stream = FakeDevice(), object()
    kernel_ms = iter([4.0, 4.0, 5.0, 9.0, 4.5, 4.25])

    def enqueue():
        device.now_ms += next(kernel_ms)

    out = measure(enqueue, warmup_s=0.0, warmup_iters=1, duration_s=0.0, min_iters=5,
                  timer=CudaEventTimer(stream, make_event=device.event))
    # the warm-up call took the first 4.0; the five timed ones are the rest
    assert (out["n"], out["min"], out["p50"], out["max"]) == (5, 4.0, 4.5, 9.0)
    assert device.recorded_on == [stream] * 12 and device.waits == 6  # both events on the stream, end awaited


def test_measure_engine_times_compute_with_events_on_the_engine_stream(monkeypatch):
    from segdeploy.bench import latency

    device = FakeDevice()

    class FakeEventTimer(latency.CudaEventTimer):
        def __init__(self, stream):
            super().__init__(stream, make_event=device.event)

    monkeypatch.setattr(latency, "CudaEventTimer", FakeEventTimer)

    class StreamEngine(CountingEngine):
        compute_stream = "engine stream"

        def infer(self, h):
            device.now_ms += 3.0
            return super().infer(h)

    eng = StreamEngine()
    out = measure_engine(eng, np.zeros((1, 1, 4, 4), np.float32), np.zeros((2, 1, 4, 4), np.float32), **FAST)
    assert out["compute_timer"] == "cuda-events"
    assert out["compute_ms"]["p50"] == out["compute_ms"]["max"] == 3.0
    assert set(device.recorded_on) == {"engine stream"}
    host = measure_engine(CountingEngine(), np.zeros((1, 1, 4, 4), np.float32),
                          np.zeros((2, 1, 4, 4), np.float32), **FAST)
    assert host["compute_timer"] == "host"  # no stream exposed: host time around infer + synchronize


@pytest.mark.parametrize("kernel_peak", [True, False], ids=["vmhwm", "sampled"])
def test_memory_probe_sees_an_allocation_during_the_block(kernel_peak, monkeypatch):
    from segdeploy.bench import memory

    if kernel_peak and not memory._reset_high_water_mark():
        pytest.skip("no resettable kernel peak-RSS counter (/proc/self/clear_refs) on this OS")
    if not kernel_peak:
        monkeypatch.setattr(memory, "_reset_high_water_mark", lambda: False)
    probe = memory.MemoryProbe("cpu")
    with probe.track("cpu", "torch"):
        block = np.ones(160 * 1024 * 1024 // 8)  # 160 MiB, touched so it is resident
        peak_inside = memory._rss()
        if kernel_peak:
            del block  # the kernel's counter keeps the peak after the array is freed
    res = probe.result()
    assert res["peak_memory_method"] == ("linux-vmhwm" if kernel_peak else "psutil-rss")
    assert res["peak_memory_delta_mb"] >= 150
    # the kernel's RSS counters may lag by a few pages (per-thread caching), hence the tolerance
    assert res["peak_memory_mb"] * memory.MIB >= 0.99 * peak_inside
    assert res["host_peak_rss_mb"] == res["peak_memory_mb"]


# -- run_bench ---------------------------------------------------------------------------------------------------



class NearestMeanEngine:
    """Backend "fake": classifies each pixel by the nearest class-mean intensity, a weak but real segmenter, so
    Dice is neither 0 nor 1 and a wrong resampling or argmax would change it; "broken" fails at inference."""

    def __init__(self, centers: np.ndarray, precision: str, backend: str):
        if precision != "fp32":
            raise BackendUnavailable(f"fake backend has no {precision}.")
        self.centers = centers.astype(np.float32)[None, :, None, None]
        self.backend, self.precision, self.device = backend, precision, "cpu"
        self.info = {"provider": "fake"}

    def run(self, batch):
        if self.backend == "broken":
            raise RuntimeError("kernel exploded")
        return self.to_host(self.infer(self.to_device(batch)))

    def to_device(self, batch):
        return np.ascontiguousarray(batch[:, :1])

    def infer(self, h):
        return -((h - self.centers) ** 2)

    def to_host(self, h):
        return h

    def synchronize(self):
        pass

    def close(self):
        pass


def _class_means(ds, ids: list[str], mean: float, std: float) -> np.ndarray:
    sums, counts = np.zeros(ds.num_classes), np.zeros(ds.num_classes)
    for i in ids:
        s = ds.load(i)
        x = (s.image[..., 0] / 255.0 - mean) / std
        for c in range(ds.num_classes):
            sums[c] += x[s.mask == c].sum()
            counts[c] += (s.mask == c).sum()
    return sums / np.maximum(counts, 1)


@pytest.fixture
def fake_backends(monkeypatch):
    import segdeploy.engines as engines
    from segdeploy.data import open_dataset

    ds = open_dataset("synthetic:24")
    test = set(ds.split("test", seed=42, k=2))
    centers = _class_means(ds, [i for i in ds.ids if i not in test], 0.5, 0.5)
    real_load = engines.load_engine
    for name in ("fake", "broken"):  # registered, so bench accepts the names
        monkeypatch.setitem(engines.BACKENDS, name, __name__)

    def load(backend, run, precision, device="auto", **options):
        if backend in ("fake", "broken"):
            return NearestMeanEngine(centers, precision, backend)
        return real_load(backend, run, precision, device, **options)

    monkeypatch.setattr(engines, "load_engine", load)


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """An untrained unet-tiny at 64 px whose meta matches the synthetic dataset (its predictions are arbitrary
    but not constant, which is all the backend comparisons need)."""
    from segdeploy.data import open_dataset

    from helpers import make_meta, make_run

    cache = tmp_path_factory.getbasetemp() / "cache"
    mp = pytest.MonkeyPatch()
    mp.setenv("SEGDEPLOY_CACHE", str(cache))  # the same cache the autouse fixture gives each test
    try:
        ds = open_dataset("synthetic:24")
    finally:
        mp.undo()
    meta = make_meta(ds, spec="synthetic:24", img_size=64, std=[0.5] * ds.in_chans,
                     split={"k": 2})  # 4 cases: 1 test + 2 folds
    return make_run(tmp_path_factory.mktemp("runs") / "unet-tiny-run", meta)


def _png_dice(pred_dir: Path, ds, ids: list[str]) -> float:
    """Micro Dice straight from the saved PNGs and the dataset masks, by set overlap per class."""
    from PIL import Image

    preds, gts = [], []
    for i in ids:
        with Image.open(pred_dir / f"{i}.png") as im:
            assert im.mode == "L"
            pred = np.asarray(im)
        mask = ds.load(i).mask
        assert pred.shape == mask.shape  # saved at the original resolution
        preds.append(pred.ravel())
        gts.append(mask.ravel())
    p, g = np.concatenate(preds), np.concatenate(gts)
    scores = []
    for c in range(1, ds.num_classes):
        denom = (p == c).sum() + (g == c).sum()
        if denom:
            scores.append(2 * ((p == c) & (g == c)).sum() / denom)
    return float(np.mean(scores))


def test_run_bench_rows_resume_predictions_and_table(untrained_run, tmp_path, fake_backends):
    from rich.console import Console

    from segdeploy.bench.runner import run_bench
    from segdeploy.bench.table import render
    from segdeploy.data import open_dataset

    results, preds = tmp_path / "results.jsonl", tmp_path / "preds"
    kwargs = dict(split="test", batch=4, device="cpu", save_predictions=preds, progress=False, **BENCH_FAST)
    with pytest.raises(SegdeployError, match="unknown backend.*'nope'"):  # a typo is refused before any work
        run_bench([untrained_run], "synthetic:24", "fake,nope,broken", "fp32,fp16", results, **kwargs)
    assert not results.exists()
    evaluations = []
    rows = run_bench([untrained_run], "synthetic:24", "fake,broken", "fp32,fp16", results,
                     on_evaluation=lambda row, ev: evaluations.append((row, ev)), **kwargs)

    status = {(r.backend, r.precision): r.status for r in rows}
    assert status == {("fake", "fp32"): "ok", ("fake", "fp16"): "unavailable", ("broken", "fp32"): "failed",
                      ("broken", "fp16"): "unavailable"}
    by = {(r.backend, r.precision): r for r in rows}
    assert by["broken", "fp32"].reason == "RuntimeError: kernel exploded"

    ok = by["fake", "fp32"]
    ds = open_dataset("synthetic:24")
    ids = ds.split("test", seed=42, k=2, fold=0)
    assert ok.n_images == len(ids) > 0 and ok.dataset == ds.name and ok.device == "cpu"
    assert ok.engine_info == {"provider": "fake"} and ok.compute_timer == "host"
    assert 0.03 < ok.dice < 0.9 and set(ok.dice_per_class) == set(ds.classes[1:])
    assert ok.dice_per_image > 0 and ok.hd95 > 0 and ok.precision_fg > 0 and ok.recall_fg > 0
    assert set(ok.latency_ms) == {"mean", "p50", "p90", "p95", "p99", "min", "max", "n", "total_s", "cv"}
    assert ok.latency_ms["n"] >= 3 and ok.compute_ms["n"] >= 3 and ok.throughput_ips > 0
    # measured in this process (run_bench's default isolate "none"): no memory figure, and the reason
    assert ok.peak_memory_method in ("linux-vmhwm", "psutil-rss") and ok.peak_memory_mb is None
    assert "shared process" in ok.memory_note and ok.noisy in (True, False)
    assert ok.file_size_mb == pytest.approx((untrained_run / "model.safetensors").stat().st_size / 1e6, abs=1e-3)
    assert ok.params_m > 0 and ok.schema == "segdeploy.bench/3" and ok.env
    # the trivial predictors on the same test images: all background scores 0, the others something in (0, 1)
    trivial = ok.trivial_dice
    assert set(trivial) == {"all_bg", "all_fg", "prior"} and trivial["all_bg"] == 0.0
    assert 0 < trivial["all_fg"] < 1 and 0 <= trivial["prior"] <= 1

    # the saved PNGs, scored independently, give the row's Dice
    assert _png_dice(preds / untrained_run.name / "fake-fp32", ds, ids) == pytest.approx(ok.dice, abs=1e-9)
    # only the ok row hands out its evaluation: per-image confusions of the saved predictions, the row's Dice
    from PIL import Image

    from segdeploy.evaluation.metrics import confusion_matrix

    [(ev_row, ev)] = evaluations
    assert ev_row is ok and ev.image_ids == ids
    for i, cm in zip(ids, ev.confusion):
        saved = np.asarray(Image.open(preds / untrained_run.name / "fake-fp32" / f"{i}.png"))
        np.testing.assert_array_equal(confusion_matrix(saved, ds.load(i).mask, ds.num_classes), cm)
    assert ev.scores()["dice"] == ok.dice
    # ... and the same counts are on disk beside the results, named by the row: Dice recomputed from them
    from segdeploy.evaluation.metrics import confusion_scores
    from segdeploy.evaluation.per_image import load_per_image

    saved_ids, saved_cm = load_per_image(results.parent / ok.per_image)
    assert saved_ids.tolist() == ids and confusion_scores(saved_cm)["dice"] == pytest.approx(ok.dice, abs=1e-12)
    assert all(r.per_image is None for r in rows if r.status != "ok")

    # every row is on disk; a second call reruns only the failed configuration
    assert len(read_jsonl(results)) == 4
    again = run_bench([untrained_run], "synthetic:24", "fake,broken", "fp32,fp16", results, **kwargs)
    stored = read_jsonl(results)
    assert len(stored) == 5 and stored[-1]["backend"] == "broken" and stored[-1]["status"] == "failed"
    # resumed rows are the stored ones, read back field for field
    assert [r.to_json() for r in again if r.status != "failed"] == [r for r in stored[:4] if r["status"] != "failed"]
    run_bench([untrained_run], "synthetic:24", "fake", "fp32", results, force=True, **kwargs)
    assert len(read_jsonl(results)) == 6

    console = Console(record=True, width=220)
    tables = render(rows)
    assert len(tables) == 1
    for t in tables:
        console.print(t)
    text = console.export_text()
    # no torch fp32 row in this suite: no ΔDice reference for the fake backend, in the row and in the table
    assert ok.dice_vs_torch_fp32 is None and "+0.0000" not in text
    assert ds.name in text and "unet-tiny" in text
    assert "not run here: fake fp16" in text and "kernel exploded" in text and f"{ok.dice:.4f}" in text


def test_run_bench_reads_the_old_seconds_keywords_with_one_line_each(untrained_run, tmp_path, fake_backends):
    """``warmup_s``/``duration_s``/``timeout_s`` (before the refit) still work: the same row as the new names,
    one deprecation line per old keyword naming the new one; an unknown keyword is still a TypeError."""
    from segdeploy.bench.runner import run_bench
    from segdeploy.errors import SegdeployWarning

    kw = dict(progress=False, max_images=2, warmup_iters=1, min_iters=3)
    with pytest.warns(SegdeployWarning) as said:
        old = run_bench([untrained_run], "synthetic:24", "fake", "fp32", tmp_path / "old.jsonl", warmup_s=0.0,
                        duration_s=0.0, **kw)
    lines = [str(w.message) for w in said if "deprecated" in str(w.message)]
    assert lines == ["run_bench(warmup_s=...) is deprecated: pass warmup= (read as warmup=0.0).",
                     "run_bench(duration_s=...) is deprecated: pass duration= (read as duration=0.0)."]
    new = run_bench([untrained_run], "synthetic:24", "fake", "fp32", tmp_path / "new.jsonl", warmup=0.0, duration=0.0,
                    **kw)
    assert old[0].status == new[0].status == "ok" and old[0].latency_ms["n"] == new[0].latency_ms["n"] == 3
    # the old timeout name reaches the same check as the new one (a timeout needs process isolation)
    with pytest.raises(SegdeployError, match="timeout needs process isolation"), pytest.warns(SegdeployWarning):
        run_bench([untrained_run], "synthetic:24", "fake", "fp32", tmp_path / "t.jsonl", timeout_s=5.0, **kw)
    with pytest.raises(TypeError, match="durations"):
        run_bench([untrained_run], "synthetic:24", "fake", "fp32", tmp_path / "t.jsonl", durations=1.0, **kw)


def test_run_bench_rejects_a_dataset_with_other_classes(untrained_run, tmp_path, fake_backends):
    import json

    from segdeploy.bench.runner import run_bench
    from segdeploy.data import open_dataset

    src = open_dataset("synthetic:24")
    other = tmp_path / "binary"
    (other / "images").mkdir(parents=True)
    (other / "masks").mkdir()
    from PIL import Image

    for i in src.ids[:3]:
        s = src.load(i)
        Image.fromarray(s.image[..., 0]).save(other / "images" / f"{i}.png")
        Image.fromarray((s.mask > 0).astype(np.uint8)).save(other / "masks" / f"{i}.png")
    (other / "meta.json").write_text(json.dumps({"classes": ["background", "organ"]}))
    with pytest.raises(SegdeployError, match=r"unet-tiny-run.*binary"):
        run_bench([untrained_run], str(other), "fake", "fp32", tmp_path / "r.jsonl", progress=False, **BENCH_FAST)
    # a misspelt device is a user error before any work, not a failed row per configuration
    with pytest.raises(SegdeployError, match="unknown device 'gpu'"):
        run_bench([untrained_run], "synthetic:24", "fake", "fp32", tmp_path / "r.jsonl", device="gpu", progress=False,
                  **BENCH_FAST)
    assert not (tmp_path / "r.jsonl").exists()


# the legacy exporter: fast, and independent of segdeploy.export, which has its own tests
@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_run_bench_real_backends_match_a_direct_forward_pass(untrained_run, tmp_path, fake_backends):
    """The saved predictions of the real torch backend (and of ONNX Runtime on an fp32 export, where that backend
    exists) equal the argmax of a plain model forward, restored to the original size, and their Dice is the
    row's; torch fp16 on CPU is unavailable."""
    import torch
    from PIL import Image

    from segdeploy.bench.runner import run_bench
    from segdeploy.data import open_dataset
    from segdeploy.data.transforms import preprocess, restore
    from segdeploy.run.folder import load_run, onnx_path

    run = load_run(untrained_run)
    model = run.build_model()
    backends = ["torch", "onnxruntime"]
    path = onnx_path(untrained_run, "fp32")
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        buf = io.BytesIO()
        torch.onnx.export(model, torch.zeros(2, *run.input_shape), buf, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        path.write_bytes(buf.getvalue())
    preds = tmp_path / "preds"
    rows = run_bench([untrained_run], "synthetic:24", backends, "fp32,fp16", tmp_path / "r.jsonl", batch=2,
                     device="cpu", max_images=3, save_predictions=preds, progress=False, isolate="none", **BENCH_FAST)
    by = {(r.backend, r.precision): r for r in rows}
    assert by["torch", "fp16"].status == "unavailable"
    # ΔDice against the torch fp32 row, which is its own reference
    torch_fp32 = by["torch", "fp32"]
    assert torch_fp32.dice_vs_torch_fp32 == 0.0
    assert by["onnxruntime", "fp32"].dice_vs_torch_fp32 == by["onnxruntime", "fp32"].dice - torch_fp32.dice

    ds = open_dataset("synthetic:24")
    ids = ds.split("test", seed=42, k=2)[:3]
    m = run.meta
    for backend in backends:
        row = by[backend, "fp32"]
        assert row.status == "ok", row.reason
        assert row.n_images == 3
        pred_dir = preds / untrained_run.name / f"{backend}-fp32"
        assert _png_dice(pred_dir, ds, ids) == pytest.approx(row.dice, abs=1e-9)
        for i in ids:
            sample = ds.load(i)
            x, letterbox = preprocess(sample.image, m.img_size, m.mean, m.std)
            with torch.inference_mode():
                logits = model(torch.from_numpy(x)[None])[0].numpy()
            direct = restore(logits, letterbox).argmax(axis=0)
            with Image.open(pred_dir / f"{i}.png") as im:
                saved = np.asarray(im)
            # other kernels (ONNX Runtime, or another batch size) differ in the last bits: a near-tie pixel may flip
            assert saved.shape == sample.mask.shape and np.mean(saved == direct) >= 0.999


def test_table_shows_compute_time_and_energy_only_where_measured():
    from rich.console import Console

    from segdeploy.bench.table import render

    def row(backend, energy, timer):
        return {"dataset": "d", "run": "r", "model": "m", "backend": backend, "precision": "fp32", "status": "ok",
                "dice": 0.8, "latency_ms": {"p50": 2.5, "p90": 3.0}, "compute_ms": {"p50": 1.25},
                "compute_timer": timer, "throughput_ips": 400.0, "energy_j_per_image": energy, "batch": 8,
                "split": "test"}

    def text(rows):
        console = Console(record=True, width=220)
        console.print(*render(rows))
        return console.export_text()

    # on the host the compute loop is the latency loop again: no column
    cpu = text([row("onnxruntime", None, "host")])
    assert "GPU ms" not in cpu and "1.25" not in cpu and "J/img" not in cpu
    gpu = text([row("tensorrt", 0.0123, "cuda-events"), row("onnxruntime", None, "host")])
    assert "J/img" in gpu and "0.012" in gpu and "GPU ms" in gpu and "1.25" in gpu
    assert max(map(len, gpu.splitlines())) <= 120
