"""VWFormer decode head: varying window attention (VWA) over the fused 1/8 map, then low-level enhancement.

Yan et al., "Multi-Scale Representations by Varying Window Attention for Semantic Segmentation", ICLR 2024,
configured as the authors' ``VWHead`` (mmsegmentation, ADE20K configs): 512 channels, enlarging ratios (2, 4, 8),
one attention head, a residual around each VWA branch, dropout 0.1 before the classifier.

* Multi-layer aggregation: the 1/8, 1/16 and 1/32 maps are projected to ``channels`` (per-pixel linear layers),
  resized to 1/8, concatenated and fused by a 1x1 conv-BN-ReLU.
* VWA, one branch per ratio R: the query windows are P x P tiles of the fused map; the context of each is the
  R*P x R*P window centred on it. "Pre-scaling" keeps the cost of plain local attention: an R x R conv first
  cuts the channels by R^2, and the R*P x R*P context is then folded back to P x P tokens of full width
  (space-to-depth by R), so every window attends P^2 queries to P^2 keys whatever R is.
* Copy-shift padding (CSP) fills the context that falls outside the map. It is *not* replicate padding: the
  official code pads each side with the content one context length (R*P) inwards, so a border query's context is
  the R*P window pushed back inside the map (as a cyclic rotation of it, which attention without positional
  terms cannot tell apart). When R*P exceeds the map itself, the map is first zero-padded to R*P, as there.
* Five branches are concatenated (a 1x1 short path, the pooled global context, three VWA) and fused by a 1x1
  conv; the result is upsampled to 1/4, concatenated with a 48-channel projection of the 1/4 map and fused.

Window size: the authors split the 1/8 map into 8 x 8 windows, which at their 512 x 512 crops is P = 8. Here
P = 8 is fixed instead (the paper's view of VWA as local attention, whose cost grows linearly with the image), so
the study's 512 x 512 input runs exactly the official geometry; a 1/8 map whose side is not a multiple of P is
zero-padded at the bottom/right to the next multiple and the attention output cropped back. Everything is plain
slicing, concatenation, reshapes and matmuls, so it exports to ONNX at any input size divisible by 32.

Deviation: mmcv's non-local block zero-initialises the BN after its output projection, which makes every VWA
branch start as an identity with no gradient to its projections; the BN starts at the default (weight 1) here.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import Conv2dNormActivation


def copy_shift_pad(x: torch.Tensor, dim: int, ratio: int, window: int) -> torch.Tensor:
    """Pad ``dim`` (of length n*window) by CSP so that sliding a ratio*window context with stride ``window`` gives
    one context per query window, centred on it: length (n + ratio - 1) * window afterwards."""
    span, lead = ratio * window, (ratio + 1) * window // 2
    length = x.shape[dim]
    source = x
    if span > length:  # the context is larger than the map: centre the map in a zero field of one context length
        extra = span - length
        pad = [0, 0] * (x.dim() - 1 - dim) + [extra // 2, extra - extra // 2]
        source = F.pad(x, pad)
    size = source.shape[dim]
    before = source.narrow(dim, lead, span - lead)  # positions -(span - lead)..-1 copy those ``span`` further in
    after = source.narrow(dim, size - span, span - lead)  # positions past the end copy those ``span`` back
    return torch.cat([before, x, after], dim=dim)


def context_windows(x: torch.Tensor, ratio: int, window: int, n_h: int, n_w: int) -> torch.Tensor:
    """All (ratio*window)^2 context windows at stride ``window`` of a CSP-padded map (B, c, (n_h+ratio-1)*window,
    (n_w+ratio-1)*window), as (B*n_h*n_w, c, ratio*window, ratio*window) in row-major window order: what
    ``F.unfold`` gives, written as ``ratio`` slices per axis (window-aligned, so no gather is needed)."""
    batch, chans = x.shape[0], x.shape[1]
    rows = torch.stack([x.narrow(2, a * window, n_h * window) for a in range(ratio)], dim=2)  # B c R nh*P W'
    both = torch.stack([rows.narrow(4, b * window, n_w * window) for b in range(ratio)], dim=4)  # B c R nh*P R nw*P
    both = both.reshape(batch, chans, ratio, n_h, window, ratio, n_w, window)
    # [B, c, a, i, p, b, j, q] is context row a*P+p, column b*P+q of window (i, j)
    both = both.permute(0, 3, 6, 1, 2, 4, 5, 7)
    return both.reshape(-1, chans, ratio * window, ratio * window)


def fold_context(ctx: torch.Tensor, ratio: int) -> torch.Tensor:
    """(N, c, R*P, R*P) -> (N, R*R*c, P, P): each R x R block of the context becomes one token (channel order
    (row-in-block, column-in-block, c) as in the official rearrange)."""
    n_ctx, chans, size = ctx.shape[0], ctx.shape[1], ctx.shape[2]
    window = size // ratio
    ctx = ctx.reshape(n_ctx, chans, window, ratio, window, ratio).permute(0, 3, 5, 1, 2, 4)
    return ctx.reshape(n_ctx, ratio * ratio * chans, window, window)


class VaryingWindowAttention(nn.Module):
    """One VWA branch: query windows P x P, context windows (ratio*P)^2 pre-scaled to P x P tokens; returns the
    projected attention output plus the input (the official head's ``short_cut``)."""

    def __init__(self, channels: int, ratio: int, window: int = 8, heads: int = 1):
        super().__init__()
        if channels % (ratio * ratio) or channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by ratio^2 ({ratio * ratio}) and heads")
        if window % 2:
            raise ValueError(f"window must be even so the CSP context is centred, got {window}")
        self.ratio, self.window, self.heads = ratio, window, heads
        # official padding before the R x R conv: R/2-1 before, R/2 after (same size out)
        self.pre_pad = [ratio // 2 - 1, ratio // 2] * 2 if ratio % 2 == 0 else [ratio // 2] * 4
        self.pre_scale = Conv2dNormActivation(channels, channels // (ratio * ratio), ratio, padding=0)
        self.query = nn.Conv2d(channels, channels, 1)
        self.key = nn.Conv2d(channels, channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.proj = Conv2dNormActivation(channels, channels, 1, activation_layer=None)
        for conv in (self.query, self.key, self.value):  # mmcv NonLocal2d's init of its projections
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, chans, height, width = x.shape
        win, ratio, heads = self.window, self.ratio, self.heads
        n_h, n_w = -(-height // win), -(-width // win)
        padded = F.pad(x, [0, n_w * win - width, 0, n_h * win - height])

        dim = chans // heads
        q = self.query(padded).reshape(batch, heads, dim, n_h, win, n_w, win)
        q = q.permute(0, 3, 5, 1, 4, 6, 2).reshape(-1, heads, win * win, dim)  # (B*nh*nw, heads, P*P, d)

        ctx = self.pre_scale(F.pad(padded, self.pre_pad))
        ctx = copy_shift_pad(copy_shift_pad(ctx, 3, ratio, win), 2, ratio, win)
        ctx = fold_context(context_windows(ctx, ratio, win, n_h, n_w), ratio)  # (B*nh*nw, C, P, P)
        k = self.key(ctx).reshape(-1, heads, dim, win * win)
        v = self.value(ctx).reshape(-1, heads, dim, win * win).transpose(2, 3)

        attn = torch.softmax(q @ k * dim ** -0.5, dim=-1)
        out = (attn @ v).reshape(batch, n_h, n_w, heads, win, win, dim)
        out = out.permute(0, 3, 6, 1, 4, 2, 5).reshape(batch, chans, n_h * win, n_w * win)
        return self.proj(out[:, :, :height, :width]) + x


class VWFormerHead(nn.Module):
    """Takes the four backbone maps (strides 4, 8, 16, 32); returns ``channels``-wide features at 1/4 (the
    classifier, ``segmentation_head``, lives on the model so Grad-CAM finds it by name)."""

    def __init__(self, in_channels: Sequence[int], channels: int = 512, *, ratios: Sequence[int] = (2, 4, 8),
                 window: int = 8, heads: int = 1, low_level_channels: int = 48):
        super().__init__()
        c1, c2, c3, c4 = in_channels
        # the official "MLP" layers are per-pixel linear maps with bias, i.e. 1x1 convs
        self.proj_c2, self.proj_c3, self.proj_c4 = (nn.Conv2d(c, channels, 1) for c in (c2, c3, c4))
        self.fuse = Conv2dNormActivation(3 * channels, channels, 1)
        self.short_path = Conv2dNormActivation(channels, channels, 1)
        self.image_pool = Conv2dNormActivation(channels, channels, 1)
        self.vwa = nn.ModuleList(VaryingWindowAttention(channels, r, window, heads) for r in ratios)
        self.merge = Conv2dNormActivation((2 + len(ratios)) * channels, channels, 1)
        self.proj_c1 = nn.Conv2d(c1, low_level_channels, 1)
        self.low_level_fuse = Conv2dNormActivation(channels + low_level_channels, channels, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        c1, c2, c3, c4 = features
        size = c2.shape[-2:]
        fused = self.fuse(torch.cat([
            F.interpolate(self.proj_c4(c4), size=size, mode="bilinear", align_corners=False),
            F.interpolate(self.proj_c3(c3), size=size, mode="bilinear", align_corners=False),
            self.proj_c2(c2)], dim=1))
        pooled = self.image_pool(fused.mean(dim=(2, 3), keepdim=True))  # bilinear resize of 1x1 = broadcast
        branches = [self.short_path(fused), pooled.expand(-1, -1, size[0], size[1])]
        branches += [vwa(fused) for vwa in self.vwa]
        out = self.merge(torch.cat(branches, dim=1))
        out = F.interpolate(out, size=c1.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_level_fuse(torch.cat([out, self.proj_c1(c1)], dim=1))
