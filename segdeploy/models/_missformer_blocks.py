"""MISSFormer building blocks: Enhanced Transformer Block, MiT-style encoder, Enhanced Transformer Context Bridge.

Huang et al., "MISSFormer: An Effective Transformer for 2D Medical Image Segmentation", IEEE TMI 2022, following
the authors' code (github ZhifangDeng/MISSFormer) and the study's adaptation of it (sizes computed from the
input size instead of hard-coded for 224). Tokens are (B, N, C), row-major over the map, as in SegFormer.

The encoder is SegFormer's Mix Transformer with its Mix-FFN replaced by the Enhanced Mix-FFN (ReMix-FFN: the
depth-wise conv gets a skip connection and a LayerNorm before the GELU). Module names follow SegFormer's MiT
(``patch_embed1``, ``block1.0.attn.q``, ``block1.0.mlp.dwconv.dwconv``, ``norm1`` ...), which are also smp's, so
MiT-B1 ImageNet weights load by name; only the ReMix-FFN LayerNorms (``mlp.norm1``) have no counterpart.

The reference ReMix-FFN also creates two LayerNorms it never uses (``norm2``, ``norm3``); they are left out.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DWConv(nn.Module):
    """3x3 depth-wise conv on tokens (B, H*W, C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, _, C = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(B, C, H, W)).flatten(2).transpose(1, 2)


class ReMixFFN(nn.Module):
    """Enhanced Mix-FFN: fc1 -> LayerNorm(dwconv(h) + h) -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(self.act(self.norm1(self.dwconv(h, H, W) + h)))


def _attend(q: torch.Tensor, kv: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention of queries (B, N, C) over projected keys/values (B, M, 2C); returns (B, N, C)."""
    B, N, C = q.shape
    q = q.reshape(B, N, heads, C // heads).transpose(1, 2)
    k, v = kv.reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)


class EfficientSelfAttention(nn.Module):
    """SegFormer's efficient self-attention: keys/values from a map reduced by a strided conv (``sr_ratio``)."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, _, C = x.shape
        kv_in = x
        if self.sr_ratio > 1:
            kv_in = self.norm(self.sr(x.transpose(1, 2).reshape(B, C, H, W)).flatten(2).transpose(1, 2))
        return self.proj(_attend(self.q(x), self.kv(kv_in), self.num_heads))


class EnhancedTransformerBlock(nn.Module):
    """Pre-norm efficient self-attention and ReMix-FFN (ratio 4), both residual."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = ReMixFFN(dim, 4 * dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), H, W)
        return x + self.mlp(self.norm2(x), H, W)


class OverlapPatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int, kernel: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class MiTEncoder(nn.Module):
    """Four stages (strides 4, 8, 16, 32) of overlapping patch embedding, Enhanced Transformer Blocks and a final
    LayerNorm. Returns each stage's tokens (B, H_i * W_i, dims[i])."""

    SR_RATIOS = (8, 4, 2, 1)

    def __init__(self, in_chans: int, dims, depths, heads):
        super().__init__()
        for i in range(4):
            kernel, stride = (7, 4) if i == 0 else (3, 2)
            setattr(self, f"patch_embed{i + 1}",
                    OverlapPatchEmbed(in_chans if i == 0 else dims[i - 1], dims[i], kernel, stride))
            setattr(self, f"block{i + 1}", nn.ModuleList(
                EnhancedTransformerBlock(dims[i], heads[i], self.SR_RATIOS[i]) for _ in range(depths[i])))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dims[i]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        B, _, H, W = x.shape
        outs = []
        for i in range(1, 5):
            H, W = H // (4 if i == 1 else 2), W // (4 if i == 1 else 2)
            tokens = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                tokens = block(tokens, H, W)
            tokens = getattr(self, f"norm{i}")(tokens)
            outs.append(tokens)
            x = tokens.transpose(1, 2).reshape(B, -1, H, W)
        return outs


class ContextBridge(nn.Module):
    """Enhanced Transformer Context Bridge over the four encoder levels.

    Every level's tokens (B, s_i^2, f_i * C) are cut into f_i tokens of width C = dims[0] per position and all
    levels concatenated into one sequence, as the reference code does. Each bridge layer: efficient attention of
    all tokens over a reduced sequence (levels 1-3 reduced by strided convs of 8/4/2 on their maps, level 4 as
    is), then a ReMix-FFN per level on that level's map. Returns each level's tokens in the input layout.
    """

    def __init__(self, dims, sizes, depth: int = 4, num_heads: int = 1):
        super().__init__()
        width = dims[0]
        self.width, self.sizes = width, tuple(sizes)
        self.factors = tuple(d // width for d in dims)
        if any(f * width != d for f, d in zip(self.factors, dims)):
            raise ValueError(f"encoder widths {dims} must be multiples of the first")
        self.layers = nn.ModuleList(BridgeLayer(width, self.factors, self.sizes, num_heads) for _ in range(depth))

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        B = levels[0].shape[0]
        x = torch.cat([t.reshape(B, -1, self.width) for t in levels], dim=1)
        for layer in self.layers:
            x = layer(x)
        return [part.reshape(B, s * s, f * self.width)
                for part, s, f in zip(_split_levels(x, self.factors, self.sizes), self.sizes, self.factors)]


def _split_levels(x: torch.Tensor, factors, sizes) -> list[torch.Tensor]:
    counts = [f * s * s for f, s in zip(factors, sizes)]
    return list(torch.split(x, counts, dim=1))


class BridgeLayer(nn.Module):
    SR_RATIOS = (8, 4, 2)  # per level 1-3; level 4 enters the keys/values unreduced

    def __init__(self, width: int, factors, sizes, num_heads: int):
        super().__init__()
        self.width, self.factors, self.sizes, self.num_heads = width, factors, sizes, num_heads
        self.norm1 = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.sr = nn.ModuleList(nn.Conv2d(f * width, f * width, r, stride=r)
                                for f, r in zip(factors[:3], self.SR_RATIOS))
        self.sr_norm = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.mixffn = nn.ModuleList(ReMixFFN(f * width, 4 * f * width) for f in factors)

    def _reduced(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[0], self.width
        parts = _split_levels(x, self.factors, self.sizes)
        reduced = []
        for part, sr, f, s in zip(parts, self.sr, self.factors, self.sizes):
            level_map = part.reshape(B, s, s, f * C).permute(0, 3, 1, 2)
            # (B, f*C, h, w) -> (B, C, f*h*w): the reference code's channel-major regrouping, kept as is
            reduced.append(sr(level_map).reshape(B, C, -1).transpose(1, 2))
        reduced.append(parts[3])
        return self.sr_norm(torch.cat(reduced, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[0], self.width
        normed = self.norm1(x)
        x = x + self.proj(_attend(self.q(normed), self.kv(self._reduced(normed)), self.num_heads))
        parts = _split_levels(self.norm2(x), self.factors, self.sizes)
        mixed = [ffn(part.reshape(B, s * s, f * C), s, s).reshape(B, -1, C)
                 for part, ffn, f, s in zip(parts, self.mixffn, self.factors, self.sizes)]
        return x + torch.cat(mixed, dim=1)
