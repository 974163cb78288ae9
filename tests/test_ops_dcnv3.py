"""DCNv3 in grid_sample form agrees with an explicit per-pixel, per-point loop and exports to ONNX."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from segdeploy.models import create_model
from segdeploy.models._dcnv3 import DCNv3, dcnv3
from segdeploy.models._upernet import adaptive_avg_pool2d
from segdeploy.models.internimage import INTERNIMAGE_T_IMAGENET, _load_imagenet_backbone


def _bilinear_zero_padded(img: np.ndarray, y: float, x: float) -> np.ndarray:
    """img (H, W, c) sampled at pixel coordinates (y, x); corners outside the image count as zero."""
    height, width, _ = img.shape
    y0, x0 = math.floor(y), math.floor(x)
    out = np.zeros(img.shape[-1])
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                out += wy * wx * img[yy, xx]
    return out


def dcnv3_reference(value, offset, mask, kernel_size, group, stride, pad, dilation, offset_scale):
    """The operator as the InternImage paper states it, one output pixel, group and kernel point at a time."""
    value, offset, mask = (np.asarray(a, dtype=np.float64) for a in (value, offset, mask))
    batch, _, _, channels = value.shape
    _, out_h, out_w, _ = offset.shape
    gc, points, centre = channels // group, kernel_size * kernel_size, (dilation * (kernel_size - 1)) // 2
    out = np.zeros((batch, out_h, out_w, channels))
    for n in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                for g in range(group):
                    img = value[n, :, :, g * gc:(g + 1) * gc]
                    for p in range(points):
                        ix, iy = divmod(p, kernel_size)  # x-major point order, as in the original kernel
                        k = g * points + p
                        dx, dy = offset[n, i, j, 2 * k], offset[n, i, j, 2 * k + 1]
                        x = j * stride - pad + centre + (ix * dilation - centre + dx) * offset_scale
                        y = i * stride - pad + centre + (iy * dilation - centre + dy) * offset_scale
                        out[n, i, j, g * gc:(g + 1) * gc] += mask[n, i, j, k] * _bilinear_zero_padded(img, y, x)
    return out


@pytest.mark.parametrize("kernel_size,group,stride,pad,dilation,offset_scale", [
    (3, 2, 1, 1, 1, 1.0),   # InternImage's configuration
    (3, 1, 2, 1, 1, 0.5),   # strided, scaled offsets
    (5, 4, 1, 4, 2, 2.0),   # dilated, wide padding
])
def test_dcnv3_matches_explicit_loop(kernel_size, group, stride, pad, dilation, offset_scale):
    rng = np.random.default_rng(0)
    batch, height, width, channels = 2, 5, 6, 8
    out_h = (height + 2 * pad - (dilation * (kernel_size - 1) + 1)) // stride + 1
    out_w = (width + 2 * pad - (dilation * (kernel_size - 1) + 1)) // stride + 1
    points = kernel_size * kernel_size
    value = rng.standard_normal((batch, height, width, channels)).astype(np.float32)
    # offsets up to +-3 px reach past the border, so the zero padding is exercised
    offset = rng.uniform(-3, 3, (batch, out_h, out_w, group * points * 2)).astype(np.float32)
    mask = rng.uniform(0, 1, (batch, out_h, out_w, group * points)).astype(np.float32)
    got = dcnv3(torch.from_numpy(value), torch.from_numpy(offset), torch.from_numpy(mask), kernel_size=kernel_size,
                group=group, stride=stride, pad=pad, dilation=dilation, offset_scale=offset_scale).numpy()
    want = dcnv3_reference(value, offset, mask, kernel_size, group, stride, pad, dilation, offset_scale)
    assert got.shape == want.shape == (batch, out_h, out_w, channels)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_dcnv3_with_zero_offsets_is_a_fixed_convolution():
    """With zero offsets and a mask constant over pixels, DCNv3 is a grouped 3x3 conv whose taps are the mask
    weights shared across each group's channels: an independent check of the point order and padding."""
    rng = np.random.default_rng(1)
    group, channels = 2, 4
    value = torch.from_numpy(rng.standard_normal((1, 6, 7, channels)).astype(np.float32))
    taps = torch.from_numpy(rng.uniform(0, 1, (group, 9)).astype(np.float32))
    mask = taps.flatten().expand(1, 6, 7, group * 9)
    got = dcnv3(value, torch.zeros(1, 6, 7, group * 18), mask, kernel_size=3, group=group)
    # x-major point p = ix * 3 + iy -> conv weight [.., iy, ix]
    kernel = taps.reshape(group, 3, 3).transpose(1, 2)
    weight = kernel.repeat_interleave(channels // group, dim=0)[:, None]  # depthwise: (C, 1, 3, 3)
    want = F.conv2d(value.permute(0, 3, 1, 2), weight, padding=1, groups=channels).permute(0, 2, 3, 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


class _DCNv3Op(nn.Module):
    def forward(self, value, offset, mask):
        return dcnv3(value, offset, mask, kernel_size=3, group=2)


def test_dcnv3_op_exports_to_onnx_with_parity(tmp_path):
    import onnxruntime as ort

    path = tmp_path / "dcnv3.onnx"
    rng = np.random.default_rng(2)

    def inputs(batch):
        return (rng.standard_normal((batch, 8, 8, 8)).astype(np.float32),
                rng.uniform(-2, 2, (batch, 8, 8, 36)).astype(np.float32),
                rng.uniform(0, 1, (batch, 8, 8, 18)).astype(np.float32))

    batch_dim = torch.export.Dim("batch", min=1, max=64)
    example = tuple(torch.from_numpy(a) for a in inputs(2))
    torch.onnx.export(_DCNv3Op().eval(), example, path, dynamo=True, opset_version=18,
                      input_names=["value", "offset", "mask"],
                      dynamic_shapes=({0: batch_dim}, {0: batch_dim}, {0: batch_dim}))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        value, offset, mask = inputs(batch)
        (got,) = session.run(None, {"value": value, "offset": offset, "mask": mask})
        want = dcnv3_reference(value, offset, mask, 3, 2, 1, 1, 1, 1.0)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_dcnv3_layer_starts_near_a_regular_grid_and_trains_every_parameter():
    """Like the original, the layer starts close to a plain 3x3 sampling with uniform weights; unlike an exact
    zero init, its offset/mask context branch gets a gradient at the first step."""
    torch.manual_seed(0)
    layer = DCNv3(channels=16, group=2)
    x = torch.randn(2, 6, 6, 16)
    context = layer.dw_conv(x.permute(0, 3, 1, 2))
    assert layer.offset(context).abs().max() < 0.5  # pixels
    assert (layer.mask(context).reshape(2, 6, 6, 2, 9).softmax(-1) - 1 / 9).abs().max() < 0.05
    out = layer(x)
    assert out.shape == (2, 6, 6, 16)
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


@pytest.mark.parametrize("size", [5, 7, 8, 16])  # 7, 8 and 16 are the 1/32 maps at 224, 256 and 512 px
@pytest.mark.parametrize("scale", [1, 2, 3, 6])
def test_upernet_pyramid_pooling_equals_adaptive_avg_pool(size, scale):
    x = torch.randn(2, 3, size, size + 1)
    torch.testing.assert_close(adaptive_avg_pool2d(x, scale), F.adaptive_avg_pool2d(x, scale), atol=1e-6, rtol=0)


def _imagenet_style_checkpoint() -> dict:
    """A checkpoint laid out like the authors' ImageNet one: backbone keys at the top, a classifier beside them."""
    torch.manual_seed(3)
    source = create_model("internimage-t-upernet-tiny", num_classes=2, in_chans=3, img_size=64)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("decode_head.")}
    state["head.weight"] = torch.randn(1000, 128)
    return {"model": state}


def test_internimage_pretrained_loads_the_original_layout(monkeypatch):
    """``pretrained=True`` takes the backbone from the checkpoint (no network here: the download is replaced),
    averages the RGB stem filters for a 1-channel input and leaves the decode head alone."""
    checkpoint = _imagenet_style_checkpoint()
    urls = []
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **kw: urls.append(url) or checkpoint)
    model = create_model("internimage-t-upernet-tiny", num_classes=2, in_chans=1, img_size=64)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("decode_head.")}
    _load_imagenet_backbone(model, in_chans=1)
    assert urls == [INTERNIMAGE_T_IMAGENET]
    own, ref = model.state_dict(), checkpoint["model"]
    torch.testing.assert_close(own["patch_embed.conv1.weight"], ref["patch_embed.conv1.weight"].mean(1, keepdim=True))
    for key in ("levels.2.blocks.0.dcn.offset.weight", "levels.0.downsample.norm.1.weight", "levels.3.norm.0.bias"):
        assert torch.equal(own[key], ref[key])
    assert all(torch.equal(own[k], v) for k, v in head_before.items())


def test_internimage_local_imagenet_checkpoint_through_weights(tmp_path):
    checkpoint = _imagenet_style_checkpoint()
    path = tmp_path / "internimage_t_1k_224.pth"
    torch.save(checkpoint, path)
    model = create_model("internimage-t-upernet-tiny", num_classes=2, in_chans=3, img_size=64, weights=str(path))
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in checkpoint["model"].items() if k != "head.weight")
