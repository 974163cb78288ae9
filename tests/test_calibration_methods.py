"""--calib-method entropy is its own calibration: with onnxruntime's default 128-bin histogram the KL search had one
candidate threshold and wrote minmax's file byte for byte; with 2048 bins it clips activations minmax keeps."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from segdeploy.export.onnx_export import export_onnx
from segdeploy.export.quantize import quantize_int8
from segdeploy.models import create_model


def _activation_scales(path) -> dict[str, float]:
    """Scale of every activation QuantizeLinear (input not an initializer), by the tensor it quantizes."""
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


@pytest.mark.slow  # two calibrations of a unet: about 40 s on a loaded 2-core machine
def test_entropy_calibration_differs_from_minmax_and_clips(tmp_path):
    torch.manual_seed(0)
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(create_model("unet-tiny", num_classes=3, in_chans=1, img_size=64).eval(), fp32, (1, 64, 64))
    # heavy-tailed inputs: a few large values, which minmax covers and the KL threshold cuts off
    calib = np.random.default_rng(0).standard_t(3, (8, 1, 64, 64)).astype(np.float32)
    files = {}
    for method in ("minmax", "entropy"):
        files[method] = tmp_path / f"{method}.onnx"
        info = quantize_int8(fp32, files[method], calib, method)
        assert info["calibration"]["method"] == method
    assert info["calibration"]["histogram_bins"] == 2048
    assert files["minmax"].read_bytes() != files["entropy"].read_bytes()
    minmax, entropy = _activation_scales(files["minmax"]), _activation_scales(files["entropy"])
    assert minmax.keys() == entropy.keys() and minmax
    # entropy's threshold lies within the observed range, so its scale never exceeds minmax's; here it clips
    assert all(entropy[t] <= minmax[t] * (1 + 1e-5) for t in minmax)
    assert sum(entropy[t] < 0.9 * minmax[t] for t in minmax) >= 1
