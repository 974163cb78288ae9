"""The UNeXt skeleton shared by UNeXt and U-KAN: three conv stages, two tokenized stages, a mirrored decoder.

Valanarasu & Patel, "UNeXt", MICCAI 2022, Fig. 1: conv stages at 1/2, 1/4, 1/8 (conv block, 2x2 max-pool,
ReLU), then overlapping patch embeddings (3x3 conv, stride 2, LayerNorm) to tokens at 1/16 and 1/32, each
followed by one pre-norm residual token block. The decoder upsamples by 2 (conv block, bilinear, ReLU) and
adds the encoder map of the same scale; at 1/16 and 1/8 a token block runs after the addition. U-KAN
(Li et al., AAAI 2025) keeps this skeleton and swaps the blocks: double convs instead of single ones and KAN
layers instead of shifted MLPs, so each family passes its blocks in.

Tokens are (B, N, C) with N = H * W in row-major order; every reshape takes the batch from the tensor so the
exported graph keeps a dynamic batch axis.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segdeploy.models._init import transformer_conv_init


def tokens_to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


init_token_weights = transformer_conv_init  # the reference code's init for its token modules


class PatchEmbed(nn.Module):
    """Overlapping patch embedding: 3x3 conv, stride 2, then LayerNorm over channels; returns tokens, (H, W)."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(map_to_tokens(x)), (h, w)


class TokenBlock(nn.Module):
    """Pre-norm residual token block ``x + mixer(LayerNorm(x), H, W)``; the mixer is the family's layer
    (UNeXt: shifted MLP; U-KAN: KAN layers with depthwise convs)."""

    def __init__(self, dim: int, mixer: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mixer = mixer

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return x + self.mixer(self.norm(x), h, w)


class TokenizedUNet(nn.Module):
    """``encoders``: three conv blocks (input -> c1, c1 -> c2, c2 -> c3), each followed by max-pool and ReLU;
    ``dims`` = (c3, c4, c5): the last conv width and the two token widths; ``decoders``: five conv blocks
    (c5 -> c4, c4 -> c3, c3 -> c2, c2 -> c1, c1 -> c_out), each followed by 2x bilinear upsampling and ReLU;
    ``token_mixer(dim)``: a new mixer for a token block of width ``dim``. Input sides must divide by 32."""

    def __init__(self, num_classes: int, encoders: Sequence[nn.Module], dims: Sequence[int],
                 token_mixer: Callable[[int], nn.Module], decoders: Sequence[nn.Module], head_in: int):
        super().__init__()
        c3, c4, c5 = dims
        self.encoders = nn.ModuleList(encoders)
        self.patch_embed3 = PatchEmbed(c3, c4)
        self.block1 = TokenBlock(c4, token_mixer(c4))
        self.norm3 = nn.LayerNorm(c4)
        self.patch_embed4 = PatchEmbed(c4, c5)
        self.block2 = TokenBlock(c5, token_mixer(c5))
        self.norm4 = nn.LayerNorm(c5)
        self.decoders = nn.ModuleList(decoders)
        self.dblock1 = TokenBlock(c4, token_mixer(c4))
        self.dnorm3 = nn.LayerNorm(c4)
        self.dblock2 = TokenBlock(c3, token_mixer(c3))
        self.dnorm4 = nn.LayerNorm(c3)
        for module in (self.patch_embed3, self.patch_embed4, self.block1, self.block2, self.dblock1, self.dblock2):
            module.apply(init_token_weights)
        # named like smp's models: tools (Grad-CAM layer choice) find the classifier under one name
        self.segmentation_head = nn.Sequential(nn.Conv2d(head_in, num_classes, 1))

    @staticmethod
    def _tokens(block: TokenBlock, norm: nn.LayerNorm, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return tokens_to_map(norm(block(x, h, w)), h, w)

    @staticmethod
    def _up(decoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.interpolate(decoder(x), scale_factor=2.0, mode="bilinear", align_corners=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder in self.encoders:  # 1/2, 1/4, 1/8
            x = F.relu(F.max_pool2d(encoder(x), 2, 2))
            skips.append(x)
        t1, t2, t3 = skips
        tokens, (h, w) = self.patch_embed3(x)  # 1/16
        t4 = self._tokens(self.block1, self.norm3, tokens, h, w)
        tokens, (h, w) = self.patch_embed4(t4)  # 1/32: the bottleneck
        x = self._tokens(self.block2, self.norm4, tokens, h, w)

        dec1, dec2, dec3, dec4, dec5 = self.decoders
        x = self._up(dec1, x) + t4
        x = self._tokens(self.dblock1, self.dnorm3, map_to_tokens(x), *x.shape[-2:])
        x = self._up(dec2, x) + t3
        x = self._tokens(self.dblock2, self.dnorm4, map_to_tokens(x), *x.shape[-2:])
        x = self._up(dec3, x) + t2
        x = self._up(dec4, x) + t1
        return self.segmentation_head(self._up(dec5, x))
