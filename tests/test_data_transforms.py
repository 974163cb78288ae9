"""segdeploy.data.transforms: letterbox round trip, normalisation, joint augmentation, the torch Dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segdeploy.data import open_dataset
from segdeploy.data.synthetic import render_slice
from segdeploy.data.transforms import TorchSegDataset, TrainAugment, letterbox, preprocess, restore


def _round_trip(mask: np.ndarray, k: int, img_size: int) -> np.ndarray:
    """One-hot mask -> preprocess (as a K-channel image) -> treat as logits -> restore -> argmax."""
    onehot = (np.eye(k, dtype=np.uint8)[mask] * 255).astype(np.uint8)
    x, meta = preprocess(onehot, img_size, mean=[0.0] * k, std=[1.0] * k)
    assert x.shape == (k, img_size, img_size) and x.dtype == np.float32
    back = restore(x, meta)
    assert back.shape == (k, *mask.shape) and isinstance(back, np.ndarray)
    return back.argmax(axis=0)


@pytest.mark.parametrize("case,img_size", [(0, 128), (5, 320), (9, 96)])
def test_preprocess_restore_round_trip(case, img_size):
    _, mask = render_slice(0, case, 2)  # thin wall and small lesion: a demanding mask
    assert mask.shape[0] != mask.shape[1]
    agree = (_round_trip(mask, 4, img_size) == mask).mean()
    assert agree >= 0.99


@pytest.mark.parametrize("shape", [(128, 128), (128, 90), (70, 128)])
def test_round_trip_is_exact_without_resize(shape):
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, shape).astype(np.uint8)
    np.testing.assert_array_equal(_round_trip(mask, 3, 128), mask)


def test_preprocess_centres_pads_with_zero_and_normalises():
    image = np.full((60, 100, 3), 255, np.uint8)
    x, meta = preprocess(image, 100, mean=[0.5, 0.5, 0.5], std=[0.5, 0.25, 0.5])
    assert (meta.side, meta.pad_top, meta.pad_left, meta.orig_h, meta.orig_w) == (100, 20, 0, 60, 100)
    assert np.all(x[:, 20:80] == np.array([1.0, 2.0, 1.0], np.float32)[:, None, None])
    assert np.all(x[:, :20] == np.array([-1.0, -2.0, -1.0], np.float32)[:, None, None])
    assert np.all(x[:, 80:] == np.array([-1.0, -2.0, -1.0], np.float32)[:, None, None])


def test_restore_keeps_torch_type():
    meta = preprocess(np.zeros((50, 80, 1), np.uint8), 64, [0.5], [0.5])[1]
    logits = torch.randn(3, 64, 64)
    out = restore(logits, meta)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 50, 80)
    np.testing.assert_allclose(out.numpy(), restore(logits.numpy(), meta), rtol=0, atol=1e-6)


def test_flip_augment_moves_image_and_mask_together():
    torch.manual_seed(0)
    mask = torch.zeros(32, 32, dtype=torch.uint8)
    mask[2:10, 3:20] = 1
    mask[20:30, 25:28] = 2
    image = (mask * 100)[None].clone()
    aug = TrainAugment(32, affine=False, blur=False, photometric=False)
    outcomes = set()
    for _ in range(20):
        img2, mask2 = aug(image, mask)
        assert torch.equal(img2[0], mask2 * 100)
        outcomes.add((torch.equal(mask2, mask.flip(1)), torch.equal(mask2, mask.flip(0)),
                      torch.equal(mask2, mask.flip(0).flip(1)), torch.equal(mask2, mask)))
    assert len(outcomes) == 4  # all four flip combinations occurred


def test_full_augment_keeps_labels_and_alignment():
    torch.manual_seed(1)
    _, mask_np = render_slice(0, 2, 3)
    _, mask_lb, _ = letterbox(np.zeros((*mask_np.shape, 1), np.uint8), mask_np, 96)
    mask = torch.from_numpy(mask_lb)
    image = (mask * 60)[None].clone()
    aug = TrainAugment(96, blur=False, photometric=False)
    changed = 0
    for _ in range(10):
        img2, mask2 = aug(image, mask)
        assert img2.shape == (1, 96, 96) and img2.dtype == torch.uint8 and mask2.shape == (96, 96)
        assert set(mask2.unique().tolist()) <= {0, 1, 2, 3}
        # bilinear image vs nearest mask differ only along edges
        assert (img2[0] == mask2 * 60).float().mean() > 0.95
        changed += not torch.equal(mask2, mask)
    assert changed >= 9
    full = TrainAugment(96)
    img3, mask3 = full(image, mask)
    assert set(mask3.unique().tolist()) <= {0, 1, 2, 3}


def test_strength_zero_has_no_geometry():
    image = torch.arange(64 * 64, dtype=torch.int32).reshape(1, 64, 64).remainder(251).to(torch.uint8)
    mask = (image[0] % 4).clone()
    img2, mask2 = TrainAugment(64, strength=0, blur=False, photometric=False)(image, mask)
    assert torch.equal(img2, image) and torch.equal(mask2, mask)


def test_torch_dataset_matches_preprocess_and_caches():
    ds = open_dataset("synthetic:12")
    ids = ds.ids[:4]
    loads = []
    real_load = ds.load
    ds.load = lambda i: loads.append(i) or real_load(i)
    tds = TorchSegDataset(ds, ids, 64, mean=[0.5], std=[0.5])
    for _ in range(2):
        for j in range(len(tds)):
            x, y = tds[j]
            assert x.dtype == torch.float32 and x.shape == (1, 64, 64)
            assert y.dtype == torch.int64 and y.shape == (64, 64)
    assert loads == ids  # each file decoded once
    sample = real_load(ids[1])
    expected, _ = preprocess(sample.image, 64, [0.5], [0.5])
    np.testing.assert_array_equal(tds[1][0].numpy(), expected)
    aug = TorchSegDataset(ds, ids, 64, mean=[0.5], std=[0.5], augment=TrainAugment(64)).preload()
    x, y = aug[0]
    assert x.shape == (1, 64, 64) and set(y.unique().tolist()) <= {0, 1, 2, 3}
    batch = next(iter(torch.utils.data.DataLoader(aug, batch_size=4)))
    assert batch[0].shape == (4, 1, 64, 64) and batch[1].shape == (4, 64, 64)
