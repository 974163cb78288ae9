"""The exportable selective scan (Swin-UMamba's SS2D core) against a sequential float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from segdeploy.models._selective_scan import linear_scan, selective_scan


def selective_scan_sequential(u, delta, A, B, C, D, delta_bias, delta_softplus=True):
    """Mamba's recurrence step by step (mamba_ssm's ``selective_scan_ref``), in float64."""
    u, delta, A, B, C, D, delta_bias = (t.double() for t in (u, delta, A, B, C, D, delta_bias))
    delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    per_group = u.shape[1] // B.shape[1]
    B, C = B.repeat_interleave(per_group, 1), C.repeat_interleave(per_group, 1)  # (batch, dim, N, L)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[..., t]
        ys.append((h * C[..., t]).sum(-1))
    return torch.stack(ys, dim=-1) + D[:, None] * u


def random_inputs(batch, groups, per_group, d_state, length, delta_scale=1.0, bias_shift=0.0, seed=0,
                  dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    dim = groups * per_group

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return dict(u=randn(batch, dim, length), delta=delta_scale * randn(batch, dim, length),
                A=-torch.exp(randn(dim, d_state)) * 4, B=randn(batch, groups, d_state, length),
                C=randn(batch, groups, d_state, length), D=randn(dim), delta_bias=randn(dim) + bias_shift)


def rel_err(got, ref):
    return ((got.double() - ref.double()).abs().max() / ref.double().abs().max().clamp(min=1.0)).item()


CASES = {  # batch, groups, channels per group, d_state, L, delta scale, delta bias shift
    "tiny": (2, 4, 3, 5, 7, 1.0, 0.0),
    "length-1": (1, 2, 2, 3, 1, 1.0, 0.0),
    "odd-lengths": (2, 1, 4, 4, 97, 1.0, 0.0),  # 97 -> 49 -> 25 -> 13 -> 7 -> 4: odd at several levels
    "long": (1, 4, 4, 16, 4096, 1.0, 0.0),  # stage 1 of the full model at 256 px
    "long-odd": (1, 1, 8, 8, 3001, 1.0, 0.0),
    "large-delta": (2, 2, 4, 8, 513, 30.0, 0.0),  # most decays underflow to exactly 0
    "long-memory": (1, 2, 4, 4, 4096, 1.0, -9.0),  # delta ~ 1e-4: states integrate over thousands of steps
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_sequential_reference_in_float32(case):
    *shape, scale, shift = case
    inputs = random_inputs(*shape, delta_scale=scale, bias_shift=shift)
    ref = selective_scan_sequential(**inputs)
    got = selective_scan(**inputs, delta_softplus=True)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert rel_err(got, ref) < 1e-5


def test_formulation_is_exact_in_float64():
    """Same algebra as the recurrence: in float64 the two agree to rounding, not just to float32 tolerance."""
    inputs = random_inputs(2, 2, 3, 6, 1000, dtype=torch.float64)
    assert rel_err(selective_scan(**inputs, delta_softplus=True), selective_scan_sequential(**inputs)) < 1e-12


def test_linear_scan_is_the_recurrence():
    a, b = torch.rand(50, 3, dtype=torch.float64), torch.randn(50, 3, dtype=torch.float64)
    h, expected = torch.zeros(3, dtype=torch.float64), []
    for t in range(50):
        h = a[t] * h + b[t]
        expected.append(h)
    torch.testing.assert_close(linear_scan(a, b), torch.stack(expected), rtol=1e-12, atol=1e-12)
    # the fused readout: (L, 3, 1) states times (L, 1, 2) read vectors
    c = torch.randn(50, 1, 2, dtype=torch.float64)
    torch.testing.assert_close(linear_scan(a[..., None], b[..., None], c), torch.stack(expected)[..., None] @ c)


@pytest.mark.parametrize("case", [(2, 4, 3, 5, 37, 1.0),
                                  pytest.param((1, 2, 4, 8, 700, 1.0), marks=pytest.mark.slow),  # 700 steps
                                  (1, 2, 4, 4, 200, 10.0)],
                         ids=["short", "long", "large-delta"])
def test_gradients_match_sequential_reference(case):
    *shape, scale = case
    inputs32 = {k: v.requires_grad_() for k, v in random_inputs(*shape, delta_scale=scale).items()}
    inputs64 = {k: v.detach().double().requires_grad_() for k, v in inputs32.items()}
    weight = torch.randn(inputs32["u"].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (selective_scan(**inputs32, delta_softplus=True).double() * weight).sum().backward()
    (selective_scan_sequential(**inputs64) * weight).sum().backward()
    for name in inputs32:
        assert rel_err(inputs32[name].grad, inputs64[name].grad) < 1e-5, name


class _ScanModule(nn.Module):
    def __init__(self, inputs):
        super().__init__()
        self.A, self.D, self.delta_bias = (nn.Parameter(inputs[k]) for k in ("A", "D", "delta_bias"))

    def forward(self, u, delta, B, C):
        return selective_scan(u, delta, self.A, B, C, self.D, self.delta_bias, delta_softplus=True)


@pytest.mark.slow  # dynamo export of the scan loop
def test_onnx_export_matches_onnxruntime(tmp_path):
    import onnxruntime as ort

    length = 300  # odd levels included: 300 -> 150 -> 75 -> 38 -> ...
    module = _ScanModule(random_inputs(2, 4, 3, 5, length)).eval()
    batch = torch.export.Dim("batch", min=1)
    names = ["u", "delta", "B", "C"]
    dummy = random_inputs(2, 4, 3, 5, length, seed=1)
    program = torch.onnx.export(module, tuple(dummy[k] for k in names), None, dynamo=True, opset_version=18,
                                input_names=names, output_names=["y"],
                                dynamic_shapes=tuple({0: batch} for _ in names))
    path = tmp_path / "scan.onnx"
    program.save(str(path))
    ops = {node.op_type for node in program.model_proto.graph.node}
    assert not ops & {"Loop", "Scan", "If"}  # straight-line graph
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch_size, scale in ((1, 1.0), (3, 1.0), (3, 40.0)):  # 40: softplus far beyond exp's range
        feeds = random_inputs(batch_size, 4, 3, 5, length, delta_scale=scale, seed=2 + batch_size)
        feeds = {k: feeds[k] for k in names}
        got = session.run(["y"], {k: v.numpy() for k, v in feeds.items()})[0]
        with torch.no_grad():
            ref = module(**feeds)
            seq = selective_scan_sequential(**feeds, A=module.A, D=module.D, delta_bias=module.delta_bias)
        assert np.isfinite(got).all()
        assert rel_err(torch.from_numpy(got), ref) < 1e-5
        assert rel_err(torch.from_numpy(got), seq) < 1e-5


def test_ss2d_sums_the_four_directional_scans():
    """SS2D's flips and transposes: each direction is the reference scan over the pixels in that order."""
    from segdeploy.models.swin_umamba import SS2D

    torch.manual_seed(0)
    ss2d = SS2D(d_model=4, d_state=3).double()
    height, width, d = 3, 5, ss2d.d_inner  # H != W catches a swapped transpose
    x = torch.randn(2, d, height, width, dtype=torch.float64)
    rows = [h * width + w for h in range(height) for w in range(width)]
    cols = [h * width + w for w in range(width) for h in range(height)]
    pixels = x.flatten(2)
    expected = torch.zeros_like(pixels)
    with torch.no_grad():
        for k, order in enumerate([rows, cols, rows[::-1], cols[::-1]]):
            seq = pixels[:, :, order]
            dt, b, c = torch.split(ss2d.x_proj_weight[k] @ seq, [ss2d.dt_rank, 3, 3], dim=1)
            channels = slice(k * d, (k + 1) * d)
            expected[:, :, order] += selective_scan_sequential(
                seq, ss2d.dt_projs_weight[k] @ dt, -torch.exp(ss2d.A_logs[channels]), b[:, None], c[:, None],
                ss2d.Ds[channels], ss2d.dt_projs_bias[k])
        got = ss2d._scan_four_ways(x)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_vmamba_checkpoint_loads_into_the_encoder(tmp_path):
    from segdeploy.errors import SegdeployError
    from segdeploy.models import create_model
    from segdeploy.models.swin_umamba import load_vmamba_imagenet

    torch.manual_seed(0)
    source = create_model("swin-umamba-tiny", 2)
    torch.manual_seed(1)
    target = create_model("swin-umamba-tiny", 2)
    state = {k: v for k, v in source.vssm_encoder.state_dict().items() if not k.startswith("patch_embed.")}
    # as in VMamba's ImageNet checkpoint: a 4x4 RGB patch embedding and a classifier, both to be left out
    state |= {"patch_embed.proj.weight": torch.randn(12, 3, 4, 4), "head.weight": torch.randn(1000, 96)}
    path = tmp_path / "vssm.pth"
    torch.save({"model": state, "epoch": 292}, path)
    patch_embed_before = target.vssm_encoder.patch_embed.proj.weight.clone()
    load_vmamba_imagenet(target, path)
    loaded = target.vssm_encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k.startswith("layers."))
    assert torch.equal(target.vssm_encoder.patch_embed.proj.weight, patch_embed_before)
    torch.save({"model": {k: v for k, v in state.items() if "blocks.0" not in k}}, path)
    with pytest.raises(SegdeployError, match="not a VMamba-Tiny"):
        load_vmamba_imagenet(target, path)
