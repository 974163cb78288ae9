"""InternImage + UPerNet (general family).

Wang et al., "InternImage: Exploring Large-Scale Vision Foundation Models with Deformable Convolutions",
CVPR 2023; UPerNet head (Xiao et al., ECCV 2018) as in the paper's ADE20K models. InternImage-T: stem of two
stride-2 3x3 convs, four stages of pre-norm blocks (DCNv3 with kernel 3, then an MLP of ratio 4) at widths
64/128/256/512 with depths 4/4/18/4 and DCNv3 groups 4/8/16/32, a LayerNorm closing each stage and a stride-2
conv between stages. The four stage outputs (1/4 ... 1/32) feed a 512-channel UPerNet head.

Differences from the paper's segmentation model: no auxiliary FCN head (a training-only branch of ~0.6M;
59M -> 58M); no layer scale (as in the ImageNet model; the ADE20K config adds a per-channel scale initialised
at 1, 15k parameters); DCNv3's CUDA kernel is replaced by the grid_sample formulation in ``_dcnv3.py`` (same
numbers, exportable); DCNv3's offset and mask projections start near zero (std 0.02) rather than at exactly
zero, so every parameter gets a gradient from the first step. The backbone's modules keep the original names
at the top level of the model (``patch_embed``, ``levels``), so the official ImageNet checkpoint loads
unchanged, through ``--pretrained`` or as a local file with ``weights=``. The classifier is
``decode_head.segmentation_head``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torchvision.ops.misc import Permute

from segdeploy.models import register_model
from segdeploy.models._dcnv3 import DCNv3
from segdeploy.models._upernet import UPerNetHead

INTERNIMAGE_T_IMAGENET = "https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_t_1k_224.pth"

# the original builds its norms as Sequentials with channel permutes around a LayerNorm; the same layout here
# gives the same parameter names (``norm1.1.weight``, ``downsample.norm.1.weight``) as its checkpoints


def _ln_channels_first_to_last(channels: int) -> nn.Sequential:
    return nn.Sequential(Permute([0, 2, 3, 1]), nn.LayerNorm(channels, eps=1e-6))


def _ln_channels_last(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(channels, eps=1e-6))


class StemLayer(nn.Module):
    """Two stride-2 3x3 convs (to half, then full width), LayerNorm + GELU between; channels-first in,
    channels-last out at 1/4 resolution."""

    def __init__(self, in_chans: int, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, channels // 2, 3, stride=2, padding=1)
        self.norm1 = nn.Sequential(Permute([0, 2, 3, 1]), nn.LayerNorm(channels // 2, eps=1e-6),
                                   Permute([0, 3, 1, 2]))
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1)
        self.norm2 = _ln_channels_first_to_last(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class DownsampleLayer(nn.Module):
    """Stride-2 3x3 conv doubling the width, then LayerNorm; channels-last in and out."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1, bias=False)
        self.norm = _ln_channels_first_to_last(2 * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)))


class InternImageLayer(nn.Module):
    """Pre-norm block: x + DCNv3(LN(x)), then x + MLP(LN(x)), with stochastic depth on both branches."""

    def __init__(self, channels: int, group: int, mlp_ratio: float, offset_scale: float, drop_path: float):
        super().__init__()
        self.norm1 = _ln_channels_last(channels)
        self.dcn = DCNv3(channels, kernel_size=3, group=group, offset_scale=offset_scale)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = _ln_channels_last(channels)
        self.mlp = Mlp(channels, int(channels * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.dcn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class InternImageStage(nn.Module):
    """One resolution level; returns the normalised stage output (a decoder input) and the downsampled map."""

    def __init__(self, channels: int, depth: int, group: int, mlp_ratio: float, offset_scale: float,
                 drop_paths: Sequence[float], downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(InternImageLayer(channels, group, mlp_ratio, offset_scale, dp)
                                    for dp in drop_paths[:depth])
        self.norm = _ln_channels_last(channels)
        self.downsample = DownsampleLayer(channels) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x, (self.downsample(x) if self.downsample is not None else x)


class InternImageUPerNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, channels: int = 64, depths=(4, 4, 18, 4),
                 groups=(4, 8, 16, 32), mlp_ratio: float = 4.0, offset_scale: float = 1.0,
                 drop_path_rate: float = 0.2, head_channels: int = 512):
        super().__init__()
        self.patch_embed = StemLayer(in_chans, channels)
        drop_paths = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # linear stochastic depth
        widths = [channels * 2 ** i for i in range(len(depths))]
        self.levels = nn.ModuleList(
            InternImageStage(width, depth, group, mlp_ratio, offset_scale, drop_paths[sum(depths[:i]):],
                             downsample=i < len(depths) - 1)
            for i, (width, depth, group) in enumerate(zip(widths, depths, groups)))
        self._init_backbone()
        self.decode_head = UPerNetHead(widths, head_channels, num_classes=num_classes)  # classifier inside:
        # decode_head.segmentation_head (an alias on the model would store its tensors twice in checkpoints)

    def _init_backbone(self) -> None:
        # the original's init: truncated-normal linears, then DCNv3 its own (see DCNv3.reset_parameters)
        for m in self.levels.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        for m in self.levels.modules():
            if isinstance(m, DCNv3):
                m.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = self.patch_embed(x)
        features = []
        for level in self.levels:
            out, x = level(x)
            features.append(out.permute(0, 3, 1, 2))
        return F.interpolate(self.decode_head(features), size=size, mode="bilinear", align_corners=False)


def _load_imagenet_backbone(model: InternImageUPerNet, in_chans: int) -> None:
    """The authors' ImageNet-1k InternImage-T checkpoint (downloads on first use); its classifier is dropped and
    a non-RGB input averages the RGB filters of the first conv."""
    state = torch.hub.load_state_dict_from_url(INTERNIMAGE_T_IMAGENET, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    own = model.state_dict()
    backbone = {k: v for k, v in state.items() if k.startswith(("patch_embed.", "levels.")) and k in own}
    if in_chans != 3:
        w = backbone["patch_embed.conv1.weight"]
        backbone["patch_embed.conv1.weight"] = w.mean(1, keepdim=True).repeat(1, in_chans, 1, 1)
    missing = [k for k in own if k.startswith(("patch_embed.", "levels.")) and k not in backbone]
    if missing:
        raise RuntimeError(f"{INTERNIMAGE_T_IMAGENET} lacks backbone tensors, e.g. {missing[:3]}")
    model.load_state_dict(backbone, strict=False)


@register_model("internimage-t-upernet", family="general", params_m=58.0, pretrained=f"url:{INTERNIMAGE_T_IMAGENET}",
                source="Wang et al. 2023 (InternImage, CVPR 2023), InternImage-T + UPerNet (Xiao et al. 2018)",
                notes="DCNv3 as grid_sample (exportable, same numbers as the CUDA op); offset/mask projections init "
                      "near zero (std 0.02) instead of zero; no auxiliary FCN head",
                plain_ops="DCNv3 (a CUDA op) as grid_sample")
def internimage_t_upernet(num_classes: int, in_chans: int = 3, img_size: int = 512,
                          pretrained: bool = False) -> nn.Module:
    model = InternImageUPerNet(num_classes, in_chans)
    if pretrained:
        _load_imagenet_backbone(model, in_chans)
    return model


@register_model("internimage-t-upernet-tiny", family="general", tiny_of="internimage-t-upernet",
                source="internimage-t-upernet with widths 16-128, one block per stage, 32-channel head (tests, demo)")
def internimage_t_upernet_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512,
                               pretrained: bool = False) -> nn.Module:
    return InternImageUPerNet(num_classes, in_chans, channels=16, depths=(1, 1, 1, 1), groups=(1, 2, 4, 8),
                              drop_path_rate=0.0, head_channels=32)
