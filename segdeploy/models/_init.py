"""The weight init shared by the PVT/Swin/SegFormer lineage of reference code (several families here)."""

from __future__ import annotations

import math

import torch.nn as nn
from timm.layers import trunc_normal_


def transformer_init(m: nn.Module, *, fan_out_conv: bool = False) -> None:
    """Truncated-normal (std 0.02) Linear with zero bias and unit LayerNorm; with ``fan_out_conv``, also He-normal
    convs over fan-out per group. Use as ``model.apply(transformer_init)``."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif fan_out_conv and isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def transformer_conv_init(m: nn.Module) -> None:
    transformer_init(m, fan_out_conv=True)
