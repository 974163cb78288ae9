"""Image geometry shared by training and inference.

Letterbox: an HxW image is zero-padded to a centred square of side max(H, W), then resized to ``img_size``
(bilinear, antialiased); the mask gets the same padding (background) and a nearest-neighbour resize.
:func:`restore` undoes it on logits (resize back to the padded side, crop), so every metric is computed at the
image's original resolution. Training caches the uint8 letterbox (:func:`letterbox`) and normalises after
augmenting; :func:`preprocess` does the same two steps, so training and inference inputs match exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF


@dataclass(frozen=True)
class LetterboxMeta:
    orig_h: int
    orig_w: int
    side: int  # the padded square, before resizing
    pad_top: int
    pad_left: int
    img_size: int  # the network input side

    def as_dict(self) -> dict:
        return asdict(self)


def letterbox_meta(h: int, w: int, img_size: int) -> LetterboxMeta:
    side = max(h, w)
    return LetterboxMeta(orig_h=h, orig_w=w, side=side, pad_top=(side - h) // 2, pad_left=(side - w) // 2,
                         img_size=img_size)


def _pad_square(arr: np.ndarray, meta: LetterboxMeta) -> np.ndarray:
    pad = [(meta.pad_top, meta.side - meta.orig_h - meta.pad_top),
           (meta.pad_left, meta.side - meta.orig_w - meta.pad_left)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, pad)


def letterbox(image: np.ndarray, mask: np.ndarray | None, img_size: int
              ) -> tuple[np.ndarray, np.ndarray | None, LetterboxMeta]:
    """(HxWxC uint8, HxW mask or None) -> (CxSxS uint8, SxS uint8 or None, meta)."""
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWxC uint8 image, got {image.dtype} {image.shape}")
    meta = letterbox_meta(image.shape[0], image.shape[1], img_size)
    img = torch.from_numpy(np.ascontiguousarray(_pad_square(image, meta).transpose(2, 0, 1)))
    if meta.side != img_size:
        img = TF.resize(img, [img_size, img_size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    out_mask = None
    if mask is not None:
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")
        m = torch.from_numpy(np.ascontiguousarray(_pad_square(mask, meta)))[None]
        if meta.side != img_size:
            m = TF.resize(m, [img_size, img_size], interpolation=InterpolationMode.NEAREST_EXACT)
        out_mask = m[0].numpy()
    return img.numpy(), out_mask, meta


def _stats(values: Sequence[float], channels: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    if v.size == 1:
        v = np.repeat(v, channels)
    if v.size != channels:
        raise ValueError(f"mean/std has {v.size} values for {channels} channels")
    return v.reshape(channels, 1, 1)


def normalize(image_chw: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """CxSxS uint8 -> float32 (x/255 - mean)/std (a mean/std of one value applies to every channel)."""
    c = image_chw.shape[0]
    return ((image_chw.astype(np.float32) / 255.0 - _stats(mean, c)) / _stats(std, c)).astype(np.float32)


def preprocess(image: np.ndarray, img_size: int, mean: Sequence[float], std: Sequence[float]
               ) -> tuple[np.ndarray, LetterboxMeta]:
    """HxWxC uint8 -> (CxSxS float32 normalised network input, LetterboxMeta for :func:`restore`)."""
    chw, _, meta = letterbox(image, None, img_size)
    return normalize(chw, mean, std), meta


def restore(logits, meta: LetterboxMeta):
    """(K,S,S) logits (numpy or torch) -> (K,H,W) at the original resolution, same type (and device).

    Bilinear resize back to the padded side (antialiased when shrinking), then crop the padding. Exact
    (a crop only) when the padded side equals the network size.
    """
    is_numpy = isinstance(logits, np.ndarray)
    t = torch.from_numpy(logits) if is_numpy else logits
    if t.ndim != 3 or t.shape[1:] != (meta.img_size, meta.img_size):
        raise ValueError(f"expected (K, {meta.img_size}, {meta.img_size}) logits, got {tuple(t.shape)}")
    if meta.side != meta.img_size:
        dtype = t.dtype
        t = F.interpolate(t[None].float(), size=(meta.side, meta.side), mode="bilinear", align_corners=False,
                          antialias=meta.side < meta.img_size)[0].to(dtype)
    t = t[:, meta.pad_top:meta.pad_top + meta.orig_h, meta.pad_left:meta.pad_left + meta.orig_w]
    return np.ascontiguousarray(t.numpy()) if is_numpy else t


class TrainAugment:
    """The training augmentation of the reference study, applied jointly to image and mask (torchvision v2).

    Horizontal and vertical flips (p=0.5 each); random affine (rotation up to 180 deg, translate 0.25, scale
    0.75-1.25, shear 17.5 deg; the mask is resampled nearest-neighbour, the border filled with 0/background);
    Gaussian blur (p=0.5); photometric distortion (brightness/contrast 0.2, p=0.5). ``strength`` scales the
    geometric ranges, and ``strength=0`` turns off flips and affine. The flags switch single parts off (tests,
    ablations). Randomness comes from torch's global generator, so seeding torch (and DataLoader workers)
    makes it reproducible.
    """

    def __init__(self, img_size: int, *, strength: float = 1.0, flips: bool = True, affine: bool = True,
                 blur: bool = True, photometric: bool = True):
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        self.img_size, self.strength = img_size, strength
        steps: list = []
        if strength > 0 and flips:
            steps += [v2.RandomHorizontalFlip(p=0.5), v2.RandomVerticalFlip(p=0.5)]
        if strength > 0 and affine:
            s = strength
            steps.append(v2.RandomAffine(degrees=min(180.0, 180.0 * s), translate=(min(1.0, 0.25 * s),) * 2,
                                         scale=(max(0.05, 1 - 0.25 * s), 1 + 0.25 * s), shear=17.5 * s,
                                         interpolation=InterpolationMode.BILINEAR,
                                         fill={tv_tensors.Image: 0, tv_tensors.Mask: 0}))
        if blur:
            # kernel ~1% of the image side, as a 5x5 kernel is at 512 px
            k = max(3, 2 * round(img_size / 200) + 1)
            steps.append(v2.RandomApply([v2.GaussianBlur(kernel_size=k, sigma=(0.1, 2.0))], p=0.5))
        if photometric:
            steps.append(v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.5))
        self.transform = v2.Compose(steps) if steps else v2.Identity()

    def __repr__(self) -> str:
        return f"TrainAugment(img_size={self.img_size}, strength={self.strength}, {self.transform})"

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(CxSxS uint8 image, SxS mask) -> the same, transformed together."""
        img, m = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return img.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor)


class TorchSegDataset(torch.utils.data.Dataset):
    """(image float32 CxSxS normalised, mask int64 SxS) pairs for a DataLoader.

    Each image is decoded and letterboxed once and kept in memory as uint8 (training on 2 CPU cores must not
    re-decode files every epoch), up to ``cache_bytes`` (None: no limit; 0: decode on every access); augmentation
    and normalisation run per access, on the kept arrays. The cache fills lazily; with DataLoader workers call
    :meth:`preload` first (forked workers then share it) or use persistent workers.
    """

    def __init__(self, ds, ids: list[str], img_size: int, mean: Sequence[float], std: Sequence[float],
                 augment: TrainAugment | None = None, cache_bytes: int | None = None):
        self.ds, self.ids, self.img_size = ds, list(ids), img_size
        self.mean, self.std = mean, std
        self.augment = augment
        self.cache_bytes, self.cached_bytes = cache_bytes, 0
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def _letterboxed(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index in self._cache:
            return self._cache[index]
        sample = self.ds.load(self.ids[index])
        img, mask, _ = letterbox(sample.image, sample.mask, self.img_size)
        pair = (torch.from_numpy(img), torch.from_numpy(mask))
        if self.cache_bytes is None or self.cached_bytes + img.nbytes + mask.nbytes <= self.cache_bytes:
            self._cache[index] = pair
            self.cached_bytes += img.nbytes + mask.nbytes
        return pair

    def preload(self) -> TorchSegDataset:
        for i in range(len(self)):
            self._letterboxed(i)
        return self

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, mask = self._letterboxed(index)
        if self.augment is not None:
            img, mask = self.augment(img, mask)
        x = normalize(img.numpy(), self.mean, self.std)
        return torch.from_numpy(x), mask.to(torch.int64)
