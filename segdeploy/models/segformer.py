"""SegFormer (general family): Mix Transformer encoder + all-MLP decoder.

Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers",
NeurIPS 2021. Built with smp's Segformer; the decoder embedding is 768 as in the paper's B2-B5 models.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp

from segdeploy.models import register_model
from segdeploy.models._smp import register_smp_encoder, smp_weights

_TINY_ENCODER = register_smp_encoder(
    "segdeploy-mit-tiny", "mit_b0",
    embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 4], out_channels=[3, 0, 16, 32, 64, 128],
)


@register_model("segformer-b3", family="general", params_m=47.0, pretrained="smp:mit_b3/imagenet",
                source="Xie et al. 2021 (SegFormer), MiT-B3; smp.Segformer")
def segformer_b3(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    return smp.Segformer("mit_b3", encoder_weights=smp_weights(pretrained), in_channels=in_chans,
                         classes=num_classes, decoder_segmentation_channels=768)


@register_model("segformer-tiny", family="general", tiny_of="segformer-b3",
                source="segformer-b3 with MiT widths (16,32,64,128), one block per stage (tests, demo)")
def segformer_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    return smp.Segformer(_TINY_ENCODER, encoder_weights=None, in_channels=in_chans, classes=num_classes,
                         decoder_segmentation_channels=64)
