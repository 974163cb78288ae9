"""Hamburger with NMF matrix decomposition (the "ham" of SegNeXt's LightHamHead).

Geng et al., "Is Attention Better Than Matrix Decomposition?", ICLR 2021, as used by Guo et al., SegNeXt
(NeurIPS 2022). The feature map X (C x HW, non-negative after a ReLU) is factorised as X ~ bases @ coef^T with
``rank`` bases by a fixed number of Lee-Seung multiplicative updates: plain batched matmuls with a static loop
count, so the block exports to ONNX as an unrolled graph.

Initial bases. The original draws fresh uniform random bases on every forward (``rand_init=True``), in training
and at test time, so two evaluations of the same image differ and an exported graph cannot match PyTorch.
Here training keeps that behaviour (the model learns to work from any initial bases, as in the original), while
eval mode starts from one fixed draw: a buffer filled from a seeded generator at construction and saved in the
checkpoint, so eval is deterministic and the ONNX graph carries the same bases as a constant. This amounts to
evaluating the original with one fixed random seed, which is what its authors recommend for testing.

``inv_t``: SegNeXt's configs pass ``inv_t=100``, but the NMF2D class of both the official code and mmseg
overrides it with 1 in its constructor, so the initial coefficients are ``softmax(X^T bases)``; we follow the
code that produced the published numbers (``inv_t=1``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

BASES_SEED = 0  # the fixed draw of eval-time initial bases (any value works; fixed so rebuilt models agree)
_EPS = 1e-6  # keeps the multiplicative updates finite where a denominator vanishes (the original's value)


def nmf_step_coef(x: torch.Tensor, bases: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """coef <- coef * (X^T B) / (coef B^T B): x (B, D, N), bases (B, D, R), coef (B, N, R)."""
    numerator = torch.bmm(x.transpose(1, 2), bases)
    denominator = torch.bmm(coef, torch.bmm(bases.transpose(1, 2), bases))
    return coef * numerator / (denominator + _EPS)


def nmf_step_bases(x: torch.Tensor, bases: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """bases <- bases * (X coef) / (B coef^T coef)."""
    numerator = torch.bmm(x, coef)
    denominator = torch.bmm(bases, torch.bmm(coef.transpose(1, 2), coef))
    return bases * numerator / (denominator + _EPS)


class NMF2D(nn.Module):
    """Low-rank reconstruction of a non-negative (B, C, H, W) map by NMF with multiplicative updates.

    ``steps`` full updates (coefficients, then bases) during training, ``eval_steps`` in eval mode, then one
    last coefficient update; returns bases @ coef^T reshaped to (B, C, H, W). Gradients flow through every
    update, as in the original (no one-step-gradient truncation).
    """

    def __init__(self, channels: int, rank: int = 64, train_steps: int = 6, eval_steps: int = 7,
                 inv_t: float = 1.0):
        super().__init__()
        self.channels, self.rank = channels, rank
        self.train_steps, self.eval_steps, self.inv_t = train_steps, eval_steps, inv_t
        # persistent: a trained checkpoint carries the exact bases its eval numbers were produced with
        self.register_buffer("bases", torch.empty(1, channels, rank))
        self.reset_bases()

    @torch.no_grad()
    def reset_bases(self, seed: int = BASES_SEED) -> None:
        """Fill the eval-time initial bases: uniform [0, 1), each basis L2-normalised (the original's init)."""
        draw = torch.rand(self.bases.shape, generator=torch.Generator().manual_seed(seed), device="cpu")
        self.bases.copy_(F.normalize(draw, dim=1))  # a no-op on the meta device, where nothing is stored

    def initial_bases(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:  # the original's rand_init: a fresh draw per forward
            return F.normalize(torch.rand(x.shape[0], self.channels, self.rank, device=x.device, dtype=x.dtype), dim=1)
        return self.bases.to(x.dtype).expand(x.shape[0], -1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # (B, C, N): D = C, the original's MD_S = 1 (one spatial group) in every config
        bases = self.initial_bases(x)
        coef = F.softmax(self.inv_t * torch.bmm(flat.transpose(1, 2), bases), dim=-1)
        for _ in range(self.train_steps if self.training else self.eval_steps):
            coef = nmf_step_coef(flat, bases, coef)
            bases = nmf_step_bases(flat, bases, coef)
        coef = nmf_step_coef(flat, bases, coef)
        return torch.bmm(bases, coef.transpose(1, 2)).reshape(x.shape)


class ConvNorm(nn.Sequential):
    """1x1 conv (no bias) + GroupNorm (+ ReLU): mmcv's ConvModule with GN, keeping its ``conv``/``gn`` names."""

    def __init__(self, cin: int, cout: int, groups: int, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.gn = nn.GroupNorm(groups, cout)
        if act:
            self.activate = nn.ReLU(inplace=True)


class Hamburger(nn.Module):
    """Lower bread (1x1 conv + ReLU), ham (NMF), upper bread (1x1 conv + GN), residual + ReLU."""

    def __init__(self, channels: int, gn_groups: int = 32, **nmf_args):
        super().__init__()
        # mmseg's ConvModule without norm: a biased conv, key ham_in.conv.{weight,bias}
        self.ham_in = nn.Sequential(OrderedDict(conv=nn.Conv2d(channels, channels, 1)))
        self.ham = NMF2D(channels, **nmf_args)
        self.ham_out = ConvNorm(channels, channels, gn_groups, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enjoy = F.relu(self.ham_in(x))  # NMF needs a non-negative input
        enjoy = self.ham_out(self.ham(enjoy))
        return F.relu(x + enjoy)
