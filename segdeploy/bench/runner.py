"""``run_bench``: every run x backend x precision on one dataset split, one JSON line each.

Per configuration, in this order:

1. load the engine (``BackendUnavailable`` -> a row with ``status: "unavailable"`` and the reason; any other
   exception -> ``status: "failed"`` with ``"Type: message"``; the suite goes on either way);
2. accuracy of the deployed engine on the split, measured, not assumed: each image is preprocessed with the run's
   own ``img_size``/``mean``/``std``, inferred in batches, its logits restored to the image's original size,
   arg-maxed and scored there (``segdeploy.bench.metrics``); optionally saved as a class-index PNG;
3. latency (batch 1), compute time and throughput (batch B) with peak memory sampled during those loops
   (``segdeploy.bench.latency``, ``segdeploy.bench.memory``), the memory right after loading (the load
   footprint), and the achieved GMAC/s against the machine's probed limit (``segdeploy.roofline``).

By default each configuration runs in a fresh process (``segdeploy.bench.isolate``): a clean memory baseline per
configuration, and a crash in a runtime is a ``failed`` row; ``isolate="none"`` runs them all in this process.

Each row (a ``segdeploy.records.BenchRow``) is appended to the results file as soon as it is complete; its
``dice_vs_torch_fp32`` follows the one ΔDice rule, ``segdeploy.records.References``. Resuming: a configuration whose
``ConfigKey`` ``(dataset, run, backend, precision, device, batch, split, n_images)`` already has an ``ok`` or
``unavailable`` row
is not run again (its stored row is returned) unless ``force``; ``failed`` rows are retried. ``device`` in the key
is the device asked for (``device_requested``, e.g. ``auto``); ``device`` in a row is where the engine actually
ran. ``n_images`` keeps a ``--max-images`` smoke test from standing in for the full split.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from segdeploy.bench.isolate import ISOLATIONS, make_job, run_in_child
from segdeploy.bench.latency import WARMUP_ITERS, measure_engine
from segdeploy.bench.memory import MemoryProbe
from segdeploy.bench.metrics import SegMetrics
from segdeploy.errors import BackendUnavailable, SegdeployError
from segdeploy.fileio import append_jsonl, atomic_write_bytes, iter_jsonl
from segdeploy.records import BENCH_SCHEMA, BenchRow, ConfigKey, References, RunMeta
from segdeploy.roofline import derived_fields

SCHEMA = BENCH_SCHEMA
SPLITS = ("train", "val", "test", "all")  # "all": every image, for cross-dataset evaluation
RESUMABLE = ("ok", "unavailable")


def _as_list(value: str | Sequence[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [s.strip() for s in items if s.strip()]


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

        prof = profile_model(model, run.meta.in_chans, run.meta.img_size)
    except Exception as e:  # noqa: BLE001 -- a model the FLOP counter cannot trace still gets benchmarked
        return {"params_m": count_params(model) / 1e6, "gmacs": None, "gflops": None,
                "gflops_error": f"{type(e).__name__}: {e}"}
    return {k: prof.get(k) for k in ("params_m", "gmacs", "gflops")}


def _batches(ds, ids: list[str], meta: RunMeta, batch: int) -> Iterator[tuple[list, np.ndarray, list]]:
    from segdeploy.data.transforms import preprocess

    for start in range(0, len(ids), batch):
        samples = [ds.load(i) for i in ids[start:start + batch]]
        prepped = [preprocess(s.image, meta.img_size, meta.mean, meta.std) for s in samples]
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

    metrics = SegMetrics(run.meta.num_classes, run.meta.classes or ds.classes)
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


def _bench_one(backend, precision, run, ds, ids, *, batch, device, save_predictions, timing, progress) -> dict:
    from segdeploy.engines import load_engine

    probe = MemoryProbe(device)  # baseline before the engine exists
    engine = load_engine(backend, run, precision, device)
    probe.mark_loaded(engine.device, backend)  # the load footprint, before any inference allocates
    label = f"{run.name} {backend} {precision}"
    task = progress.add_task(label, total=len(ids))
    try:
        save_dir = (Path(save_predictions) / run.name / f"{backend}-{precision}") if save_predictions else None
        acc, batch_1, batch_b = evaluate(engine, ds, ids, run, batch=batch, save_dir=save_dir,
                                         on_batch=lambda n: progress.advance(task, n))
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


def bench_config(backend, precision, run, ds, ids, **kwargs) -> dict:
    """``_bench_one`` with its outcome as row fields: ``status`` ``ok`` / ``unavailable`` (``BackendUnavailable``)
    / ``failed`` (any other exception, ``"Type: message"``) and ``reason``. The same in a worker process."""
    try:
        return {"status": "ok", "reason": None, **_bench_one(backend, precision, run, ds, ids, **kwargs)}
    except BackendUnavailable as e:
        return {"status": "unavailable", "reason": str(e)}
    except Exception as e:  # noqa: BLE001 -- one broken configuration must not end the suite
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}"}


def run_bench(run_dirs: Sequence[str | Path], data: str, backends: str | Sequence[str],
              precisions: str | Sequence[str], results: str | Path, *, split: str = "test", batch: int = 8,
              device: str = "auto", save_predictions: str | Path | None = None, max_images: int | None = None,
              warmup_s: float = 0.2, duration_s: float = 1.0, min_iters: int = 10,
              warmup_iters: int = WARMUP_ITERS, force: bool = False, progress: bool = True,
              isolate: str = "process") -> list[BenchRow]:
    """Benchmark every run x backend x precision on ``data``'s ``split``; returns this suite's rows (stored
    rows for configurations skipped on resume), appending new ones to ``results`` as they complete.
    ``isolate``: ``process`` runs each configuration in a fresh worker process (``segdeploy.bench.isolate``),
    ``none`` in this one."""
    import segdeploy
    from segdeploy.data import open_dataset
    from segdeploy.runs import load_run

    if split not in SPLITS:
        raise SegdeployError(f"unknown split {split!r}.", fix=f"use one of {', '.join(SPLITS)}.")
    if batch < 1:
        raise SegdeployError(f"batch must be >= 1, got {batch}.", fix="pass --batch 1 or more.")
    if isolate not in ISOLATIONS:
        raise SegdeployError(f"unknown isolation {isolate!r}.", fix=f"use one of {', '.join(ISOLATIONS)}.")
    backends, precisions = _as_list(backends), _as_list(precisions)
    ds = open_dataset(data)
    runs = [load_run(d) for d in run_dirs]
    for run in runs:  # fail before any work, not after the first model's hour
        run.check_dataset(ds)

    results = Path(results)
    stored = [BenchRow.from_json(r, path=results) for r in iter_jsonl(results)]
    done = {} if force else {ConfigKey.of(r): r for r in stored if r.status in RESUMABLE}
    timing = dict(warmup_s=warmup_s, duration_s=duration_s, min_iters=min_iters, warmup_iters=warmup_iters)
    env = None
    rows: list[BenchRow] = []

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   transient=True, disable=not progress)
    with bar:
        for run in runs:
            ids = run.split_ids(ds, split)[:max_images or None]
            base = dict(schema=SCHEMA, dataset=ds.name, data=str(data), split=split, run=str(run.dir.resolve()),
                        run_name=run.name, model=run.meta.model, family=run.meta.family, device_requested=device,
                        batch=batch, n_images=len(ids))
            cost = None
            for backend in backends:
                for precision in precisions:
                    key = ConfigKey.of(BenchRow(**base, backend=backend, precision=precision))
                    if key in done:
                        rows.append(done[key])
                        continue
                    if cost is None:
                        cost = _model_cost(run)
                        env = env or _environment()
                    row = BenchRow(**base, timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                   backend=backend, precision=precision, device=device, status="ok", reason=None,
                                   isolation=isolate)
                    row.update(cost)
                    config = dict(batch=batch, device=device, save_predictions=save_predictions, timing=timing)
                    if isolate == "process":
                        row.update(run_in_child(make_job(backend, precision, run, data, ids, **config), bar))
                    else:
                        row.update(bench_config(backend, precision, run, ds, ids, progress=bar, **config))
                    row.update(derived_fields(row))
                    # the reference among the stored rows and this suite's, the latest last (None until the torch
                    # fp32 row exists: list torch first in --backends to have it)
                    delta = References([*stored, *rows, row]).delta(row)
                    row.update(env=env, version=segdeploy.__version__, dice_vs_torch_fp32=delta)
                    append_jsonl(results, row.to_json())
                    rows.append(row)
    return rows
