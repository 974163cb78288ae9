"""KANLinear: the Kolmogorov-Arnold layer of U-KAN, with a B-spline basis written in exportable ops.

Liu et al., "KAN: Kolmogorov-Arnold Networks", 2024, in the "efficient-kan" formulation U-KAN uses
(github.com/Blealtan/efficient-kan): every input feature is expanded on a fixed B-spline basis, so a KAN layer
is ``SiLU(x) W_base^T + B(x) W_spline^T``, two matrix products. The basis is the only non-standard op; here it
is the Cox-de Boor recursion unrolled over the static spline order, with the degree-0 interval tests as float
masks, so it exports to plain ONNX (GreaterOrEqual/Less/Cast/Mul/Sub/Div) and runs in every backend.

Parameter names and shapes follow efficient-kan (``base_weight``, ``spline_weight``, ``spline_scaler``, buffer
``grid``), so its checkpoints load unchanged. Its ``update_grid`` (data-adaptive knots) is left out: U-KAN trains
with the fixed uniform grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def uniform_grid(in_features: int, grid_size: int, spline_order: int, grid_range=(-1.0, 1.0), *,
                 device=None, dtype=None) -> torch.Tensor:
    """Knots (in_features, grid_size + 2 * spline_order + 1): ``grid_size`` intervals over ``grid_range``,
    extended by ``spline_order`` intervals on each side so every point of the range has a full basis."""
    h = (grid_range[1] - grid_range[0]) / grid_size
    knots = torch.arange(-spline_order, grid_size + spline_order + 1, device=device, dtype=dtype) * h + grid_range[0]
    return knots.expand(in_features, -1).contiguous()


def b_spline_basis(x: torch.Tensor, grid: torch.Tensor, spline_order: int) -> torch.Tensor:
    """B-spline basis functions of degree ``spline_order`` at ``x`` (..., F) on knots ``grid`` (F, T):
    returns (..., F, T - 1 - spline_order). Zero outside [grid[:, 0], grid[:, -1]), like efficient-kan."""
    x = x.unsqueeze(-1)
    # degree 0: indicator of the half-open knot interval [t_i, t_{i+1}); masks as floats, not boolean And
    bases = (x >= grid[:, :-1]).to(x.dtype) * (x < grid[:, 1:]).to(x.dtype)
    for k in range(1, spline_order + 1):  # a Python loop over a constant: unrolled in the exported graph
        left = (x - grid[:, :-(k + 1)]) / (grid[:, k:-1] - grid[:, :-(k + 1)])
        right = (grid[:, k + 1:] - x) / (grid[:, k + 1:] - grid[:, 1:-k])
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return bases


class KANLinear(nn.Module):
    """``y = SiLU(x) W_base^T + B(x) (W_spline * scaler)^T`` over the last axis of ``x`` (no bias)."""

    def __init__(self, in_features: int, out_features: int, grid_size: int = 5, spline_order: int = 3,
                 scale_noise: float = 0.1, scale_base: float = 1.0, scale_spline: float = 1.0,
                 grid_range=(-1.0, 1.0)):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.grid_size, self.spline_order = grid_size, spline_order
        self.scale_noise, self.scale_base, self.scale_spline = scale_noise, scale_base, scale_spline
        self.grid_range = tuple(grid_range)
        self.register_buffer("grid", uniform_grid(in_features, grid_size, spline_order, grid_range))
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, grid_size + spline_order))
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features))
        self.base_activation = nn.SiLU()
        self.reset_parameters()

    def _noise_fit_matrix(self) -> torch.Tensor:
        """(grid_size + order, grid_size + 1): the least-squares map from values at the grid points to spline
        coefficients. The grid is the same for every feature, so one small pseudo-inverse serves all of them
        (efficient-kan solves one lstsq per feature); computed on CPU so a meta-device build works too."""
        grid = uniform_grid(1, self.grid_size, self.spline_order, self.grid_range, device="cpu", dtype=torch.float64)
        points = grid[0, self.spline_order:-self.spline_order].unsqueeze(-1)  # (grid_size + 1, 1)
        design = b_spline_basis(points, grid, self.spline_order)[:, 0]  # (grid_size + 1, grid_size + order)
        return torch.linalg.pinv(design)

    def reset_parameters(self) -> None:
        """efficient-kan's initialisation: Kaiming-uniform base weights and scalers; spline coefficients of
        a curve through small uniform noise at the grid points (scale_noise / grid_size)."""
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5) * self.scale_base)
        with torch.no_grad():
            device, dtype = self.spline_weight.device, self.spline_weight.dtype
            noise = ((torch.rand(self.grid_size + 1, self.in_features, self.out_features, device=device, dtype=dtype)
                      - 0.5) * self.scale_noise / self.grid_size)
            fit = self._noise_fit_matrix().to(device=device, dtype=dtype)
            self.spline_weight.copy_(torch.einsum("cp,pio->oic", fit, noise))
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5) * self.scale_spline)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(self.base_activation(x), self.base_weight)
        bases = b_spline_basis(x, self.grid, self.spline_order).flatten(-2)  # (..., in * (grid + order))
        spline_weight = (self.spline_weight * self.spline_scaler.unsqueeze(-1)).flatten(1)
        return base + F.linear(bases, spline_weight)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, grid_size={self.grid_size}, "
                f"spline_order={self.spline_order}")
