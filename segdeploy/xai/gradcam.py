"""Grad-CAM maps from a run's PyTorch model, per foreground class, for the worst and a few random test images.

The reference study used M3d-CAM with the target "all logits above 0.5" and the layer picked automatically.
Here the target of class ``c`` is the sum of the class-``c`` logits over the pixels the model predicts as ``c``
(argmax): for multi-class softmax outputs this is the analogue of "logits above the decision threshold"
(pytorch-grad-cam's ``SemanticSegmentationTarget``). A class the model does not predict anywhere in an image
has a zero target and so an all-zero map.

The target layer is chosen like M3d-CAM does: one dummy forward with hooks on every module, then the last module
whose output is a 4-D feature map with spatial size > 1, leaving out the classification head (modules whose
output has ``num_classes`` channels). ``layer=`` overrides it with a dotted module name.

Maps are computed on the preprocessed (letterboxed) input exactly as ``bench`` feeds it, then restored to each
image's original resolution with the same transforms, so overlays and energy shares are measured there.
pytorch-grad-cam rescales every map to [0, 1] (minus its minimum, over its maximum): energy shares are
therefore shares of the map above its own minimum.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from segdeploy.errors import SegdeployError
from segdeploy.fileio import atomic_write_bytes, atomic_write_json
from segdeploy.numerics import require_finite
from segdeploy.run.folder import load_run

CAM_JSON = "cam.json"
TARGET = "sum of class-c logits over the pixels predicted as c (argmax); M3d-CAM analogue of 'logits above 0.5'"
GT_OUTLINE_RGB = (255, 255, 255)  # white and magenta do not occur in the jet colour map
PRED_OUTLINE_RGB = (255, 0, 255)


def feature_map_modules(model: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every module whose output is a 4-D tensor, in the order the outputs were produced
    by one forward pass of zeros of ``input_shape`` (C, H, W)."""
    produced: list[tuple[str, tuple[int, ...]]] = []

    def hook(name: str):
        def record(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                produced.append((name, tuple(output.shape)))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    # a module called twice keeps its last output, as the Grad-CAM hooks would see it
    last = {name: i for i, (name, _) in enumerate(produced)}
    return [produced[i] for i in sorted(last.values())]


def find_target_layer(model: nn.Module, input_shape: Sequence[int], num_classes: int) -> str:
    """Name of the last module producing a spatial (> 1 x 1) feature map that is not the classifier's output."""
    candidates = feature_map_modules(model, input_shape)
    for name, shape in reversed(candidates):
        if shape[1] != num_classes and min(shape[2:]) > 1:
            return name
    raise SegdeployError(f"no module of {type(model).__name__} produces a 4-D feature map with more than one pixel "
                         "and other than num_classes channels.", fix="name a layer with --layer.")


def resolve_layer(model: nn.Module, name: str, input_shape: Sequence[int]) -> nn.Module:
    """The module called ``name`` (dotted path); it must produce a 4-D feature map."""
    candidates = feature_map_modules(model, input_shape)
    if name in {n for n, _ in candidates}:
        return model.get_submodule(name)
    # the last output is the model's logits: modules with as many channels are the classifier, not candidates
    features = [(n, s) for n, s in candidates if s[1] != candidates[-1][1][1]]
    listed = ", ".join(f"{n} {list(s[1:])}" for n, s in reversed(features[-12:]))
    what = "exists but does not output a 4-D feature map" if name in dict(model.named_modules()) else "does not exist"
    raise SegdeployError(f"layer {name!r} {what} in {type(model).__name__}.",
                         fix=f"pass one of these to --layer (last first; channels, height, width): {listed}.")


def class_cams(model: nn.Module, batch: torch.Tensor | np.ndarray, layer: nn.Module,
               classes: Sequence[int] | None = None) -> np.ndarray:
    """Grad-CAM of one preprocessed image ``batch`` (1, C, S, S) for each class index in ``classes`` (default: all
    foreground classes 1..K-1) at ``layer``: (len(classes), S, S) float32 in [0, 1]."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    batch = torch.as_tensor(batch, dtype=torch.float32)
    if batch.dim() != 4 or batch.shape[0] != 1:
        raise ValueError(f"expected one image as (1, C, S, S), got {tuple(batch.shape)}")
    with torch.no_grad():
        logits = model(batch)
    if classes is None:
        classes = range(1, logits.shape[1])
    classes = list(classes)
    predicted = logits[0].argmax(0).numpy()
    targets = [SemanticSegmentationTarget(c, (predicted == c).astype(np.float32)) for c in classes]
    # one copy of the image per class: a single forward/backward gives every class's map (eval mode, so the
    # copies do not interact)
    copies = batch.expand(len(classes), -1, -1, -1).contiguous()
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=copies, targets=targets)
    return np.clip(np.nan_to_num(maps.astype(np.float32)), 0.0, 1.0)


def cam_energy_share(cam: np.ndarray, region: np.ndarray) -> float:
    """Share of the map's total energy (sum of its values) that lies inside ``region``; NaN for an all-zero map."""
    cam = np.asarray(cam, dtype=np.float64)
    region = np.asarray(region, dtype=bool)
    if cam.shape != region.shape:
        raise ValueError(f"CAM {cam.shape} and region {region.shape} differ in shape")
    total = cam.sum()
    return float(cam[region].sum() / total) if total > 0 else float("nan")


def overlay_png(image: np.ndarray, cam: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> bytes:
    """PNG of the image (grey or colour) with the CAM as a jet colour map, the GT outline in white and the
    prediction outline in magenta; ``image`` HxWxC uint8, the rest HxW."""
    import cv2
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = image if image.shape[2] == 3 else np.repeat(image[..., :1], 3, axis=2)
    canvas = show_cam_on_image(rgb.astype(np.float32) / 255.0, cam, use_rgb=True, image_weight=0.5)
    thickness = max(1, round(min(cam.shape) / 256))
    for region, colour in ((gt, GT_OUTLINE_RGB), (pred, PRED_OUTLINE_RGB)):
        contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, colour, thickness)
    ok, png = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("OpenCV could not encode the overlay as PNG")
    return png.tobytes()


def _safe_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", str(text))


def _select(scores: dict[str, float], worst: int, random: int, seed: int) -> list[tuple[str, str]]:
    """(id, "worst" | "random"): the ``worst`` lowest-Dice ids (ties by id), then ``random`` seeded others."""
    ranked = sorted(scores, key=lambda i: (scores[i], i))
    chosen = [(i, "worst") for i in ranked[:worst]]
    rest = sorted(ranked[worst:])
    picks = np.random.default_rng(seed).choice(len(rest), size=min(random, len(rest)), replace=False)
    return chosen + [(rest[j], "random") for j in sorted(picks)]


def gradcam_run(run_dir: str | Path, data: str, out: str | Path, *, worst: int = 8, random: int = 4, seed: int = 0,
                layer: str | None = None, split: str = "test", max_images: int | None = None,
                allow_missing: bool = False, show_progress: bool = False) -> dict:
    """Score the ``split`` images of ``data`` with the run's model, write Grad-CAM overlays for the worst and
    a few random ones to ``out`` (``<id>__<class>.png``) and the energy summary to ``out/cam.json``; returns that
    summary. ``max_images`` scores only the first that many split ids (quick looks at large sets). On the run's
    training dataset the split is the run's recorded ids; ``allow_missing``: see ``Run.split_ids``."""
    from rich.progress import Progress, track

    from segdeploy.data import open_dataset
    from segdeploy.data.class_map import dataset_for_run
    from segdeploy.data.transforms import preprocess, restore
    from segdeploy.evaluation.evaluate import evaluate, torch_predictor

    run = load_run(run_dir)
    meta = run.meta
    k, size = meta.num_classes, meta.img_size
    model = run.build_model()
    dataset = dataset_for_run(open_dataset(data), meta, None, run_name=run.name)  # the run's class map, if any
    run.check_dataset(dataset)
    classes = list(meta.classes or dataset.classes)
    ids = run.split_ids(dataset, split, allow_missing=allow_missing)[:max_images or None]

    input_shape = meta.input_shape
    layer_name = layer or find_target_layer(model, input_shape, k)
    target_layer = resolve_layer(model, layer_name, input_shape)

    # the images are ranked by the Dice bench would report for them: the one evaluation path, per image
    geometry = dict(img_size=size, mean=meta.mean, std=meta.std, num_classes=k, class_names=classes,
                    compute_hd95=False)
    predict = torch_predictor(model, "cpu")
    with Progress(disable=not show_progress, transient=True) as bar:
        task = bar.add_task("scoring", total=len(ids))
        scored = evaluate(predict, dataset, ids, batch=8, on_batch=lambda n: bar.advance(task, n), **geometry)
    scores = dict(zip(scored.image_ids, scored.image_dice().tolist()))
    selection = _select(scores, worst, random, seed)
    predictions: dict[str, np.ndarray] = {}  # the chosen images' predictions, for their outlines
    if selection:
        evaluate(predict, dataset, [i for i, _ in selection], batch=8,
                 on_image=lambda i, pred: predictions.__setitem__(i, pred), **geometry)

    out = Path(out)
    images, written = [], []
    for sample_id, reason in track(selection, description="Grad-CAM", disable=not show_progress, transient=True):
        sample = dataset.load(sample_id)
        x, letterbox = preprocess(sample.image, size, meta.mean, meta.std)
        pred = predictions[sample_id]
        cams = np.clip(restore(class_cams(model, x[None], target_layer), letterbox), 0.0, 1.0)
        per_class = {}
        for c in range(1, k):
            gt = sample.mask == c
            cam = cams[c - 1]
            per_class[classes[c]] = {
                "cam_energy_in_gt": cam_energy_share(cam, gt) if gt.any() else None,
                "gt_area_fraction": float(gt.mean()),
                "cam_max": float(cam.max()),
            }
            path = out / f"{_safe_name(sample_id)}__{_safe_name(classes[c])}.png"
            written.append(atomic_write_bytes(path, overlay_png(sample.image, cam, gt, pred == c)))
        images.append({"id": sample_id, "dice": scores[sample_id], "selected_as": reason, "classes": per_class})

    summary = {
        "run": str(run.dir), "run_name": run.name, "model": meta.model, "data": data, "split": split,
        "layer": layer_name, "layer_chosen": "auto" if layer is None else "--layer", "target": TARGET,
        "n_scored": len(scores), "worst": worst, "random": random, "seed": seed,
        "overlay": {"colormap": "jet", "gt_outline": "white", "prediction_outline": "magenta"},
        "class_means": _class_means(images, classes[1:]),
        "images": images,
        "files": [p.name for p in written],
    }
    atomic_write_json(out / CAM_JSON, summary)
    return summary


def _class_means(images: list[dict], names: Sequence[str]) -> dict:
    """Per class, over the images whose GT contains it: mean energy share and mean GT area (the chance level a
    uniform map would reach)."""
    means = {}
    for name in names:
        present = [im["classes"][name] for im in images if im["classes"][name]["cam_energy_in_gt"] is not None]
        shares = [p["cam_energy_in_gt"] for p in present if np.isfinite(p["cam_energy_in_gt"])]
        means[name] = {
            "n_images": len(present),
            "cam_energy_in_gt": float(np.mean(shares)) if shares else None,
            "gt_area_fraction": float(np.mean([p["gt_area_fraction"] for p in present])) if present else None,
        }
    return means
