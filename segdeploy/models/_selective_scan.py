"""Mamba's selective scan in plain PyTorch ops, exportable to ONNX: no loop over the sequence.

The operator (Gu & Dao 2023, "Mamba", Algorithm 2; ``selective_scan_fn`` in mamba_ssm, the CUDA kernel
VMamba's SS2D calls) maps, per channel ``d`` and time ``t``::

    delta_t = softplus(delta_t + delta_bias)                  (when delta_softplus)
    h_t[n]  = exp(delta_t A[d, n]) h_{t-1}[n] + delta_t B_t[n] u_t      h_{-1} = 0
    y_t     = sum_n C_t[n] h_t[n] + D[d] u_t

Derivation of the formulation used here
---------------------------------------
Write the state update as the first-order linear recurrence ``h_t = a_t h_{t-1} + b_t`` with
``a_t = exp(delta_t A) in (0, 1]`` (A < 0, delta >= 0) and ``b_t = delta_t B_t u_t``. A step is the affine map
``f_t(h) = a_t h + b_t``, and composing two steps is again affine::

    f_{t+1}(f_t(h)) = (a_{t+1} a_t) h + (a_{t+1} b_t + b_{t+1})

so the recurrence is a prefix scan under an associative operator and has a log-depth parallel form. We use the
work-efficient (Blelloch-style) pairing:

1. Pair neighbours (2i, 2i+1). Each pair is one affine step with ``a'_i = a_{2i+1} a_{2i}`` and
   ``b'_i = a_{2i+1} b_{2i} + b_{2i+1}``, and the states at odd positions satisfy the half-length recurrence
   ``h_{2i+1} = a'_i h_{2i-1} + b'_i``.
2. Solve that recurrence recursively (lengths L/2, L/4, ...; a length-1 recurrence is ``h = b``).
3. Recover the even positions in one step: ``h_{2i} = a_{2i} h_{2i-1} + b_{2i}`` (``h_{-1} = 0``).

An odd length is padded with the identity step (a = 1, b = 0) and cut back after. The recursion depth is
ceil(log2 L), fixed by the feature map's H x W (static at export), and the total work is O(L), about twice
the sequential recurrence's, against O(L log L) for the Hillis-Steele scan.

Why this form rather than the chunked "decay matrix" form of Mamba-2 (SSD): there the decay is one scalar per
head, so a chunk's T x T decay matrix multiplies states by matmuls. Mamba-1's decay ``exp(delta_t A[d, n])``
differs per (channel, state), so that matrix would be (D, N, T, T) per chunk, T times the recurrence's own cost
and memory. The log-space alternative ``h_t = e^{S_t} sum_s e^{-S_s} b_s`` (S = cumsum of log-decays) needs
``e^{-S_s}``, which overflows float32 once the decays add up past ~88 nats, i.e. for long sequences or large
delta. The pairing multiplies only decays in [0, 1] and adds products of them, so it cannot overflow for any
delta; an underflowing decay is 0, which is its correct value to float precision. Rounding grows with the
recursion depth (~log2 L float32 roundings per state), well inside 1e-5 for the sequence lengths a 512 px image
gives (L = 16384).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _pad_time(x: torch.Tensor, front: int = 0, back: int = 0, value: float = 0.0) -> torch.Tensor:
    return F.pad(x, (0, 0) * (x.ndim - 1) + (front, back), value=value)


def linear_scan(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    """States of ``h_t = a_t h_{t-1} + b_t`` (h_{-1} = 0) along the FIRST axis, ``a`` and ``b`` of one shape.

    Time-major because every time step is then one contiguous block: the even/odd split is a strided view
    whose elementwise products stream through memory. With ``c``, returns the readout ``h_t @ c_t`` instead
    (``c`` of shape (L, ..., N, k) for states (L, ..., M, N)), taken before the states are interleaved so the
    full-size state tensor is never copied into natural order.
    """
    length = b.shape[0]
    if length == 1:
        return b if c is None else b @ c
    if length % 2:  # identity step at the end
        a, b = _pad_time(a, back=1, value=1.0), _pad_time(b, back=1)
        c = None if c is None else _pad_time(c, back=1)
    a_even, a_odd = a[0::2], a[1::2]
    b_even, b_odd = b[0::2], b[1::2]
    h_odd = linear_scan(a_odd * a_even, torch.addcmul(b_odd, a_odd, b_even))
    h_even = torch.addcmul(b_even, a_even, _pad_time(h_odd[:-1], front=1))  # h_{2i-1}, with h_{-1} = 0
    if c is not None:
        h_even, h_odd = h_even @ c[0::2], h_odd @ c[1::2]
    return torch.stack([h_even, h_odd], dim=1).flatten(0, 1)[:length]


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, delta_bias: torch.Tensor | None = None,
                   delta_softplus: bool = False) -> torch.Tensor:
    """``selective_scan_fn`` of mamba_ssm (no ``z`` gate, no last state), in ONNX-exportable ops.

    Shapes as in mamba_ssm: ``u``, ``delta`` (batch, dim, L); ``A`` (dim, N); ``B``, ``C`` (batch, G, N, L)
    with the ``dim`` channels split into G equal groups sharing B and C (VMamba: one group per scan
    direction); ``D``, ``delta_bias`` (dim,). Returns ``y`` (batch, dim, L).
    """
    groups = B.shape[1]
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    # time-major and grouped, (L, batch, G, dim/G, 1): the channels of a group share B and C
    delta_t = delta.permute(2, 0, 1).unflatten(2, (groups, -1)).unsqueeze(-1)
    u_t = u.permute(2, 0, 1).unflatten(2, (groups, -1)).unsqueeze(-1)
    decay = torch.exp(delta_t * A.unflatten(0, (groups, -1)))  # (L, batch, G, dim/G, N)
    drive = (delta_t * u_t) * B.permute(3, 0, 1, 2).unsqueeze(3)
    # readout sum_n C_t[n] h_t[n] as a batched (dim/G x N) @ (N x 1) product: no N-wide temporary
    y = linear_scan(decay, drive, C.permute(3, 0, 1, 2).unsqueeze(-1)).flatten(2).permute(1, 2, 0)
    if D is not None:
        y = y + D[:, None] * u
    return y
