"""``segdeploy export``: a trained run -> ONNX fp32 / fp16 / int8 (Q/DQ), each checked against PyTorch.

    RUN_DIR/onnx/model.fp32.onnx   dynamo export (legacy TorchScript exporter as fallback), dynamic batch
    RUN_DIR/onnx/model.fp16.onnx   onnxruntime.transformers.float16, float32 inputs/outputs kept
    RUN_DIR/onnx/model.int8.onnx   TensorRT-style Q/DQ, calibrated on training images
    RUN_DIR/onnx/manifest.json     files, hashes, exporter, parity vs PyTorch fp32, Q/DQ report

A precision that fails becomes a manifest entry with ``status: "failed"`` and the reason; the others are
still exported. Heavy libraries are imported on first use so that the CLI starts fast.
"""

from __future__ import annotations

import importlib
import random
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from segdeploy.errors import SegdeployError
from segdeploy.fileio import atomic_write_json, read_json

EXPORT_PRECISIONS = ("fp32", "fp16", "int8")
MIN_OPSET = 17  # LayerNormalization is one op from 17; split LayerNorm overflows in TensorRT FP16

# public names that live in modules importing torch/onnx/onnxruntime, resolved on first access (PEP 562)
_LAZY = {
    "export_onnx": "segdeploy.export.onnx_export",
    "parity": "segdeploy.export.onnx_export",
    "ExportFailed": "segdeploy.export.onnx_export",
    "convert_fp16": "segdeploy.export.precision",
    "quantize_int8": "segdeploy.export.quantize",
    "qdq_report": "segdeploy.export.quantize",
}
__all__ = ["EXPORT_PRECISIONS", "export_run", "load_images", "read_manifest", *_LAZY]


class PrecisionFailed(Exception):
    """A precision's own check failed (the message is the manifest's reason as it stands)."""


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_images(run, split: str, n: int, *, seed: int | None = None) -> np.ndarray:
    """``n`` preprocessed images (N, C, S, S) float32 from the run's dataset split: the first ``n`` ids of the
    split, or a seeded random choice of ``n`` when ``seed`` is given."""
    from segdeploy.data import open_dataset
    from segdeploy.data.transforms import preprocess

    meta = run.meta
    if not (meta.get("dataset") or {}).get("spec"):
        raise SegdeployError("the run's model.json names no dataset (dataset.spec): parity and calibration need "
                             "its images.", fix="add \"dataset\": {\"spec\": PATH_OR_NAME} to model.json.")
    dataset = open_dataset(meta["dataset"]["spec"])
    ids = run.split_ids(dataset, split)
    ids = sorted(random.Random(seed).sample(ids, min(n, len(ids)))) if seed is not None else ids[:n]
    images = [preprocess(dataset.load(i).image, meta["img_size"], meta["mean"], meta["std"])[0] for i in ids]
    return np.stack(images).astype(np.float32, copy=False)


def load_pairs(run, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` images of ``split`` preprocessed (N, C, S, S) with their letterboxed masks (N, S, S)."""
    from segdeploy.data import open_dataset
    from segdeploy.data.transforms import letterbox, normalize

    meta = run.meta
    dataset = open_dataset(meta["dataset"]["spec"])
    images, masks = [], []
    for i in run.split_ids(dataset, split)[:n]:
        sample = dataset.load(i)
        chw, mask, _ = letterbox(sample.image, sample.mask, meta["img_size"])
        images.append(normalize(chw, meta["mean"], meta["std"]))
        masks.append(mask)
    return np.stack(images).astype(np.float32, copy=False), np.stack(masks)


def read_manifest(run_dir: str | Path) -> dict:
    """The run's ``onnx/manifest.json``, or ``{}`` before the first export."""
    from segdeploy.runs import manifest_path

    path = manifest_path(run_dir)
    return read_json(path) if path.is_file() else {}


def _versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_args(precisions: Iterable[str], calib_images: int, calib_method: str, parity_images: int,
                opset: int) -> list[str]:
    from segdeploy.export.quantize import CALIB_METHODS

    precisions = list(dict.fromkeys(precisions))  # de-duplicated, order kept
    unknown = [p for p in precisions if p not in EXPORT_PRECISIONS]
    if unknown or not precisions:
        raise SegdeployError(f"cannot export precision(s) {unknown or precisions}.",
                             fix=f"choose from {','.join(EXPORT_PRECISIONS)} (bf16 runs only in the torch backend).")
    if calib_method not in CALIB_METHODS:
        raise SegdeployError(f"unknown calibration method {calib_method!r}.",
                             fix=f"use one of {', '.join(CALIB_METHODS)}.")
    if opset < MIN_OPSET:
        raise SegdeployError(f"opset {opset} is below {MIN_OPSET}.",
                             fix=f"use --opset {MIN_OPSET} or higher (default 18).")
    if parity_images < 1 or ("int8" in precisions and calib_images < 1):
        raise SegdeployError("parity and calibration need at least one image.",
                             fix="pass --parity-images and --calib-images >= 1.")
    return precisions


def _file_entry(run_dir: Path, path: Path, model, parity_images: np.ndarray) -> dict:
    from segdeploy.engines.trt_build import onnx_digest
    from segdeploy.export.onnx_export import check_dynamic_batch, onnx_opset, parity

    check_dynamic_batch(path, parity_images.shape[1:])
    return {
        "file": path.relative_to(run_dir).as_posix(),
        "size_mb": round(path.stat().st_size / 2**20, 3),
        "sha256": onnx_digest(path),  # graph + external data; for a single file its plain sha256
        "opset": onnx_opset(path),
        "parity": parity(path, model, parity_images),
    }


def export_run(run_dir: str | Path, precisions: Iterable[str] = EXPORT_PRECISIONS, *, calib_images: int = 32,
               calib_method: str = "minmax", parity_images: int = 8, opset: int = 18, int8_auto: bool = False,
               int8_target: float = 0.99, on_step: Callable[[str, str], None] | None = None) -> dict:
    """Export ``run_dir``'s model to ONNX in ``precisions`` and write ``onnx/manifest.json``; returns it.

    Parity is measured on the first ``parity_images`` test images, INT8 calibration on a seeded choice of
    ``calib_images`` training images. ``on_step(precision, step)`` reports progress; step ``"done"`` ends a
    precision. Entries of precisions not asked for are kept from an earlier manifest. ``int8_auto``: when INT8 Dice
    on validation images falls below ``int8_target`` x fp32 Dice, keep the most sensitive layers in floating point
    (:mod:`segdeploy.export.int8_auto`); the manifest's ``int8_auto`` entry says which and what each try gave.
    """
    from segdeploy.export.onnx_export import ExportFailed, describe_error, export_onnx, remove_onnx
    from segdeploy.export.precision import convert_fp16
    from segdeploy.export.quantize import qdq_report, quantize_int8
    from segdeploy.runs import load_run, manifest_path, onnx_path

    precisions = _check_args(precisions, calib_images, calib_method, parity_images, opset)
    step = on_step or (lambda precision, what: None)
    run = load_run(run_dir)
    manifest = read_manifest(run.dir)  # read first: a corrupt manifest stops us before any work
    model = run.build_model()
    meta = run.meta
    step(precisions[0], "loading images")
    parity_batch = load_images(run, "test", parity_images)
    calib_seed = int(meta.get("seed") or 0)  # the run's seed (a split.json split records none)
    calib_batch = load_images(run, "train", calib_images, seed=calib_seed) if "int8" in precisions else None

    entries: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="segdeploy-export-") as tmp:
        # fp16 and int8 derive from the fp32 graph; when fp32 is not asked for it is exported to a scratch file
        fp32_file = onnx_path(run.dir, "fp32") if "fp32" in precisions else Path(tmp) / "model.fp32.onnx"
        step("fp32", "exporting")
        try:
            export_info = export_onnx(model, fp32_file, run.input_shape, opset=opset)
            fp32_error = None
        except ExportFailed as e:  # both exporters' reasons, without the (maybe scratch) file name
            export_info, fp32_error = {}, e.message
        except Exception as e:
            export_info, fp32_error = {}, describe_error(e)

        for precision in precisions:
            path = onnx_path(run.dir, precision)
            entry: dict = {"status": "ok", "created": _now(), **export_info}
            try:
                if fp32_error:
                    raise PrecisionFailed(fp32_error if precision == "fp32"
                                          else f"the fp32 export failed: {fp32_error}")
                if precision == "fp16":
                    step(precision, "converting")
                    entry.update(convert_fp16(fp32_file, path))
                elif precision == "int8":
                    step(precision, f"calibrating on {len(calib_batch)} training images ({calib_method})")
                    entry.update(quantize_int8(fp32_file, path, calib_batch, calib_method))
                    entry["calibration"].update(split="train", seed=calib_seed)
                    if int8_auto:
                        from segdeploy.export.int8_auto import int8_auto as keep_accuracy

                        step(precision, "checking INT8 accuracy on validation images (--int8-auto)")
                        val_images, val_masks = load_pairs(run, "val", max(calib_images, 16))
                        entry["int8_auto"] = keep_accuracy(fp32_file, path, calib_batch, val_images, val_masks,
                                                           meta["num_classes"], method=calib_method,
                                                           target=int8_target)
                    entry["qdq"] = qdq_report(path)
                    if not entry["qdq"]["all_zero_points_zero"]:
                        raise PrecisionFailed("the Q/DQ model has non-zero zero-points, which TensorRT rejects")
                step(precision, "checking parity")
                entry.update(_file_entry(run.dir, path, model, parity_batch))
            except Exception as e:  # one precision failing must not stop the others
                reason = str(e) if isinstance(e, PrecisionFailed) else describe_error(e)
                entry.update(status="failed", error=reason, file=None)
                remove_onnx(path)  # a stale file must not be mistaken for this export
            entries[precision] = entry
            step(precision, "done")

    manifest.update({"model": meta["model"], "run": run.name, "created": _now(), **_versions(),
                     "input": {"name": "input", "shape": ["batch", *run.input_shape], "dtype": "float32"},
                     "output": {"name": "logits", "shape": ["batch", meta["num_classes"], *run.input_shape[1:]],
                                "dtype": "float32"}})
    manifest["precisions"] = {**manifest.get("precisions", {}), **entries}
    atomic_write_json(manifest_path(run.dir), manifest)
    return manifest
