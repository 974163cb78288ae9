"""TransNeXt's aggregated attention in plain, exportable PyTorch ops.

Shi, "TransNeXt: Robust Foveal Visual Perception for Vision Transformers", CVPR 2024. Each query attends to its
3x3 sliding-window neighbourhood (fine) and to average-pooled keys/values of the whole map (coarse) in ONE
softmax over both sets. The original computes the sliding-window part with a CUDA kernel (or ``nn.Unfold``);
here the neighbourhood is gathered by zero-padding the key/value map and taking the 9 statically shifted slices,
which exports to ONNX as Pad + Slice and runs on every backend.

Position biases without a baked-in table size: the original builds its continuous position bias (CPB) index
for one training resolution and bilinearly resizes the bias at other sizes (or, in its "extrapolation" mode,
rebuilds the index on every forward with ``torch.unique``). Here the relative coordinates are computed for the
feature map actually seen (H and W are static Python ints, also at export), per axis, in numpy: the bias MLP runs
on the (unique h offsets) x (unique w offsets) grid and two gathers expand it to (queries x keys). That is the
extrapolation mode's arithmetic, exact at every input size, with tiny index constants in the ONNX file. The
window bias (one learnable value per head and window offset) has no size at all.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def window_neighbours(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, window**2, H*W): each pixel's window x window neighbourhood, zero outside the map,
    offsets in row-major order (the order of ``F.unfold``)."""
    height, width = x.shape[-2:]
    r = window // 2
    padded = F.pad(x, (r, r, r, r))
    shifted = [padded[:, :, i:i + height, j:j + width] for i in range(window) for j in range(window)]
    return torch.stack(shifted, dim=2).flatten(3)


@functools.lru_cache(maxsize=64)
def _window_valid(height: int, width: int, window: int) -> np.ndarray:
    r = window // 2
    ys, xs = np.divmod(np.arange(height * width), width)
    offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    return np.stack([(ys + dy >= 0) & (ys + dy < height) & (xs + dx >= 0) & (xs + dx < width)
                     for dy, dx in offsets])


def window_valid(height: int, width: int, window: int, device: torch.device) -> torch.Tensor:
    """(window**2, H*W) bool: which neighbour offsets of each pixel lie inside the map. Built in numpy from the
    static size, so the exported graph holds it as one constant."""
    return torch.as_tensor(_window_valid(height, width, window), device=device)


def aggregated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_pool: torch.Tensor,
                         v_pool: torch.Tensor, window_bias: torch.Tensor, pool_bias: torch.Tensor,
                         window_extra: torch.Tensor, size: tuple[int, int], window: int = 3) -> torch.Tensor:
    """The attention core of TransNeXt's aggregated attention (no projections).

    q, k, v: (B, heads, N, d) per-pixel queries (already scaled), keys, values, N = H*W of ``size``;
    k_pool, v_pool: (B, heads, P, d) pooled keys/values; window_bias: (heads, S), S = window**2;
    pool_bias: (heads, N, P); window_extra: (B, heads, N, S), added to the window's attention weights after the
    softmax (TransNeXt's query-dependent "learnable tokens" term). Returns (B, heads, N, d):

        logits = [q.k_s + window_bias_s for in-map neighbours s] ++ [q.k_pool_p + pool_bias_p]
        a = softmax(logits);  out = sum_s (a_s + window_extra_s) v_s + sum_p a_p v_pool_p
    """
    batch, heads, n, d = q.shape
    height, width = size
    s = window * window

    kv_map = torch.cat([k, v], dim=1).transpose(-1, -2).reshape(batch, 2 * heads * d, height, width)
    k_near, v_near = window_neighbours(kv_map, window).reshape(batch, 2 * heads, d, s, n).chunk(2, dim=1)

    # (B, h, d, 1, N) * (B, h, d, S, N) summed over d: every query against its own S neighbours
    logits_window = (q.transpose(-1, -2).unsqueeze(3) * k_near).sum(2) + window_bias[:, :, None]
    logits_window = logits_window.masked_fill(~window_valid(height, width, window, q.device), float("-inf"))
    logits_pool = k_pool @ q.transpose(-1, -2) + pool_bias.transpose(-1, -2)  # (B, h, P, N)
    attn = torch.cat([logits_window, logits_pool], dim=2).softmax(dim=2)
    attn_window, attn_pool = attn[:, :, :s], attn[:, :, s:]
    weights = (attn_window + window_extra.transpose(-1, -2)).unsqueeze(2)  # (B, h, 1, S, N)
    # out-of-map neighbours are zero values, so the extra term adds nothing there
    out = (weights * v_near).sum(3) + v_pool.transpose(-1, -2) @ attn_pool  # (B, h, d, N)
    return out.transpose(-1, -2)


def _pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d``; as a plain average pool when the bins are even (every input size divisible by
    32), which the ONNX exporter lowers, unlike uneven adaptive bins."""
    height, width = x.shape[-2:]
    if height % size[0] == 0 and width % size[1] == 0:
        return F.avg_pool2d(x, kernel_size=(height // size[0], width // size[1]))
    return F.adaptive_avg_pool2d(x, size)


def _axis_offsets(query_len: int, key_len: int, pretrain_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-spaced relative offsets along one axis between query pixels and the centres of ``key_len`` adaptive-
    average-pool bins; returns (unique offsets (U,), index (query_len, key_len) into them)."""
    starts = (np.arange(key_len) * query_len) // key_len
    ends = -((-(np.arange(key_len) + 1) * query_len) // key_len)
    centres = (starts + ends - 1) / 2.0  # mean position of each pooled bin
    rel = ((np.arange(query_len)[:, None] - centres[None, :]) / (pretrain_len - 1) * 8).astype(np.float32)
    unique, index = np.unique(rel, return_inverse=True)
    unique = np.sign(unique) * np.log2(np.abs(unique) + 1.0) / np.log2(8.0)
    return unique, index.reshape(query_len, key_len)


@functools.lru_cache(maxsize=64)
def _offset_tables(query_size: tuple[int, int], key_size: tuple[int, int], pretrain_len: int):
    """The CPB MLP's input grid (Uh, Uw, 2) of (dh, dw) offsets and the per-axis indices into it."""
    uh, ih = _axis_offsets(query_size[0], key_size[0], pretrain_len)
    uw, iw = _axis_offsets(query_size[1], key_size[1], pretrain_len)
    grid = np.stack(np.meshgrid(uh, uw, indexing="ij"), axis=-1).astype(np.float32)
    return grid, ih, iw


def continuous_position_bias(fc1: nn.Linear, fc2: nn.Linear, query_size: tuple[int, int],
                             key_size: tuple[int, int], pretrain_size: int, device: torch.device) -> torch.Tensor:
    """(heads, Hq*Wq, Hk*Wk) bias from the CPB MLP ``fc2(relu(fc1(offset)))`` at each query/pooled-key offset.

    ``pretrain_size`` (the feature size at pre-training) only scales the offsets, as in the original. The MLP
    runs once per distinct (dh, dw) pair; two gathers expand the result to every query/key pair."""
    (hq, wq), (hk, wk) = query_size, key_size
    grid, ih, iw = _offset_tables(tuple(query_size), tuple(key_size), pretrain_size)
    table = fc2(F.relu(fc1(torch.as_tensor(grid, device=device, dtype=fc1.weight.dtype))))  # (Uh, Uw, heads)
    bias = table[torch.as_tensor(ih, device=device)][:, :, torch.as_tensor(iw, device=device)]  # (Hq,Hk,Wq,Wk,h)
    return bias.permute(4, 0, 2, 1, 3).reshape(table.shape[-1], hq * wq, hk * wk)


class AggregatedAttention(nn.Module):
    """TransNeXt's pixel-focused attention for stages 1-3 (sr_ratio > 1). Attribute names follow the official
    code so its ImageNet checkpoints load unchanged."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, pretrain_size: int, window: int = 3,
                 qkv_bias: bool = True, cpb_hidden: int = 512):
        super().__init__()
        assert dim % num_heads == 0 and window % 2 == 1
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.sr_ratio, self.pretrain_size, self.window = sr_ratio, pretrain_size, window
        local_len = window * window
        # softplus(temperature) starts at 1/0.24, the original's initial query scale
        self.temperature = nn.Parameter(torch.full((num_heads, 1, 1), math.log(math.expm1(1 / 0.24))))
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.query_embedding = nn.Parameter(nn.init.trunc_normal_(torch.empty(num_heads, 1, self.head_dim), std=0.02))
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, kernel_size=1)
        self.norm = nn.LayerNorm(dim)
        self.cpb_fc1 = nn.Linear(2, cpb_hidden)
        self.cpb_fc2 = nn.Linear(cpb_hidden, num_heads)
        self.relative_pos_bias_local = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(num_heads, local_len), std=0.0004))
        self.learnable_tokens = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(num_heads, self.head_dim, local_len), std=0.02))
        self.learnable_bias = nn.Parameter(torch.zeros(num_heads, 1, local_len))

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, n, c = x.shape
        heads, d = self.num_heads, self.head_dim
        pool_size = (max(height // self.sr_ratio, 1), max(width // self.sr_ratio, 1))
        pool_len = pool_size[0] * pool_size[1]

        # length scaling: log(number of keys each query sees), so the softmax's entropy does not drift with size
        seen = _window_valid(height, width, self.window).sum(0) + pool_len  # (N,)
        length_scale = torch.as_tensor(np.log(seen)[:, None], device=x.device, dtype=x.dtype)
        q_norm = F.normalize(self.q(x).reshape(batch, n, heads, d).transpose(1, 2), dim=-1)
        q = (q_norm + self.query_embedding) * F.softplus(self.temperature) * length_scale

        k, v = self.kv(x).reshape(batch, n, 2 * heads, d).transpose(1, 2).chunk(2, dim=1)

        pooled = _pool(F.gelu(self.sr(x.transpose(1, 2).reshape(batch, c, height, width))), pool_size)
        pooled = self.norm(pooled.flatten(2).transpose(1, 2))
        k_pool, v_pool = self.kv(pooled).reshape(batch, pool_len, 2 * heads, d).transpose(1, 2).chunk(2, dim=1)

        pool_bias = continuous_position_bias(self.cpb_fc1, self.cpb_fc2, (height, width), pool_size,
                                             self.pretrain_size, x.device)
        window_extra = q_norm @ self.learnable_tokens + self.learnable_bias  # (B, h, N, S)
        out = aggregated_attention(q, F.normalize(k, dim=-1), v, F.normalize(k_pool, dim=-1), v_pool,
                                   self.relative_pos_bias_local, pool_bias, window_extra, (height, width),
                                   self.window)
        return self.proj(out.transpose(1, 2).reshape(batch, n, c))
