"""segdeploy's copy of nnU-Net's 2d inference pipeline pieces agrees with nnunetv2's own functions: sliding-window
steps, the Gaussian importance map, the nonzero crop and the normalisation schemes; and the tile loop sums tiles
as nnU-Net does (a forward that returns its input gives back the image)."""

from __future__ import annotations

import numpy as np
import pytest

from segdeploy.models.importers.nnunet_pipeline import (SlidingWindow, gaussian_weights, nonzero_bbox, normalise,
                                                        steps_for_sliding_window)


@pytest.mark.parametrize("size,patch,step", [(64, 64, 0.5), (96, 64, 0.5), (128, 64, 0.5), (110, 64, 0.5),
                                             (128, 64, 0.75), (128, 64, 1.0), (97, 64, 1.0), (500, 64, 0.5)])
def test_steps_match_nnunet(size, patch, step):
    sw = pytest.importorskip("nnunetv2.inference.sliding_window_prediction")
    assert steps_for_sliding_window(size, patch, step) == sw.compute_steps_for_sliding_window((size,), (patch,),
                                                                                              step)[0]


def test_gaussian_matches_nnunet():
    import torch

    sw = pytest.importorskip("nnunetv2.inference.sliding_window_prediction")
    ref = sw.compute_gaussian((64, 64), sigma_scale=1 / 8, value_scaling_factor=10, device=torch.device("cpu"))
    ours = gaussian_weights(64)
    assert ours.shape == (64, 64) and ours.max() == pytest.approx(10.0, rel=1e-3)
    np.testing.assert_array_equal(ours, ref.float().numpy())


def test_crop_and_normalisation_match_nnunet():
    pytest.importorskip("nnunetv2")
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import (CTNormalization,
                                                                                    RescaleTo01Normalization,
                                                                                    ZScoreNormalization)

    rng = np.random.default_rng(0)
    data = rng.integers(1, 255, (1, 90, 70)).astype(np.float32)
    data[:, :7], data[:, :, -11:] = 0, 0
    data[:, 40:44, 30:34] = 0  # a hole inside: filled, so kept in the crop and the mask
    box, mask = nonzero_bbox(data)
    ref, seg, bbox = crop_to_nonzero(data[:, None].copy())  # nnU-Net's 2D images are (C, 1, H, W)
    assert (box[0].start, box[0].stop, box[1].start, box[1].stop) == (*bbox[1], *bbox[2])
    np.testing.assert_array_equal(mask, seg[0, 0] >= 0)
    cropped = data[(slice(None), *box)]
    props = {"0": {"mean": 100.0, "std": 30.0, "percentile_00_5": 10.0, "percentile_99_5": 200.0}}
    for scheme, cls, use_mask in (("ZScoreNormalization", ZScoreNormalization, False),
                                  ("ZScoreNormalization", ZScoreNormalization, True),
                                  ("CTNormalization", CTNormalization, False),
                                  ("RescaleTo01Normalization", RescaleTo01Normalization, False)):
        ours = normalise(cropped, mask, [scheme], props, [use_mask])[0]
        theirs = cls(use_mask_for_norm=use_mask, intensityproperties=props["0"]).run(cropped[0].copy(),
                                                                                      seg[0, 0])
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5, err_msg=f"{scheme} mask={use_mask}")


@pytest.mark.parametrize("tile_batch", [1, 3])
def test_tiles_are_weighted_and_stitched_back_to_the_image(tile_batch):
    """A forward returning (-x, x) as two classes: the stitched logits are the normalised image itself, so the
    mask is where the z-scored image is positive, at the image's own size, with the tile count of nnU-Net's
    steps (2 x 3 at step 0.5 for 96 x 128 with a 64 px patch)."""
    rng = np.random.default_rng(1)
    image = rng.integers(1, 255, (96, 128, 1)).astype(np.uint8)
    calls = []

    def forward(x):
        calls.append(len(x))
        return np.concatenate([-x, x], axis=1)

    window = SlidingWindow(forward, patch=64, tile_step=0.5, schemes=["ZScoreNormalization"], props={},
                           use_mask=[False], tile_batch=tile_batch)
    mask = window(image)
    z = (image[..., 0] - image.mean()) / image.std()
    assert mask.shape == (96, 128) and window.tiles == 6
    assert sum(calls) == 6 and max(calls) == tile_batch
    np.testing.assert_array_equal(mask, (z > 0).astype(np.uint8))
    logits = window.logits(z[None].astype(np.float32))
    np.testing.assert_allclose(logits[1], z, rtol=1e-5, atol=1e-5)


def test_a_small_image_is_padded_to_the_patch_and_cropped_back():
    image = np.full((40, 50, 1), 7, np.uint8)
    image[:10] = 200
    window = SlidingWindow(lambda x: np.concatenate([-x, x], axis=1), patch=64, tile_step=0.5,
                           schemes=["RGBTo01Normalization"], props={}, use_mask=[False])
    mask = window(image)
    assert mask.shape == (40, 50) and window.tiles == 1 and mask.all()  # every pixel > 0 after /255
