"""DCNv3, InternImage's deformable convolution, in plain PyTorch ops (``F.grid_sample``) so that it exports to ONNX.

Wang et al., "InternImage: Exploring Large-Scale Vision Foundation Models with Deformable Convolutions", CVPR 2023.
The original ships the sampling core as a custom CUDA op; :func:`dcnv3` computes the same thing. Per group, each
output pixel samples K = kernel^2 points of the input at

    reference + (dilation grid + learned offset) * offset_scale          (pixel units, x before y)

bilinearly with zeros outside the image, and sums them weighted by the (softmax-normalised) modulation mask.
The kernel points are ordered x-major (x index outer, y inner) and the offsets are laid out (group, point, xy),
as in the original, so its checkpoints load unchanged. tests/test_ops_dcnv3.py checks it against an explicit
loop over pixels and points in float64.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops.misc import Permute


def _reference_locations(out_h: int, out_w: int, kernel_size: int, stride: int, pad: int, dilation: int,
                         offset_scale: float, like: torch.Tensor) -> torch.Tensor:
    """(out_h, out_w, K, 2) sampling locations (x, y) in input pixels before the learned offsets."""
    centre = (dilation * (kernel_size - 1)) // 2
    ys = torch.arange(out_h, device=like.device, dtype=like.dtype) * stride - pad + centre
    xs = torch.arange(out_w, device=like.device, dtype=like.dtype) * stride - pad + centre
    taps = (torch.arange(kernel_size, device=like.device, dtype=like.dtype) * dilation - centre) * offset_scale
    tap_x = taps.repeat_interleave(kernel_size)  # x-major point order: point p = ix * kernel + iy
    tap_y = taps.repeat(kernel_size)
    loc_x = xs[None, :, None] + tap_x[None, None, :]
    loc_y = ys[:, None, None] + tap_y[None, None, :]
    return torch.stack(torch.broadcast_tensors(loc_x, loc_y), dim=-1)


def dcnv3(value: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, *, kernel_size: int, group: int,
          stride: int = 1, pad: int = 1, dilation: int = 1, offset_scale: float = 1.0) -> torch.Tensor:
    """DCNv3 sampling core, channels-last like the original op.

    value (N, H, W, C); offset (N, Ho, Wo, group * K * 2); mask (N, Ho, Wo, group * K), already normalised
    -> (N, Ho, Wo, C). Ho and Wo follow the convolution arithmetic of ``kernel_size, stride, pad, dilation``.
    """
    batch, height, width, channels = value.shape
    out_h, out_w = offset.shape[1:3]
    points = kernel_size * kernel_size
    group_channels = channels // group
    base = _reference_locations(out_h, out_w, kernel_size, stride, pad, dilation, offset_scale, value)
    loc = base[None, :, :, None] + offset.reshape(batch, out_h, out_w, group, points, 2) * offset_scale
    # grid_sample with align_corners=False puts pixel p's centre at (2p + 1) / size - 1
    size = torch.tensor([width, height], device=value.device, dtype=value.dtype)
    grid = (2 * loc + 1) / size - 1
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(-1, out_h * out_w, points, 2)  # (N*G, Ho*Wo, K, 2)
    per_group = value.reshape(batch, height, width, group, group_channels).permute(0, 3, 4, 1, 2)
    sampled = F.grid_sample(per_group.reshape(-1, group_channels, height, width), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=False)  # (N*G, gc, Ho*Wo, K)
    weights = mask.reshape(batch, out_h * out_w, group, 1, points).permute(0, 2, 3, 1, 4).reshape(
        -1, 1, out_h * out_w, points)
    out = (sampled * weights).sum(-1)  # (N*G, gc, Ho*Wo)
    return out.reshape(batch, channels, out_h, out_w).permute(0, 2, 3, 1)


class DCNv3(nn.Module):
    """The DCNv3 layer: input projection, offsets and masks predicted from a depthwise-conv context, the
    deformable sampling core, output projection. Channels-last in and out; submodule names match the
    original (``dw_conv``, ``offset``, ``mask``, ``input_proj``, ``output_proj``)."""

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1, pad: int = 1, dilation: int = 1,
                 group: int = 4, offset_scale: float = 1.0):
        super().__init__()
        if channels % group:
            raise ValueError(f"channels ({channels}) must be divisible by group ({group})")
        self.kernel_size, self.stride, self.pad, self.dilation = kernel_size, stride, pad, dilation
        self.group, self.offset_scale = group, offset_scale
        self.dw_conv = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2, groups=channels),
            nn.Sequential(Permute([0, 2, 3, 1]), nn.LayerNorm(channels, eps=1e-6)),
            nn.GELU(),
        )
        points = kernel_size * kernel_size
        self.offset = nn.Linear(channels, group * points * 2)
        self.mask = nn.Linear(channels, group * points)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the original zeroes offset and mask weights (a regular grid, uniform modulation); near-zero weights
        # start from almost the same sampling (offsets ~0.1 px) but give the context branch (dw_conv) a
        # gradient from the first step, so no parameter sits out step one
        for layer in (self.offset, self.mask):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        for layer in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        value = self.input_proj(x)
        context = self.dw_conv(x.permute(0, 3, 1, 2))
        offset = self.offset(context)
        mask = self.mask(context).reshape(batch, height, width, self.group, -1).softmax(-1)
        out = dcnv3(value, offset, mask.flatten(3), kernel_size=self.kernel_size, group=self.group,
                    stride=self.stride, pad=self.pad, dilation=self.dilation, offset_scale=self.offset_scale)
        return self.output_proj(out)
