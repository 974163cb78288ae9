"""UPerNet decode head (shared by the general-family backbones that the study pairs with UPerNet).

Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018, in the form mmsegmentation's
``UPerHead`` gives it (the head InternImage, Swin and TransNeXt report their ADE20K numbers with): a pyramid pooling
module on the 1/32 map, an FPN top-down path over the 1/4..1/16 maps, every map resized to 1/4 and fused by a
3x3 conv, then dropout and a 1x1 classifier. Written here rather than taken from smp's ``UPerNetDecoder`` because
smp adds a LayerNorm per input map (not in the original head) and pools with ``nn.AdaptiveAvgPool2d``, whose
uneven bins (a 7x7 map into 6x6 at 224 px) the ONNX exporter does not lower.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import Conv2dNormActivation


def _adaptive_pool_matrix(in_size: int, out_size: int, like: torch.Tensor) -> torch.Tensor:
    """(out_size, in_size) averaging matrix with ``adaptive_avg_pool``'s bins: floor(i*n/s) .. ceil((i+1)*n/s)."""
    idx = torch.arange(in_size, device=like.device)
    rows = []
    for i in range(out_size):
        start, end = (i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)
        rows.append(((idx >= start) & (idx < end)).to(like.dtype) / (end - start))
    return torch.stack(rows)


def adaptive_avg_pool2d(x: torch.Tensor, size: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)`` in exportable ops. H and W are static at export, so the bins are
    fixed: an even split is a plain average pool; an uneven one is two small matrix products (pooling is
    separable and linear), exact for every size."""
    height, width = x.shape[-2:]
    if height % size == 0 and width % size == 0:
        return F.avg_pool2d(x, kernel_size=(height // size, width // size))
    pool_h = _adaptive_pool_matrix(height, size, x)
    pool_w = _adaptive_pool_matrix(width, size, x)
    return pool_h @ x @ pool_w.T


class PyramidPooling(nn.Module):
    """PSPNet's pooling branches: pool to s x s, 1x1 conv-BN-ReLU, upsample back; one branch per scale."""

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int]):
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.branches = nn.ModuleList(Conv2dNormActivation(in_channels, channels, 1) for _ in self.pool_scales)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [F.interpolate(branch(adaptive_avg_pool2d(x, scale)), size=x.shape[-2:], mode="bilinear",
                              align_corners=False)
                for scale, branch in zip(self.pool_scales, self.branches)]


class UPerNetHead(nn.Module):
    """Takes the four backbone maps (strides 4, 8, 16, 32) and returns logits at 1/4 of the input resolution;
    the caller upsamples them. ``segmentation_head`` is the classifier (dropout + 1x1 conv)."""

    def __init__(self, in_channels: Sequence[int], channels: int = 512, *, num_classes: int,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1):
        super().__init__()
        *lateral_in, top_in = in_channels
        self.ppm = PyramidPooling(top_in, channels, pool_scales)
        self.ppm_bottleneck = Conv2dNormActivation(top_in + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(Conv2dNormActivation(c, channels, 1) for c in lateral_in)
        self.fpn_convs = nn.ModuleList(Conv2dNormActivation(channels, channels, 3) for _ in lateral_in)
        self.fpn_bottleneck = Conv2dNormActivation(len(in_channels) * channels, channels, 3)
        self.segmentation_head = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        *lateral_maps, top = features
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, lateral_maps)]
        laterals.append(self.ppm_bottleneck(torch.cat([top, *self.ppm(top)], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: add each coarser map to the next finer one
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode="bilinear", align_corners=False)
        outs = [conv(f) for conv, f in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]]
        return self.segmentation_head(self.fpn_bottleneck(torch.cat(outs, dim=1)))
