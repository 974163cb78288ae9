"""segdeploy.locks and who takes the results lock: run_bench itself, so the command, a study cell, the demo and a
Python caller all hold it; a holder that calls again in the same thread passes through."""

from __future__ import annotations

import threading

import pytest

from segdeploy.bench.runner import run_bench
from segdeploy.errors import SegdeployError
from segdeploy.locks import hold


def _held_by_other_thread(lock_file, started: threading.Event, release: threading.Event) -> threading.Thread:
    def body():
        with hold(lock_file, "bench", "results.jsonl"):
            started.set()
            release.wait(10)

    thread = threading.Thread(target=body)
    thread.start()
    assert started.wait(10)
    return thread


def test_run_bench_refuses_a_results_file_another_writer_holds(tmp_path):
    results = tmp_path / "results.jsonl"
    started, release = threading.Event(), threading.Event()
    thread = _held_by_other_thread(tmp_path / ".results.jsonl.lock", started, release)
    try:
        with pytest.raises(SegdeployError, match="in use by segdeploy bench"):
            run_bench([tmp_path / "no-run"], "synthetic", "torch", "fp32", results)
    finally:
        release.set()
        thread.join()
    assert not results.exists()


def test_a_holder_calling_again_passes_through_and_keeps_the_lock(tmp_path):
    lock = tmp_path / ".x.lock"
    with hold(lock, "study run", tmp_path):
        with pytest.raises(SegdeployError, match="in use"):  # not re-entrant unless asked: a second driver
            with hold(lock, "study run", tmp_path):
                pass
        with hold(lock, "bench", tmp_path, reentrant=True):  # re-entered: no refusal of itself
            pass
        # still held after the inner block: another thread is refused
        errors = []

        def other():
            try:
                with hold(lock, "bench", tmp_path, reentrant=True):
                    pass
            except SegdeployError as e:
                errors.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(errors) == 1 and "in use by segdeploy study run" in errors[0]
    with hold(lock, "bench", tmp_path):  # released at the end of the outer block
        pass
