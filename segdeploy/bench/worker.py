"""The child side of ``segdeploy bench --isolate process``: ``python -m segdeploy.bench.worker`` reads one
:class:`segdeploy.bench.isolate.Job` as JSON on stdin, benchmarks it exactly as the in-process path does
(``segdeploy.bench.runner.bench_config``), and writes JSON lines on stdout (see :mod:`segdeploy.bench.isolate`).
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys

from segdeploy import engines
from segdeploy.bench.isolate import Job
from segdeploy.errors import WriteFailed
from segdeploy.evaluation.per_image import save_per_image
from segdeploy.fileio import dumps


class _Events:
    """The slice of rich's Progress that the runner uses, sent to the parent as JSON lines."""

    def __init__(self, emit):
        self._emit = emit

    def add_task(self, description: str, total=None) -> int:
        self._emit({"event": "task", "description": description, "total": total})
        return 0

    def advance(self, task: int, n: float = 1) -> None:
        self._emit({"event": "advance", "n": n})

    def update(self, task: int, description: str | None = None, **_) -> None:
        if description is not None:
            self._emit({"event": "describe", "description": description})

    def remove_task(self, task: int) -> None:
        pass


def bench_job(job, progress) -> dict:
    """The result message of ``job``: ``fields`` (the row's), and for an ``ok`` row with accuracy measured
    ``evaluation`` (metrics and class names; its per-image confusions written to ``job.per_image``); or
    ``write_failed`` with the reason when a write failed (the parent raises it, as the in-process path does)."""
    from segdeploy.bench.runner import bench_config
    from segdeploy.data import open_dataset
    from segdeploy.data.class_map import dataset_for_run
    from segdeploy.run.folder import load_run

    if job.backend_module:
        engines.BACKENDS[job.backend] = job.backend_module
    if job.torch_threads:
        import torch

        torch.set_num_threads(job.torch_threads)
    run = load_run(job.run)
    ds = dataset_for_run(open_dataset(job.data), run.meta, job.class_map, run_name=run.name)
    try:
        # import the runtime (onnxruntime, tensorrt) before the memory baseline, as a long in-process suite has
        # it imported before every configuration but the first: the load footprint is the engine's, not the
        # library's
        engines.check_backend(job.backend, job.precision, job.device, run)
    except Exception:  # noqa: BLE001 -- bench_config reports the reason in the row
        pass
    try:
        fields, evaluation = bench_config(job.backend, job.precision, run, ds, job.ids, batch=job.batch,
                                          device=job.device, save_predictions=job.save_predictions,
                                          timing=job.timing, progress=progress,
                                          measure_accuracy=job.measure_accuracy, threads=job.threads)
        if evaluation is None or fields.get("status") != "ok" or not job.per_image:
            return {"fields": fields}
        save_per_image(job.per_image, evaluation.image_ids, evaluation.confusion)
    except WriteFailed as e:
        return {"fields": {"status": "failed", "reason": str(e)}, "write_failed": str(e)}
    return {"fields": fields,
            "evaluation": {"metrics": evaluation.metrics, "class_names": list(evaluation.class_names)}}


def main() -> None:
    # stdout carries the protocol only: keep a private copy of it, and send fd 1 (C libraries' printf, Python's
    # print) to stderr
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    faulthandler.enable()  # a segfault in a runtime leaves its Python stack on stderr for the failed row

    def emit(msg: dict) -> None:
        protocol.write(dumps(msg) + "\n")
        protocol.flush()

    job = Job.from_json(json.loads(sys.stdin.read()))
    emit({"event": "result", **bench_job(job, _Events(emit))})
    protocol.close()
    sys.stderr.flush()
    # skip interpreter teardown: runtimes that crash in their destructors must not fail a finished measurement
    os._exit(0)


if __name__ == "__main__":
    main()
