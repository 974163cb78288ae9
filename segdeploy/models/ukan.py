"""U-KAN-L (specialized family): the UNeXt skeleton with double-conv stages and tokenized KAN stages.

Li et al., "U-KAN Makes Strong Backbone for Medical Image Segmentation and Generation", AAAI 2025
(arXiv 2406.02918; github.com/CUHK-AIM-Group/U-KAN, Seg_UKAN/archs.py). Conv stages are two 3x3 conv + BN +
ReLU (widths D/8, D/4, D for token widths (D, D', D'')); each token block is LayerNorm, then three
KANLinear layers (efficient-kan: SiLU base branch + cubic B-spline branch, grid 5 on [-1, 1]), each followed by
a depthwise 3x3 conv + BN + ReLU, added back to its input. Decoder blocks are two 3x3 conv + BN + ReLU.

Sizes: the official code's ``--input_list`` (token widths) defaults to 128,160,256 in train.py (U-KAN, 6.3M
parameters) and to 256,320,512 in the model class; 256,320,512 gives the 25M the study reports for U-KAN-L at
512x512 (2 classes), so ``ukan-l`` uses it. Trained from scratch, as in the paper and the study.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segdeploy.models import register_model
from segdeploy.models._kan import KANLinear
from segdeploy.models._tokenized import TokenizedUNet, map_to_tokens, tokens_to_map
from segdeploy.models.weights import refuse_pretrained

UKAN_L_DIMS = (256, 320, 512)


class DWConvBNReLU(nn.Module):
    """Depthwise 3x3 conv + BN + ReLU on (B, N, C) tokens laid out as an (H, W) map."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.bn = nn.BatchNorm2d(dim)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return map_to_tokens(self.relu(self.bn(self.dwconv(tokens_to_map(x, h, w)))))


class KANLayer(nn.Module):
    """Three (KANLinear -> depthwise conv + BN + ReLU) pairs at constant width, as in U-KAN's KANLayer."""

    def __init__(self, dim: int, grid_size: int = 5, spline_order: int = 3):
        super().__init__()
        self.fcs = nn.ModuleList(KANLinear(dim, dim, grid_size=grid_size, spline_order=spline_order)
                                 for _ in range(3))
        self.dwconvs = nn.ModuleList(DWConvBNReLU(dim) for _ in range(3))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        for fc, dwconv in zip(self.fcs, self.dwconvs):
            x = dwconv(fc(x), h, w)
        return x


def _double_conv(cin: int, mid: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, mid, 3, padding=1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


def build_ukan(num_classes: int, in_chans: int, dims: tuple[int, int, int]) -> TokenizedUNet:
    c3, c4, c5 = dims
    c1, c2 = c3 // 8, c3 // 4
    encoders = [_double_conv(in_chans, c1, c1), _double_conv(c1, c2, c2), _double_conv(c2, c3, c3)]
    # U-KAN's decoder block keeps the input width for its first conv, then narrows
    decoders = [_double_conv(cin, cin, cout) for cin, cout in ((c5, c4), (c4, c3), (c3, c2), (c2, c1), (c1, c1))]
    return TokenizedUNet(num_classes, encoders, dims, KANLayer, decoders, head_in=c1)


@register_model("ukan-l", family="specialized", params_m=25.0, pretrained=None,
                source="Li et al., AAAI 2025 (U-KAN), U-KAN-L; KANLinear after efficient-kan",
                notes="token widths 256,320,512 (the official UKAN class default); trained from scratch")
def ukan_l(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False) -> nn.Module:
    refuse_pretrained("ukan-l", pretrained)
    return build_ukan(num_classes, in_chans, UKAN_L_DIMS)


@register_model("ukan-l-tiny", family="specialized", tiny_of="ukan-l",
                source="ukan-l with token widths 32,40,64 (1/8) (tests, demo)")
def ukan_l_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False) -> nn.Module:
    refuse_pretrained("ukan-l-tiny", pretrained)
    return build_ukan(num_classes, in_chans, tuple(d // 8 for d in UKAN_L_DIMS))
