"""MISSFormer (specialized family): Enhanced Transformer encoder, context bridge, patch-expanding decoder.

Huang et al., "MISSFormer: An Effective Transformer for 2D Medical Image Segmentation", IEEE TMI 2022, as in the
authors' code: MiT-B1 layout (widths 64/128/320/512, two blocks per stage, 1/2/5/8 heads, reductions 8/4/2/1)
with ReMix-FFN, four bridge layers of width 64, and a decoder that patch-expands the 1/32 bridge output, then at
1/16, 1/8 and 1/4 concatenates the bridge skip, projects linearly, applies two Enhanced Transformer Blocks and
patch-expands (x2, x2, x4); a 1x1 conv gives the logits. Blocks: ``_missformer_blocks``.

Input size. The study ran MISSFormer at 224x224 inside (``operate_on_224``): 512 inputs are resized to 224 with
antialiased bilinear interpolation and the logits back the same way. ``missformer`` does the same
(``fixed_size=224``); the antialiased resize is written as two matrix products whose matrices are PyTorch's own
antialiased-bilinear weights, because TensorRT's ONNX parser rejects ``Resize`` with ``antialias=1``.

Deviation (parameter count): the reference decoder builds a concat projection and two Enhanced Transformer Blocks
for the 1/32 stage that its forward never calls (6.9M parameters), and two unused LayerNorms in every ReMix-FFN.
They are left out, so the built model has 35.5M parameters where the paper and the study count 42.5M / 42M.

Pretrained: the study initialised the encoder with MiT-B1 ImageNet weights; ``pretrained=True`` loads smp's
``mit_b1`` ImageNet encoder (same tensor names) and leaves the ReMix-FFN LayerNorms at their initialisation.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segdeploy.models import register_model
from segdeploy.models._missformer_blocks import ContextBridge, EnhancedTransformerBlock, MiTEncoder


def antialias_resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D antialiased bilinear resizing (align_corners=False), from PyTorch itself:
    resizing is linear and separable, so resizing the identity gives its matrix."""
    eye = torch.eye(n_in)[None, None]
    return F.interpolate(eye, size=(n_out, n_in), mode="bilinear", antialias=True, align_corners=False)[0, 0]


class AntialiasResize(nn.Module):
    """``F.interpolate(x, (n_out, n_out), mode="bilinear", antialias=True)`` for (..., n_in, n_in) inputs as
    ``A @ x @ A^T``: exported as two MatMuls, which every ONNX backend runs."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.n_in = n_in
        self.register_buffer("matrix", antialias_resize_matrix(n_in, n_out), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matrix @ x @ self.matrix.transpose(0, 1)


def _expand_tokens(x: torch.Tensor, size: int, scale: int) -> torch.Tensor:
    """(B, s*s, scale^2 * c) tokens -> (B, (s*scale)^2, c): each token's channels become a scale x scale patch."""
    B, _, C = x.shape
    c = C // (scale * scale)
    x = x.reshape(B, size, size, scale, scale, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, size * scale * size * scale, c)


class PatchExpand(nn.Module):
    """Linear to ``scale^2 / 2`` (x2) or ``scale^2`` (x4) times the width, rearranged into a ``scale``-times larger
    map, LayerNorm: halves the width at x2, keeps it at x4 (the reference code's PatchExpand /
    FinalPatchExpand_X4)."""

    def __init__(self, dim: int, size: int, scale: int):
        super().__init__()
        self.size, self.scale = size, scale
        out = dim // 2 if scale == 2 else dim
        self.expand = nn.Linear(dim, out * scale * scale, bias=False)
        self.norm = nn.LayerNorm(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_expand_tokens(self.expand(x), self.size, self.scale))


class DecoderStage(nn.Module):
    """Concatenate the upsampled tokens with the bridge skip, project, two Enhanced Transformer Blocks, expand."""

    def __init__(self, cin: int, dim: int, size: int, num_heads: int, sr_ratio: int, scale: int):
        super().__init__()
        self.size = size
        self.concat_linear = nn.Linear(cin, dim)
        self.layer_former_1 = EnhancedTransformerBlock(dim, num_heads, sr_ratio)
        self.layer_former_2 = EnhancedTransformerBlock(dim, num_heads, sr_ratio)
        self.layer_up = PatchExpand(dim, size, scale)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.concat_linear(torch.cat((x, skip), dim=-1))
        x = self.layer_former_2(self.layer_former_1(x, self.size, self.size), self.size, self.size)
        return self.layer_up(x)


def _init_decoder(m: nn.Module) -> None:
    # the reference decoder's init (xavier for linear and conv layers)
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class MISSFormer(nn.Module):
    """MISSFormer running at ``work_size`` (divisible by 32); inputs of ``img_size`` are resized to it and the
    logits back (antialiased bilinear)."""

    def __init__(self, num_classes: int, in_chans: int = 3, img_size: int = 224, work_size: int = 224, *,
                 dims=(64, 128, 320, 512), depths=(2, 2, 2, 2), heads=(1, 2, 5, 8), bridge_depth: int = 4):
        super().__init__()
        if work_size % 32:
            raise ValueError(f"MISSFormer needs a size divisible by 32, got {work_size}")
        self.img_size, self.work_size = img_size, work_size
        resized = img_size != work_size
        self.resize_in = AntialiasResize(img_size, work_size) if resized else None
        self.resize_out = AntialiasResize(work_size, img_size) if resized else None
        sizes = [work_size // 4 >> i for i in range(4)]
        self.backbone = MiTEncoder(in_chans, dims, depths, heads)
        self.bridge = ContextBridge(dims, sizes, depth=bridge_depth)
        self.expand_bottleneck = PatchExpand(dims[3], sizes[3], 2)
        self.decoders = nn.ModuleList(
            DecoderStage(dims[i + 1] // 2 + dims[i], dims[i], sizes[i], heads[i], MiTEncoder.SR_RATIOS[i],
                         scale=4 if i == 0 else 2)
            for i in (2, 1, 0))
        self.segmentation_head = nn.Sequential(nn.Conv2d(dims[0], num_classes, 1))
        for module in (self.expand_bottleneck, self.decoders, self.segmentation_head):
            module.apply(_init_decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        if size != (self.work_size, self.work_size):
            if self.resize_in is None or size != (self.img_size, self.img_size):
                raise ValueError(f"this MISSFormer was built for {self.img_size}x{self.img_size} inputs, got "
                                 f"{size[0]}x{size[1]}: build it with create_model(..., img_size={size[0]})")
            x = self.resize_in(x)
        B = x.shape[0]
        skips = self.bridge(self.backbone(x))
        x = self.expand_bottleneck(skips[3])
        for decoder, skip in zip(self.decoders, reversed(skips[:3])):
            x = decoder(x, skip)
        s = self.work_size
        logits = self.segmentation_head(x.reshape(B, s, s, -1).permute(0, 3, 1, 2))
        return logits if self.resize_out is None else self.resize_out(logits)


def load_mit_state(model: MISSFormer, mit_state: dict[str, torch.Tensor]) -> int:
    """Load a SegFormer/smp MiT state dict into the encoder by name; only the ReMix-FFN LayerNorms may be left.
    Returns the number of tensors loaded."""
    result = model.backbone.load_state_dict(mit_state, strict=False)
    missing = [k for k in result.missing_keys if ".mlp.norm1." not in k]
    if missing or result.unexpected_keys:
        raise ValueError(f"MiT state dict does not fit the MISSFormer encoder: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    return len(mit_state)


@register_model("missformer", family="specialized", params_m=42.0, fixed_size=224, pretrained="smp:mit_b1/imagenet",
                source="Huang et al., MISSFormer, IEEE TMI 2022; encoder initialised from MiT-B1 (smp)",
                notes="Runs at 224x224 inside (antialiased bilinear resize in and out, as matrix products), as the "
                      "study does. Built: 35.5M parameters; the declared 42M (paper 42.5M) counts 7M of decoder "
                      "layers and LayerNorms the reference code creates but never uses, left out here.",
                params_gap="the study's 42M counts ~7M parameters the reference code creates but never uses in "
                           "forward; segdeploy builds only what runs (35.5M)")
def missformer(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False) -> nn.Module:
    model = MISSFormer(num_classes, in_chans, img_size=img_size, work_size=224)
    if pretrained:
        import segmentation_models_pytorch as smp

        encoder = smp.encoders.get_encoder("mit_b1", in_channels=in_chans, weights="imagenet")
        load_mit_state(model, encoder.state_dict())
    return model


@register_model("missformer-tiny", family="specialized", tiny_of="missformer",
                source="missformer with widths (16, 32, 48, 64) and heads (1, 2, 3, 4), one block per encoder "
                       "stage, one bridge layer; runs at the input size (tests, demo)")
def missformer_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False):
    return MISSFormer(num_classes, in_chans, img_size=img_size, work_size=img_size, dims=(16, 32, 48, 64),
                      depths=(1, 1, 1, 1), heads=(1, 2, 3, 4), bridge_depth=1)
