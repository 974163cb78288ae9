"""``segdeploy export --int8-auto``: INT8 that keeps accuracy.

When the INT8 Q/DQ model's Dice on validation images falls below ``target`` (0.99, the MLPerf rule) times the fp32
ONNX model's Dice, the most quantization-sensitive layers are kept in floating point, doubling how many each try
(1, 2, 4, ...), until the target is met or half of the quantizable layers are excluded.

Sensitivity comes from ONNX Runtime's ``qdq_loss_debug``: the fp32 and the Q/DQ model are run with every
intermediate tensor exposed, and for each quantized activation the signal-to-quantization-noise ratio (SQNR, dB) of
quantizing it is computed; the weighted layers (Conv, MatMul, ...) that consume the lowest-SQNR activations are the
most sensitive. Dice is measured by the one evaluation path (``segdeploy.evaluation.evaluate``) on validation
images at their original resolution, the same way training selects its checkpoint and ``bench`` reports accuracy.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from segdeploy.export.onnx_export import INPUT_NAME, ort_session
from segdeploy.export.quantize import (QUANTIZED_OP_TYPES, ArrayCalibrationReader, preprocess_for_quantization,
                                       quantize_int8)


def onnx_dice(path: str | Path, dataset, ids: Sequence[str], *, img_size: int, mean: Sequence[float],
              std: Sequence[float], num_classes: int, batch: int = 8) -> float | None:
    """The study's Dice (micro over the images, mean over foreground classes) of an ONNX model in ORT CPU on
    ``ids`` of ``dataset``, through the one evaluation path."""
    from segdeploy.evaluation.evaluate import evaluate

    session = ort_session(path)
    return evaluate(lambda x: session.run(None, {INPUT_NAME: x})[0], dataset, ids, img_size=img_size, mean=mean,
                    std=std, num_classes=num_classes, batch=batch, compute_hd95=False).metrics["dice"]


def sensitive_nodes(fp32_path: str | Path, int8_path: str | Path, calib_images: np.ndarray) -> list[tuple[str, float]]:
    """Quantizable nodes of the pre-processed fp32 graph, most sensitive first, with the SQNR (dB) of their input
    activation's quantization."""
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    with tempfile.TemporaryDirectory(prefix="segdeploy-int8-auto-") as tmp:
        source, _ = preprocess_for_quantization(fp32_path, Path(tmp) / "preprocessed.onnx")
        float_aug, qdq_aug = Path(tmp) / "float.aug.onnx", Path(tmp) / "qdq.aug.onnx"
        modify_model_output_intermediate_tensors(source, float_aug)
        modify_model_output_intermediate_tensors(int8_path, qdq_aug)
        reader = ArrayCalibrationReader(calib_images)
        float_act = collect_activations(str(float_aug), reader)
        reader.rewind()
        qdq_act = collect_activations(str(qdq_aug), reader)
        errors = compute_activation_error(create_activation_matching(qdq_act, float_act))
        graph = onnx.load(str(source)).graph

    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type in QUANTIZED_OP_TYPES:
            for name in node.input:
                consumers.setdefault(name, []).append(node.name)
    ranked: dict[str, float] = {}
    for tensor, err in sorted(errors.items(), key=lambda item: item[1].get("qdq_err", np.inf)):
        for node in consumers.get(tensor, []):
            ranked.setdefault(node, float(err.get("qdq_err", np.nan)))
    return list(ranked.items())


def int8_auto(fp32_path: Path, int8_path: Path, calib_images: np.ndarray, dataset, val_ids: Sequence[str], *,
              img_size: int, mean: Sequence[float], std: Sequence[float], num_classes: int, method: str = "minmax",
              target: float = 0.99) -> dict:
    """Re-quantize ``int8_path`` with sensitive layers excluded until its Dice on ``val_ids`` of ``dataset`` >=
    ``target`` x fp32 Dice.

    Returns the record for the manifest: fp32 and int8 Dice, every attempt, the excluded nodes, whether the target
    was met. ``int8_path`` holds the last attempt's model (the first that met the target, if any did)."""
    def dice_of(path: Path) -> float | None:
        return onnx_dice(path, dataset, val_ids, img_size=img_size, mean=mean, std=std, num_classes=num_classes)

    fp32_dice = dice_of(fp32_path)
    dice = dice_of(int8_path)
    record = {"target": target, "val_images": len(val_ids), "fp32_dice": fp32_dice,
              "attempts": [{"excluded": 0, "dice": dice}], "excluded_nodes": [], "met": None}
    if fp32_dice is None or dice is None:  # no foreground in the validation images: nothing to compare
        return record
    if dice >= target * fp32_dice:
        record["met"] = True
        return record
    ranked = sensitive_nodes(fp32_path, int8_path, calib_images)
    record["sensitivity_db"] = {name: sqnr for name, sqnr in ranked[:16]}
    k = 1
    while k <= max(1, len(ranked) // 2):
        excluded = [name for name, _ in ranked[:k]]
        quantize_int8(fp32_path, int8_path, calib_images, method, nodes_to_exclude=excluded)
        dice = dice_of(int8_path)
        record["attempts"].append({"excluded": k, "dice": dice})
        record["excluded_nodes"] = excluded
        if dice is not None and dice >= target * fp32_dice:
            record["met"] = True
            return record
        k *= 2
    record["met"] = False
    return record
