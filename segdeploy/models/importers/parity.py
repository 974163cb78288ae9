"""Parity of an imported model with the library it came from: the deployed path (segdeploy's preprocessing, the
rebuilt model, logits restored to the image's size, argmax) against the original library's own prediction on the
same images. The share of pixels whose class agrees goes into ``model.json`` (``imported.parity``); where the
library gives logits at the network's input (smp, onnx) their largest difference is recorded too."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segdeploy.errors import warn


def _images(dataset, meta, n: int) -> tuple[list[np.ndarray], str]:
    if dataset is not None:
        ids = dataset.split("test")[:n]
        return [dataset.load(i).image for i in ids], f"test split of {dataset.name}"
    # smooth random images (a blurred noise field per channel): near-tied logits are rarer than on white noise
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    s = meta.img_size
    noise = torch.rand((n, meta.in_chans, s // 8 or 1, s // 8 or 1), generator=g)
    images = (F.interpolate(noise, size=(s, s), mode="bilinear", align_corners=False) * 255).round().byte()
    return [im.permute(1, 2, 0).numpy() for im in images], f"{n} synthetic {s}x{s} images (seed 0)"


def _deployed(run_dir: Path, record):
    """A callable (1, C, S, S) float32 -> (1, K, S, S) logits: the PyTorch original, or for a model without one
    (onnx) the run's own normalised ONNX file."""
    import torch

    from segdeploy.models.imported import GIVEN_ONNX, SOURCE_DIR, NoTorchOriginal, build_imported

    try:
        model = build_imported(run_dir, record)
    except NoTorchOriginal:
        from segdeploy.export.onnx_export import INPUT_NAME, ort_session

        session = ort_session(run_dir / SOURCE_DIR / GIVEN_ONNX)
        return lambda x: session.run(None, {INPUT_NAME: x})[0]

    def predict(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).float().numpy()

    return predict


def measure_parity(fmt, src: Path, imp, meta, run_dir: Path, dataset, n: int) -> dict:
    from segdeploy.data.transforms import preprocess, restore
    from segdeploy.models.importers.base import PARITY_TARGET, ImportRecord

    record = ImportRecord.from_json(meta.extra["imported"])
    predict = _deployed(run_dir, record)
    own = fmt.pipeline(predict, record, 1) if fmt.pipeline else None  # nnunet: its sliding window
    images, where = _images(dataset, meta, n)
    agree = total = 0
    max_diff = None
    for image in images:
        if image.shape[2] != meta.in_chans:  # a gray data set for an RGB model, say: the library sees the same
            image = np.repeat(image[..., :1], meta.in_chans, axis=2)
        x, lb = preprocess(image, meta.img_size, meta.mean, meta.std)
        if own is not None:
            logits, mask = None, own(image)
        else:
            logits = predict(x[None])[0]
            mask = restore(logits, lb).argmax(0)
        ref = fmt.library_predict(src, image, x, imp)
        if ref.get("logits") is not None and logits is not None:
            diff = float(np.abs(ref["logits"] - logits).max())
            max_diff = diff if max_diff is None else max(max_diff, diff)
        agree += int((ref["mask"] == mask).sum())
        total += mask.size
    share = agree / total
    sizes = sorted({f"{im.shape[0]}x{im.shape[1]}" for im in images})
    result = {"reference": fmt.library_predict.__doc__.strip().splitlines()[0], "images": where,
              "image_sizes": sizes,
              "n_images": len(images), "pixel_agreement": share, "max_abs_logit_diff": max_diff,
              "target": PARITY_TARGET, "met": share >= PARITY_TARGET}
    if not result["met"]:
        warn(f"the imported model's masks agree with {fmt.name}'s own prediction on {share:.4%} of pixels "
             f"({where}), below {PARITY_TARGET:.1%}: check the preprocessing (--mean/--std/--size).", path=src)
    return result
