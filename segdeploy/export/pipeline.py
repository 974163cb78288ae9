"""``export_run``: a trained run -> ONNX fp32 / fp16 / int8 (Q/DQ), each checked against PyTorch, and the manifest
entries saying what happened. A precision that fails becomes an entry with ``status: "failed"`` and the reason;
the others are still exported."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from segdeploy.backends import DEFAULT_INT8_FORM, INT8_FORM_BACKENDS
from segdeploy.errors import SegdeployError, describe_error
from segdeploy.export.calibration import load_images
from segdeploy.export.onnx_export import (OrtReference, check_dynamic_batch, onnx_opset, parity, remove_onnx,
                                          take_given_onnx)
from segdeploy.export.precision import convert_fp16
from segdeploy.fileio import sha256_file
from segdeploy.models.imported import given_graph, import_record
from segdeploy.run.artifacts import onnx_digest
from segdeploy.run.folder import EXPORT_PRECISIONS, load_run, onnx_path
from segdeploy.run.manifest import ExportManifest, manifest_header, now, read_manifest, write_manifest

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


def _check_forms(forms: Iterable[str]) -> list[str]:
    from segdeploy.export.quantize import INT8_FORMS

    forms = list(dict.fromkeys([DEFAULT_INT8_FORM, *forms]))
    unknown = [f for f in forms if f not in INT8_FORMS]
    if unknown:
        raise SegdeployError(f"unknown INT8 form(s) {', '.join(unknown)}.", fix=f"use some of {', '.join(INT8_FORMS)}.")
    return forms


def _int8_forms_entry(run, fp32_file: Path, calib_batch: np.ndarray, calib_method: str, forms: list[str],
                      excluded: list[str], model, parity_batch: np.ndarray) -> dict:
    """``forms`` of the int8 manifest entry: which file each INT8 form is in and which backends load it. The
    ``tensorrt`` form is the entry itself (model.int8.onnx); every other form is quantized here with the same
    calibration images and excluded nodes, and checked like any precision (its own ``sha256``, which the engines
    verify before loading it). A form that fails is recorded with its reason; the backends that would load it fall
    back to the tensorrt form (and say so in their rows)."""
    from segdeploy.export.quantize import INT8_FORMS, qdq_report, quantize_int8

    record = {DEFAULT_INT8_FORM: {"file": onnx_path(run.dir, "int8").relative_to(run.dir).as_posix(),
                                  "backends": list(INT8_FORM_BACKENDS[DEFAULT_INT8_FORM])}}
    for form in INT8_FORMS:
        if form == DEFAULT_INT8_FORM:
            continue
        path = onnx_path(run.dir, "int8", form)
        if form not in forms:
            remove_onnx(path)  # a form from an earlier export would no longer match model.int8.onnx
            continue
        entry: dict = {"status": "ok", "backends": list(INT8_FORM_BACKENDS.get(form, ()))}
        try:
            info = quantize_int8(fp32_file, path, calib_batch, calib_method, nodes_to_exclude=excluded, form=form)
            entry["form_description"] = info["form_description"]
            if "float_activation_matmuls" in info:
                entry["float_activation_matmuls"] = info["float_activation_matmuls"]
            entry["qdq"] = qdq_report(path)
            entry.update(_file_entry(run.dir, path, model, parity_batch))
        except Exception as e:  # the tensorrt form stands on its own
            entry.update(status="failed", error=describe_error(e), file=None)
            remove_onnx(path)
        record[form] = entry
    return record


def _file_entry(run_dir: Path, path: Path, model, parity_images: np.ndarray) -> dict:
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
               int8_target: float = 0.99, int8_forms: Iterable[str] = ("tensorrt", "cpu"),
               on_step: Callable[[str, str], None] | None = None) -> ExportManifest:
    """Export ``run_dir``'s model to ONNX in ``precisions`` and write ``onnx/manifest.json``; returns it.

    Parity is measured on the first ``parity_images`` test images, INT8 calibration on a seeded choice of
    ``calib_images`` training images. ``on_step(precision, step)`` reports progress; step ``"done"`` ends a
    precision. Entries of precisions not asked for are kept from an earlier manifest. ``int8_auto``: when INT8 Dice
    on validation images falls below ``int8_target`` x fp32 Dice, keep the most sensitive layers in floating point
    (:mod:`segdeploy.export.int8_auto`); the manifest's ``int8_auto`` entry says which and what each try gave.
    ``int8_forms``: the INT8 Q/DQ forms to write (:data:`segdeploy.export.quantize.INT8_FORMS`; ``tensorrt`` is
    model.int8.onnx and always written); the int8 entry's ``forms`` says which file each backend loads.
    """
    from segdeploy.export.onnx_export import ExportFailed, export_onnx
    from segdeploy.export.quantize import qdq_report, quantize_int8

    precisions = _check_args(precisions, calib_images, calib_method, parity_images, opset)
    int8_forms = _check_forms(int8_forms)
    step = on_step or (lambda precision, what: None)
    run = load_run(run_dir)
    manifest = read_manifest(run.dir)  # read first: a corrupt manifest stops us before any work
    given = given_graph(run.dir, import_record(run.meta))  # an imported ONNX model is its own fp32 file
    model = OrtReference(given) if given else run.build_model()
    meta = run.meta
    step(precisions[0], "loading images")
    parity_batch = load_images(run, "test", parity_images)
    calib_seed = int(meta.seed or 0)  # the run's seed (a split.json split records none)
    calib_batch = load_images(run, "train", calib_images, seed=calib_seed) if "int8" in precisions else None

    # the checkpoint the files are exported from: bench refuses them once model.safetensors has changed
    checkpoint = sha256_file(run.weights_path)
    entries: dict[str, dict] = {}
    started: list[str] = []  # precisions whose files this export may have begun to write
    try:
        with tempfile.TemporaryDirectory(prefix="segdeploy-export-") as tmp:
            # fp16 and int8 derive from the fp32 graph; when fp32 is not asked for it is exported to a scratch file
            fp32_file = onnx_path(run.dir, "fp32") if "fp32" in precisions else Path(tmp) / "model.fp32.onnx"
            step("fp32", "exporting")
            started += ["fp32"] if "fp32" in precisions else []
            try:
                export_info = (take_given_onnx(given, fp32_file, run.input_shape) if given else
                               export_onnx(model, fp32_file, run.input_shape, opset=opset))
                fp32_error = None
            except ExportFailed as e:  # both exporters' reasons, without the (maybe scratch) file name
                export_info, fp32_error = {}, e.message
            except Exception as e:
                export_info, fp32_error = {}, describe_error(e)

            for precision in precisions:
                path = onnx_path(run.dir, precision)
                started.append(precision)
                entry: dict = {"status": "ok", "created": now(), "checkpoint_sha256": checkpoint, **export_info}
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

                            dataset = open_dataset(meta.dataset.open_spec(), class_map=meta.dataset.class_map)
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
                    if precision == "int8":
                        step(precision, f"other forms: {', '.join(int8_forms[1:]) or 'none'}")
                        excluded = (entry.get("int8_auto") or {}).get("excluded_nodes") or []
                        entry["forms"] = _int8_forms_entry(run, fp32_file, calib_batch, calib_method, int8_forms,
                                                           excluded, model, parity_batch)
                except Exception as e:  # one precision failing must not stop the others
                    reason = str(e) if isinstance(e, PrecisionFailed) else describe_error(e)
                    entry.update(status="failed", error=reason, file=None)
                    _remove_precision(run, precision)  # a stale file must not be mistaken for this export
                entries[precision] = entry
                step(precision, "done")
    except BaseException:  # Ctrl-C, a kill, a crash: what this export wrote is recorded or removed, never left
        for precision in dict.fromkeys(started):
            if precision not in entries:
                _remove_precision(run, precision)
        if entries:
            _write_manifest(run, manifest, entries)
        raise
    return _write_manifest(run, manifest, entries)


def _remove_precision(run, precision: str) -> None:
    from segdeploy.export.quantize import INT8_FORMS

    remove_onnx(onnx_path(run.dir, precision))
    if precision == "int8":
        for form in INT8_FORMS:  # the other forms derive from the int8 file
            if form != DEFAULT_INT8_FORM:
                remove_onnx(onnx_path(run.dir, "int8", form))


def _write_manifest(run, manifest: ExportManifest, entries: dict[str, dict]) -> ExportManifest:
    manifest = replace(manifest, **manifest_header(run), precisions={**manifest.precisions, **entries})
    write_manifest(run.dir, manifest)
    return manifest
