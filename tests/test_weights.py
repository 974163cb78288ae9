"""Local weight files: full checkpoints, backbone-only files (prefix found automatically), clear errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from segdeploy.errors import SegdeployError
from segdeploy.models import create_model


def test_backbone_only_file_loads_under_the_encoder_prefix(tmp_path):
    torch.manual_seed(0)
    donor = create_model("unet-tiny", num_classes=3, in_chans=3, img_size=64)
    backbone = {k.removeprefix("encoder."): v for k, v in donor.state_dict().items() if k.startswith("encoder.")}
    save_file(backbone, str(tmp_path / "vgg.safetensors"))

    torch.manual_seed(1)
    model = create_model("unet-tiny", num_classes=3, in_chans=3, img_size=64, weights=str(tmp_path / "vgg.safetensors"))
    convs = {k: v for k, v in donor.state_dict().items() if v.ndim == 4}  # randomly initialised in both models
    for key, value in convs.items():
        same = torch.equal(model.state_dict()[key], value)
        assert same == key.startswith("encoder."), key  # encoder copied, decoder left at its own init


def test_full_checkpoint_and_mismatch_report(tmp_path):
    from segdeploy.models.weights import load_weights

    donor = create_model("unet-tiny", num_classes=4, in_chans=3, img_size=64)
    torch.save({"state_dict": donor.state_dict()}, tmp_path / "ckpt.pth")  # a wrapped .pth checkpoint
    model = create_model("unet-tiny", num_classes=3, in_chans=3, img_size=64)
    report = load_weights(model, tmp_path / "ckpt.pth")
    # everything but the 4-class head loads; the head is reported as shape-mismatched
    assert report["mismatched"] == ["segmentation_head.0.bias", "segmentation_head.0.weight"]
    assert set(report["missing"]) == set(report["mismatched"]) and not report["unexpected"]


def test_unrelated_file_is_a_clear_error(tmp_path):
    save_file({"something.else": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(SegdeployError, match="no tensor in the file matches"):
        create_model("unet-tiny", num_classes=3, weights=str(tmp_path / "other.safetensors"))
    with pytest.raises(SegdeployError, match="not found"):
        create_model("unet-tiny", num_classes=3, weights=str(tmp_path / "missing.pth"))
