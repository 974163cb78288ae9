"""Attention U-Net (baseline family).

Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018, in 2D with the U-Net widths
64..1024 (the paper's network with ``feature_scale=1``). As in the paper's network with a single attention gate
per scale and deep supervision:

* encoder: five stages of two (conv3x3 + BN + ReLU), max-pool between them;
* gating signal: conv1x1 + BN + ReLU on the bottleneck;
* grid attention gates on the three coarser skips, each gated by the next-coarser decoder output: the skip is
  brought to the gate's resolution by a 2x2 stride-2 conv (theta), added to a 1x1 projection of the gate (phi),
  ReLU, a 1x1 conv to one channel (psi), sigmoid, bilinear upsampling of the coefficients back to the skip, and
  the gated skip is re-projected (1x1 conv + BN, then 1x1 conv + BN + ReLU to combine);
* decoder: bilinear x2 upsampling, concatenation with the (gated) skip, two (conv3x3 + BN + ReLU);
* deep supervision: a 1x1 class projection of each decoder scale, upsampled to the input, concatenated; the
  final 1x1 conv over them (``segmentation_head``) gives the logits. This is part of the inference graph.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segdeploy.models import register_model
from segdeploy.models.weights import refuse_pretrained


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout))


def _upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class GridAttentionGate(nn.Module):
    """Additive attention gate with the skip ``x`` sampled on the gating signal's (coarser) grid."""

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int):
        super().__init__()
        self.theta = nn.Conv2d(skip_channels, inter_channels, 2, stride=2, bias=False)
        self.phi = nn.Conv2d(gate_channels, inter_channels, 1)
        self.psi = nn.Conv2d(inter_channels, 1, 1)
        self.project = nn.Sequential(nn.Conv2d(skip_channels, skip_channels, 1), nn.BatchNorm2d(skip_channels))
        self.combine = nn.Sequential(*_conv_bn_relu(skip_channels, skip_channels, kernel=1))

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        theta_x = self.theta(x)
        # the gate is already on theta_x's grid for inputs divisible by 32; resizing keeps odd sizes working
        phi_g = _upsample_to(self.phi(gate), theta_x)
        alpha = torch.sigmoid(self.psi(F.relu(theta_x + phi_g)))
        return self.combine(self.project(_upsample_to(alpha, x) * x))


class AttentionUNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, widths=(64, 128, 256, 512, 1024)):
        super().__init__()
        self.encoder = nn.ModuleList()
        cin = in_chans
        for w in widths:
            self.encoder.append(_double_conv(cin, w))
            cin = w
        self.gating = nn.Sequential(*_conv_bn_relu(widths[-1], widths[-1], kernel=1))
        # gates on the skips at 1/8, 1/4, 1/2 (the finest skip is passed through ungated, as in the paper)
        self.gates = nn.ModuleList(GridAttentionGate(widths[i], widths[i + 1], widths[i]) for i in (3, 2, 1))
        self.decoder = nn.ModuleList(_double_conv(widths[i + 1] + widths[i], widths[i]) for i in (3, 2, 1, 0))
        self.deep_supervision = nn.ModuleList(nn.Conv2d(widths[i], num_classes, 1) for i in (3, 2, 1, 0))
        self.segmentation_head = nn.Sequential(nn.Conv2d(4 * num_classes, num_classes, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # the paper's code: He init for every conv
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        x = skips.pop()
        gate = self.gating(x)
        side_outputs = []
        for level, (block, head) in enumerate(zip(self.decoder, self.deep_supervision)):
            skip = skips.pop()
            if level < len(self.gates):
                skip = self.gates[level](skip, gate)
            x = block(torch.cat([skip, _upsample_to(x, skip)], dim=1))
            gate = x
            side_outputs.append(head(x))
        size = side_outputs[-1].shape[-2:]
        side_outputs = [F.interpolate(s, size=size, mode="bilinear", align_corners=False) for s in side_outputs]
        return self.segmentation_head(torch.cat(side_outputs[::-1], dim=1))


@register_model("attention-unet", family="baseline", params_m=35.2, pretrained=None,
                source="Oktay et al., MIDL 2018 (Attention U-Net), 2D, widths 64..1024; written here",
                notes="grid attention gates on the 1/2..1/8 skips, deep-supervision fusion head; trained from scratch")
def attention_unet(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False) -> nn.Module:
    refuse_pretrained("attention-unet", pretrained)
    return AttentionUNet(num_classes, in_chans)


@register_model("attention-unet-tiny", family="baseline", tiny_of="attention-unet",
                source="attention-unet with widths 8..128 (tests, demo)")
def attention_unet_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    refuse_pretrained("attention-unet-tiny", pretrained)
    return AttentionUNet(num_classes, in_chans, widths=(8, 16, 32, 64, 128))
