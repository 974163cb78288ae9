"""U-Net with a VGG13 encoder (specialized family).

Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015, with the
encoder replaced by VGG13 (Simonyan & Zisserman 2015) as in the reference study. The decoder mirrors the
encoder's stage widths (512, 512, 256, 128, 64) after a 512-wide centre block at 1/32 resolution, which gives the
31M parameters the study reports at 512x512 (smp's Unet with its default decoder has 18M).

Written here rather than taken from smp because smp builds VGG through torchvision's classifier-carrying VGG
(a 100M-parameter head initialised and thrown away on every construction) and offers no narrow variant for the
``-tiny`` configuration. The encoder keeps torchvision's ``features.N`` names, so torchvision's ImageNet weights
load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segdeploy.models import register_model


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class VGGEncoder(nn.Module):
    """VGG13 convolution stages (two 3x3 convs + ReLU each, max-pool between); returns the five pre-pool
    feature maps (1, 1/2, ..., 1/16) and the final pooled map (1/32)."""

    def __init__(self, in_chans: int = 3, widths=(64, 128, 256, 512, 512)):
        super().__init__()
        layers, self._taps = [], []
        cin = in_chans
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True)]
            self._taps.append(len(layers) - 1)
            layers.append(nn.MaxPool2d(2, 2))
            cin = w
        self.features = nn.Sequential(*layers)  # same indices as torchvision.models.vgg13().features
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):  # torchvision's VGG init: without BN, PyTorch's default init
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # shrinks the signal
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._taps:
                skips.append(x)
        return skips + [x]


class UNetVGG(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, widths=(64, 128, 256, 512, 512),
                 decoder=(512, 512, 256, 128, 64)):
        super().__init__()
        self.encoder = VGGEncoder(in_chans, widths)
        self.center = _double_conv(widths[-1], widths[-1])
        blocks, cin = [], widths[-1]
        for skip, width in zip(reversed(widths), decoder):
            blocks.append(_double_conv(cin + skip, width))
            cin = width
        self.decoder = nn.ModuleList(blocks)
        # named like smp's models: tools (Grad-CAM layer choice) find the classifier under one name
        self.segmentation_head = nn.Sequential(nn.Conv2d(cin, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, x = self.encoder(x)
        x = self.center(x)
        for block, skip in zip(self.decoder, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.segmentation_head(x)


def _load_torchvision_vgg13(model: UNetVGG, in_chans: int) -> None:
    """ImageNet weights from torchvision (downloads on first use); a 1-channel input sums the RGB filters."""
    from torchvision.models import VGG13_Weights, vgg13

    state = vgg13(weights=VGG13_Weights.IMAGENET1K_V1).features.state_dict()
    if in_chans != 3:
        w = state["0.weight"]
        state["0.weight"] = w.sum(1, keepdim=True).repeat(1, in_chans, 1, 1) / in_chans
    model.encoder.features.load_state_dict(state)


@register_model("unet", family="specialized", params_m=31.0, pretrained="torchvision:vgg13/IMAGENET1K_V1",
                source="Ronneberger et al. 2015 (U-Net) with a VGG13 encoder (Simonyan & Zisserman 2015)")
def unet(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False) -> nn.Module:
    model = UNetVGG(num_classes, in_chans)
    if pretrained:
        _load_torchvision_vgg13(model, in_chans)
    return model


@register_model("unet-tiny", family="specialized", tiny_of="unet", source="unet with 1/8 widths (tests, demo)")
def unet_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False) -> nn.Module:
    return UNetVGG(num_classes, in_chans, widths=(8, 16, 32, 64, 64), decoder=(64, 64, 32, 16, 8))
