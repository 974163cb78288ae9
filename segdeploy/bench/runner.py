"""``run_bench``: every run x backend x precision on one dataset split, one JSON line each.

Per configuration, in this order:

1. load the engine (``BackendUnavailable`` -> a row with ``status: "unavailable"`` and the reason; any other
   exception -> ``status: "failed"`` with ``"Type: message"``; the suite goes on either way);
2. accuracy of the deployed engine on the split, measured, not assumed: each image is preprocessed with the run's
   own ``img_size``/``mean``/``std``, inferred in batches, its logits restored to the image's original size,
   arg-maxed and scored there (``segdeploy.evaluation.evaluate``, the path every stage uses); optionally saved as
   a class-index PNG;
3. latency (batch 1), compute time and throughput (batch B) with peak memory sampled during those loops
   (``segdeploy.bench.latency``, ``segdeploy.bench.memory``), the memory right after loading (the load
   footprint), and the achieved GMAC/s against the machine's probed limit (``segdeploy.machine.roofline``).

With ``isolate="process"`` (``segdeploy bench``'s default) each configuration runs in a fresh worker process
(``segdeploy.bench.isolate``): a clean memory baseline per configuration, and a crash in a runtime is a ``failed``
row; ``isolate="none"`` (``run_bench``'s default) runs them all in this process. Both give the same row fields,
and the worker sends the per-image confusions back, so sidecars and ``on_evaluation`` work in either mode.

Each row (a ``segdeploy.records.BenchRow``) is appended to the results file as soon as it is complete; its
``dice_vs_torch_fp32`` follows the one ΔDice rule, ``segdeploy.rowkeys.References``. An ``ok`` row's per-image
confusion counts are written first, beside the results file, and the row names them in ``per_image``
(``segdeploy.evaluation.per_image``).

Images: on the dataset a run was trained on, the split is the run's recorded ids (``Run.split_ids``,
``segdeploy.run.splits``): images the folder gained since training are never scored as test images, and a
missing recorded test image refuses the run unless ``allow_missing``.

Resuming: a configuration whose ``ConfigKey`` ``(dataset, run, backend, precision, device, batch, split, n_images,
class_map, artifact, threads)`` already has an ``ok`` row is not run again (its stored row is returned) unless ``force``.
``artifact`` is the sha256 of what was measured (``segdeploy.bench.artifacts``: the checkpoint, the ONNX file, the
TensorRT build record), so a re-exported or re-calibrated file is measured again; rows written before it was recorded
have none and are measured again wherever the artifact is known. ``failed`` and ``unavailable`` configurations
are always tried again: what made them unavailable (a missing ONNX file, an uninstalled package, no GPU) may have
changed, and finding out costs a cheap check. When it is still unavailable for the same reason, the stored row
is returned and nothing is appended. ``device`` in the key is the device asked for (``device_requested``, e.g.
``auto``); ``device`` in a row is where the engine actually ran. ``n_images`` keeps a ``--max-images`` smoke test
from standing in for the full split.

``measure_accuracy=False`` (cost-only studies: random weights) skips step 2: no image is scored, the row's
``dice`` is null with ``dice_status: "not measured"``, and timing runs on seeded random inputs of the run's shape.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from segdeploy.bench.artifacts import artifact_sha256
from segdeploy.bench.isolate import ISOLATIONS, make_job, run_in_child
from segdeploy.bench.latency import MIN_ITERS, WARMUP_ITERS, measure_engine, noise
from segdeploy.bench.memory import MemoryProbe
from segdeploy.engines import BACKENDS
from segdeploy.errors import BackendUnavailable, SegdeployError, WriteFailed, warn
from segdeploy.models.importers import refuse_in_sample, row_fields, run_pipeline
from segdeploy.evaluation.evaluate import Evaluation, PreparedImages, evaluate
from segdeploy.evaluation.per_image import save_per_image, sidecar_name
from segdeploy.fileio import append_jsonl, iter_jsonl
from segdeploy.locks import hold
from segdeploy.machine.device import resolve_device
from segdeploy.machine.envinfo import environment
from segdeploy.machine.roofline import derived_fields
from segdeploy.numerics import require_finite_logits
from segdeploy.records import BENCH_SCHEMA, BenchRow, comma_list
from segdeploy.rowkeys import ConfigKey, References

SCHEMA = BENCH_SCHEMA
SPLITS = ("train", "val", "test", "all")  # "all": every image, for cross-dataset evaluation
RESUMABLE = ("ok",)  # unavailable and failed configurations are tried again


def check_choices(backends: Sequence[str], precisions: Sequence[str], max_images: int | None) -> None:
    """Values that name no backend or precision are typing errors: refused before any work, not stored as rows."""
    from segdeploy.run.folder import PRECISIONS

    for kind, given, known in (("backend", backends, BACKENDS), ("precision", precisions, PRECISIONS)):
        unknown = [v for v in given if v not in known]
        if unknown or not given:
            raise SegdeployError(f"unknown {kind}(s) {', '.join(map(repr, unknown)) or '(none given)'}.",
                                 fix=f"--{kind}s takes a comma-separated list of {', '.join(known)}.")
    if max_images is not None and max_images < 1:
        raise SegdeployError(f"--max-images {max_images}: must be at least 1.",
                             fix="omit --max-images to score the whole split.")


_RENAMED = {"warmup_s": "warmup", "duration_s": "duration", "timeout_s": "timeout"}


def warn_unfinished(run) -> None:
    if run.meta.complete is False:
        warn("the run is unfinished (model.json \"complete\": false: training stopped or is still going); its "
             "rows are marked run_complete: false.", path=run.dir)




@functools.cache  # probing versions and devices takes seconds and cannot change within one process
def _environment() -> dict:
    return environment()


def _model_cost(run) -> dict:
    """params_m, gmacs and gflops (2 x gmacs) of the PyTorch model at batch 1 and the run's input size."""
    from segdeploy.models import count_params

    try:
        model = run.build_model()
    except SegdeployError as e:  # a damaged checkpoint stops the torch rows only; ONNX files do not need it
        return {"params_m": None, "gmacs": None, "gflops": None, "gflops_error": str(e)}
    try:
        from segdeploy.models.profile import profile_model

        prof = profile_model(model, run.meta.in_chans, run.meta.img_size)
    except Exception as e:  # noqa: BLE001 -- a model the FLOP counter cannot trace still gets benchmarked
        return {"params_m": count_params(model) / 1e6, "gmacs": None, "gflops": None,
                "gflops_error": f"{type(e).__name__}: {e}"}
    return {k: prof.get(k) for k in ("params_m", "gmacs", "gflops")}


def _file_size_mb(engine, run) -> float | None:
    """The deployed artifact: what the engine reports, else the file it names, else (torch) the checkpoint."""
    if engine.info.get("file_size_mb") is not None:
        return engine.info["file_size_mb"]
    named = next((engine.info[k] for k in ("engine", "onnx", "file") if engine.info.get(k)), None)
    path = Path(named) if named else run.weights_path
    return round(path.stat().st_size / 1e6, 3) if path.is_file() else None


def _random_inputs(run, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded normalised-scale inputs of the run's shape (batch 1, batch B) for timing without a dataset pass."""
    batch_b = np.random.default_rng(0).standard_normal((batch, *run.input_shape), dtype=np.float32)
    return batch_b[:1].copy(), batch_b


MEMORY_FIELDS = ("peak_memory_mb", "peak_memory_delta_mb", "host_peak_rss_mb", "baseline_memory_mb", "load_memory_mb")
SHARED_MEMORY_NOTE = ("not measured: the configuration ran in a shared process (isolate none), where memory an "
                      "earlier configuration's runtime freed is reused; use isolate process")


def judge_row(row: BenchRow) -> dict:
    """Fields an ok row derives from how it was measured: ``noisy``/``noisy_reason`` (``latency.noise`` over its
    timed loops and the host load against the cores it could use), and, for a row measured in a shared process,
    its memory figures blanked with ``memory_note``: there a runtime reuses what earlier configurations left
    (segformer-tiny once showed 1 MB), so the figure is not the configuration's own."""
    if not row.ok:
        return {}
    loops = {"latency": row.latency_ms, f"batch-{row.batch}": row.batch_latency_ms}
    if row.compute_timer == "cuda-events":  # on the host it is the latency loop again
        loops["compute"] = row.compute_ms
    noisy, reason = noise(loops, row.host_load_1m, (row.env or {}).get("cpu_cores"))
    out = {"noisy": noisy, "noisy_reason": reason}
    if row.isolation == "none":
        out.update({k: None for k in MEMORY_FIELDS}, memory_note=SHARED_MEMORY_NOTE)
    return out


def _bench_one(backend, precision, run, ds, ids, *, batch, device, save_predictions, timing,
               progress, measure_accuracy: bool = True, threads=None) -> tuple[dict, Evaluation | None]:
    """The row's measured fields, and the evaluation behind its accuracy fields (per-image confusions; None when
    accuracy is not measured)."""
    from segdeploy.engines import load_engine

    probe = MemoryProbe(device)  # baseline before the engine exists
    engine = load_engine(backend, run, precision, device, threads=threads)
    probe.mark_loaded(engine.device, backend)  # the load footprint, before any inference allocates
    label = f"{run.name} {backend} {precision}"
    task = progress.add_task(label, total=len(ids))
    try:
        save_dir = (Path(save_predictions) / run.name / f"{backend}-{precision}") if save_predictions else None
        meta = run.meta
        # an imported model with its own inference pipeline (nnU-Net's sliding window) is measured as a user runs
        # it: the engine is the per-tile forward, bench's batch the tiles per forward call
        window = run_pipeline(run, lambda x: require_finite_logits(np.asarray(engine.run(x), dtype=np.float32),
                                                                   engine), batch) if measure_accuracy else None
        if window is not None:
            from segdeploy.bench.pipeline import measure_pipeline

            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            with probe.track(engine.device, backend):
                fields, result = measure_pipeline(engine, window, ds, ids, meta=meta, timing=timing,
                                                  save_dir=save_dir,
                                                  on_image_done=lambda n: progress.advance(task, n))
            return {"device": engine.device, "provider": engine.info.get("provider"),
                    "file_size_mb": _file_size_mb(engine, run), **fields, **probe.result(),
                    "host_load_1m": load, "engine_info": engine.info}, result
        if measure_accuracy:
            # a NaN/inf logit is an engine that cannot be trusted (an fp16 overflow, NaN weights): a failed row
            def predict(x):
                return require_finite_logits(np.asarray(engine.run(x), dtype=np.float32), engine)

            result = evaluate(predict, ds, ids, img_size=meta.img_size, mean=meta.mean, std=meta.std,
                              num_classes=meta.num_classes, class_names=meta.classes or ds.classes,
                              batch=batch, save_dir=save_dir, on_batch=lambda n: progress.advance(task, n))
            accuracy, (batch_1, batch_b) = result.metrics, (result.input_batch_1, result.input_batch_b)
        else:
            result, accuracy = None, {"dice": None, "dice_status": "not measured"}
            batch_1, batch_b = _random_inputs(run, batch)
        progress.update(task, description=f"{label}: timing")
        # other processes competing for the cores distort CPU timings (threads stall at barriers): record the load
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        with probe.track(engine.device, backend):
            speed = measure_engine(engine, batch_1, batch_b, **timing)
        # engine_info: what the backend knows of itself (TensorRT: version, GPU, profile, activation memory;
        # ONNX Runtime: providers; torch: dtype, memory format, compile mode)
        return {"device": engine.device, "provider": engine.info.get("provider"),
                "file_size_mb": _file_size_mb(engine, run), **accuracy, **speed, **probe.result(),
                "host_load_1m": load, "engine_info": engine.info}, result
    finally:
        progress.remove_task(task)
        engine.close()


def _trivial(run, ds, ids: Sequence[str]) -> dict | None:
    """The trivial predictors' Dice on ``ids`` (``segdeploy.evaluation.trivial``): the prior from the run's own
    training split where ``ds`` is its training set, else all-background and all-foreground only."""
    from segdeploy.evaluation.trivial import trivial_dice
    from segdeploy.run.splits import trained_on

    with warnings.catch_warnings():  # a run without recorded splits was already warned about for its test split
        warnings.simplefilter("ignore")
        train = run.split_ids(ds, "train") if trained_on(run, ds) else None
    return trivial_dice(ds, ids, train, img_size=run.meta.img_size, num_classes=run.meta.num_classes)


def bench_config(backend, precision, run, ds, ids, **kwargs) -> tuple[dict, Evaluation | None]:
    """``_bench_one`` with its outcome as row fields: ``status`` ``ok`` / ``unavailable`` (``BackendUnavailable``)
    / ``failed`` (any other exception, ``"Type: message"``) and ``reason``; and the evaluation (None unless
    ``ok`` with accuracy measured). The same in a worker process. ``WriteFailed`` (disk full, read-only) is
    raised: the next configurations would fail alike."""
    try:
        fields, evaluation = _bench_one(backend, precision, run, ds, ids, **kwargs)
        return {"status": "ok", "reason": None, **fields}, evaluation
    except BackendUnavailable as e:
        return {"status": "unavailable", "reason": str(e)}, None
    except WriteFailed:
        raise
    except Exception as e:  # noqa: BLE001 -- one broken configuration must not end the suite
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}"}, None


def _holding_results_lock(fn: Callable) -> Callable:
    """One bench per results file, whoever calls (the command, a study cell, the demo, Python): two would run the
    same configurations and write each row twice."""
    @functools.wraps(fn)
    def holding(run_dirs, data, backends, precisions, results, **kwargs):
        results = Path(results)
        with hold(results.with_name(f".{results.name}.lock"), "bench", results, reentrant=True):
            return fn(run_dirs, data, backends, precisions, results, **kwargs)

    return holding


@_holding_results_lock
def run_bench(run_dirs: Sequence[str | Path], data: str, backends: str | Sequence[str],
              precisions: str | Sequence[str], results: str | Path, *, split: str = "test", batch: int = 8,
              device: str = "auto", save_predictions: str | Path | None = None, max_images: int | None = None,
              warmup: float = 0.2, duration: float = 1.0, min_iters: int = MIN_ITERS,
              warmup_iters: int = WARMUP_ITERS, force: bool = False,
              allow_missing: bool = False, progress: bool = True, class_map: str | None = None,
              measure_accuracy: bool = True,
              on_evaluation: Callable[[BenchRow, Evaluation], None] | None = None,
              threads: int | None = None, isolate: str = "none", timeout: float | None = None,
              **renamed) -> list[BenchRow]:
    """Benchmark every run x backend x precision on ``data``'s ``split``; returns this suite's rows (stored
    rows for configurations skipped on resume), appending new ones to ``results`` as they complete.
    ``measure_accuracy=False``: cost only (see the module docstring).

    ``on_evaluation(row, evaluation)`` is called after each ``ok`` row is written, with the evaluation its
    accuracy came from (per-image ids and confusion matrices, for statistics over images). ``class_map`` maps
    ``data``'s labels onto the runs' classes (cross-dataset scoring). ``allow_missing``: score what is left of a
    run's recorded test split when images are gone (else refuse, see ``Run.split_ids``). ``threads``: host threads
    of the CPU runtimes (None: each runtime's default), part of each row's configuration; each row's engine_info
    says what was used. ``isolate``: ``process`` runs each configuration in a fresh worker process
    (``segdeploy.bench.isolate``; what ``segdeploy bench`` does by default), ``none`` (the default here: tests
    and studies monkeypatch engines and call this many times) in this one. ``timeout`` (process isolation
    only): a worker still running after it is killed and its configuration is a ``failed`` row saying so.

    The timing keywords are :class:`~segdeploy.bench.config.BenchConfig`'s names, as ``segdeploy bench``'s options
    and the study file's keys are (seconds: ``warmup``, ``duration``, ``timeout``); the older ``warmup_s``,
    ``duration_s`` and ``timeout_s`` are still read, with one deprecation line each."""
    import segdeploy
    from segdeploy.data import open_dataset

    seconds = {"warmup": warmup, "duration": duration, "timeout": timeout}
    for old, value in renamed.items():  # the pre-refit keyword names
        if old not in _RENAMED:
            raise TypeError(f"run_bench() got an unexpected keyword argument {old!r}")
        warn(f"run_bench({old}=...) is deprecated: pass {_RENAMED[old]}= (read as {_RENAMED[old]}={value!r}).")
        seconds[_RENAMED[old]] = value
    warmup, duration, timeout = seconds["warmup"], seconds["duration"], seconds["timeout"]
    from segdeploy.data.class_map import dataset_for_run
    from segdeploy.run.folder import load_run

    if split not in SPLITS:
        raise SegdeployError(f"unknown split {split!r}.", fix=f"use one of {', '.join(SPLITS)}.")
    if batch < 1:
        raise SegdeployError(f"batch must be >= 1, got {batch}.", fix="pass --batch 1 or more.")
    if isolate not in ISOLATIONS:
        raise SegdeployError(f"unknown isolation {isolate!r}.", fix=f"use one of {', '.join(ISOLATIONS)}.")
    if timeout is not None and isolate != "process":
        raise SegdeployError("a timeout needs process isolation (a configuration in this process cannot be "
                             "stopped).", fix="use --isolate process with --timeout.")
    backends, precisions = comma_list(backends), comma_list(precisions)
    resolve_device(device)  # a misspelt --device stops here, not as a failed row per configuration
    check_choices(backends, precisions, max_images)
    ds = open_dataset(data)
    runs = [load_run(d) for d in run_dirs]
    views = {run.dir: dataset_for_run(ds, run.meta, class_map, run_name=run.name) for run in runs}
    for run in runs:  # fail before any work, not after the first model's hour
        run.check_dataset(views[run.dir])
        warn_unfinished(run)

    results = Path(results)
    stored = [BenchRow.from_json(r, results, line) for line, r in iter_jsonl(results, numbered=True)]
    done = {} if force else {ConfigKey.of(r): r for r in stored if r.status in RESUMABLE}
    unavailable = {} if force else {ConfigKey.of(r): r for r in stored if r.status == "unavailable"}
    timing = dict(warmup_s=warmup, duration_s=duration, min_iters=min_iters, warmup_iters=warmup_iters)
    env = None
    rows: list[BenchRow] = []

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   transient=True, disable=not progress)
    with bar:
        for run in runs:
            ds = views[run.dir]  # the dataset as this run sees it (class map applied)
            # in this process, every backend x precision of the run scores the same images: read and preprocess
            # them once (a worker process reads its own)
            kept = PreparedImages(ds)
            ids = run.split_ids(ds, split, allow_missing=allow_missing)[:max_images or None] if measure_accuracy else []
            refuse_in_sample(run, ds, ids)  # an imported model scored on the cases it was trained on
            base = dict(schema=SCHEMA, dataset=ds.name, data=str(data), split=split, run=str(run.dir.resolve()),
                        run_name=run.name, model=run.meta.model, family=run.meta.family, device_requested=device,
                        batch=batch, n_images=len(ids),
                        class_map=ds.class_map.record if ds.class_map else None, run_complete=run.meta.complete,
                        threads=threads)
            cost = None
            # computed once per run, when its first scored row needs it (a resumed suite may need none)
            trivial = functools.cache(lambda run=run, kept=kept, ids=ids: _trivial(run, kept, ids) if ids else None)
            for backend in backends:
                for precision in precisions:
                    artifact = artifact_sha256(run, backend, precision)
                    key = ConfigKey.of(BenchRow(**base, backend=backend, precision=precision,
                                                artifact_sha256=artifact))
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
                    row.update(row_fields(run))
                    config = dict(batch=batch, device=device, save_predictions=save_predictions, timing=timing,
                                  measure_accuracy=measure_accuracy, threads=threads)
                    if isolate == "process":
                        job = make_job(backend, precision, run, data, ids, class_map=class_map,
                                       timeout_s=timeout, **config)
                        fields, evaluation = run_in_child(job, bar)
                    else:
                        fields, evaluation = bench_config(backend, precision, run, kept, ids, progress=bar, **config)
                    row.update(fields)
                    tiles = ((row.extra or {}).get("pipeline") or {}).get("tiles_per_image")
                    if tiles and row.gmacs:  # a pipeline row: cost per image is the graph's per tile x tiles
                        row.update(forward_gmacs=row.gmacs, gmacs=row.gmacs * tiles["mean"],
                                   gflops=2 * row.gmacs * tiles["mean"])
                    row.update(derived_fields(row))
                    # what ran: loading a tensorrt engine may have (re)built it
                    row.update(artifact_sha256=artifact_sha256(run, backend, precision))
                    before = unavailable.get(ConfigKey.of(row))
                    if row.status == "unavailable" and before is not None and before.reason == row.reason:
                        rows.append(before)  # still unavailable, for the same reason: the stored row stands
                        continue
                    # the reference among the stored rows and this suite's, the latest last (None until the torch
                    # fp32 row exists: list torch first in --backends to have it)
                    delta = References([*stored, *rows, row]).delta(row)
                    row.update(env=env, version=segdeploy.__version__, dice_vs_torch_fp32=delta)
                    if row.status == "ok" and row.dice is not None and trivial() is not None:
                        row.update(trivial_dice=trivial())  # what no learning scores on the same images
                    row.update(judge_row(row))
                    if evaluation is not None and row.status == "ok":
                        row.per_image = sidecar_name(results, [*key, row.timestamp])
                        save_per_image(results.parent / row.per_image, evaluation.image_ids, evaluation.confusion)
                    append_jsonl(results, row.to_json())
                    rows.append(row)
                    if on_evaluation is not None and evaluation is not None:
                        on_evaluation(row, evaluation)
    return rows
