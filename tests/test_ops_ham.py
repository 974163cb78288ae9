"""SegNeXt's NMF "ham": the exportable torch formulation against a numpy float64 reference of the
multiplicative updates, eval-mode determinism, and the MSCAN ImageNet checkpoint conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segdeploy.models._ham import NMF2D
from segdeploy.models.segnext import MSCAN, MSCAN_TINY, load_mscan_state_dict


def reference_nmf(x: np.ndarray, bases: np.ndarray, steps: int, inv_t: float = 1.0, eps: float = 1e-6) -> np.ndarray:
    """Lee-Seung multiplicative updates for X ~ B C^T, one sample at a time. x (B, C, H, W), bases (C, R)."""
    out = np.empty_like(x)
    for i, sample in enumerate(x):
        X = sample.reshape(sample.shape[0], -1)  # (D, N)
        B = bases.copy()
        logits = inv_t * X.T @ B
        C = np.exp(logits - logits.max(1, keepdims=True))
        C /= C.sum(1, keepdims=True)  # softmax over the bases
        for _ in range(steps):
            C = C * (X.T @ B) / (C @ (B.T @ B) + eps)
            B = B * (X @ C) / (B @ (C.T @ C) + eps)
        C = C * (X.T @ B) / (C @ (B.T @ B) + eps)
        out[i] = (B @ C.T).reshape(sample.shape)
    return out


def _nonneg_input(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)  # the ham's input follows a ReLU


@pytest.mark.parametrize("steps", [1, 7])
def test_nmf_matches_float64_reference(steps):
    nmf = NMF2D(channels=32, rank=8, eval_steps=steps).eval()
    x = _nonneg_input((2, 32, 6, 7))
    expected = reference_nmf(x, nmf.bases[0].double().numpy(), steps)
    with torch.no_grad():
        got = nmf(torch.from_numpy(x).float()).double().numpy()
    scale = np.abs(expected).max()
    assert scale > 0.1
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale)


def test_nmf_reconstruction_error_never_increases_with_steps():
    """Lee-Seung updates do not increase ||X - B C^T||: more steps, a closer low-rank reconstruction."""
    x = torch.from_numpy(_nonneg_input((1, 16, 8, 8), seed=1))
    errors = []
    for steps in range(8):
        nmf = NMF2D(channels=16, rank=4, eval_steps=steps).double().eval()
        with torch.no_grad():
            errors.append(torch.linalg.norm(x - nmf(x)).item())
    assert all(later <= earlier * (1 + 1e-9) for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.9 * errors[0]


def test_nmf_treats_each_image_independently():
    nmf = NMF2D(channels=16, rank=4).eval()
    x = torch.from_numpy(_nonneg_input((3, 16, 5, 5), seed=2)).float()
    with torch.no_grad():
        together = nmf(x)
        alone = torch.cat([nmf(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_eval_bases_are_fixed_and_checkpointed_training_draws_fresh_ones():
    a, b = NMF2D(channels=16, rank=4), NMF2D(channels=16, rank=4)
    torch.testing.assert_close(a.bases, b.bases, rtol=0, atol=0)  # the same seeded draw in every build
    assert (a.bases >= 0).all()
    torch.testing.assert_close(a.bases.norm(dim=1), torch.ones(1, 4))  # unit-norm bases, as the original
    x = torch.from_numpy(_nonneg_input((2, 16, 4, 4), seed=3)).float()
    with torch.no_grad():
        first, second = a.eval()(x), a(x)
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        b.reset_bases(seed=1)  # other initial bases give another factorisation ...
        assert not torch.allclose(b.eval()(x), first, atol=1e-4)
        b.load_state_dict(a.state_dict())  # ... and the checkpoint restores the evaluated ones
        torch.testing.assert_close(b(x), first, rtol=0, atol=0)
        a.train()  # the original's rand_init: a fresh draw on every training forward
        assert not torch.allclose(a(x), a(x), atol=1e-4)


def test_mscan_imagenet_checkpoint_loads_with_classifier_dropped_and_stem_adapted():
    def build(in_chans):
        return MSCAN(in_chans, MSCAN_TINY.embed_dims, MSCAN_TINY.depths, MSCAN_TINY.mlp_ratios, 0.0)

    torch.manual_seed(0)
    imagenet = build(3).state_dict()
    checkpoint = {**imagenet, "head.weight": torch.zeros(1000, 128), "head.bias": torch.zeros(1000)}
    rgb, gray = build(3), build(1)
    load_mscan_state_dict(rgb, checkpoint)
    for key, value in rgb.state_dict().items():
        torch.testing.assert_close(value, imagenet[key], rtol=0, atol=0)
    load_mscan_state_dict(gray, {f"backbone.{k}": v for k, v in checkpoint.items()})
    stem = gray.state_dict()["patch_embed1.proj.0.weight"]
    torch.testing.assert_close(stem, imagenet["patch_embed1.proj.0.weight"].mean(1, keepdim=True))
    with pytest.raises(RuntimeError, match="Missing key"):  # strict: a wrong file is not silently half-loaded
        load_mscan_state_dict(build(3), {k: v for k, v in checkpoint.items() if not k.startswith("block4")})
