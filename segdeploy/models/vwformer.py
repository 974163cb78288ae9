"""VWFormer (general family): a hierarchical backbone + the varying-window-attention decoder.

Yan et al., "Multi-Scale Representations by Varying Window Attention for Semantic Segmentation", ICLR 2024.
The decoder is in ``_vwformer_head`` (see its docstring for the configuration and the window handling); the
backbones are the study's two: MiT-B3 from smp (as in SegFormer) and ConvNeXt-S from timm (the official ConvNeXt
configs use drop path 0.4, kept here). The head predicts at 1/4 of the input; the model upsamples bilinearly.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segdeploy.models import register_model
from segdeploy.models._smp import register_smp_encoder, smp_weights
from segdeploy.models._vwformer_head import VWFormerHead

_SOURCE = "Yan et al. 2024 (VWFormer), ICLR 2024; "
_NOTES = ("Query windows 8x8 at 1/8 (the official 8x8 grid at 512 px); other sizes pad the 1/8 map to a multiple of "
          "8. VWA output BN not zero-initialised (mmcv does).")
_TINY_MIT = register_smp_encoder(
    "segdeploy-vwformer-mit-tiny", "mit_b0", embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1],
    num_heads=[1, 1, 2, 4], out_channels=[3, 0, 16, 32, 64, 128], drop_path_rate=0.0,
)
# the tiny configurations keep the head's code and ratios; 64 channels is the least that ratio 8 allows
# (the pre-scaling conv cuts channels by 8^2)
_TINY_CHANNELS = 64


class SmpStages(nn.Module):
    """An smp encoder returning only its four real stages (smp prepends the input and, for MiT, an empty map)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.out_channels = list(encoder.out_channels[-4:])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)[-4:]


class VWFormer(nn.Module):
    def __init__(self, encoder: nn.Module, encoder_channels, num_classes: int, channels: int = 512,
                 dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.decoder = VWFormerHead(encoder_channels, channels)
        self.segmentation_head = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.segmentation_head(self.decoder(self.encoder(x)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _mit(name: str, in_chans: int, pretrained: bool) -> SmpStages:
    from segmentation_models_pytorch.encoders import get_encoder

    return SmpStages(get_encoder(name, in_channels=in_chans, depth=5, weights=smp_weights(pretrained)))


def _convnext(in_chans: int, pretrained: bool, **overrides) -> nn.Module:
    import timm

    # the ImageNet-1k weights, as the official ConvNeXt-S config (timm's default tag is the in12k fine-tune)
    return timm.create_model("convnext_small.fb_in1k", features_only=True, pretrained=pretrained, in_chans=in_chans,
                             **overrides)


@register_model("vwformer-mit-b3", family="general", params_m=51.0, pretrained="smp:mit_b3/imagenet",
                source=_SOURCE + "MiT-B3 from smp", notes=_NOTES)
def vwformer_mit_b3(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    encoder = _mit("mit_b3", in_chans, pretrained)
    return VWFormer(encoder, encoder.out_channels, num_classes)


@register_model("vwformer-convnext-s", family="general", params_m=57.0, pretrained="timm:convnext_small.fb_in1k",
                source=_SOURCE + "ConvNeXt-S from timm", notes=_NOTES)
def vwformer_convnext_s(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    encoder = _convnext(in_chans, pretrained, drop_path_rate=0.4)
    return VWFormer(encoder, encoder.feature_info.channels(), num_classes)


@register_model("vwformer-mit-b3-tiny", family="general", tiny_of="vwformer-mit-b3",
                source="vwformer-mit-b3 with MiT widths (16,32,64,128), one block per stage, head width 64")
def vwformer_mit_b3_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    encoder = _mit(_TINY_MIT, in_chans, False)
    return VWFormer(encoder, encoder.out_channels, num_classes, channels=_TINY_CHANNELS)


@register_model("vwformer-convnext-s-tiny", family="general", tiny_of="vwformer-convnext-s",
                source="vwformer-convnext-s with ConvNeXt widths (16,32,64,128), one block per stage, head width 64")
def vwformer_convnext_s_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    encoder = _convnext(in_chans, False, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))
    return VWFormer(encoder, encoder.feature_info.channels(), num_classes, channels=_TINY_CHANNELS)
