"""SegNeXt (general family): MSCAN encoder + LightHamHead.

Guo et al., "SegNeXt: Rethinking Convolutional Attention Design for Semantic Segmentation", NeurIPS 2022.
Written from the paper in plain PyTorch (no mmseg/mmcv dependency), with mmseg's module names so its
checkpoints load: ``backbone.*`` is mmseg's ``MSCAN`` and ``decode_head.*`` its ``LightHamHead`` (less the
classifier, which is ``segmentation_head`` here). The head predicts at 1/8 resolution; the model upsamples the
logits bilinearly to the input size. The NMF in the head is made deterministic in eval mode: see ``_ham.py``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from segdeploy.models import register_model
from segdeploy.models._ham import ConvNorm, Hamburger

# mmseg's ImageNet-1k MSCAN-L checkpoint (the one SegNeXt's configs initialise from); keys as in MSCAN below
MSCAN_L_IMAGENET_URL = ("https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/"
                        "mscan_l_20230227-cef260d4.pth")


class StemConv(nn.Module):
    """Two stride-2 3x3 convs with BN (GELU between): 1/4 resolution."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1), nn.BatchNorm2d(dim // 2), nn.GELU(),
            nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class OverlapPatchEmbed(nn.Module):
    """Stride-2 3x3 conv + BN between stages."""

    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class AttentionModule(nn.Module):
    """Multi-scale convolutional attention: a depthwise 5x5, then three branches of depthwise strip convolutions
    (1x7+7x1, 1x11+11x1, 1x21+21x1) summed with it; a 1x1 conv mixes channels into attention weights that
    multiply the input."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        for i, k in enumerate((7, 11, 21)):
            setattr(self, f"conv{i}_1", nn.Conv2d(dim, dim, (1, k), padding=(0, k // 2), groups=dim))
            setattr(self, f"conv{i}_2", nn.Conv2d(dim, dim, (k, 1), padding=(k // 2, 0), groups=dim))
        self.conv3 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.conv0(x)
        branches = (self.conv0_2(self.conv0_1(attn)) + self.conv1_2(self.conv1_1(attn))
                    + self.conv2_2(self.conv2_1(attn)))
        return self.conv3(attn + branches) * x


class SpatialAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = AttentionModule(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))


class Mlp(nn.Module):
    """1x1 conv, depthwise 3x3, GELU, 1x1 conv (dropout 0 in every SegNeXt config, so none)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        # mmseg key: mlp.dwconv.dwconv
        self.dwconv = nn.Sequential(OrderedDict(dwconv=nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)))
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class Block(nn.Module):
    """BN -> MSCA -> layer scale -> drop path, residual; BN -> Mlp -> layer scale -> drop path, residual."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(1e-2 * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(1e-2 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class MSCAN(nn.Module):
    """Four stages (1/4 ... 1/32) of MSCA blocks, each closed by a LayerNorm over channels; returns all four."""

    def __init__(self, in_chans: int, embed_dims, depths, mlp_ratios, drop_path_rate: float):
        super().__init__()
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # stochastic depth decay
        for i, (dim, depth, ratio) in enumerate(zip(embed_dims, depths, mlp_ratios)):
            embed = StemConv(in_chans, dim) if i == 0 else OverlapPatchEmbed(embed_dims[i - 1], dim)
            first = sum(depths[:i])
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}",
                    nn.ModuleList(Block(dim, ratio, rates[first + j]) for j in range(depth)))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dim))
        self.num_stages = len(embed_dims)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():  # the original's init: He-normal on fan_out per group, zero bias
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x)
            x = getattr(self, f"norm{i}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # LayerNorm over C
            outs.append(x)
        return outs


class LightHamHead(nn.Module):
    """Stages 2-4 resized to 1/8 and concatenated, squeeze (1x1 conv+GN+ReLU), Hamburger, align (1x1+GN+ReLU)."""

    def __init__(self, in_channels, ham_channels: int, channels: int, rank: int, gn_groups: int = 32):
        super().__init__()
        self.squeeze = ConvNorm(sum(in_channels), ham_channels, gn_groups)
        self.hamburger = Hamburger(ham_channels, gn_groups, rank=rank, train_steps=6, eval_steps=7)
        self.align = ConvNorm(ham_channels, channels, gn_groups)
        for m in self.modules():  # mmcv ConvModule's init: He-normal (fan_out, ReLU)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        x = torch.cat([features[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                       for f in features[1:]], dim=1)
        return self.align(self.hamburger(self.squeeze(x)))


@dataclass(frozen=True)
class SegNeXtConfig:
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4)
    drop_path_rate: float = 0.0
    ham_channels: int = 1024
    channels: int = 1024
    rank: int = 64  # MD_R: number of NMF bases
    gn_groups: int = 32
    dropout: float = 0.1  # before the classifier, as mmseg's decode heads


class SegNeXt(nn.Module):
    def __init__(self, cfg: SegNeXtConfig, num_classes: int, in_chans: int = 3):
        super().__init__()
        self.backbone = MSCAN(in_chans, cfg.embed_dims, cfg.depths, cfg.mlp_ratios, cfg.drop_path_rate)
        self.decode_head = LightHamHead(cfg.embed_dims[1:], cfg.ham_channels, cfg.channels, cfg.rank, cfg.gn_groups)
        self.dropout = nn.Dropout2d(cfg.dropout)
        # named like smp's models: tools (Grad-CAM layer choice) find the classifier under one name
        self.segmentation_head = nn.Sequential(nn.Conv2d(cfg.channels, num_classes, 1))
        nn.init.normal_(self.segmentation_head[0].weight, 0.0, 0.01)  # mmseg's cls_seg init
        nn.init.zeros_(self.segmentation_head[0].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)[1:]  # the head uses stages 2-4 (1/8, 1/16, 1/32)
        logits = self.segmentation_head(self.dropout(self.decode_head(features)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def load_mscan_state_dict(backbone: MSCAN, state: dict[str, torch.Tensor]) -> None:
    """Load an mmseg MSCAN ImageNet checkpoint into ``backbone``: drops the classifier (``head.*``) and a
    ``backbone.`` prefix if present; a non-RGB input gets the RGB stem filters averaged. Strict otherwise."""
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    stem = "patch_embed1.proj.0.weight"
    in_chans = backbone.patch_embed1.proj[0].in_channels
    if stem in state and state[stem].shape[1] != in_chans:
        state[stem] = state[stem].mean(1, keepdim=True).repeat(1, in_chans, 1, 1)
    backbone.load_state_dict(state, strict=True)


def _build(cfg: SegNeXtConfig, num_classes: int, in_chans: int, pretrained_url: str | None) -> SegNeXt:
    model = SegNeXt(cfg, num_classes, in_chans)
    if pretrained_url:
        state = torch.hub.load_state_dict_from_url(pretrained_url, map_location="cpu", check_hash=True,
                                                   weights_only=True)
        load_mscan_state_dict(model.backbone, state.get("state_dict", state))
    return model


MSCAN_L = SegNeXtConfig(embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3), drop_path_rate=0.3)
# same code, 1/4 widths and one block per stage; 32 GN groups still divide the 64-wide head
MSCAN_TINY = SegNeXtConfig(embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), ham_channels=64, channels=64, rank=8)


@register_model("segnext-l", family="general", params_m=49.0, pretrained=f"mmseg:{MSCAN_L_IMAGENET_URL}",
                source="Guo et al., SegNeXt, NeurIPS 2022 (MSCAN-L + LightHamHead); mmseg naming",
                notes="NMF bases: fresh random draw per forward in training (as the original), a fixed seeded "
                      "buffer in eval (deterministic, exportable); NMF2D's effective inv_t=1 as in the code.")
def segnext_l(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False) -> nn.Module:
    return _build(MSCAN_L, num_classes, in_chans, MSCAN_L_IMAGENET_URL if pretrained else None)


@register_model("segnext-l-tiny", family="general", tiny_of="segnext-l",
                source="segnext-l with MSCAN widths (16,32,64,128), one block per stage, 64-wide head (tests, demo)")
def segnext_l_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False) -> nn.Module:
    return _build(MSCAN_TINY, num_classes, in_chans, None)
