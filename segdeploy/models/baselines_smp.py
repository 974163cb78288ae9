"""Classic CNN segmentation baselines built with segmentation_models_pytorch (baseline family).

* UNet++ (Zhou et al., DLMIA 2018 / IEEE TMI 2019) with a ResNet-34 encoder: smp.UnetPlusPlus.
* DeepLabV3+ (Chen et al., ECCV 2018) with a ResNet-50 encoder at output stride 16: smp.DeepLabV3Plus.
* UPerNet (Xiao et al., ECCV 2018) on ConvNeXt-T (Liu et al., CVPR 2022) with 512 decoder channels, the
  configuration of ConvNeXt's and mmsegmentation's ADE20K UPerNet (~60M there, auxiliary FCN head included;
  smp has no auxiliary head, so 59.2M here): smp.UPerNet.

Every encoder is a timm model through smp's ``tu-`` bridge, so a ``-tiny`` configuration is the same encoder
code with fewer blocks and channels (timm's constructor arguments pass through smp's ``**kwargs``). The
pretrained tag is part of the encoder name, so ``pretrained=True`` loads exactly that ImageNet checkpoint from
the Hugging Face hub and ``pretrained=False`` never touches the network.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch.nn as nn

from segdeploy.models import register_model

RESNET34 = "resnet34.a1_in1k"
RESNET50 = "resnet50.a1_in1k"
CONVNEXT_T = "convnext_tiny.fb_in1k"  # ImageNet-1k weights, as in ConvNeXt's own UPerNet results
# timm zero-initialises each residual block's last BN scale; then nothing upstream in the block gets a
# gradient on the first step. torchvision's ResNet (smp's native encoders) does not, and neither do we.
_RESNET_INIT = dict(zero_init_last=False)
# one block per stage, stage widths 8..64; the 7x7 stem stays 64 wide (timm sizes only its deep stems)
_TINY_RESNET = dict(layers=[1, 1, 1, 1], channels=(8, 16, 32, 64), **_RESNET_INIT)


def _tu(name: str) -> str:
    return f"tu-{name}"


def _encoder_weights(pretrained: bool) -> bool | None:
    # smp's tu- encoders take True (download the tagged timm checkpoint) or None (random init)
    return True if pretrained else None


@register_model("unetplusplus", family="baseline", params_m=26.1, pretrained=f"timm:{RESNET34}",
                source="Zhou et al., DLMIA 2018 / TMI 2019 (UNet++), ResNet-34 encoder; smp.UnetPlusPlus",
                notes="decoder channels (256,128,64,32,16), smp's default; no deep supervision")
def unetplusplus(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False) -> nn.Module:
    return smp.UnetPlusPlus(_tu(RESNET34), encoder_weights=_encoder_weights(pretrained), in_channels=in_chans,
                            classes=num_classes, **_RESNET_INIT)


@register_model("unetplusplus-tiny", family="baseline", tiny_of="unetplusplus",
                source="unetplusplus with a 1-block-per-stage ResNet (stage widths 8-64) and decoder (32,16,16,8,8)")
def unetplusplus_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    return smp.UnetPlusPlus(_tu(RESNET34), encoder_weights=None, in_channels=in_chans, classes=num_classes,
                            decoder_channels=(32, 16, 16, 8, 8), **_TINY_RESNET)


@register_model("deeplabv3plus-r50", family="baseline", params_m=26.7, pretrained=f"timm:{RESNET50}",
                source="Chen et al., ECCV 2018 (DeepLabV3+), ResNet-50 encoder; smp.DeepLabV3Plus",
                notes="output stride 16, ASPP rates (12,24,36) with separable convs, 256 decoder channels")
def deeplabv3plus_r50(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    return smp.DeepLabV3Plus(_tu(RESNET50), encoder_weights=_encoder_weights(pretrained), in_channels=in_chans,
                             classes=num_classes, encoder_output_stride=16, **_RESNET_INIT)


@register_model("deeplabv3plus-r50-tiny", family="baseline", tiny_of="deeplabv3plus-r50",
                source="deeplabv3plus-r50 with a 1-block-per-stage bottleneck ResNet (stage widths 8-64), 32 decoder "
                       "channels")
def deeplabv3plus_r50_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    return smp.DeepLabV3Plus(_tu(RESNET50), encoder_weights=None, in_channels=in_chans, classes=num_classes,
                             encoder_output_stride=16, decoder_channels=32, **_TINY_RESNET)


@register_model("upernet-convnext-t", family="baseline", params_m=59.2, pretrained=f"timm:{CONVNEXT_T}",
                source="Xiao et al., ECCV 2018 (UPerNet) on ConvNeXt-T (Liu et al., CVPR 2022); smp.UPerNet",
                notes="512 decoder channels and stochastic depth 0.4 as in ConvNeXt's UPerNet; no auxiliary head")
def upernet_convnext_t(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    return smp.UPerNet(_tu(CONVNEXT_T), encoder_weights=_encoder_weights(pretrained), in_channels=in_chans,
                       classes=num_classes, decoder_channels=512, drop_path_rate=0.4)


@register_model("upernet-convnext-t-tiny", family="baseline", tiny_of="upernet-convnext-t",
                source="upernet-convnext-t with ConvNeXt widths (16,32,64,128), one block per stage, 32 decoder "
                       "channels")
def upernet_convnext_t_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    return smp.UPerNet(_tu(CONVNEXT_T), encoder_weights=None, in_channels=in_chans, classes=num_classes,
                       decoder_channels=32, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))
