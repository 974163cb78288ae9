"""The default dataset: procedural grayscale "ultrasound/MRI-like" slices, generated on first use.

Each case is a stack of slices (``case007_slice3``) through one anatomy that changes slowly from slice to slice,
so ``group_regex = ^(case\\d+)`` makes patient-level splits meaningful. Classes:

    0 background  tissue with smooth texture, dark outside the field of view
    1 cavity      a dark ellipse (an anechoic chamber)
    2 wall        a thin brighter ring around the cavity, often with a gap (partly occluded)
    3 lesion      a small irregular blob, brighter and less speckled than tissue, that may overlap the others
                  (absent in many slices)

The image is blurred (partial volume), multiplied by correlated speckle, attenuated with depth, crossed by an
acoustic shadow in some slices, and given a random gain/offset; sizes vary (160..256 px per side, non-square) so
letterboxing and original-resolution metrics are exercised. Contrast is low on purpose: a small U-Net must not
reach Dice 0.99 after one epoch, yet a few epochs should clearly beat chance.

Reproducibility: only ``Generator.random`` / ``integers`` draws (bit-exact on every platform), element-wise
+ - * / sqrt (correctly rounded in IEEE arithmetic) and sequential cumulative sums touch the pixels; no
libm-dependent sampler (normal, gamma) is used, and trigonometry runs only on scalar shape parameters. So the same
parameters give the same pixels on any machine; ``meta.json`` records their SHA-256 (``pixels_sha256``) to verify
that. (PNG bytes can still differ between zlib builds; the pixels cannot.)
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from segdeploy.data.folder import register_dataset
from segdeploy.errors import SegdeployError
from segdeploy.fileio import atomic_write_bytes, atomic_write_json, cache_dir

GENERATOR_VERSION = 2
CLASSES = ["background", "cavity", "wall", "lesion"]
SLICES_PER_CASE = 6
DEFAULT_IMAGES = 240
GROUP_REGEX = r"^(case\d+)"


def _box_blur(a: np.ndarray, r: int, passes: int = 1) -> np.ndarray:
    """Separable box filter of width 2r+1 (edge-replicated), by cumulative sums: exact, platform-independent."""
    n = 2 * r + 1
    for _ in range(passes):
        for axis in (0, 1):
            a = np.moveaxis(a, axis, 0)
            c = np.cumsum(np.concatenate([np.repeat(a[:1], r + 1, axis=0), a, np.repeat(a[-1:], r, axis=0)]), axis=0)
            a = np.moveaxis((c[n:] - c[:-n]) / n, 0, axis)
    return a


def _box_noise_std(r: int, passes: int) -> float:
    """Standard deviation left after blurring unit white noise with :func:`_box_blur` (away from the edges)."""
    k = [1.0]
    box = [1.0 / (2 * r + 1)] * (2 * r + 1)
    for _ in range(passes):
        k = [sum(k[j] * box[i - j] for j in range(len(k)) if 0 <= i - j < len(box))
             for i in range(len(k) + len(box) - 1)]
    return sum(x * x for x in k)  # 2-D kernel = outer(k, k), so its squared sum is (sum k^2)^2


def _normal(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    # Irwin-Hall: sum of 4 uniforms, scaled to unit variance; avoids libm-dependent samplers
    r = rng.random((4, *shape))
    return (r[0] + r[1] + r[2] + r[3] - 2.0) * math.sqrt(3.0)


def _field(rng: np.random.Generator, shape: tuple[int, int], r: int) -> np.ndarray:
    """Smooth unit-variance random field with correlation length ~r px."""
    return _box_blur(_normal(rng, shape), r, passes=2) / _box_noise_std(r, 2)


def _ellipse(yy, xx, cy, cx, ry, rx, theta):
    """Normalised squared radius (<= 1 inside) and the rotated coordinates (u along rx, v along ry)."""
    c, s = math.cos(theta), math.sin(theta)
    u = (xx - cx) * c + (yy - cy) * s
    v = (yy - cy) * c - (xx - cx) * s
    return (u / rx) * (u / rx) + (v / ry) * (v / ry), u, v


def _case_params(seed: int, case: int) -> dict:
    rng = np.random.default_rng([seed, case])
    u = rng.random
    h, w = (int(x) for x in rng.integers(160, 257, size=2))
    m = min(h, w)
    return {
        "h": h, "w": w,
        "cy": h * (0.42 + 0.16 * u()), "cx": w * (0.42 + 0.16 * u()),
        "ry": m * (0.17 + 0.10 * u()), "rx": m * (0.17 + 0.10 * u()),
        "theta": math.pi * u(), "drift": (m * 0.04 * (u() - 0.5), m * 0.04 * (u() - 0.5)),
        "wall": 6.0 + 5.0 * u(),
        "gap": u() < 0.6, "gap_dir": 2 * math.pi * u(), "gap_half": math.radians(15 + 30 * u()),
        "lesion": u() < 0.8, "lesion_z": 2 * u() - 1, "lesion_extent": 0.6 + 0.8 * u(),
        "lesion_pos": (h * (0.25 + 0.5 * u()), w * (0.25 + 0.5 * u())), "lesion_r": 12.0 + 10.0 * u(),
        "tissue": 0.36 + 0.1 * u(), "cavity": -(0.12 + 0.08 * u()), "wall_c": 0.14 + 0.10 * u(),
        "lesion_c": 0.25 + 0.12 * u(),
        "body": (0.46 + 0.1 * u(), 0.46 + 0.1 * u()),
    }


def render_slice(seed: int, case: int, slice_: int) -> tuple[np.ndarray, np.ndarray]:
    """One (image HxW uint8, mask HxW uint8) pair; depends only on (seed, case, slice)."""
    p = _case_params(seed, case)
    rng = np.random.default_rng([seed, case, slice_, 1])
    u = rng.random
    h, w = p["h"], p["w"]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    z = (slice_ - (SLICES_PER_CASE - 1) / 2) / ((SLICES_PER_CASE - 1) / 2)  # -1 .. 1 through the stack

    # anatomy: the cavity shrinks towards the ends of the stack and drifts a little
    scale = 1.0 - 0.3 * z * z
    cy, cx = p["cy"] + p["drift"][0] * z * 5, p["cx"] + p["drift"][1] * z * 5
    theta = p["theta"] + 0.15 * z
    ry, rx = p["ry"] * scale, p["rx"] * scale
    d_cav, _, _ = _ellipse(yy, xx, cy, cx, ry, rx, theta)
    t = p["wall"] + u() - 0.5
    d_out, ou, ov = _ellipse(yy, xx, cy, cx, ry + t, rx + t, theta)
    cavity = d_cav <= 1.0
    wall = (d_out <= 1.0) & ~cavity
    if p["gap"]:  # occluded sector: no wall visible (nor labelled) there
        ca, sa = math.cos(p["gap_dir"] + 0.2 * z), math.sin(p["gap_dir"] + 0.2 * z)
        wall &= ~((ou * ca + ov * sa) > math.cos(p["gap_half"]) * np.sqrt(ou * ou + ov * ov))
    lesion = np.zeros((h, w), bool)
    dz = (z - p["lesion_z"]) / p["lesion_extent"]
    if p["lesion"] and abs(dz) < 1.0:
        r_scale = math.sqrt(1.0 - dz * dz)
        blob = np.zeros((h, w))
        ly, lx = p["lesion_pos"]
        for _ in range(3):  # irregular outline: union of offset discs, smoothed and re-thresholded
            by, bx = ly + (u() - 0.5) * p["lesion_r"] * 1.6, lx + (u() - 0.5) * p["lesion_r"] * 1.6
            br = max(p["lesion_r"] * r_scale * (0.5 + 0.6 * u()), 1.5)
            blob = np.maximum(blob, ((yy - by) * (yy - by) + (xx - bx) * (xx - bx) <= br * br).astype(np.float64))
        lesion = _box_blur(blob, 2) > 0.5

    mask = np.zeros((h, w), np.uint8)
    mask[cavity] = 1
    mask[wall] = 2
    mask[lesion] = 3

    # appearance
    by, bx = p["body"]
    d_body, _, _ = _ellipse(yy, xx, h / 2, w / 2, h * by * 1.1, w * bx * 1.1, 0.0)
    body = _box_blur((d_body <= 1.0).astype(np.float64), 4)
    tissue = p["tissue"] + 0.07 * _field(rng, (h, w), 10) + 0.03 * _field(rng, (h, w), 3)
    img = 0.04 + (tissue - 0.04) * body
    img = img + p["cavity"] * cavity + p["wall_c"] * wall
    if lesion.any():
        img = np.where(lesion, tissue + p["lesion_c"] + 0.04 * _field(rng, (h, w), 2), img)
    img = _box_blur(img, 1, passes=2)  # partial volume: soft edges
    # a lesion is brighter and more homogeneous (half the speckle) than the tissue around it
    speckle = 1.0 + (0.12 + 0.12 * u()) * _field(rng, (h, w), 1) * (1.0 - 0.5 * lesion)
    img = img * speckle + 0.02 * _normal(rng, (h, w))
    img = img * (1.0 - 0.3 * u() * yy / h)  # depth attenuation
    if u() < 0.35:  # acoustic shadow: a vertical band of reduced signal; labels are unchanged beneath it
        x0, half = w * u(), w * (0.05 + 0.08 * u())
        band = np.clip(1.0 - np.abs(xx - x0) / half, 0.0, 1.0)
        img = img * (1.0 - (0.3 + 0.3 * u()) * _box_blur(band, 3))
    img = img * (0.75 + 0.5 * u()) + (u() - 0.5) * 0.16  # per-image gain and offset
    image = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return image, mask


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def synthetic_params(n_images: int = DEFAULT_IMAGES, seed: int = 0) -> dict:
    return {"generator_version": GENERATOR_VERSION, "n_images": n_images, "seed": seed,
            "slices_per_case": SLICES_PER_CASE}


def params_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def generate(root: Path, *, n_images: int = DEFAULT_IMAGES, seed: int = 0) -> dict:
    """Write the dataset into the (empty or new) folder ``root``; returns its meta.json content."""
    params = synthetic_params(n_images, seed)
    root = Path(root)

    def write_one(n: int) -> tuple[str, np.ndarray, np.ndarray]:
        case, slice_ = divmod(n, SLICES_PER_CASE)
        sid = f"case{case:03d}_slice{slice_}"
        image, mask = render_slice(seed, case, slice_)
        atomic_write_bytes(root / "images" / f"{sid}.png", _png(image))
        atomic_write_bytes(root / "masks" / f"{sid}.png", _png(mask))
        return sid, image, mask

    pixels = hashlib.sha256()
    # slices are independent and NumPy/zlib/fsync release the GIL, so threads use every core; the hash is
    # taken in id order, so it does not depend on scheduling
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for sid, image, mask in pool.map(write_one, range(n_images)):
            for arr in (image, mask):
                pixels.update(f"{sid}:{arr.shape}".encode())
                pixels.update(arr.tobytes())
    meta = {
        "name": "segdeploy synthetic (procedural ultrasound/MRI-like slices)",
        "modality": "synthetic",
        "classes": CLASSES,
        "group_regex": GROUP_REGEX,
        "source": f"segdeploy procedural generator v{GENERATOR_VERSION}",
        "license": "CC0-1.0 (generated; contains no patient data)",
        "count": n_images,
        "params": params,
        "pixels_sha256": pixels.hexdigest(),
        "note": "Grayscale slices of a cavity (1), its thin, partly occluded wall (2) and a small low-contrast "
                "lesion (3); ids caseNNN_sliceK, several slices per case.",
    }
    atomic_write_json(root / "meta.json", meta)
    return meta


def synthetic_folder(n_images: int = DEFAULT_IMAGES, seed: int = 0) -> Path:
    """The cached dataset folder for these parameters, generated on first use.

    Generation writes into a temporary sibling folder that is renamed into place when complete, so an
    interrupted generation is never picked up (leftovers older than an hour are removed).
    """
    if n_images < 1:
        raise SegdeployError(f"synthetic:{n_images}: the number of images must be at least 1.",
                             fix="use e.g. synthetic:48 (or plain synthetic for the default 240).")
    name = f"synthetic-v{GENERATOR_VERSION}-{params_hash(synthetic_params(n_images, seed))}"
    final = cache_dir() / name
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{name}.*.partial"):
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    from rich.console import Console

    Console(stderr=True).print(f"generating the synthetic dataset ({n_images} images) into {final}",
                               highlight=False, soft_wrap=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=final.parent))
    try:
        generate(tmp, n_images=n_images, seed=seed)
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():  # not a lost race with a concurrent generator
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


@register_dataset("synthetic")
def synthetic(arg: str | None = None) -> Path:
    """``synthetic`` (240 images) or ``synthetic:N``."""
    if arg is None:
        return synthetic_folder()
    try:
        n = int(arg)
    except ValueError:
        raise SegdeployError(f"synthetic:{arg}: expected a number of images.",
                             fix="use e.g. synthetic:48 (or plain synthetic for the default 240).") from None
    return synthetic_folder(n_images=n)
