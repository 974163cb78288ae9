"""HiFormer-B (specialized family): CNN + Swin Transformer pyramid, Double-Level Fusion, convolutional decoder.

Heidari et al., "HiFormer: Hierarchical Multi-scale Representations Using Transformers for Medical Image
Segmentation", WACV 2023 (configuration HiFormer-B: ResNet-50 stem and stages 1-3, Swin-T stages 1-3 at widths
96/192/384, DLF with (1, 2) Transformer blocks of (6, 12) heads and MLP ratio 2).

Encoder, as in the reference code: ResNet-50 gives maps at 1/4, 1/8, 1/16 (256, 512, 1024 channels); a 1x1 conv
maps each to the Swin width. Level 1: Swin stage 1 on the 1/4 map, plus a residual. Level 2/3: patch merging of
the previous level, the next Swin stage, plus the projected CNN map of that scale. Each of levels 1 and 3 becomes
a token sequence with a class token (the mean of its LayerNormed tokens) and a learned position embedding; the
DLF (see ``_hiformer_blocks``) exchanges information between the two through their class tokens. Decoder: the
1/16 tokens go through two (conv, GN, ReLU, x2 upsample) steps, the 1/4 tokens through one (conv, GN, ReLU); the
sum is reduced to 16 channels, upsampled x4, and a 3x3 conv gives the logits.

Input size. The study (its code base adapts the reference code) resizes every 512x512 input to 224x224
bilinearly, runs HiFormer at 224 and resizes the logits back; ``hiformer-b`` does the same (``fixed_size=224``),
which also keeps the Swin windows (7) dividing the token maps (56, 28, 14). The module runs natively at any size
divisible by 16 (``work_size``): timm's Swin block pads token maps that are not a multiple of the window size
(zero padding after the cyclic shift, padded positions cropped afterwards) and shrinks the window to the map when
the map is smaller, as the reference code does. The ``-tiny`` configuration runs natively that way.

Pretrained: torchvision's ImageNet ResNet-50 (through timm's ``resnet50.tv_in1k``) and Swin-T ImageNet weights
(timm ``swin_tiny_patch4_window7_224``) for the Swin blocks and the two patch-merging layers, as in the reference
code; the 1x1 projections, DLF and decoder start from scratch.
"""

from __future__ import annotations

import re

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock

from segdeploy.models import register_model
from segdeploy.models._init import transformer_init
from segdeploy.models._hiformer_blocks import ConvUpsample, DoubleLevelFusion

RESNET50_WEIGHTS = "resnet50.tv_in1k"  # torchvision's IMAGENET1K_V1, what the reference code loads
SWIN_WEIGHTS = "swin_tiny_patch4_window7_224.ms_in1k"


def _swin_stage(dim: int, resolution: int, depth: int, num_heads: int, window_size: int,
                drop_path: list[float]) -> nn.Sequential:
    """Swin-T stage without patch merging: alternating regular and shifted windows (MLP ratio 4, qkv bias)."""
    return nn.Sequential(*[
        SwinTransformerBlock(dim, (resolution, resolution), num_heads=num_heads, window_size=window_size,
                             shift_size=0 if i % 2 == 0 else window_size // 2, drop_path=drop_path[i])
        for i in range(depth)])


_init_transformer_weights = transformer_init  # the reference code's init for everything but the CNN


class HiFormer(nn.Module):
    """HiFormer on a timm ``features_only`` CNN with three outputs (strides 4, 8, 16).

    The network runs at ``work_size`` x ``work_size`` (its position embeddings are sized for it); inputs of
    another size are resized bilinearly to it and the logits back to the input size.
    """

    def __init__(self, num_classes: int, cnn: nn.Module, work_size: int = 224, *,
                 swin_dims=(96, 192, 384), swin_depths=(2, 2, 6), swin_heads=(3, 6, 12), window_size: int = 7,
                 swin_drop_path: float = 0.1, dlf_heads=(6, 12), dlf_depths=(1, 2), dlf_mlp_ratios=(2.0, 2.0),
                 decoder_width: int = 128, head_width: int = 16, gn_groups: int = 32):
        super().__init__()
        if work_size % 16:
            raise ValueError(f"HiFormer needs a size divisible by 16 (CNN stride 16), got {work_size}")
        self.work_size = work_size
        self.cnn = cnn
        cnn_channels = cnn.feature_info.channels()
        self.p1_ch, self.p2_ch, self.p3_ch = (nn.Conv2d(c, d, 1) for c, d in zip(cnn_channels, swin_dims))
        resolutions = [work_size // 4, work_size // 8, work_size // 16]
        rates = torch.linspace(0, swin_drop_path, sum(swin_depths), device="cpu").tolist()
        starts = [sum(swin_depths[:i]) for i in range(3)]
        self.swin = nn.ModuleList(
            _swin_stage(swin_dims[i], resolutions[i], swin_depths[i], swin_heads[i], window_size,
                        rates[starts[i]:starts[i] + swin_depths[i]]) for i in range(3))
        self.merge = nn.ModuleList(PatchMerging(swin_dims[i], swin_dims[i + 1]) for i in range(2))
        self.norm_1 = nn.LayerNorm(swin_dims[0])
        self.norm_2 = nn.LayerNorm(swin_dims[2])

        # DLF over level 1 (1/4, fine) and level 3 (1/16, coarse); a position per token plus the class token
        dims = (swin_dims[0], swin_dims[2])
        self.pos_embed = nn.ParameterList(
            nn.Parameter(torch.zeros(1, 1 + r * r, d)) for r, d in zip((resolutions[0], resolutions[2]), dims))
        self.dlf = DoubleLevelFusion(dims, dlf_heads, dlf_depths, dlf_mlp_ratios)
        self.dlf_norm = nn.ModuleList(nn.LayerNorm(d) for d in dims)

        self.up_fine = ConvUpsample(dims[0], (decoder_width,), upsample=False, gn_groups=gn_groups)
        self.up_coarse = ConvUpsample(dims[1], (decoder_width, decoder_width), upsample=True, gn_groups=gn_groups)
        self.conv_pred = nn.Sequential(nn.Conv2d(decoder_width, head_width, 1), nn.ReLU(inplace=True),
                                       nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False))
        self.segmentation_head = nn.Sequential(nn.Conv2d(head_width, num_classes, 3, padding=1))

        for module in (self.swin, self.merge, self.norm_1, self.norm_2, self.dlf, self.dlf_norm):
            module.apply(_init_transformer_weights)
        for pos in self.pos_embed:
            trunc_normal_(pos, std=0.02)

    def _level_tokens(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The CNN-Swin pyramid: token sequences ``[cls, patches]`` of levels 1 and 3, position embedded."""
        f1, f2, f3 = self.cnn(x)
        t1 = self.p1_ch(f1).permute(0, 2, 3, 1)  # timm's Swin blocks work channels-last (B, H, W, C)
        level1 = t1 + self.swin[0](t1)
        level2 = self.p2_ch(f2).permute(0, 2, 3, 1) + self.swin[1](self.merge[0](level1))
        level3 = self.p3_ch(f3).permute(0, 2, 3, 1) + self.swin[2](self.merge[1](level2))
        tokens = []
        for feat, norm, pos in zip((level1, level3), (self.norm_1, self.norm_2), self.pos_embed):
            seq = feat.flatten(1, 2)
            cls = norm(seq).mean(dim=1, keepdim=True)
            tokens.append(torch.cat((cls, seq), dim=1) + pos)
        return tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        ws = self.work_size
        if size != (ws, ws):
            x = F.interpolate(x, size=(ws, ws), mode="bilinear", align_corners=False)
        B = x.shape[0]
        fine, coarse = (norm(t) for norm, t in zip(self.dlf_norm, self.dlf(self._level_tokens(x))))
        # the decoder drops the class tokens and folds the patch tokens back into maps
        fine = fine[:, 1:].transpose(1, 2).reshape(B, -1, ws // 4, ws // 4)
        coarse = coarse[:, 1:].transpose(1, 2).reshape(B, -1, ws // 16, ws // 16)
        logits = self.segmentation_head(self.conv_pred(self.up_fine(fine) + self.up_coarse(coarse)))
        if size != (ws, ws):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


def load_swin_tiny_state(model: HiFormer, swin_state: dict[str, torch.Tensor]) -> int:
    """Copy a timm Swin-T state dict's stage 1-3 blocks and its two patch-merging layers into ``model``.

    Returns the number of tensors copied. The reference code takes the same tensors from the original Swin
    checkpoint, whose ``layers.i.downsample`` sits at the end of stage i (timm: start of stage i+1).
    """
    mapped = {}
    for key, value in swin_state.items():
        if m := re.fullmatch(r"layers\.([0-2])\.blocks\.(.+)", key):
            mapped[f"swin.{m[1]}.{m[2]}"] = value
        elif m := re.fullmatch(r"layers\.([12])\.downsample\.(.+)", key):
            mapped[f"merge.{int(m[1]) - 1}.{m[2]}"] = value
    unexpected = model.load_state_dict(mapped, strict=False).unexpected_keys
    if unexpected or not mapped:
        raise ValueError(f"Swin state dict does not fit HiFormer: unexpected {unexpected[:5]}, {len(mapped)} mapped")
    return len(mapped)


def _resnet_features(in_chans: int, pretrained: bool, **resnet_args) -> nn.Module:
    """ResNet stem + stages 1-3 through timm (``features_only`` leaves stage 4 and the head out).

    ``zero_init_last=False``: torchvision's (and so the reference code's) initialisation of the residual blocks.
    """
    name = RESNET50_WEIGHTS if pretrained else "resnet50"
    return timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=(1, 2, 3),
                             in_chans=in_chans, zero_init_last=False, **resnet_args)


@register_model("hiformer-b", family="specialized", params_m=26.0, fixed_size=224,
                pretrained=f"timm:{RESNET50_WEIGHTS} + timm:{SWIN_WEIGHTS}",
                source="Heidari et al., HiFormer, WACV 2023 (HiFormer-B); timm ResNet-50 and Swin blocks",
                notes="Runs at 224x224 inside (bilinear resize in and out), as the study's code does. The DLF "
                      "Transformer blocks' outputs are used (the reference code discards them, which leaves DLF "
                      "without effect on the output).")
def hiformer_b(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False) -> nn.Module:
    model = HiFormer(num_classes, _resnet_features(in_chans, pretrained), work_size=224)
    if pretrained:
        load_swin_tiny_state(model, timm.create_model(SWIN_WEIGHTS, pretrained=True).state_dict())
    return model


@register_model("hiformer-b-tiny", family="specialized", tiny_of="hiformer-b",
                source="hiformer-b with a 1-block-per-stage ResNet (widths 8-32), Swin widths (16, 32, 64), "
                       "one DLF block per level; runs at the input size (tests, demo)")
def hiformer_b_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    cnn = _resnet_features(in_chans, False, layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=8)
    return HiFormer(num_classes, cnn, work_size=img_size, swin_dims=(16, 32, 64), swin_depths=(2, 2, 2),
                    swin_heads=(1, 2, 4), swin_drop_path=0.0, dlf_heads=(2, 4), dlf_depths=(1, 1),
                    decoder_width=32, head_width=16, gn_groups=8)
