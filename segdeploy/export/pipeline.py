"""``export_run``: a trained run -> ONNX fp32 / fp16 / int8 (Q/DQ), each checked against PyTorch, and the manifest
entries saying what happened. A precision that fails becomes an entry with ``status: "failed"`` and the reason;
the others are still exported."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from segdeploy.errors import SegdeployError
from segdeploy.export.calibration import load_images
from segdeploy.export.manifest import manifest_header, now, read_manifest, write_manifest

EXPORT_PRECISIONS = ("fp32", "fp16", "int8")
MIN_OPSET = 17  # LayerNormalization is one op from 17; split LayerNorm overflows in TensorRT FP16


class PrecisionFailed(Exception):
    """A precision's own check failed (the message is the manifest's reason as it stands)."""


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
    from segdeploy.export.artifacts import onnx_digest
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
    from segdeploy.errors import describe_error
    from segdeploy.export.onnx_export import ExportFailed, export_onnx, remove_onnx
    from segdeploy.export.precision import convert_fp16
    from segdeploy.export.quantize import qdq_report, quantize_int8
    from segdeploy.runs import load_run, onnx_path

    precisions = _check_args(precisions, calib_images, calib_method, parity_images, opset)
    step = on_step or (lambda precision, what: None)
    run = load_run(run_dir)
    manifest = read_manifest(run.dir)  # read first: a corrupt manifest stops us before any work
    model = run.build_model()
    meta = run.meta
    step(precisions[0], "loading images")
    parity_batch = load_images(run, "test", parity_images)
    calib_seed = int(meta.seed or 0)  # the run's seed (a split.json split records none)
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
            entry: dict = {"status": "ok", "created": now(), **export_info}
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
                        from segdeploy.data import open_dataset

                        dataset = open_dataset(meta.dataset.spec, class_map=meta.dataset.class_map)
                        val_ids = run.split_ids(dataset, "val")[:max(calib_images, 16)]
                        entry["int8_auto"] = keep_accuracy(
                            fp32_file, path, calib_batch, dataset, val_ids, img_size=meta.img_size,
                            mean=meta.mean, std=meta.std, num_classes=meta.num_classes,
                            method=calib_method, target=int8_target)
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

    manifest.update(manifest_header(run))
    manifest["precisions"] = {**manifest.get("precisions", {}), **entries}
    write_manifest(run.dir, manifest)
    return manifest
