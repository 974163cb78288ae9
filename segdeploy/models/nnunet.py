"""nnU-Net's 2D plain conv U-Net (baseline family).

Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image segmentation",
Nature Methods 2021; the network is ``PlainConvUNet`` of nnU-Net v2 (dynamic_network_architectures), configured
the way nnU-Net's default 2D planner configures it for a square ``img_size`` patch:

* stages: keep halving while the feature map edge is >= 2 x 4 (``UNet_featuremap_min_edge_length = 4``), so a
  512 patch gets 7 downsamplings (8 stages, bottleneck 4x4), 256 gets 6, 64 gets 4;
* features per stage ``min(32 * 2**s, 512)``: 32, 64, 128, 256, 512, 512, 512, 512 at 512;
* every stage: two (conv3x3 with bias + InstanceNorm(affine) + LeakyReLU(0.01)); downsampling by the first conv
  of a stage (stride 2); upsampling by a transposed conv (kernel = stride = 2) to the skip's width, then
  concatenation and two convs; He init with negative slope 0.01 as ``InitWeights_He(1e-2)``.

Deep supervision is a training-time loss on extra 1x1 heads; the common protocol here trains with one loss and
nnU-Net predicts with the highest-resolution head only, so only that head (``segmentation_head``) is built.
nnU-Net pads an input to a multiple of the total stride before predicting; ``forward`` does the same (zeros)
and crops the logits back.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segdeploy.models import register_model
from segdeploy.models.weights import refuse_pretrained

MIN_EDGE = 4  # nnU-Net's UNet_featuremap_min_edge_length


def num_downsamplings(img_size: int, min_edge: int = MIN_EDGE) -> int:
    """nnU-Net's ``get_pool_and_conv_props`` for an isotropic 2D patch: pool while the edge is >= 2 x min_edge."""
    n, size = 0, float(img_size)
    while size >= 2 * min_edge:
        size = -(-size // 2)  # nnU-Net rounds the halved edge up
        n += 1
    return n


def _conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
                         nn.InstanceNorm2d(cout, eps=1e-5, affine=True), nn.LeakyReLU(0.01, inplace=True))


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(_conv_block(cin, cout, stride), _conv_block(cout, cout))


class PlainConvUNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, n_stages: int = 8, base_features: int = 32,
                 max_features: int = 512):
        super().__init__()
        features = [min(base_features * 2**s, max_features) for s in range(n_stages)]
        self.stride = 2 ** (n_stages - 1)
        self.encoder = nn.ModuleList(
            _stage(features[s - 1] if s else in_chans, features[s], 2 if s else 1) for s in range(n_stages))
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(features[s + 1], features[s], 2, stride=2) for s in reversed(range(n_stages - 1)))
        self.decoder = nn.ModuleList(_stage(2 * features[s], features[s], 1) for s in reversed(range(n_stages - 1)))
        self.segmentation_head = nn.Sequential(nn.Conv2d(features[0], num_classes, 1))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=1e-2)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.stride, -w % self.stride
        if pad_h or pad_w:  # static shapes: decided at trace time, exported as a constant Pad
            x = F.pad(x, (0, pad_w, 0, pad_h))
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.upsample, self.decoder):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.segmentation_head(x)[..., :h, :w]


@register_model("nnunet-plain", family="baseline", params_m=46.3, pretrained=None,
                source="Isensee et al., Nature Methods 2021 (nnU-Net), 2D PlainConvUNet; written here",
                notes="stage count follows nnU-Net's 2D planner for img_size (8 stages at 512, 7 at 256); "
                      "no deep-supervision heads; trained from scratch")
def nnunet_plain(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False) -> nn.Module:
    refuse_pretrained("nnunet-plain", pretrained)
    return PlainConvUNet(num_classes, in_chans, n_stages=num_downsamplings(img_size) + 1)


@register_model("nnunet-plain-tiny", family="baseline", tiny_of="nnunet-plain",
                source="nnunet-plain with features min(8 * 2**s, 64) (tests, demo)")
def nnunet_plain_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    refuse_pretrained("nnunet-plain-tiny", pretrained)
    return PlainConvUNet(num_classes, in_chans, n_stages=num_downsamplings(img_size) + 1, base_features=8,
                         max_features=64)
