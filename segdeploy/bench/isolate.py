"""Each bench configuration in a process of its own (``segdeploy bench --isolate process``, the CLI's default;
``run_bench`` called from Python defaults to ``none``).

Why a process per configuration:

* **memory**: in one long process, what a configuration's runtime frees stays with the process (ONNX Runtime's
  CPU arena, glibc's heap, torch's caches), so the next configuration reuses it and its peak shows as near zero
  (segformer-tiny once showed 1 MB). A fresh process has a clean baseline: the peak is that configuration's
  alone, and the memory right after loading the engine (the load footprint) is measured above the same baseline;
* **crashes**: a segfault in a runtime, or the kernel's out-of-memory killer, ends only that configuration's
  process; the parent turns the signal into a ``failed`` row ("killed by SIGSEGV") and the suite goes on.

The parent starts ``python -m segdeploy.bench.worker`` with the configuration as one JSON object on stdin; the
worker loads the run and the engine, evaluates, measures, and writes JSON lines on its stdout: progress events,
then ``{"event": "result", "fields": {...}}`` with the row's measured fields. The per-image confusion matrices of
an ``ok`` row go back as a ``.npz`` (``segdeploy.evaluation.per_image``) that the worker writes to a path the
parent chose in a temporary folder (``Job.per_image``); the parent reads it into an ``Evaluation`` and writes
the row's sidecar as the in-process path does. Nothing is pickled. The worker's
other output (library prints, warnings, faulthandler's traceback of a crash) goes to its stderr, which the parent
keeps in a temporary file and quotes, last line only, in the reason of a failed row.

What the child shares with the parent: ``sys.path`` (as ``PYTHONPATH``, so a backend registered from a module the
parent can import is importable there too), the environment (``OMP_NUM_THREADS``, ``SEGDEPLOY_CACHE``, ...),
torch's intra-op thread count, ``--threads``, the class map, and the image ids of the split (the child does not
re-derive the split; it reads those images once, for the accuracy pass, and times on the first batch of them, as
the in-process path does).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from segdeploy import engines
from segdeploy.evaluation.per_image import load_per_image
from segdeploy.fileio import dumps

ISOLATIONS = ("process", "none")
WORKER_MODULE = "segdeploy.bench.worker"


@dataclass(kw_only=True)
class Job:
    """One configuration as the worker receives it (plain JSON types only)."""

    run: str  # resolved run directory
    data: str  # the --data spec
    ids: list[str]  # the images to score, in order (the split, cut to --max-images)
    backend: str
    precision: str
    batch: int
    device: str
    save_predictions: str | None = None
    timing: dict = field(default_factory=dict)  # measure_engine keyword arguments
    measure_accuracy: bool = True  # False: cost only, timed on random inputs (no image is read)
    threads: int | None = None  # --threads: host threads of the CPU runtimes
    class_map: str | None = None  # --class-map: the data's labels onto the run's classes
    per_image: str | None = None  # where the worker writes the per-image confusions (.npz) of an ok row
    # the module implementing ``backend`` in the parent (segdeploy.engines.BACKENDS), so a backend registered at
    # run time (a plug-in, a test's fake) is the one the child loads
    backend_module: str | None = None
    torch_threads: int | None = None  # the parent's torch.get_num_threads(), when torch is imported there
    # --timeout: seconds after which the parent kills the worker and records a failed row; a runtime can hang
    # (OpenVINO's first int8 inference of segnext-l-tiny ran 14 minutes on one core) and a study must go on
    timeout_s: float | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Job:
        return cls(**data)


def describe_exit(returncode: int) -> str:
    """A child's exit status in words: ``killed by SIGSEGV``, ``exited with status 3``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        text = f"killed by {name}"
        if -returncode == getattr(signal, "SIGKILL", 9):
            text += " (the kernel's out-of-memory killer sends SIGKILL; check dmesg)"
        return text
    return f"exited with status {returncode}"


def child_env() -> dict[str, str]:
    """The parent's environment, with the parent's import path first on the child's."""
    paths = [os.path.abspath(p or os.curdir) for p in sys.path]  # "" is the working directory
    inherited = os.environ.get("PYTHONPATH")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*paths, *([inherited] if inherited else [])]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")  # only when the parent uses torch: importing it here would cost seconds
    return int(torch.get_num_threads()) if torch is not None else None


def make_job(backend: str, precision: str, run, data: str, ids: list[str], *, batch: int, device: str,
             save_predictions, timing: dict, measure_accuracy: bool = True, threads: int | None = None,
             class_map: str | None = None, timeout_s: float | None = None) -> Job:

    return Job(run=str(Path(run.dir).resolve()), data=str(data), ids=list(ids), backend=backend,
               precision=precision, batch=batch, device=device,
               save_predictions=str(save_predictions) if save_predictions else None, timing=dict(timing),
               measure_accuracy=measure_accuracy, threads=threads, class_map=class_map,
               backend_module=engines.BACKENDS.get(backend), torch_threads=_torch_threads(), timeout_s=timeout_s)


class _ChildProgress:
    """Replays the worker's progress events on the parent's rich progress bar."""

    def __init__(self, progress):
        self.progress = progress
        self.task = None

    def handle(self, msg: dict) -> None:
        event = msg.get("event")
        if event == "task":
            self.close()
            self.task = self.progress.add_task(msg.get("description", ""), total=msg.get("total"))
        elif self.task is None:
            return
        elif event == "advance":
            self.progress.advance(self.task, msg.get("n", 1))
        elif event == "describe":
            self.progress.update(self.task, description=msg.get("description", ""))

    def close(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


def _tail(stream, n: int = 20) -> list[str]:
    stream.seek(0)
    lines = stream.read().decode("utf-8", errors="replace").splitlines()
    return [line for line in collections.deque(lines, maxlen=n) if line.strip()]


def _evaluation(summary: dict, path: Path):
    """The worker's evaluation as an ``Evaluation``: its metrics and class names from the result message, the
    per-image confusions from the ``.npz`` it wrote (its input batches stay in the worker: empty here)."""
    from segdeploy.evaluation.evaluate import Evaluation

    ids, confusion = load_per_image(path)
    empty = np.zeros((0,), np.float32)
    return Evaluation(metrics=summary.get("metrics") or {}, image_ids=ids.tolist(), confusion=confusion,
                      class_names=list(summary.get("class_names") or []), input_batch_1=empty, input_batch_b=empty)


def run_in_child(job: Job, progress):
    """Run ``job`` in a fresh worker process; returns ``(fields, evaluation)`` as ``runner.bench_config`` does:
    the row's fields (``status`` and ``reason``, and on ``ok`` everything the in-process path measures) and the
    evaluation with its per-image confusions (None unless ``ok`` with accuracy measured). A worker that dies
    (signal, non-zero exit, no result) gives a ``failed`` row whose reason says how it ended; one that could not
    write (``WriteFailed``: disk full, read-only) raises it here, as the in-process path does."""
    with tempfile.TemporaryDirectory(prefix="segdeploy-worker-") as tmp:
        per_image = Path(tmp) / "per_image.npz"
        msg = _run_worker(replace(job, per_image=str(per_image)), progress)
        if msg.get("write_failed"):
            from segdeploy.errors import WriteFailed

            raise WriteFailed(msg["write_failed"])
        fields, summary = msg["fields"], msg.get("evaluation")
        ok = fields.get("status") == "ok" and summary is not None and per_image.is_file()
        return fields, (_evaluation(summary, per_image) if ok else None)


def _run_worker(job: Job, progress) -> dict:
    """The worker's result message (``fields``, and ``evaluation`` or ``write_failed``), or one made here with a
    ``failed`` row when it ended without one."""
    bar = _ChildProgress(progress)
    result = None
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr, env=child_env())
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            proc.kill()  # its stdout closes, which ends the read loop below

        watchdog = threading.Timer(job.timeout_s, expire) if job.timeout_s else None
        if watchdog is not None:
            watchdog.daemon = True
            watchdog.start()
        try:
            proc.stdin.write(dumps(job.to_json()).encode())
            proc.stdin.close()
            for raw in proc.stdout:
                try:
                    msg = json.loads(raw)
                except ValueError:  # the worker routes prints to stderr; anything else here is not ours
                    continue
                if msg.get("event") == "result":
                    result = msg
                else:
                    bar.handle(msg)
            returncode = proc.wait()
        except BaseException:  # Ctrl-C in the parent: do not leave a worker running
            proc.kill()
            proc.wait()
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
            bar.close()
        if result is not None and returncode == 0:
            return result
        how = describe_exit(returncode) if returncode != 0 else "ended without a result"
        if timed_out.is_set():
            how = f"timed out after {job.timeout_s:g} s and was killed (--timeout)"
        tail = _tail(stderr)
    # faulthandler's dump ends with the innermost frames; its first line names the fault
    detail = next((line.strip() for line in tail if line.startswith("Fatal Python error")), None)
    detail = detail or (tail[-1].strip() if tail else None)
    reason = f"worker {how}" + (f"; stderr: {detail[:300]}" if detail else "")
    return {"fields": {"status": "failed", "reason": reason}}
