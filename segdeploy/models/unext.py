"""UNeXt (baseline family): conv stages + tokenized shifted-MLP stages.

Valanarasu & Patel, "UNeXt: MLP-based Rapid Medical Image Segmentation Network", MICCAI 2022. Widths as in the
paper and the authors' ``UNext`` (github.com/jeya-maria-jose/UNeXt-pytorch): conv stages 16, 32, 128, tokens
160 and 256, decoder 256 -> 160 -> 128 -> 32 -> 16 -> 16; 1.47M parameters. The ``-tiny`` configuration is the
authors' ``UNext_S`` (conv 8, 16, 32, tokens 64, 128).

Shifted MLP: channels are split into ``shift_size`` groups and group j is shifted by j - shift_size // 2 pixels
(zero fill) along H before fc1 and along W before fc2, with a depthwise 3x3 conv + GELU between. The reference
code zero-pads, rolls and crops; a zero-filled shift is the same numbers, written here as pad + slice, which
exports to plain Pad/Slice without a roll.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segdeploy.models import register_model
from segdeploy.models._tokenized import TokenizedUNet, map_to_tokens, tokens_to_map
from segdeploy.models.weights import refuse_pretrained


def shift_channel_groups(x: torch.Tensor, shift_size: int, dim: int) -> torch.Tensor:
    """(B, C, H, W): channel group j (``torch.chunk`` into ``shift_size``) moves by j - shift_size // 2 along
    ``dim`` (2 = H, 3 = W); vacated positions are zero."""
    pad = shift_size // 2
    size = x.shape[dim]
    padding = (0, 0, pad, pad) if dim == 2 else (pad, pad)
    groups = torch.chunk(F.pad(x, padding), shift_size, dim=1)
    # group j's output position i reads input i - shift, i.e. padded index pad - shift + i
    shifted = [g.narrow(dim, pad - shift, size) for g, shift in zip(groups, range(-pad, pad + 1))]
    return torch.cat(shifted, dim=1)


class ShiftedMLP(nn.Module):
    """shift along H -> fc1 -> depthwise 3x3 conv -> GELU -> shift along W -> fc2, on (B, N, C) tokens."""

    def __init__(self, dim: int, shift_size: int = 5):
        super().__init__()
        self.shift_size = shift_size
        self.fc1 = nn.Linear(dim, dim)  # the paper's MLP ratio is 1
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.fc1(map_to_tokens(shift_channel_groups(tokens_to_map(x, h, w), self.shift_size, dim=2)))
        x = self.act(self.dwconv(tokens_to_map(x, h, w)))
        return self.fc2(map_to_tokens(shift_channel_groups(x, self.shift_size, dim=3)))


def _conv_bn(cin: int, cout: int, bn: bool = True) -> nn.Module:
    conv = nn.Conv2d(cin, cout, 3, padding=1)
    return nn.Sequential(conv, nn.BatchNorm2d(cout)) if bn else conv


def build_unext(num_classes: int, in_chans: int, conv: tuple[int, int, int], tokens: tuple[int, int]) -> TokenizedUNet:
    c1, c2, c3 = conv
    c4, c5 = tokens
    encoders = [_conv_bn(in_chans, c1), _conv_bn(c1, c2), _conv_bn(c2, c3)]
    # the last decoder conv has no BatchNorm in the reference model
    decoders = [_conv_bn(c5, c4), _conv_bn(c4, c3), _conv_bn(c3, c2), _conv_bn(c2, c1), _conv_bn(c1, c1, bn=False)]
    return TokenizedUNet(num_classes, encoders, (c3, c4, c5), ShiftedMLP, decoders, head_in=c1)


@register_model("unext", family="baseline", params_m=1.47, pretrained=None,
                source="Valanarasu & Patel, MICCAI 2022 (UNeXt)",
                notes="trained from scratch as in the paper; widths of the authors' UNext (16,32,128 | 160,256)")
def unext(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False) -> nn.Module:
    refuse_pretrained("unext", pretrained)
    return build_unext(num_classes, in_chans, conv=(16, 32, 128), tokens=(160, 256))


@register_model("unext-tiny", family="baseline", tiny_of="unext",
                source="unext with the authors' UNext_S widths (8,16,32 | 64,128) (tests, demo)")
def unext_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False) -> nn.Module:
    refuse_pretrained("unext-tiny", pretrained)
    return build_unext(num_classes, in_chans, conv=(8, 16, 32), tokens=(64, 128))
