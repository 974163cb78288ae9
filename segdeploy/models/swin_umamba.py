"""Swin-UMamba (specialized family): a VMamba encoder with ImageNet pretraining in an nnU-Net-style UNet.

Liu et al., "Swin-UMamba: Mamba-based UNet with ImageNet-based pretraining", MICCAI 2024. The encoder is
VMamba-Tiny (Liu et al. 2024, "VMamba: Visual State Space Model"; depths 2-2-9-2, widths 96-768, d_state 16):
stages of VSS blocks whose SS2D core scans the feature map in four directions (row-major, column-major, and
both reversed) with Mamba's selective scan and sums the four results. As in the paper's code:

* a stride-2 7x7 convolution stem (48 channels) feeds VMamba's patch embedding, used with patch size 2, so
  the VSS stages see 1/4 ... 1/32 of the input;
* skip features at 1, 1/2, ..., 1/16 pass through residual conv blocks (MONAI's UnetResBlock: two 3x3 convs
  with instance norm and LeakyReLU, 1x1 projection shortcut), and the decoder upsamples by 2x2 transposed
  convolutions followed by the same block on [upsampled, skip] (MONAI's UnetrUpBlock);
* 1/32 VSS features are the bottleneck (hidden size 768).

The selective scan is the CUDA kernel of mamba_ssm in the original; here it is the exportable parallel scan
of ``segdeploy.models._selective_scan`` (same operator, tested against a sequential reference). The encoder's
module names follow VMamba's checkpoints (``layers.i.blocks.j.self_attention.*``, ``layers.i.downsample``), so
its ImageNet weights load unchanged into ``vssm_encoder``. Not kept: deep supervision heads (training-time
only in nnU-Net; an unused head would have no gradient).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from segdeploy.errors import SegdeployError
from segdeploy.models import register_model
from segdeploy.models._init import transformer_init
from segdeploy.models._selective_scan import selective_scan
from segdeploy.models.weights import read_state_dict

# the VMamba-Tiny release Swin-UMamba's README points to (MzeroMiko/VMamba, release #20240218)
VMAMBA_TINY_URL = ("https://github.com/MzeroMiko/VMamba/releases/download/%2320240218/"
                   "vssmtiny_dp01_ckpt_epoch_292.pth")


class SS2D(nn.Module):
    """2D selective scan: depthwise conv, four directional Mamba scans, merge, gated output projection."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 3, expand: int = 2,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.d_state = d_state
        self.d_inner = d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner)
        # one input projection (to dt, B, C) and one dt projection per scan direction
        x_proj = torch.empty(4, self.dt_rank + 2 * d_state, d_inner)
        nn.init.uniform_(x_proj, -d_inner ** -0.5, d_inner ** -0.5)  # nn.Linear's default, as in VMamba
        self.x_proj_weight = nn.Parameter(x_proj)
        dt_std = self.dt_rank ** -0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(4, d_inner, self.dt_rank).uniform_(-dt_std, dt_std))
        # Mamba's dt init: softplus(bias) log-uniform in [dt_min, dt_max]; the bias is its inverse softplus
        dt = torch.exp(torch.rand(4, d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real init A = -(1..N) per channel, stored as log; D skip = 1
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(4 * d_inner, 1))
        self.Ds = nn.Parameter(torch.ones(4 * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def _scan_four_ways(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d, H, W) -> (B, d, H*W) in row-major order: the sum of the four directional scans."""
        h, w = x.shape[-2:]
        rows, cols = x.flatten(2), x.transpose(2, 3).flatten(2)
        xs = torch.stack([rows, cols], dim=1)
        xs = torch.cat([xs, xs.flip(-1)], dim=1)  # (B, 4, d, L): rows, cols, rows reversed, cols reversed
        dt_b_c = self.x_proj_weight @ xs  # (B, 4, R + 2N, L)
        dts, bs, cs = torch.split(dt_b_c, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = self.dt_projs_weight @ dts  # (B, 4, d, L)
        ys = selective_scan(xs.flatten(1, 2), dts.flatten(1, 2), -torch.exp(self.A_logs), bs, cs, self.Ds,
                            delta_bias=self.dt_projs_bias.flatten(), delta_softplus=True).unflatten(1, (4, -1))
        y_rows = ys[:, 0] + ys[:, 2].flip(-1)
        y_cols = ys[:, 1] + ys[:, 3].flip(-1)  # column-major order: back to row-major
        return y_rows + y_cols.unflatten(-1, (w, h)).transpose(2, 3).flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) channels-last, as in VMamba
        h, w = x.shape[1:3]
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))
        y = self._scan_four_ways(x).transpose(1, 2).unflatten(1, (h, w))
        return self.out_proj(self.out_norm(y) * F.silu(z))


class VSSBlock(nn.Module):
    def __init__(self, dim: int, d_state: int, drop_path: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = SS2D(dim, d_state)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.self_attention(self.ln_1(x)))


class PatchMerging2D(nn.Module):
    """Swin's 2x2 patch merging: (B, H, W, C) -> (B, H/2, W/2, 2C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class VSSLayer(nn.Module):
    def __init__(self, dim: int, depth: int, d_state: int, drop_paths: list[float], downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(VSSBlock(dim, d_state, p) for p in drop_paths[:depth])
        self.downsample = PatchMerging2D(dim) if downsample else None


class PatchEmbed2D(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class VSSMEncoder(nn.Module):
    """VMamba (v0, as Swin-UMamba uses it): patch embedding, then VSS stages joined by patch merging.
    Returns each stage's output (before merging) as (B, C, H, W)."""

    def __init__(self, in_chans: int, dims=(96, 192, 384, 768), depths=(2, 2, 9, 2), d_state: int = 16,
                 patch_size: int = 2, drop_path_rate: float = 0.2):
        super().__init__()
        self.patch_embed = PatchEmbed2D(in_chans, dims[0], patch_size)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # stochastic depth decay
        self.layers = nn.ModuleList(
            VSSLayer(dim, depth, d_state, rates[sum(depths[:i]):], downsample=i < len(dims) - 1)
            for i, (dim, depth) in enumerate(zip(dims, depths)))
        self.apply(transformer_init)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        features = []
        for layer in self.layers:
            for block in layer.blocks:
                x = block(x)
            features.append(x.permute(0, 3, 1, 2))
            if layer.downsample is not None:
                x = layer.downsample(x)
        return features


class ResBlock(nn.Module):
    """MONAI's UnetResBlock (2D): conv3x3-IN-LReLU-conv3x3-IN + (1x1 conv-IN) shortcut, then LReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm2d(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.InstanceNorm2d(cout))
                         if cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.norm1(self.conv1(x)), 0.01)
        y = self.norm2(self.conv2(y))
        return F.leaky_relu(y + self.shortcut(x), 0.01)


class UpBlock(nn.Module):
    """MONAI's UnetrUpBlock: 2x2 stride-2 transposed conv, concatenate the skip, ResBlock."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.transp_conv = nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False)
        self.conv_block = ResBlock(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat([self.transp_conv(x), skip], dim=1))


class SwinUMamba(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, feat_size=(48, 96, 192, 384, 768),
                 depths=(2, 2, 9, 2), d_state: int = 16):
        super().__init__()
        f = feat_size
        self.stem = nn.Sequential(nn.Conv2d(in_chans, f[0], 7, stride=2, padding=3),
                                  nn.InstanceNorm2d(f[0], affine=True))
        self.vssm_encoder = VSSMEncoder(f[0], dims=f[1:], depths=depths, d_state=d_state)
        # skip paths at 1, 1/2, 1/4, 1/8, 1/16: the image, the stem, and the first three VSS stages
        self.encoders = nn.ModuleList([ResBlock(in_chans, f[0])] + [ResBlock(a, b) for a, b in zip(f, f[1:])])
        # 1/32 -> 1/16 (hidden size = the last stage's width), then down the widths to full resolution
        self.decoders = nn.ModuleList([UpBlock(f[4], f[4])] + [UpBlock(a, b) for a, b in zip(f[:0:-1], f[-2::-1])])
        self.decoder1 = ResBlock(f[0], f[0])
        self.segmentation_head = nn.Sequential(nn.Conv2d(f[0], num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        *stages, hidden = self.vssm_encoder(stem)
        skips = [enc(t) for enc, t in zip(self.encoders, [x, stem, *stages])]
        y = hidden
        for decoder, skip in zip(self.decoders, reversed(skips)):
            y = decoder(y, skip)
        return self.segmentation_head(self.decoder1(y))


def load_vmamba_imagenet(model: SwinUMamba, path: str | Path) -> None:
    """Load a VMamba (v0) ImageNet checkpoint into ``model.vssm_encoder``, as Swin-UMamba's code does.

    Kept out: the classifier (``head``, ``norm``) and the patch embedding, which in Swin-UMamba reads the
    48-channel stem output through a 2x2 patch instead of the image through a 4x4 one.
    """

    state = {k: v for k, v in read_state_dict(path).items() if k.startswith("layers.")}
    own = model.vssm_encoder.state_dict()
    expected = {k for k in own if not k.startswith("patch_embed.")}
    bad = sorted(k for k in expected if k not in state or state[k].shape != own[k].shape)
    if bad:
        raise SegdeployError(f"not a VMamba-Tiny (v0) checkpoint: {len(bad)} encoder tensors missing or of another "
                             f"shape, e.g. {bad[0]!r}.", path=path,
                             fix=f"use the checkpoint Swin-UMamba was trained from: {VMAMBA_TINY_URL}")
    model.vssm_encoder.load_state_dict({k: state[k] for k in expected}, strict=False)


def _swin_umamba(num_classes: int, in_chans: int, pretrained: bool, **config) -> SwinUMamba:
    model = SwinUMamba(num_classes, in_chans, **config)
    if pretrained:
        # torch.hub's cache: a file already there (e.g. copied in on an offline machine) is used as is
        checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / VMAMBA_TINY_URL.rsplit("/", 1)[-1]
        if not checkpoint.is_file():
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(VMAMBA_TINY_URL, str(checkpoint))
        load_vmamba_imagenet(model, checkpoint)
    return model


@register_model("swin-umamba", family="specialized", params_m=60.0, pretrained=VMAMBA_TINY_URL,
                source="Liu et al., Swin-UMamba, MICCAI 2024; VMamba-Tiny encoder (Liu et al. 2024)",
                notes="selective scan as an exportable parallel (log-depth) scan instead of the mamba_ssm CUDA op; "
                      "no deep-supervision heads",
                plain_ops="selective scan (mamba_ssm's CUDA kernel) as a parallel log-depth scan of plain ops")
def swin_umamba(num_classes: int, in_chans: int = 3, img_size: int = 512, pretrained: bool = False) -> nn.Module:
    return _swin_umamba(num_classes, in_chans, pretrained)


@register_model("swin-umamba-tiny", family="specialized", tiny_of="swin-umamba",
                source="swin-umamba with widths 6-96, one VSS block per stage, d_state 4 (tests, demo)")
def swin_umamba_tiny(num_classes: int, in_chans: int = 3, img_size: int = 512,
                     pretrained: bool = False) -> nn.Module:
    return _swin_umamba(num_classes, in_chans, False, feat_size=(6, 12, 24, 48, 96), depths=(1, 1, 1, 1),
                        d_state=4)
