"""TransNeXt's aggregated attention in plain ops vs straightforward references, and its ONNX export alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from segdeploy.models._aggregated_attention import (AggregatedAttention, aggregated_attention,
                                                    continuous_position_bias, window_neighbours)

HEIGHT, WIDTH, WINDOW = 5, 6, 3


def reference_attention(q, k, v, k_pool, v_pool, window_bias, pool_bias, window_extra, height, width, window):
    """The same attention, one query pixel at a time in float64 numpy: gather the in-map neighbours, one softmax
    over neighbours + pooled keys, weights (+ the extra term for neighbours) times values."""
    batch, heads, n, d = q.shape
    r = window // 2
    out = np.zeros((batch, heads, n, d))
    for b in range(batch):
        for h in range(heads):
            for y in range(height):
                for x in range(width):
                    i = y * width + x
                    slots, logits = [], []
                    for dy in range(-r, r + 1):
                        for dx in range(-r, r + 1):
                            yy, xx = y + dy, x + dx
                            if 0 <= yy < height and 0 <= xx < width:
                                s = (dy + r) * window + (dx + r)
                                slots.append((s, yy * width + xx))
                                logits.append(q[b, h, i] @ k[b, h, yy * width + xx] + window_bias[h, s])
                    logits += list(k_pool[b, h] @ q[b, h, i] + pool_bias[h, i])
                    weights = np.exp(np.array(logits) - max(logits))
                    weights /= weights.sum()
                    for (s, j), w in zip(slots, weights):
                        out[b, h, i] += (w + window_extra[b, h, i, s]) * v[b, h, j]
                    out[b, h, i] += weights[len(slots):] @ v_pool[b, h]
    return out


def _inputs(batch=2, heads=2, d=4, pool=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, s = HEIGHT * WIDTH, WINDOW * WINDOW

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    return (rand(batch, heads, n, d), rand(batch, heads, n, d), rand(batch, heads, n, d),
            rand(batch, heads, pool, d), rand(batch, heads, pool, d), rand(heads, s), rand(heads, n, pool),
            rand(batch, heads, n, s))


def test_window_neighbours_matches_unfold():
    x = torch.randn(2, 3, HEIGHT, WIDTH)
    expected = F.unfold(x, WINDOW, padding=WINDOW // 2).reshape(2, 3, WINDOW * WINDOW, HEIGHT * WIDTH)
    assert torch.equal(window_neighbours(x, WINDOW), expected)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_aggregated_attention_matches_pixel_loop(dtype, tol):
    inputs = _inputs()
    expected = reference_attention(*(t.double().numpy() for t in inputs), HEIGHT, WIDTH, WINDOW)
    got = aggregated_attention(*(t.to(dtype) for t in inputs), (HEIGHT, WIDTH), WINDOW)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.double().numpy(), expected, atol=tol, rtol=0)


def test_border_pixels_ignore_out_of_map_neighbours():
    """A corner pixel has 4 in-map neighbours: perturbing the window bias of off-map offsets changes nothing."""
    inputs = list(_inputs())
    base = aggregated_attention(*inputs, (HEIGHT, WIDTH), WINDOW)
    inputs[5] = inputs[5].clone()
    inputs[5][:, 0] += 100.0  # offset (-1, -1): off the map for the whole first row and column
    moved = aggregated_attention(*inputs, (HEIGHT, WIDTH), WINDOW)
    inner = [y * WIDTH + x for y in range(HEIGHT) for x in range(WIDTH) if y == 0 or x == 0]
    torch.testing.assert_close(moved[:, :, inner], base[:, :, inner], atol=1e-6, rtol=0)
    assert not torch.allclose(moved[:, :, WIDTH + 1], base[:, :, WIDTH + 1])  # (1, 1) sees (0, 0)


def reference_position_bias(fc1, fc2, query_size, key_size, pretrain_size):
    """Every query pixel against every pooled-bin centre, offsets log-spaced as in TransNeXt, through the MLP."""
    (hq, wq), (hk, wk) = query_size, key_size

    def centres(n_in, n_out):  # adaptive_avg_pool1d of the pixel positions = each bin's mean position
        return F.adaptive_avg_pool1d(torch.arange(n_in, dtype=torch.float64)[None], n_out)[0]

    ch, cw = centres(hq, hk), centres(wq, wk)
    rows = []
    for y in range(hq):
        for x in range(wq):
            for ky in range(hk):
                for kx in range(wk):
                    rows.append([(y - ch[ky]) / (pretrain_size - 1) * 8, (x - cw[kx]) / (pretrain_size - 1) * 8])
    rel = torch.tensor(rows, dtype=torch.float64)
    rel = torch.sign(rel) * torch.log2(rel.abs() + 1) / math.log2(8)
    bias = fc2.double()(F.relu(fc1.double()(rel)))  # (Nq*Nk, heads)
    return bias.T.reshape(-1, hq * wq, hk * wk)


@pytest.mark.parametrize("query_size,key_size", [((8, 8), (2, 2)), ((6, 9), (3, 2)), ((4, 4), (4, 4))])
def test_position_bias_matches_pairwise_mlp(query_size, key_size):
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(2, 32), nn.Linear(32, 3)
    got = continuous_position_bias(fc1, fc2, query_size, key_size, 14, torch.device("cpu"))
    expected = reference_position_bias(fc1, fc2, query_size, key_size, 14)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


class _Core(nn.Module):
    """The op alone with fixed extra inputs, so the exported graph is the attention core."""

    def __init__(self, heads=2, d=4, pool=4):
        super().__init__()
        _, _, _, _, _, window_bias, pool_bias, _ = _inputs(heads=heads, d=d, pool=pool)
        self.window_bias, self.pool_bias = nn.Parameter(window_bias), nn.Parameter(pool_bias)
        self.heads, self.d, self.pool = heads, d, pool

    def forward(self, x):  # x (B, 4*heads*d + heads*S, H, W) carries q, k, v, window_extra; pooled from k, v
        batch = x.shape[0]
        hd, s = self.heads * self.d, WINDOW * WINDOW
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        q, k, v, kp, extra = tokens.split([hd, hd, hd, hd, self.heads * s], dim=-1)

        def heads(t, width):
            return t.reshape(batch, -1, self.heads, width).transpose(1, 2)

        k_pool = heads(kp, self.d)[:, :, :self.pool]
        out = aggregated_attention(heads(q, self.d), heads(k, self.d), heads(v, self.d), k_pool, k_pool * 2,
                                   self.window_bias, self.pool_bias, heads(extra, s), (HEIGHT, WIDTH), WINDOW)
        return out.transpose(-1, -2).reshape(batch, hd, HEIGHT, WIDTH)  # a map, as the exporter checks expect


def test_op_exports_to_onnx_with_parity(tmp_path):
    from segdeploy.export.onnx_export import export_onnx, parity

    core = _Core().eval()
    channels = 4 * 2 * 4 + 2 * 9
    info = export_onnx(core, tmp_path / "op.onnx", (channels, HEIGHT, WIDTH))
    assert info["exporter"] == "dynamo" and info["opset"] == 18
    rng = np.random.default_rng(0)
    for batch in (1, 3):  # dynamic batch: neither is the export dummy's size
        result = parity(tmp_path / "op.onnx", core, rng.standard_normal((batch, channels, HEIGHT, WIDTH),
                                                                        dtype=np.float32))
        assert result["n_images"] == batch and result["max_abs_diff"] < 1e-5


@pytest.mark.parametrize("size", [(4, 4), (8, 8), (12, 8)])
def test_module_runs_at_any_size_and_reaches_every_parameter(size):
    """No table is sized at construction: the same module handles several maps, every parameter learns."""
    torch.manual_seed(0)
    attn = AggregatedAttention(dim=16, num_heads=2, sr_ratio=4, pretrain_size=14)
    x = torch.randn(2, size[0] * size[1], 16)
    out = attn(x, *size)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attn.parameters())


def test_imagenet_checkpoint_loads_into_the_segmentation_model(tmp_path):
    """The official classifier checkpoint's names (backbone at the top level, plus ``head.*``) load unchanged,
    through ``weights=`` and through the pretrained loader, which also adapts the stem to 1 channel."""
    from segdeploy.errors import SegdeployError
    from segdeploy.models import create_model
    from segdeploy.models.transnext import load_imagenet_backbone

    torch.manual_seed(0)
    source = create_model("transnext-t-upernet-tiny", num_classes=2, in_chans=3, img_size=64)
    checkpoint = {k: v for k, v in source.state_dict().items() if not k.startswith("decode_head.")}
    checkpoint |= {"head.weight": torch.randn(1000, 128), "head.bias": torch.zeros(1000)}
    path = tmp_path / "transnext_imagenet.pth"
    torch.save(checkpoint, path)

    loaded = create_model("transnext-t-upernet-tiny", num_classes=2, in_chans=3, img_size=64, weights=str(path))
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in checkpoint.items() if not k.startswith("head."))

    gray = create_model("transnext-t-upernet-tiny", num_classes=2, in_chans=1, img_size=64)
    load_imagenet_backbone(gray, checkpoint, str(path))
    rgb_stem = checkpoint["patch_embed1.proj.weight"]
    torch.testing.assert_close(gray.patch_embed1.proj.weight, rgb_stem.sum(1, keepdim=True))
    torch.testing.assert_close(gray.block3[0].attn.learnable_tokens, checkpoint["block3.0.attn.learnable_tokens"])

    with pytest.raises(SegdeployError, match="does not match"):
        load_imagenet_backbone(gray, {k: v for k, v in checkpoint.items() if not k.startswith("block1.")}, str(path))
