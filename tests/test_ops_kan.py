"""U-KAN's and UNeXt's reformulated ops against straightforward references, and KANLinear's ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.interpolate import BSpline

from segdeploy.models._kan import KANLinear, b_spline_basis, uniform_grid
from segdeploy.models.unext import shift_channel_groups


def scipy_basis(x: np.ndarray, knots: np.ndarray, order: int) -> np.ndarray:
    """(N,) points, one feature's knots -> (N, len(knots) - 1 - order), each column one scipy basis element."""
    cols = []
    for i in range(len(knots) - 1 - order):
        element = BSpline.basis_element(knots[i:i + order + 2], extrapolate=False)
        cols.append(np.nan_to_num(element(x), nan=0.0))  # scipy gives NaN outside the element's support
    return np.stack(cols, axis=-1)


def points_off_knots(rng, n: int, knots: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Random points over [lo, hi], nudged off the knots (where the half-open conventions may differ)."""
    x = rng.uniform(lo, hi, n)
    near = np.abs(x[:, None] - knots[None, :]).min(1) < 1e-6
    return np.where(near, x + 1e-3, x)


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_basis_matches_scipy_in_float64(order):
    rng = np.random.default_rng(order)
    # two features with different, non-uniform knots: each row of the grid applies to its own feature
    knots = np.stack([np.sort(rng.uniform(-2, 2, 12)), np.linspace(-1.5, 3.0, 12) ** 3 / 4])
    x = np.stack([points_off_knots(rng, 400, k, k[0] - 0.5, k[-1] + 0.5) for k in knots], axis=-1)  # (400, 2)
    got = b_spline_basis(torch.from_numpy(x), torch.from_numpy(knots), order).numpy()
    assert got.shape == (400, 2, 11 - order)
    for f in range(2):
        np.testing.assert_allclose(got[:, f], scipy_basis(x[:, f], knots[f], order), rtol=0, atol=1e-12)
    inside = (x[:, 0] >= knots[0, order]) & (x[:, 0] < knots[0, -1 - order])
    np.testing.assert_allclose(got[inside, 0].sum(-1), 1.0, atol=1e-12)  # partition of unity on the full span


def test_basis_float32_on_efficient_kan_grid():
    grid = uniform_grid(3, grid_size=5, spline_order=3)  # (3, 12), knots -2.2 ... 2.2
    knots = grid[0].double().numpy()
    x = points_off_knots(np.random.default_rng(0), 3000, knots, -3, 3).reshape(1000, 3)
    got = b_spline_basis(torch.from_numpy(x).float(), grid, 3).double().numpy()
    want = np.stack([scipy_basis(x[:, f], knots, 3) for f in range(3)], axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_kan_linear_equals_explicit_sum_over_edges():
    """y_o = sum_i [ silu(x_i) Wb[o,i] + scaler[o,i] sum_c B_c(x_i) Ws[o,i,c] ], written out in float64."""
    torch.manual_seed(0)
    layer = KANLinear(6, 4).double()
    with torch.no_grad():  # spline terms as large as the base terms, so a wiring error cannot hide
        layer.spline_weight.normal_()
    x = torch.randn(2, 5, 6, dtype=torch.float64) * 1.2  # extra leading axes, as tokens (B, N, C)
    got = layer(x).detach().numpy()
    xs = x.reshape(-1, 6).numpy()
    knots = layer.grid[0].numpy()
    bases = np.stack([scipy_basis(xs[:, i], knots, 3) for i in range(6)], axis=1)  # (10, in, coeff)
    base_w, spline_w = layer.base_weight.detach().numpy(), layer.spline_weight.detach().numpy()
    scaler = layer.spline_scaler.detach().numpy()
    silu = xs / (1 + np.exp(-xs))
    want = silu @ base_w.T + np.einsum("nic,oic,oi->no", bases, spline_w, scaler)
    np.testing.assert_allclose(got.reshape(-1, 4), want, rtol=1e-10, atol=1e-10)


def test_initial_spline_curve_passes_through_its_noise():
    """efficient-kan fits the initial coefficients (lstsq) to noise at the grid points: the fit is exact."""
    torch.manual_seed(1)
    layer = KANLinear(5, 3).double()
    fit = layer._noise_fit_matrix()
    noise = torch.rand(6, 5, 3, dtype=torch.float64) - 0.5
    coeff = torch.einsum("cp,pio->oic", fit, noise)
    grid = uniform_grid(5, 5, 3, dtype=torch.float64)  # the fit's exact knots (the layer's buffer is float32)
    points = grid[0, 3:-3]  # the grid_size + 1 interior knots
    bases = b_spline_basis(points[:, None].expand(6, 5), grid, 3)  # (6, in, coeff)
    torch.testing.assert_close(torch.einsum("pic,oic->pio", bases, coeff), noise, rtol=0, atol=1e-12)
    # the layer's own initial curves pass through uniform noise of half-width scale_noise / grid_size / 2
    curves = torch.einsum("pic,oic->pio", bases, layer.spline_weight.detach())
    assert 0.005 < curves.abs().max() <= 0.1 / 5 / 2 + 1e-9


def test_kan_linear_onnx_export_parity(tmp_path):
    import onnx

    from segdeploy.export.onnx_export import ort_session

    torch.manual_seed(0)
    layer = KANLinear(16, 8).eval()
    with torch.no_grad():
        layer.spline_weight.normal_()
    path = tmp_path / "kan_linear.onnx"
    program = torch.onnx.export(layer, (torch.randn(2, 16),), None, dynamo=True, opset_version=18,
                                input_names=["x"], output_names=["y"],
                                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    onnx.save_model(program.model_proto, str(path))
    onnx.checker.check_model(str(path))
    assert {n.domain for n in onnx.load(str(path)).graph.node} <= {"", "ai.onnx"}  # standard ops only
    session = ort_session(path)
    rng = np.random.default_rng(0)
    for batch in (1, 5):  # neither is the export dummy's batch
        x = (rng.standard_normal((batch, 16)) * 1.5).astype(np.float32)  # spans the grid and beyond it
        got = session.run(["y"], {"x": x})[0]
        with torch.no_grad():
            want = layer(torch.from_numpy(x)).numpy()
        assert got.shape == (batch, 8)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def roll_shift_reference(x: torch.Tensor, shift_size: int, dim: int) -> torch.Tensor:
    """UNeXt's own formulation: zero-pad H and W, roll each channel group, crop."""
    pad = shift_size // 2
    h, w = x.shape[-2:]
    groups = torch.chunk(F.pad(x, (pad, pad, pad, pad)), shift_size, 1)
    rolled = torch.cat([torch.roll(g, s, dim) for g, s in zip(groups, range(-pad, pad + 1))], 1)
    return rolled[:, :, pad:pad + h, pad:pad + w]


@pytest.mark.parametrize("channels", [8, 10, 13, 160])  # uneven chunks and fewer than 5 groups included
@pytest.mark.parametrize("dim", [2, 3])
def test_zero_fill_shift_matches_roll_formulation(channels, dim):
    x = torch.randn(2, channels, 6, 7)
    torch.testing.assert_close(shift_channel_groups(x, 5, dim), roll_shift_reference(x, 5, dim), rtol=0, atol=0)
