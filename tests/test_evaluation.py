"""segdeploy.evaluation.evaluate: the one scoring path, checked against a direct computation at original resolution,
and the per-image confusion counts it keeps against the streaming metrics."""

from __future__ import annotations

import numpy as np
import pytest

from segdeploy.data.folder import Sample
from segdeploy.evaluation.evaluate import evaluate, torch_predictor
from segdeploy.evaluation.metrics import SegMetrics, confusion_matrix, confusion_scores, image_dice

IMG = 32
CLASSES = ["background", "a", "b"]
CENTRES = np.array([1 / 6, 3 / 6, 5 / 6])  # intensity a class is drawn around, as a fraction of 255


class _Images:
    """Grey images whose intensity encodes the class plus noise, so a threshold predicts them imperfectly.

    Every side is at most IMG and one side equals it: the letterbox only pads (no resize), so the prediction at
    original resolution is the threshold of the original pixels, computable without the transforms."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.samples: dict[str, Sample] = {}
        for n, (h, w) in enumerate([(32, 32), (20, 32), (32, 24), (32, 17), (11, 32), (32, 32)]):
            mask = np.zeros((h, w), np.uint8)
            if n != 3:  # image 3 has no foreground at all
                for c in (1, 2):
                    y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
                    mask[y:y + rng.integers(3, h // 2 + 3), x:x + rng.integers(3, w // 2 + 3)] = c
            noise = rng.integers(-60, 61, size=(h, w)) if n != 3 else rng.integers(-10, 11, size=(h, w))
            img = np.clip(np.round(CENTRES[mask] * 255) + noise, 0, 255).astype(np.uint8)
            img[img == 85] = 86  # no pixel exactly on a class boundary (1/3, 2/3 of 255): no ties in the argmax
            img[img == 170] = 171
            self.samples[f"im{n}"] = Sample(f"im{n}", img[..., None], mask)
        self.ids = list(self.samples)

    def load(self, sample_id: str) -> Sample:
        return self.samples[sample_id]


def _threshold_predict(x: np.ndarray) -> np.ndarray:
    """Logits favouring the class whose centre is nearest to the (de-normalised) pixel intensity."""
    v = x[:, 0] * 0.5 + 0.5  # mean = std = 0.5
    return -((v[:, None] - CENTRES[None, :, None, None]) ** 2).astype(np.float32)


def _expected_prediction(image: np.ndarray) -> np.ndarray:
    return ((image[..., 0] > 85).astype(np.uint8) + (image[..., 0] > 170)).astype(np.uint8)


GEOMETRY = dict(img_size=IMG, mean=[0.5], std=[0.5], num_classes=3, class_names=CLASSES)


def test_evaluate_scores_at_original_resolution_as_a_direct_computation():
    ds = _Images()
    ev = evaluate(_threshold_predict, ds, ds.ids, batch=4, **GEOMETRY)

    preds = [_expected_prediction(ds.load(i).image) for i in ds.ids]
    gts = [ds.load(i).mask for i in ds.ids]
    all_p, all_g = np.concatenate([p.ravel() for p in preds]), np.concatenate([g.ravel() for g in gts])
    direct = {name: 2 * np.sum((all_p == c) & (all_g == c)) / (np.sum(all_p == c) + np.sum(all_g == c))
              for c, name in enumerate(CLASSES[1:], 1)}
    assert ev.metrics["dice_per_class"] == pytest.approx(direct, rel=1e-12)
    assert ev.metrics["dice"] == pytest.approx(np.mean(list(direct.values())), rel=1e-12)
    assert 0.5 < ev.metrics["dice"] < 0.99  # the noise leaves a real, imperfect overlap
    assert ev.image_ids == ds.ids and ev.metrics["n_images"] == len(ds.ids)
    # one (K, K) matrix per image, rows = ground truth, equal to counting that image's pixels directly
    assert ev.confusion.shape == (len(ds.ids), 3, 3) and ev.confusion.dtype == np.int64
    for cm, p, g in zip(ev.confusion, preds, gts):
        direct_cm = np.array([[np.sum((g == r) & (p == c)) for c in range(3)] for r in range(3)])
        np.testing.assert_array_equal(cm, direct_cm)
    # HD95 comes from the same streaming metrics over the same predictions
    streaming = SegMetrics(3, CLASSES)
    for p, g in zip(preds, gts):
        streaming.update(p, g)
    assert ev.metrics == streaming.result()


def test_confusions_recompute_the_split_metrics_and_per_image_dice():
    ds = _Images(seed=1)
    ev = evaluate(_threshold_predict, ds, ds.ids, batch=3, compute_hd95=False, **GEOMETRY)
    # micro scores from the summed per-image counts equal what the streaming metrics reported
    assert ev.scores() == ev.metrics
    summed = ev.confusion.sum(axis=0)
    tp = np.diag(summed)
    micro = 2 * tp / (summed.sum(axis=0) + summed.sum(axis=1))
    assert ev.metrics["dice"] == pytest.approx(micro[1:].mean(), rel=1e-12)
    # per-image Dice from the stored counts equals image_dice of each image's own prediction
    per_image = [image_dice(confusion_matrix(_expected_prediction(ds.load(i).image), ds.load(i).mask, 3))
                 for i in ds.ids]
    np.testing.assert_allclose(ev.image_dice(), per_image, rtol=1e-12)
    assert ev.image_dice()[3] == 1.0  # the image without foreground in either: a correct empty prediction
    assert ev.metrics["dice_per_image"] == pytest.approx(np.mean(per_image), rel=1e-12)


def test_a_subset_scored_from_counts_equals_evaluating_that_subset():
    """What a bootstrap or a per-patient breakdown does: index the confusions instead of running the model."""
    ds = _Images(seed=2)
    ev = evaluate(_threshold_predict, ds, ds.ids, batch=8, compute_hd95=False, **GEOMETRY)
    subset = [4, 0, 2]
    again = evaluate(_threshold_predict, ds, [ds.ids[i] for i in subset], batch=2, compute_hd95=False, **GEOMETRY)
    assert ev.scores(subset) == again.metrics
    assert confusion_scores(ev.confusion[subset], CLASSES) == again.metrics
    # a resample with repeats counts an image twice
    doubled = ev.scores([1, 1])
    assert doubled["n_images"] == 2 and doubled["dice"] == pytest.approx(ev.scores([1])["dice"])
    assert ev.scores([1, 5])["dice"] != pytest.approx(ev.scores([1])["dice"])


def test_batches_timing_inputs_and_saved_predictions(tmp_path):
    from PIL import Image

    from segdeploy.data.transforms import preprocess

    ds = _Images(seed=3)
    seen: dict[str, np.ndarray] = {}
    batches: list[int] = []
    ev = evaluate(_threshold_predict, ds, ds.ids, batch=4, save_dir=tmp_path, on_batch=batches.append,
                  on_image=lambda i, p: seen.__setitem__(i, p), **GEOMETRY)
    one = evaluate(_threshold_predict, ds, ds.ids, batch=1, **GEOMETRY)
    np.testing.assert_array_equal(ev.confusion, one.confusion)  # batching changes nothing
    assert batches == [4, 2]
    first = preprocess(ds.load(ds.ids[0]).image, IMG, [0.5], [0.5])[0]
    np.testing.assert_array_equal(ev.input_batch_1, first[None])
    assert ev.input_batch_b.shape == (4, 1, IMG, IMG) and ev.input_batch_b.dtype == np.float32
    # a split smaller than the batch: throughput input repeats its images to fill B
    small = evaluate(_threshold_predict, ds, ds.ids[:3], batch=8, **GEOMETRY)
    assert small.input_batch_b.shape[0] == 8
    np.testing.assert_array_equal(small.input_batch_b[3], small.input_batch_b[0])
    # the saved PNGs and the callback's arrays are the scored predictions, at each image's original size
    for cm, i in zip(ev.confusion, ds.ids):
        saved = np.asarray(Image.open(tmp_path / f"{i}.png"))
        assert saved.shape == ds.load(i).mask.shape
        np.testing.assert_array_equal(saved, seen[i])
        np.testing.assert_array_equal(confusion_matrix(saved, ds.load(i).mask, 3), cm)


def test_bad_predict_output_and_empty_split_are_refused():
    ds = _Images()
    with pytest.raises(ValueError, match="predict returned"):
        evaluate(lambda x: _threshold_predict(x)[:, :2], ds, ds.ids, **GEOMETRY)
    with pytest.raises(ValueError, match="no images"):
        evaluate(_threshold_predict, ds, [], **GEOMETRY)


def test_torch_predictor_matches_the_module_and_autocasts():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 3, 3, padding=1)
    model.train()  # the predictor must switch to eval mode itself
    x = np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    out = torch_predictor(model)(x)
    assert out.dtype == np.float32 and not model.training
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    bf16 = torch_predictor(model, "cpu", torch.bfloat16)(x)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, expected, atol=0.05)  # bf16 keeps ~3 significant digits
    assert not np.array_equal(bf16, expected)  # and autocast really ran in bf16


def test_prepared_images_read_each_image_once_and_score_the_same():
    """bench evaluates every backend x precision of a run on the same images: through PreparedImages each image
    is loaded and preprocessed once, and the scores are those of a fresh evaluation."""
    from segdeploy.evaluation.evaluate import PreparedImages

    ds = _Images()
    loads: list[str] = []
    real_load = ds.load
    ds.load = lambda i: loads.append(i) or real_load(i)
    kept = PreparedImages(ds)
    first = evaluate(_threshold_predict, kept, ds.ids, batch=4, **GEOMETRY)
    second = evaluate(lambda x: _threshold_predict(x) * 2.0, kept, ds.ids, batch=3, **GEOMETRY)
    assert sorted(loads) == sorted(ds.ids)  # once each, for two evaluations
    fresh = evaluate(_threshold_predict, _Images(), ds.ids, batch=4, **GEOMETRY)
    assert first.metrics == second.metrics == fresh.metrics
    np.testing.assert_array_equal(first.confusion, fresh.confusion)
    np.testing.assert_array_equal(first.input_batch_1, fresh.input_batch_1)
    # another input size is another preprocessing, not a stale one
    other = evaluate(_threshold_predict, kept, ds.ids, batch=4, **{**GEOMETRY, "img_size": 48})
    assert other.input_batch_1.shape[-1] == 48 and sorted(loads) == sorted(ds.ids)
