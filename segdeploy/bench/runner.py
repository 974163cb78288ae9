"""``run_bench``: every run x backend x precision on one dataset split, one JSON line each.

Per configuration, in this order:

1. load the engine (``BackendUnavailable`` -> a row with ``status: "unavailable"`` and the reason; any other
   exception -> ``status: "failed"`` with ``"Type: message"``; the suite goes on either way);
2. accuracy of the deployed engine on the split, measured, not assumed: each image is preprocessed with the run's
   own ``img_size``/``mean``/``std``, inferred in batches, its logits restored to the image's original size,
   arg-maxed and scored there (``segdeploy.bench.metrics``); optionally saved as a class-index PNG;
3. latency (batch 1), compute time and throughput (batch B) with peak memory sampled during those loops
   (``segdeploy.bench.latency``, ``segdeploy.bench.memory``).

Each row is appended to the results file as soon as it is complete. Resuming: a configuration whose key
``(dataset, run, backend, precision, device, batch, split, n_images)`` already has an ``ok`` or ``unavailable`` row
is not run again (its stored row is returned) unless ``force``; ``failed`` rows are retried. ``device`` in the key
is the device asked for (``device_requested``, e.g. ``auto``); ``device`` in a row is where the engine actually
ran. ``n_images`` keeps a ``--max-images`` smoke test from standing in for the full split.

``measure_accuracy=False`` (cost-only studies: random weights) skips step 2: no image is scored, the row's
``dice`` is null with ``dice_status: "not measured"``, and timing runs on seeded random inputs of the run's shape.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from segdeploy.bench.latency import measure_engine
from segdeploy.bench.memory import MemoryProbe
from segdeploy.bench.metrics import SegMetrics
from segdeploy.errors import BackendUnavailable, SegdeployError
from segdeploy.fileio import append_jsonl, atomic_write_bytes, iter_jsonl

SCHEMA = "segdeploy.bench/1"
SPLITS = ("train", "val", "test", "all")  # "all": every image, for cross-dataset evaluation
RESUMABLE = ("ok", "unavailable")


def _as_list(value: str | Sequence[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [s.strip() for s in items if s.strip()]


def config_key(row: dict) -> tuple:
    return (row.get("dataset"), row.get("run"), row.get("backend"), row.get("precision"),
            row.get("device_requested"), row.get("batch"), row.get("split"), row.get("n_images"))


@functools.cache  # probing versions and devices takes seconds and cannot change within one process
def _environment() -> dict:
    from segdeploy.envinfo import environment

    return environment()


def _model_cost(run) -> dict:
    """params_m, gmacs and gflops (2 x gmacs) of the PyTorch model at batch 1 and the run's input size."""
    from segdeploy.models import count_params

    model = run.build_model()
    try:
        from segdeploy.models.profile import profile_model

        prof = profile_model(model, run.meta["in_chans"], run.meta["img_size"])
    except Exception as e:  # noqa: BLE001 -- a model the FLOP counter cannot trace still gets benchmarked
        return {"params_m": count_params(model) / 1e6, "gmacs": None, "gflops": None,
                "gflops_error": f"{type(e).__name__}: {e}"}
    return {k: prof.get(k) for k in ("params_m", "gmacs", "gflops")}


def _batches(ds, ids: list[str], meta: dict, batch: int) -> Iterator[tuple[list, np.ndarray, list]]:
    from segdeploy.data.transforms import preprocess

    for start in range(0, len(ids), batch):
        samples = [ds.load(i) for i in ids[start:start + batch]]
        prepped = [preprocess(s.image, meta["img_size"], meta["mean"], meta["std"]) for s in samples]
        yield samples, np.stack([x for x, _ in prepped]), [lm for _, lm in prepped]


def _png_bytes(pred: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pred).save(buf, format="PNG")  # 2-D uint8 -> mode L, one class index per pixel
    return buf.getvalue()


def evaluate(engine, ds, ids: list[str], run, *, batch: int, save_dir: Path | None = None,
             on_batch=None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Accuracy of ``engine`` on ``ids``; returns (metrics, a batch-1 input, a batch-B input) for timing."""
    from segdeploy.data.transforms import restore

    metrics = SegMetrics(run.meta["num_classes"], run.meta.get("classes") or ds.classes)
    first_batch = None
    for samples, x, letterbox in _batches(ds, ids, run.meta, batch):
        if first_batch is None:
            first_batch = x
        logits = np.asarray(engine.run(x), dtype=np.float32)
        for sample, lg, lm in zip(samples, logits, letterbox):
            pred = restore(lg, lm).argmax(axis=0).astype(np.uint8)
            metrics.update(pred, sample.mask)
            if save_dir is not None:
                atomic_write_bytes(save_dir / f"{sample.id}.png", _png_bytes(pred))
        if on_batch is not None:
            on_batch(len(samples))
    # throughput needs a full batch even when the split is smaller than B: repeat images to fill it
    batch_b = np.resize(first_batch, (batch, *first_batch.shape[1:])).astype(np.float32)
    return metrics.result(), first_batch[:1].copy(), batch_b


def _file_size_mb(engine, run) -> float | None:
    """The deployed artifact: what the engine reports, else the file it names, else (torch) the checkpoint."""
    if engine.info.get("file_size_mb") is not None:
        return engine.info["file_size_mb"]
    from segdeploy.runs import WEIGHTS

    named = next((engine.info[k] for k in ("engine", "onnx", "file") if engine.info.get(k)), None)
    path = Path(named) if named else run.dir / WEIGHTS
    return round(path.stat().st_size / 1e6, 3) if path.is_file() else None


def _random_inputs(run, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded normalised-scale inputs of the run's shape (batch 1, batch B) for timing without a dataset pass."""
    batch_b = np.random.default_rng(0).standard_normal((batch, *run.input_shape), dtype=np.float32)
    return batch_b[:1].copy(), batch_b


def _bench_one(backend, precision, run, ds, ids, *, batch, device, save_predictions, timing, progress,
               measure_accuracy: bool = True) -> dict:
    from segdeploy.engines import load_engine

    probe = MemoryProbe(device)  # baseline before the engine exists
    engine = load_engine(backend, run, precision, device)
    label = f"{run.name} {backend} {precision}"
    task = progress.add_task(label, total=len(ids))
    try:
        save_dir = (Path(save_predictions) / run.name / f"{backend}-{precision}") if save_predictions else None
        if measure_accuracy:
            acc, batch_1, batch_b = evaluate(engine, ds, ids, run, batch=batch, save_dir=save_dir,
                                             on_batch=lambda n: progress.advance(task, n))
        else:
            acc, (batch_1, batch_b) = {"dice": None, "dice_status": "not measured"}, _random_inputs(run, batch)
        progress.update(task, description=f"{label}: timing")
        # other processes competing for the cores distort CPU timings (threads stall at barriers): record the load
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        with probe.track(engine.device, backend):
            speed = measure_engine(engine, batch_1, batch_b, **timing)
        # engine_info: what the backend knows of itself (TensorRT: version, GPU, profile, activation memory;
        # ONNX Runtime: providers; torch: dtype, memory format, compile mode)
        return {"device": engine.device, "provider": engine.info.get("provider"),
                "file_size_mb": _file_size_mb(engine, run), **acc, **speed, **probe.result(), "host_load_1m": load,
                "engine_info": engine.info}
    finally:
        progress.remove_task(task)
        engine.close()


def run_bench(run_dirs: Sequence[str | Path], data: str, backends: str | Sequence[str],
              precisions: str | Sequence[str], results: str | Path, *, split: str = "test", batch: int = 8,
              device: str = "auto", save_predictions: str | Path | None = None, max_images: int | None = None,
              warmup_s: float = 0.2, duration_s: float = 1.0, min_iters: int = 10, force: bool = False,
              progress: bool = True, measure_accuracy: bool = True) -> list[dict]:
    """Benchmark every run x backend x precision on ``data``'s ``split``; returns this suite's rows (stored
    rows for configurations skipped on resume), appending new ones to ``results`` as they complete.
    ``measure_accuracy=False``: cost only (see the module docstring)."""
    import segdeploy
    from segdeploy.data import open_dataset
    from segdeploy.runs import load_run

    if split not in SPLITS:
        raise SegdeployError(f"unknown split {split!r}.", fix=f"use one of {', '.join(SPLITS)}.")
    if batch < 1:
        raise SegdeployError(f"batch must be >= 1, got {batch}.", fix="pass --batch 1 or more.")
    backends, precisions = _as_list(backends), _as_list(precisions)
    ds = open_dataset(data)
    runs = [load_run(d) for d in run_dirs]
    for run in runs:  # fail before any work, not after the first model's hour
        run.check_dataset(ds)

    results = Path(results)
    done = {} if force else {config_key(r): r for r in iter_jsonl(results) if r.get("status") in RESUMABLE}
    timing = dict(warmup_s=warmup_s, duration_s=duration_s, min_iters=min_iters)
    env = None
    rows: list[dict] = []

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   transient=True, disable=not progress)
    with bar:
        for run in runs:
            ids = run.split_ids(ds, split)[:max_images or None] if measure_accuracy else []
            base = {"schema": SCHEMA, "dataset": ds.name, "data": str(data), "split": split,
                    "run": str(run.dir.resolve()), "run_name": run.name, "model": run.meta["model"],
                    "family": run.meta.get("family"), "device_requested": device, "batch": batch,
                    "n_images": len(ids)}
            cost = None
            for backend in backends:
                for precision in precisions:
                    key = config_key({**base, "backend": backend, "precision": precision})
                    if key in done:
                        rows.append(done[key])
                        continue
                    if cost is None:
                        cost = _model_cost(run)
                        env = env or _environment()
                    row = {**base, "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           "backend": backend, "precision": precision, "device": device, "status": "ok",
                           "reason": None, **cost}
                    try:
                        row.update(_bench_one(backend, precision, run, ds, ids, batch=batch, device=device,
                                              save_predictions=save_predictions, timing=timing,
                                              progress=bar, measure_accuracy=measure_accuracy))
                    except BackendUnavailable as e:
                        row.update(status="unavailable", reason=str(e))
                    except Exception as e:  # noqa: BLE001 -- one broken configuration must not end the suite
                        row.update(status="failed", reason=f"{type(e).__name__}: {e}")
                    row.update(env=env, version=segdeploy.__version__,
                               dice_vs_torch_fp32=_delta_vs_reference(row, [*rows, *done.values()]))
                    append_jsonl(results, row)
                    rows.append(row)
    return rows


def _delta_vs_reference(row: dict, others: Sequence[dict]) -> float | None:
    """This row's Dice minus the same run's PyTorch fp32 Dice on the same split (None if that row is not there:
    list torch first in --backends to have it)."""
    if row.get("status") != "ok" or row.get("dice") is None:
        return None
    for ref in others:
        if (ref.get("run"), ref.get("split"), ref.get("n_images"), ref.get("backend"), ref.get("precision"),
                ref.get("status")) == (row["run"], row["split"], row["n_images"], "torch", "fp32", "ok"):
            return None if ref.get("dice") is None else row["dice"] - ref["dice"]
    return None
