"""HiFormer's Swin-T weight mapping and its pretrained sources (offline: random stand-ins for the hub files)."""

from __future__ import annotations

import pytest
import timm
import torch

from segdeploy.models import create_model
from segdeploy.models.hiformer import RESNET50_WEIGHTS, SWIN_WEIGHTS, load_swin_tiny_state


def test_pretrained_tags_name_the_encoders_hiformer_builds():
    # each tag is the ImageNet-1k checkpoint of exactly the encoder HiFormer-B builds (ResNet-50, Swin-T window 7)
    # at its 224 px input, published under the timm hub name the loader asks for
    expected = {RESNET50_WEIGHTS: ("resnet50", "tv_in1k"), SWIN_WEIGHTS: ("swin_tiny_patch4_window7_224", "ms_in1k")}
    for tag, (architecture, source) in expected.items():
        cfg = timm.models.get_pretrained_cfg(tag)
        assert (cfg.architecture, cfg.tag) == (architecture, source), tag
        assert cfg.input_size == (3, 224, 224) and cfg.num_classes == 1000, tag
        assert cfg.hf_hub_id == f"timm/{tag}", tag


@pytest.mark.slow  # builds the full Swin-T encoder
def test_swin_tiny_state_maps_onto_stages_and_patch_merging():
    torch.manual_seed(0)
    swin = timm.create_model("swin_tiny_patch4_window7_224").state_dict()  # random stand-in, offline
    model = create_model("hiformer-b", num_classes=2, in_chans=3, img_size=224)
    # stages 1-3: (2 + 2 + 6) blocks x 13 tensors; two patch-merging layers x 3 tensors
    assert load_swin_tiny_state(model, swin) == 10 * 13 + 2 * 3
    ours = model.state_dict()
    assert torch.equal(ours["swin.2.5.attn.qkv.weight"], swin["layers.2.blocks.5.attn.qkv.weight"])
    assert torch.equal(ours["swin.0.1.attn.relative_position_bias_table"],
                       swin["layers.0.blocks.1.attn.relative_position_bias_table"])
    # the reference's "layers.0.downsample" (96 -> 192) is timm's start of stage 2
    assert torch.equal(ours["merge.0.reduction.weight"], swin["layers.1.downsample.reduction.weight"])
    assert torch.equal(ours["merge.1.norm.weight"], swin["layers.2.downsample.norm.weight"])
    with pytest.raises(ValueError, match="does not fit"):
        load_swin_tiny_state(model, {"layers.0.blocks.9.norm1.weight": torch.ones(96)})
