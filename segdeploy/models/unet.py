"""U-Net with a VGG13 encoder (specialized family).

Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015; the
reference study uses a VGG13 encoder (Simonyan & Zisserman 2015) with torchvision ImageNet weights. Built
with smp's Unet; decoder widths (512, 256, 128, 64, 32) follow the encoder's stage widths.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp

from segdeploy.models import register_model
from segdeploy.models._smp import register_smp_encoder, smp_weights

_TINY_ENCODER = register_smp_encoder(
    "segdeploy-vgg13-tiny", "vgg13",
    config=[8, 8, "M", 16, 16, "M", 32, 32, "M", 64, 64, "M", 64, 64, "M"],
    out_channels=[8, 16, 32, 64, 64, 64],
)


@register_model("unet", family="specialized", params_m=31.0, pretrained="smp:vgg13/imagenet (torchvision)",
                source="Ronneberger et al. 2015 (U-Net), VGG13 encoder; smp.Unet",
                notes="decoder (512,256,128,64,32): 25.1M params, below the study's 31M; see issue 3")
def unet(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    return smp.Unet("vgg13", encoder_weights=smp_weights(pretrained), in_channels=in_chans, classes=num_classes,
                    decoder_channels=(512, 256, 128, 64, 32))


@register_model("unet-tiny", family="specialized", tiny_of="unet", source="unet with 1/8 widths (tests, demo)")
def unet_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    return smp.Unet(_TINY_ENCODER, encoder_weights=None, in_channels=in_chans, classes=num_classes,
                    decoder_channels=(64, 32, 16, 8, 8))
