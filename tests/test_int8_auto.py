"""--int8-auto: sensitive layers are found, kept in floating point, and the attempts are recorded."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from segdeploy.export import export_run
from segdeploy.export.int8_auto import onnx_dice, sensitive_nodes

pytestmark = pytest.mark.slow  # trains a run, then exports and scores INT8 several times per test


@pytest.fixture(scope="module")
def run_dir(tiny_trained_run, tmp_path_factory):
    return Path(shutil.copytree(tiny_trained_run, tmp_path_factory.mktemp("int8auto") / "run"))


def _float_weighted_nodes(path) -> set[str]:
    """Conv/MatMul nodes whose inputs do not come out of a DequantizeLinear, i.e. that run in floating point."""
    graph = onnx.load(str(path)).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in graph.node if n.op_type in ("Conv", "MatMul") and not set(n.input) & dq_outputs}


def test_unreachable_target_excludes_more_layers_each_try(run_dir):
    manifest = export_run(run_dir, ["fp32", "int8"], calib_images=8, parity_images=4, int8_auto=True,
                          int8_target=1.5)  # 150% of fp32 can never be met: every try is made
    auto = manifest.precisions["int8"]["int8_auto"]
    assert manifest.precisions["int8"]["status"] == "ok" and auto["met"] is False
    tries = [a["excluded"] for a in auto["attempts"]]
    assert tries[0] == 0 and tries[1:] == [2 ** i for i in range(len(tries) - 1)]
    assert len(auto["excluded_nodes"]) == tries[-1] >= 1
    # the excluded layers really run in floating point in the final file, the others do not
    int8_file = run_dir / "onnx" / "model.int8.onnx"
    assert set(auto["excluded_nodes"]) == _float_weighted_nodes(int8_file)
    # the CPU form is quantized with the same layers kept in floating point
    assert set(auto["excluded_nodes"]) == _float_weighted_nodes(run_dir / "onnx" / "model.int8-cpu.onnx")
    assert manifest.precisions["int8"]["qdq"]["all_zero_points_zero"]


def test_met_target_changes_nothing(run_dir, tmp_path):
    manifest = export_run(run_dir, ["fp32", "int8"], calib_images=8, parity_images=4, int8_auto=True,
                          int8_target=0.0)
    auto = manifest.precisions["int8"]["int8_auto"]
    assert auto["met"] is True and auto["excluded_nodes"] == [] and len(auto["attempts"]) == 1
    assert _float_weighted_nodes(run_dir / "onnx" / "model.int8.onnx") == set()


def test_sensitivity_ranks_existing_quantized_nodes(run_dir):
    from segdeploy.export import load_images
    from segdeploy.run.folder import load_run

    run = load_run(run_dir)
    export_run(run_dir, ["fp32", "int8"], calib_images=8, parity_images=4)
    ranked = sensitive_nodes(run_dir / "onnx" / "model.fp32.onnx", run_dir / "onnx" / "model.int8.onnx",
                             load_images(run, "train", 4))
    names = [n for n, _ in ranked]
    sqnr = [s for _, s in ranked]
    assert len(names) == len(set(names)) >= 5
    assert sqnr == sorted(sqnr)  # most sensitive (lowest SQNR) first


def test_onnx_dice_equals_the_pytorch_models_dice(run_dir):
    """The Dice --int8-auto compares against, computed a second way: the PyTorch model and per-class overlap at
    each validation image's original resolution."""
    import numpy as np
    import torch

    from segdeploy.data import open_dataset
    from segdeploy.data.transforms import preprocess, restore
    from segdeploy.run.folder import load_run

    run = load_run(run_dir)
    export_run(run_dir, ["fp32"], parity_images=2)
    meta = run.meta
    dataset = open_dataset(meta.dataset.spec)
    ids = run.split_ids(dataset, "val")[:8]
    model = run.build_model()
    preds, masks = [], []
    for i in ids:
        sample = dataset.load(i)
        x, letterbox = preprocess(sample.image, meta.img_size, meta.mean, meta.std)
        with torch.no_grad():
            logits = model(torch.from_numpy(x)[None])[0].numpy()
        preds.append(restore(logits, letterbox).argmax(0).ravel())
        masks.append(sample.mask.ravel())
    assert {m.size for m in masks} != {meta.img_size ** 2}  # scored at original sizes, not the network's
    pred, mask = np.concatenate(preds), np.concatenate(masks)
    per_class = []
    for c in range(1, 4):
        tp, fp, fn = [np.sum(a & b) for a, b in (((pred == c), (mask == c)), ((pred == c), (mask != c)),
                                                 ((pred != c), (mask == c)))]
        if tp + fp + fn:
            per_class.append(2 * tp / (2 * tp + fp + fn))
    dice = onnx_dice(run_dir / "onnx" / "model.fp32.onnx", dataset, ids, img_size=meta.img_size,
                     mean=meta.mean, std=meta.std, num_classes=4)
    assert dice == pytest.approx(np.mean(per_class), abs=1e-3)
