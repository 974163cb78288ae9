"""segdeploy.bench.isolate: each configuration in a worker process. A crash is a failed row naming the signal and
the suite goes on; memory is measured from a clean baseline, so a configuration's peak does not depend on what
ran before it (in one shared process it does: the complaint of issue 12)."""

from __future__ import annotations

import json
import signal

import pytest

import isolate_backends
from segdeploy.bench.isolate import Job, child_env, describe_exit
from segdeploy.errors import SegdeployError
from segdeploy.fileio import read_jsonl

FAST = dict(warmup=0.0, warmup_iters=1, duration=0.0, min_iters=3)
FAKES = ("segfault", "oom", "arena-big", "arena-small", "nan", "disk-full", "hang")


@pytest.fixture
def fakes(monkeypatch):
    """The fake backends registered by module name; the model cost is a constant (building unet-tiny for it
    takes seconds and is not what these tests are about)."""
    import segdeploy.bench.runner as runner
    import segdeploy.engines as engines

    for name in FAKES:
        monkeypatch.setitem(engines.BACKENDS, name, isolate_backends.SPEC)
    monkeypatch.setattr(runner, "_model_cost", lambda run: {"params_m": 1.0, "gmacs": 2.0, "gflops": 4.0})
    isolate_backends.ARENA.clear()
    yield
    isolate_backends.ARENA.clear()  # the in-process arena would otherwise outlive the test


def _bench(run, backends, results, isolate, **more):
    from segdeploy.bench.runner import run_bench

    return run_bench([run], "synthetic:24", backends, "fp32", results, batch=2, device="cpu", max_images=2,
                     progress=False, isolate=isolate, **FAST, **more)


def test_describe_exit_names_the_signal():
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert describe_exit(-signal.SIGKILL).startswith("killed by SIGKILL (the kernel's out-of-memory killer")
    assert describe_exit(3) == "exited with status 3"


def test_job_is_plain_json_and_the_child_imports_what_the_parent_can(tmp_path):
    job = Job(run=str(tmp_path), data="synthetic:24", ids=["a", "b"], backend="onnxruntime", precision="int8",
              batch=8, device="cpu", timing=dict(FAST), measure_accuracy=False, threads=2, class_map="lesion=3",
              per_image=str(tmp_path / "p.npz"), backend_module="segdeploy.engines.ort_backend:OrtEngine",
              torch_threads=2)
    assert Job.from_json(json.loads(json.dumps(job.to_json()))) == job
    path = child_env()["PYTHONPATH"].split(":")
    tests_dir = str(isolate_backends.__file__).rsplit("/", 1)[0]
    assert tests_dir in path and all(p for p in path)


def test_unknown_isolation_is_refused(tiny_run, tmp_path, fakes):
    with pytest.raises(SegdeployError, match="unknown isolation 'thread'"):
        _bench(tiny_run, "arena-small", tmp_path / "r.jsonl", "thread")


@pytest.mark.slow  # three worker processes, each importing torch (about 10 s each on a loaded 2-core machine)
def test_a_crash_is_a_failed_row_with_its_signal_and_the_suite_goes_on(tiny_run, tmp_path, fakes):
    results = tmp_path / "r.jsonl"
    rows = _bench(tiny_run, "segfault,arena-small,oom", results, "process")
    by = {r.backend: r for r in rows}
    assert by["segfault"].status == "failed" and "killed by SIGSEGV" in by["segfault"].reason
    assert "Segmentation fault" in by["segfault"].reason  # faulthandler's line from the worker's stderr
    assert by["oom"].status == "failed" and "killed by SIGKILL" in by["oom"].reason
    ok = by["arena-small"]
    assert ok.status == "ok", ok.reason
    assert ok.isolation == "process" and ok.latency_ms["n"] >= 3 and ok.n_images == 2
    assert [r["backend"] for r in read_jsonl(results)] == ["segfault", "arena-small", "oom"]
    # resuming retries the failed configurations only, and they fail the same way
    again = _bench(tiny_run, "segfault,arena-small,oom", results, "process")
    assert [r.status for r in again] == ["failed", "ok", "failed"] and len(read_jsonl(results)) == 5


@pytest.mark.slow  # a worker process
def test_a_full_disk_in_a_worker_stops_the_suite_as_in_process(tiny_run, tmp_path, fakes):
    from segdeploy.errors import WriteFailed

    with pytest.raises(WriteFailed, match="no space left on device"):
        _bench(tiny_run, "disk-full,arena-small", tmp_path / "r.jsonl", "process")
    assert not (tmp_path / "r.jsonl").exists()  # the suite stopped: nothing ran after it


@pytest.mark.slow  # four worker processes
def test_isolated_memory_does_not_depend_on_order_and_in_process_memory_does(tiny_run, tmp_path, fakes):
    w, s = isolate_backends.WEIGHTS_MIB, isolate_backends.WORKSPACE_MIB
    forward = {r.backend: r for r in _bench(tiny_run, "arena-big,arena-small", tmp_path / "a.jsonl", "process")}
    reverse = {r.backend: r for r in _bench(tiny_run, "arena-small,arena-big", tmp_path / "b.jsonl", "process")}
    for name in ("arena-big", "arena-small"):
        a, b = forward[name], reverse[name]
        assert a.status == b.status == "ok", (a.reason, b.reason)
        # the peak is the configuration's own: weights + workspace, whichever ran first
        assert abs(a.peak_memory_delta_mb - b.peak_memory_delta_mb) < 10
        assert a.peak_memory_delta_mb >= 0.95 * (w[name] + s[name])
        # the load footprint is the weights (the engine allocates nothing else while loading)
        for row in (a, b):
            assert 0.95 * w[name] <= row.load_memory_mb <= w[name] + 10 and row.load_memory_method == "rss"
            assert row.load_memory_mb < row.peak_memory_delta_mb
    # the same order in this process: the big arena, kept after its configuration, would hide the small workspace;
    # a shared process gives no memory figure, and says why
    shared = {r.backend: r for r in _bench(tiny_run, "arena-big,arena-small", tmp_path / "c.jsonl", "none")}
    for row in shared.values():
        assert row.isolation == "none" and row.status == "ok"
        assert row.peak_memory_delta_mb is row.load_memory_mb is row.baseline_memory_mb is None
        assert "shared process" in row.memory_note


@pytest.mark.slow  # one worker with torch, and the same configuration in this process
def test_a_real_backend_scores_the_same_in_a_worker_as_in_process(tiny_run, tmp_path):
    from segdeploy.evaluation.per_image import load_per_image

    rows, evaluations = {}, {}
    for isolate in ("process", "none"):
        seen = []
        (row,) = _bench(tiny_run, "torch", tmp_path / f"{isolate}.jsonl", isolate, threads=1,
                        on_evaluation=lambda row, ev: seen.append(ev))
        assert row.status == "ok", row.reason
        rows[isolate], (evaluations[isolate],) = row, seen
    worker, here = rows["process"], rows["none"]
    assert worker.dice == here.dice and worker.dice_per_class == here.dice_per_class
    assert worker.load_memory_mb > 0 and worker.gmacs_per_s > 0
    # --threads reaches the worker's engine, and is part of the row's configuration
    assert worker.threads == here.threads == 1 and worker.engine_info["threads"] == here.engine_info["threads"] == 1
    # the per-image confusions come back from the worker: the same sidecar and the same evaluation
    ids_w, cm_w = load_per_image(tmp_path / worker.per_image)
    ids_h, cm_h = load_per_image(tmp_path / here.per_image)
    assert ids_w.tolist() == ids_h.tolist() and len(ids_w) == 2 and (cm_w == cm_h).all()
    ev_w, ev_h = evaluations["process"], evaluations["none"]
    assert ev_w.image_ids == ev_h.image_ids and (ev_w.confusion == ev_h.confusion).all()
    assert ev_w.scores()["dice"] == pytest.approx(worker.dice) and ev_w.class_names == ev_h.class_names


@pytest.mark.slow  # three worker processes
def test_nan_logits_and_cost_only_rows_in_a_worker(tiny_run, tmp_path, fakes):
    results = tmp_path / "r.jsonl"
    by = {r.backend: r for r in _bench(tiny_run, "nan,arena-small", results, "process")}
    assert by["nan"].status == "failed" and "NaN" in by["nan"].reason and by["nan"].per_image is None
    ok = by["arena-small"]
    assert ok.status == "ok" and ok.dice is not None and (tmp_path / ok.per_image).is_file()
    seen = []
    (cost,) = _bench(tiny_run, "arena-small", tmp_path / "cost.jsonl", "process", measure_accuracy=False,
                     on_evaluation=lambda row, ev: seen.append(ev))
    assert cost.status == "ok" and cost.dice is None and cost.to_json()["dice_status"] == "not measured"
    assert cost.n_images == 0 and cost.per_image is None and not seen and cost.latency_ms["n"] >= 3


def test_the_job_carries_the_parents_torch_threads(tiny_run, monkeypatch):
    import torch

    from segdeploy.bench.isolate import make_job
    from segdeploy.run.folder import load_run

    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    job = make_job("torch", "fp32", load_run(tiny_run), "synthetic:24", ["x"], batch=1, device="cpu",
                   save_predictions=None, timing=FAST)
    assert job.torch_threads == 3 and job.backend_module == "segdeploy.engines.torch_backend:TorchEngine"


@pytest.mark.slow  # two worker processes, each importing torch
def test_a_hung_configuration_is_killed_at_the_timeout_and_the_suite_goes_on(tiny_run, tmp_path, fakes):
    import time

    results = tmp_path / "r.jsonl"
    start = time.monotonic()
    rows = _bench(tiny_run, "hang,arena-small", results, "process", timeout=20)
    by = {r.backend: r for r in rows}
    assert by["hang"].status == "failed"
    assert by["hang"].reason.startswith("worker timed out after 20 s and was killed")
    assert by["arena-small"].status == "ok"
    assert time.monotonic() - start < 20 + 60  # the hung worker did not hold the suite
    with pytest.raises(SegdeployError, match="needs process isolation"):
        _bench(tiny_run, "arena-small", tmp_path / "r2.jsonl", "none", timeout=20)
