"""HiFormer building blocks: the Double-Level Fusion (DLF) module and the convolutional decoder.

Heidari et al., "HiFormer: Hierarchical Multi-scale Representations Using Transformers for Medical Image
Segmentation", WACV 2023. The DLF follows CrossViT's multi-scale block: each level's class token is projected to
the other level's width, attends (as the only query) over the other level's patch tokens, is projected back and
re-joined with its own patch tokens; a Transformer encoder per level then spreads the fused class token into that
level's patch tokens.

Deviation from the reference code (github amirhossein-kz/HiFormer, copied unchanged by the study's code base):
its ``MultiScaleBlock.forward`` computes the per-level Transformer blocks and then returns their *inputs*, and the
decoder drops the class tokens, so neither the blocks nor the class-token fusion reach the output there (their
parameters are counted in the paper's 25.5M but never trained). Here the blocks' outputs are used, which makes
the DLF fusion take effect as the paper describes and keeps the parameter count the study reports.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block


class ClassTokenCrossAttention(nn.Module):
    """Multi-head attention whose single query is the first (class) token; keys/values are all tokens."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.wq = nn.Linear(dim, dim, bias=qkv_bias)
        self.wk = nn.Linear(dim, dim, bias=qkv_bias)
        self.wv = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        head_dim = C // self.num_heads
        q = self.wq(x[:, :1]).reshape(B, 1, self.num_heads, head_dim).transpose(1, 2)
        k = self.wk(x).reshape(B, N, self.num_heads, head_dim).transpose(1, 2)
        v = self.wv(x).reshape(B, N, self.num_heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, 1, head_dim), scale head_dim ** -0.5
        return self.proj(out.transpose(1, 2).reshape(B, 1, C))


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention with a residual on the class token only (HiFormer-B/S/L use no MLP here; their
    DLF stochastic depth is 0)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ClassTokenCrossAttention(dim, num_heads, qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] + self.attn(self.norm1(x))


def _norm_act_linear(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(cin), nn.GELU(), nn.Linear(cin, cout))


class DoubleLevelFusion(nn.Module):
    """One DLF block over two token sequences ``[cls, patches...]`` of widths ``dims`` (small, large level).

    ``depths`` = Transformer blocks per level after the fusion; ``mlp_ratios`` their MLP ratios.
    """

    def __init__(self, dims: tuple[int, int], num_heads: tuple[int, int], depths: tuple[int, int],
                 mlp_ratios: tuple[float, float], qkv_bias: bool = True):
        super().__init__()
        self.projs = nn.ModuleList(_norm_act_linear(dims[i], dims[1 - i]) for i in range(2))
        self.fusion = nn.ModuleList(
            CrossAttentionBlock(dims[1 - i], num_heads[1 - i], qkv_bias) for i in range(2))
        self.revert_projs = nn.ModuleList(_norm_act_linear(dims[1 - i], dims[i]) for i in range(2))
        self.blocks = nn.ModuleList(
            nn.Sequential(*[Block(dims[i], num_heads[i], mlp_ratio=mlp_ratios[i], qkv_bias=qkv_bias)
                                  for _ in range(depths[i])])
            for i in range(2))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for i in range(2):
            other = xs[1 - i]
            cls = self.projs[i](xs[i][:, :1])  # this level's class token, at the other level's width
            fused = self.fusion[i](torch.cat((cls, other[:, 1:]), dim=1))
            outs.append(torch.cat((self.revert_projs[i](fused), xs[i][:, 1:]), dim=1))
        return [blocks(x) for x, blocks in zip(outs, self.blocks)]


class ConvUpsample(nn.Sequential):
    """HiFormer's decoder tower: (3x3 conv, GroupNorm, ReLU[, bilinear x2]) per output width."""

    def __init__(self, cin: int, widths: tuple[int, ...], upsample: bool, gn_groups: int = 32):
        layers = []
        for width in widths:
            layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.GroupNorm(gn_groups, width),
                       nn.ReLU(inplace=True)]
            if upsample:
                layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            cin = width
        super().__init__(*layers)
