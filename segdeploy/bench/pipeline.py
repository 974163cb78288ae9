"""An imported model's whole inference pipeline measured as a user pays it (``measure_pipeline``): the pipeline
itself (tiles, mirrors, folds) is the importer's (:mod:`segdeploy.models.importers.nnunet_pipeline`); what is timed
and how is bench's."""

from __future__ import annotations

import numpy as np

from segdeploy.bench.latency import measure_engine, summarize
from segdeploy.evaluation.evaluate import _png_bytes
from segdeploy.fileio import atomic_write_bytes
from segdeploy.models.importers.nnunet_pipeline import SlidingWindow, evaluate_pipeline


def measure_pipeline(engine, window: SlidingWindow, dataset, ids, *, meta, timing: dict, save_dir=None,
                     on_image_done=None) -> tuple[dict, object]:
    """A bench row's accuracy and speed fields for a pipeline run: Dice of the whole pipeline; ``latency_ms``
    and ``throughput_ips`` per image for the whole pipeline (tiles x mirrors x folds, as a user pays it: one
    warm-up image, then one timed pass over the scored images); ``forward`` the engine alone on one tile batch
    (``measure_engine``); ``pipeline`` the tiles per image and forward calls. Returns (fields, Evaluation)."""
    window(dataset.load(ids[0]).image)  # warm-up: first calls build kernels and allocate
    window.forward_ms.clear()

    def on_image(image_id, pred):
        if save_dir is not None:
            atomic_write_bytes(save_dir / f"{image_id}.png", _png_bytes(pred))
        if on_image_done is not None:
            on_image_done(1)

    evaluation, per_image_ms, tiles = evaluate_pipeline(window, dataset, ids, num_classes=meta.num_classes,
                                                        class_names=meta.classes or dataset.classes,
                                                        on_image=on_image)
    calls = len(window.forward_ms)
    tile = np.zeros((1, meta.in_chans, window.patch, window.patch), np.float32)
    speed = measure_engine(engine, tile, np.repeat(tile, window.tile_batch, axis=0), **timing)
    latency = summarize(per_image_ms)
    latency["total_s"] = sum(per_image_ms) / 1e3
    fields = {**evaluation.metrics, "latency_ms": latency, "compute_ms": None,
              "compute_timer": "host (whole pipeline per image)", "batch_latency_ms": None,
              "throughput_ips": 1e3 / latency["p50"],
              "forward": {k: speed[k] for k in ("latency_ms", "compute_ms", "compute_timer", "batch_latency_ms")}
              | {"tiles_per_s": speed["throughput_ips"], "tile_batch": window.tile_batch},
              "pipeline": {"tiles_per_image": {"mean": float(np.mean(tiles)), "min": int(min(tiles)),
                                               "max": int(max(tiles))},
                           "forward_calls": calls, "tile_step": window.tile_step, "tile_batch": window.tile_batch,
                           "forward_ms_in_pipeline": summarize(window.forward_ms) if calls else None}}
    return fields, evaluation
