"""nnU-Net's 2d inference pipeline around any per-tile forward (the exported engine of any backend, or the
PyTorch original), as ``nnUNetPredictor`` runs it on a natural 2D image (nnunetv2 2.8:
``DefaultPreprocessor.run_case_npy``, ``predict_sliding_window_return_logits``,
``convert_predicted_logits_to_segmentation_with_correct_shape``):

1. crop to the bounding box of the nonzero region over all channels;
2. normalise each channel per the plans' scheme (z-score per image, within the nonzero mask where the plans say
   ``use_mask_for_norm``; CT clipping with the data set's statistics; rescale to 0-1; RGB to 0-1; none).
   Resampling to the plans' spacing is the identity for 2D natural images (spacing 1, 1), so it is not done;
3. pad with zeros, centred, to at least the patch size;
4. tiles of the patch size at ``tile_step`` of the patch (``compute_steps_for_sliding_window``), each tile's
   logits weighted by a Gaussian (sigma 1/8 of the patch, peak 10, as nnU-Net computes it in float16) and
   summed, then divided by the summed weights;
5. remove the padding, argmax, and put the crop back into an image of the original size (background outside).

The forward takes (B, C, P, P) normalised tiles and returns (B, K, P, P) logits already averaged over mirrors and
folds: both averages are linear and per tile, so averaging inside the forward equals nnU-Net averaging each
fold's whole-image logits. Accumulation is float32 (nnU-Net's CPU path accumulates in float16).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


def steps_for_sliding_window(size: int, patch: int, step: float) -> list[int]:
    """Tile start offsets along one axis (nnunetv2 ``compute_steps_for_sliding_window``)."""
    n = int(np.ceil((size - patch) / (patch * step))) + 1
    stride = (size - patch) / (n - 1) if n > 1 else 0.0
    return [int(np.round(stride * i)) for i in range(n)]


def gaussian_weights(patch: int, sigma_scale: float = 1 / 8, peak: float = 10.0) -> np.ndarray:
    """(P, P) float32 importance map (nnunetv2 ``compute_gaussian``, its float16 rounding included)."""
    from scipy.ndimage import gaussian_filter

    tmp = np.zeros((patch, patch))
    tmp[patch // 2, patch // 2] = 1
    g = gaussian_filter(tmp, patch * sigma_scale, 0, mode="constant", cval=0)
    g = (g / (g.max() / peak)).astype(np.float16)
    g[g == 0] = g[g != 0].min()  # a zero weight would divide by zero at the image border
    return g.astype(np.float32)


def nonzero_bbox(data: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray]:
    """The crop of the nonzero region of (C, H, W) ``data`` and its mask; the whole image when it is all zero.
    nnU-Net fills holes in the mask in 3D, on a (1, H, W) volume for a 2D image: every hole touches the volume's
    border along the first axis, so none is filled, and neither are they here."""
    mask = (data != 0).any(axis=0)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (slice(0, data.shape[1]), slice(0, data.shape[2])), mask
    box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    return box, mask[box]


def normalise(data: np.ndarray, mask: np.ndarray, schemes: list[str], props: dict,
              use_mask: list[bool]) -> np.ndarray:
    """(C, H, W) float32 cropped raw intensities -> normalised per channel (nnunetv2's normalisation classes)."""
    out = data.astype(np.float32, copy=True)
    for c, scheme in enumerate(schemes):
        v = out[c]
        if scheme == "ZScoreNormalization":
            if use_mask[c]:
                vals = v[mask]
                v[mask] = (vals - vals.mean()) / max(vals.std(), 1e-8)
            else:
                out[c] = (v - v.mean()) / max(v.std(), 1e-8)
        elif scheme == "CTNormalization":
            p = props[str(c)]
            out[c] = (np.clip(v, p["percentile_00_5"], p["percentile_99_5"]) - p["mean"]) / max(p["std"], 1e-8)
        elif scheme == "RescaleTo01Normalization":
            v = v - v.min()
            out[c] = v / max(v.max(), 1e-8)
        elif scheme == "RGBTo01Normalization":
            out[c] = v / 255.0
    return out


@dataclass
class SlidingWindow:
    """``SlidingWindow(forward, ...)(image HxWxC) -> mask HxW uint8``; ``tiles`` and ``forward_ms`` record the
    last image's tile count and the time of each forward call."""

    forward: Callable[[np.ndarray], np.ndarray]
    patch: int
    tile_step: float
    schemes: list[str]
    props: dict
    use_mask: list[bool]
    tile_batch: int = 1
    tiles: int = 0
    forward_ms: list[float] = field(default_factory=list)

    def __post_init__(self):
        if not 0 < self.tile_step <= 1:
            raise ValueError(f"tile step {self.tile_step}: nnU-Net's sliding window needs 0 < step <= 1")
        self.gaussian = gaussian_weights(self.patch)

    def logits(self, data: np.ndarray) -> np.ndarray:
        """(C, H, W) normalised -> (K, H, W) Gaussian-weighted sliding-window logits."""
        p = self.patch
        h, w = data.shape[1:]
        ph, pw = max(h, p), max(w, p)
        top, left = (ph - h) // 2, (pw - w) // 2
        padded = np.zeros((data.shape[0], ph, pw), np.float32)
        padded[:, top:top + h, left:left + w] = data
        corners = [(y, x) for y in steps_for_sliding_window(ph, p, self.tile_step)
                   for x in steps_for_sliding_window(pw, p, self.tile_step)]
        self.tiles = len(corners)
        total = weight = None
        for i in range(0, len(corners), self.tile_batch):
            chunk = corners[i:i + self.tile_batch]
            x = np.stack([padded[:, y:y + p, x0:x0 + p] for y, x0 in chunk])
            t0 = time.perf_counter()
            out = np.asarray(self.forward(x), dtype=np.float32)
            self.forward_ms.append((time.perf_counter() - t0) * 1e3)
            if total is None:
                total = np.zeros((out.shape[1], ph, pw), np.float32)
                weight = np.zeros((ph, pw), np.float32)
            for (y, x0), lg in zip(chunk, out):
                total[:, y:y + p, x0:x0 + p] += lg * self.gaussian
                weight[y:y + p, x0:x0 + p] += self.gaussian
        return (total / weight)[:, top:top + h, left:left + w]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)
        box, mask = nonzero_bbox(data)
        cropped = normalise(data[(slice(None), *box)], mask, self.schemes, self.props, self.use_mask)
        out = np.zeros(data.shape[1:], np.uint8)
        out[box] = self.logits(cropped).argmax(axis=0)
        return out


def sliding_window(forward, record, *, tile_batch: int = 1) -> SlidingWindow:
    """The pipeline an imported nnU-Net run's ``model.json`` describes, around ``forward``."""
    pipe, pre = record.details["pipeline"], record.preprocessing
    if "tile_step" not in pipe:
        from segdeploy.errors import SegdeployError

        raise SegdeployError("this nnU-Net run was imported by an earlier segdeploy (one letterboxed patch, "
                             "normalisation inside the graph).", fix="import it again with segdeploy models import "
                                                                     "nnunet, then export it again.")
    schemes = pre["normalization_schemes"]
    return SlidingWindow(forward, patch=int(pipe["patch_size"][0]), tile_step=float(pipe["tile_step"]),
                         schemes=schemes, props=pre["intensity_properties"],
                         use_mask=list(pre.get("use_mask_for_norm") or [False] * len(schemes)),
                         tile_batch=tile_batch)


def evaluate_pipeline(window: SlidingWindow, dataset, ids, *, num_classes: int, class_names, on_image=None):
    """Score the pipeline on ``ids`` at each image's own size; returns (Evaluation, per-image milliseconds,
    tiles per image)."""
    from segdeploy.evaluation.evaluate import Evaluation
    from segdeploy.evaluation.metrics import SegMetrics

    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    metrics = SegMetrics(num_classes, names)
    confusion, per_image_ms, tiles = [], [], []
    for i in ids:
        sample = dataset.load(i)
        image = sample.image
        t0 = time.perf_counter()
        pred = window(image)
        per_image_ms.append((time.perf_counter() - t0) * 1e3)
        tiles.append(window.tiles)
        confusion.append(metrics.update(pred, sample.mask))
        if on_image is not None:
            on_image(sample.id, pred)
    evaluation = Evaluation(metrics=metrics.result(), image_ids=list(ids),
                            confusion=np.stack(confusion).astype(np.int64), class_names=names,
                            input_batch_1=None, input_batch_b=None)
    return evaluation, per_image_ms, tiles
