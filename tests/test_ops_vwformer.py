"""VWFormer's varying window attention: the exportable formulation against a direct one (index gathers,
F.unfold, a loop over windows), and the copy-shift padding's defining property."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segdeploy.models._vwformer_head import VaryingWindowAttention, context_windows, copy_shift_pad, fold_context


def _csp_sources(length: int, ratio: int, window: int) -> list[int]:
    """For each position of the CSP-padded axis, the source index into the map (-1: zero). Written from the
    official slicing: before = source[lead:span], the map, after = source[size-span : size-lead], where source is
    the map, or the map centred in zeros of length span when span exceeds it."""
    span, lead = ratio * window, (ratio + 1) * window // 2
    offset = (span - length) // 2 if span > length else 0
    size = max(span, length)

    def src(i):  # index into ``source`` -> index into the map
        j = i - offset
        return j if 0 <= j < length else -1

    return ([src(i) for i in range(lead, span)] + list(range(length))
            + [src(i) for i in range(size - span, size - lead)])


def _csp_reference(x: torch.Tensor, ratio: int, window: int) -> torch.Tensor:
    rows = torch.tensor(_csp_sources(x.shape[2], ratio, window))
    cols = torch.tensor(_csp_sources(x.shape[3], ratio, window))
    zero_ext = F.pad(x, [0, 1, 0, 1])  # index -1 reads the appended zero row/column
    return zero_ext[:, :, rows][:, :, :, cols]


@pytest.mark.parametrize("size,ratio", [(64, 2), (64, 8), (32, 4), (32, 8), (16, 8), (8, 2)])
def test_copy_shift_pad_matches_index_reference(size, ratio):
    x = torch.randn(2, 3, size, size)
    out = copy_shift_pad(copy_shift_pad(x, 3, ratio, 8), 2, ratio, 8)
    assert out.shape[-1] == (size // 8 + ratio - 1) * 8
    torch.testing.assert_close(out, _csp_reference(x, ratio, 8), rtol=0, atol=0)


@pytest.mark.parametrize("n,ratio", [(8, 2), (8, 4), (8, 8), (5, 4)])
def test_csp_context_of_a_border_window_is_the_window_shifted_inside(n, ratio):
    """The paper's point of CSP: no query sees padding; a context that would cross the border is moved inside."""
    window = 4
    length = n * window
    coords = torch.arange(length, dtype=torch.float32).reshape(1, 1, 1, length)
    padded = copy_shift_pad(coords, 3, ratio, window)
    span = ratio * window
    for i in range(n):
        context = padded[0, 0, 0, i * window: i * window + span]
        start = min(max(i * window - (span - window) // 2, 0), length - span)
        assert sorted(context.tolist()) == list(range(start, start + span)), f"window {i}"


def test_context_windows_match_unfold():
    ratio, window, n_h, n_w = 4, 4, 3, 5
    x = torch.randn(2, 3, (n_h + ratio - 1) * window, (n_w + ratio - 1) * window)
    ours = context_windows(x, ratio, window, n_h, n_w)
    cols = F.unfold(x, kernel_size=ratio * window, stride=window)  # (B, c*k*k, n_h*n_w)
    ref = cols.reshape(2, 3, ratio * window, ratio * window, n_h * n_w).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(ours, ref.reshape(-1, 3, ratio * window, ratio * window), rtol=0, atol=0)


def test_fold_context_is_space_to_depth_in_official_channel_order():
    ratio, window, chans = 2, 3, 4
    ctx = torch.randn(5, chans, ratio * window, ratio * window)
    out = fold_context(ctx, ratio)
    for s in range(ratio):
        for t in range(ratio):
            for c in range(chans):  # official: 'b c (ph rh) (pw rw) -> b (rh rw c) ph pw'
                torch.testing.assert_close(out[:, (s * ratio + t) * chans + c], ctx[:, c, s::ratio, t::ratio])


def _vwa_reference(vwa: VaryingWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """VWA written directly: pad, pre-scale, CSP by index gather, F.unfold, then one window at a time."""
    batch, chans, height, width = x.shape
    win, ratio, heads = vwa.window, vwa.ratio, vwa.heads
    n_h, n_w = -(-height // win), -(-width // win)
    padded = F.pad(x, [0, n_w * win - width, 0, n_h * win - height])
    q_map = vwa.query(padded)
    ctx = _csp_reference(vwa.pre_scale(F.pad(padded, vwa.pre_pad)), ratio, win)
    cols = F.unfold(ctx, kernel_size=ratio * win, stride=win)
    out = torch.zeros(batch, chans, n_h * win, n_w * win)
    dim = chans // heads
    for b in range(batch):
        for i in range(n_h):
            for j in range(n_w):
                window_ctx = cols[b, :, i * n_w + j].reshape(1, -1, ratio * win, ratio * win)
                tokens = fold_context(window_ctx, ratio)
                k = vwa.key(tokens)[0].reshape(chans, -1)  # (C, P*P)
                v = vwa.value(tokens)[0].reshape(chans, -1)
                q = q_map[b, :, i * win:(i + 1) * win, j * win:(j + 1) * win].reshape(chans, -1)
                for h in range(heads):
                    sl = slice(h * dim, (h + 1) * dim)
                    attn = torch.softmax(q[sl].T @ k[sl] / dim ** 0.5, dim=-1)  # (P*P queries, P*P keys)
                    out[b, sl, i * win:(i + 1) * win, j * win:(j + 1) * win] = (attn @ v[sl].T).T.reshape(dim, win, win)
    return vwa.proj(out[:, :, :height, :width]) + x


@pytest.mark.parametrize("size,ratio,heads", [(16, 2, 1), (16, 8, 2), (12, 4, 1), (24, 4, 1), (8, 8, 1), (10, 4, 2)])
def test_vwa_matches_direct_reference(size, ratio, heads):
    torch.manual_seed(0)
    vwa = VaryingWindowAttention(64, ratio, window=4, heads=heads).eval()
    for conv in (vwa.query, vwa.key):  # larger weights than the 0.01 init, so attention is far from uniform
        torch.nn.init.normal_(conv.weight, std=0.3)
    x = torch.randn(2, 64, size, size + 4)
    with torch.no_grad():
        ours, ref = vwa(x), _vwa_reference(vwa, x)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
