"""segdeploy cam: energy shares, M3d-CAM-style layer choice, Grad-CAM against a hand computation, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segdeploy.errors import SegdeployError
from segdeploy.models import create_model
from segdeploy.xai.gradcam import cam_energy_share, class_cams, find_target_layer, resolve_layer

SIZE = 64
SHAPE = (1, SIZE, SIZE)


def test_energy_share_analytic_cases():
    region = np.zeros((40, 50), bool)
    region[5:25, 10:30] = True  # 400 of 2000 pixels
    # a uniform map puts the region's area fraction of its energy there: the chance level
    assert cam_energy_share(np.full(region.shape, 0.3), region) == pytest.approx(400 / 2000)
    inside = np.where(region, np.random.default_rng(0).random(region.shape), 0.0)
    assert cam_energy_share(inside, region) == pytest.approx(1.0)
    assert cam_energy_share(1.0 - region, region) == pytest.approx(0.0)
    # a random map: its energy splits between a region and the complement, and equals a by-label sum
    cam = np.random.default_rng(1).random(region.shape)
    assert cam_energy_share(cam, region) + cam_energy_share(cam, ~region) == pytest.approx(1.0)
    from scipy import ndimage
    assert cam_energy_share(cam, region) == pytest.approx(ndimage.sum(cam, region.astype(int), 1) / cam.sum())
    assert np.isnan(cam_energy_share(np.zeros(region.shape), region))
    with pytest.raises(ValueError):
        cam_energy_share(cam, region[:-1])


def _head_input(model: torch.nn.Module) -> torch.Tensor:
    seen = {}
    handle = model.segmentation_head.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0]))
    with torch.no_grad():
        model(torch.rand(1, *SHAPE))
    handle.remove()
    return seen["x"]


@pytest.mark.parametrize("name", ["unet-tiny", "segformer-tiny"])
def test_layer_selection_is_decoder_output_not_classifier(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_chans=1, img_size=SIZE).eval()
    layer = find_target_layer(model, SHAPE, num_classes=3)
    assert not layer.startswith("segmentation_head")
    # the chosen module's output is exactly the feature map the classification head consumes
    outputs = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: outputs.setdefault("x", o))
    torch.manual_seed(1)
    head_in = _head_input(model)
    handle.remove()
    assert outputs["x"].shape[1] != 3 and min(outputs["x"].shape[2:]) > 1
    assert torch.equal(outputs["x"], head_in)


def test_bad_layer_name_lists_candidates():
    model = create_model("segformer-tiny", num_classes=3, in_chans=1, img_size=SIZE).eval()
    with pytest.raises(SegdeployError) as missing:
        resolve_layer(model, "decoder.nope", SHAPE)
    assert "does not exist" in str(missing.value) and "decoder.fuse_stage" in str(missing.value)
    with pytest.raises(SegdeployError) as not_a_map:  # a Linear inside the MLP decoder: (B, N, C) output
        resolve_layer(model, "decoder.mlp_stage.0.linear", SHAPE)
    assert "4-D feature map" in str(not_a_map.value)
    assert resolve_layer(model, "decoder.fuse_stage", SHAPE) is model.decoder.fuse_stage


def _unet_two_live_classes() -> torch.nn.Module:
    """unet-tiny whose class 2 is never predicted (bias -1e4), so classes 0 and 1 share the image; class 1's
    head weights are made positive so its Grad-CAM (ReLU of a weighted sum of ReLU features) is not all zero."""
    torch.manual_seed(0)
    model = create_model("unet-tiny", num_classes=3, in_chans=1, img_size=SIZE).eval()
    with torch.no_grad():
        head = model.segmentation_head[0]
        head.weight[1].abs_()
        head.bias.copy_(torch.tensor([0.0, 0.0, -1e4]))
        # shift class 1 so that it wins on about half of the pixels of the test input
        logits = model(torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(3)))
        head.bias[1] -= (logits[0, 1] - logits[0, 0]).median()
    return model


def _grad_cam_by_hand(model, x, layer, category) -> np.ndarray:
    """Selvaraju et al.: weights = spatial mean of d(target)/d(activations); ReLU of the weighted sum; min-max."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    logits = model(x)
    handle.remove()
    activations = store["a"]
    mask = (logits.argmax(1) == category).float()
    target = (logits[:, category] * mask).sum()
    (grads,) = torch.autograd.grad(target, activations)
    cam = F.relu((grads.mean((2, 3), keepdim=True) * activations).sum(1))[0].detach()
    cam = cam - cam.min()
    return (cam / (cam.max() + 1e-7)).numpy()


def test_class_cams_match_hand_computation():
    model = _unet_two_live_classes()
    x = torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        predicted = model(x).argmax(1)
    assert 0 < (predicted == 1).float().mean() < 1 and not (predicted == 2).any()  # the setup holds

    layer = model.get_submodule(find_target_layer(model, SHAPE, 3))
    maps = class_cams(model, x.numpy(), layer)
    assert maps.shape == (2, SIZE, SIZE) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_allclose(maps[0], _grad_cam_by_hand(model, x, layer, 1), atol=1e-4)
    assert maps[0].max() == pytest.approx(1.0, abs=1e-5)
    assert not maps[1].any()  # a class predicted nowhere has a zero target and a zero map
    # one class at a time gives the same map as all classes in one batch
    np.testing.assert_allclose(class_cams(model, x, layer, [1])[0], maps[0], atol=1e-5)


def test_class_cams_segformer_upsamples_to_input():
    torch.manual_seed(0)
    model = create_model("segformer-tiny", num_classes=3, in_chans=1, img_size=SIZE).eval()
    layer = model.get_submodule(find_target_layer(model, SHAPE, 3))
    maps = class_cams(model, torch.rand(1, *SHAPE), layer)
    assert maps.shape == (2, SIZE, SIZE) and np.isfinite(maps).all() and 0 <= maps.min() <= maps.max() <= 1


@pytest.fixture
def synthetic_run(tmp_path):  # function scope: the cache folder from conftest is set per test
    from segdeploy.data import transforms
    from segdeploy.data import open_dataset
    from segdeploy.data.synthetic import GROUP_REGEX

    from helpers import make_meta, make_run

    dataset = open_dataset("synthetic:24")
    meta = make_meta(dataset, spec="synthetic:24", img_size=SIZE, split={"group_regex": GROUP_REGEX})  # 4 cases
    run_dir = make_run(tmp_path / "run", meta)
    return run_dir, dataset, transforms


@pytest.mark.slow  # trains a run, then Grad-CAM over its test split
def test_gradcam_run_end_to_end(synthetic_run, tmp_path):
    import cv2
    import typer
    from typer.testing import CliRunner

    from segdeploy.data.synthetic import GROUP_REGEX
    from segdeploy.commands.cam import cam

    run_dir, dataset, _ = synthetic_run
    app = typer.Typer()
    app.command()(cam)
    app.command("noop")(lambda: None)
    out = tmp_path / "cam"
    result = CliRunner().invoke(app, ["cam", str(run_dir), "--data", "synthetic:24", "--out", str(out),
                                      "--worst", "2", "--random", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "cam.json").read_text())

    assert summary["model"] == "unet-tiny" and summary["layer"] == "decoder.4"  # the last decoder block
    test_ids = dataset.split("test", seed=42, k=3, fold=0, group_regex=GROUP_REGEX)
    assert summary["n_scored"] == len(test_ids)
    assert [im["selected_as"] for im in summary["images"]] == ["worst", "worst", "random"]
    worst = [im["dice"] for im in summary["images"][:2]]
    assert worst == sorted(worst) and max(worst) <= min(im["dice"] for im in summary["images"][2:])
    foreground = list(dataset.classes)[1:]
    assert set(summary["class_means"]) == set(foreground)
    assert len(summary["files"]) == 3 * len(foreground)
    for image in summary["images"]:
        sample = dataset.load(image["id"])
        assert set(image["classes"]) == set(foreground)
        for c, name in enumerate(foreground, 1):
            stats = image["classes"][name]
            gt = sample.mask == c
            assert stats["gt_area_fraction"] == pytest.approx(gt.mean())
            assert (stats["cam_energy_in_gt"] is None) == (not gt.any()) or stats["cam_max"] == 0
            if stats["cam_energy_in_gt"] is not None:
                assert 0.0 <= stats["cam_energy_in_gt"] <= 1.0
            png = cv2.imread(str(out / f"{image['id']}__{name}.png"))
            assert png.shape[:2] == sample.mask.shape  # overlays at original resolution
