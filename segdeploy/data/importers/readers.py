"""Decoding source files: 2D images (Pillow, tifffile), masks in their encodings, and 3D volumes (nibabel,
SimpleITK) sliced to 2D with the intensity handling a user chooses.

Orientation: a volume is held in the file's voxel order ``(x, y, z)`` (SimpleITK's ``(z, y, x)`` arrays are
transposed to it), and each 2D slice is shown with rows along the next axis, as ITK-based viewers and the ACDC
and CAMUS reference code show it (``slice = volume[:, :, k].T`` for ``axis=2``). No reorientation to a common
anatomical frame is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segdeploy.errors import SegdeployError

IMAGE_FILE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
LOSSY_EXTS = (".jpg", ".jpeg")
NIFTI_EXTS = (".nii", ".nii.gz")
ITK_EXTS = (".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_EXTS = NIFTI_EXTS + ITK_EXTS
DEFAULT_PERCENTILES = (0.5, 99.5)
SMALL_INDEX = 64  # mask values below this can be class indices; a mask with higher values is binary 0/255
OFF_PALETTE_LIMIT = 0.05  # a mask with more pixels far from every palette colour is refused: a colour is missing


def ext_of(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def stem_of(path: Path) -> str:
    ext = ext_of(path)
    return path.name[: len(path.name) - len(ext)] if ext else path.name


# -- 2D files ----------------------------------------------------------------------------------------------------

def read_2d(path: Path, *, keep_palette_indices: bool = False) -> np.ndarray:
    """A 2D file as HxW or HxWx3 in its own dtype (uint8, uint16, float...). Pillow first, tifffile for the
    TIFFs Pillow cannot open (float, multi-sample, BigTIFF). ``keep_palette_indices``: a palette (P) image with
    colours gives its indices (a class-index PNG with a display palette) instead of its colours."""
    try:
        with Image.open(path) as im:
            im.load()
            return _pil_array(im, keep_palette_indices)
    except Exception as pil_error:  # noqa: BLE001 -- Pillow raises many types for files it cannot decode
        if ext_of(path) in (".tif", ".tiff"):
            try:
                import tifffile
            except ImportError:
                raise SegdeployError("Pillow cannot read this TIFF and tifffile is not installed.", path=path,
                                     fix="pip install tifffile") from pil_error
            arr = np.asarray(tifffile.imread(path))
            arr = arr.squeeze()
            if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):  # planar CxHxW
                arr = np.moveaxis(arr, 0, -1)
            if arr.ndim == 3:
                arr = arr[..., :3]
            if arr.ndim not in (2, 3):
                raise ValueError(f"TIFF holds a {arr.ndim}-D array {arr.shape}, not one 2D image")
            return arr
        raise


def _pil_array(im: Image.Image, keep_palette_indices: bool) -> np.ndarray:
    if im.mode == "P":
        colours = np.asarray(im.getpalette() or [], np.uint8).reshape(-1, 3)
        grey = bool(len(colours)) and bool(np.all(colours[:, 0] == colours[:, 1]) and
                                           np.all(colours[:, 1] == colours[:, 2]))
        if keep_palette_indices and not grey:
            return np.asarray(im)
        im = im.convert("L" if grey else "RGB")
    elif im.mode == "1":
        return np.asarray(im).astype(np.uint8) * 255
    elif im.mode in ("LA", "La"):
        im = im.convert("L")
    elif im.mode not in ("L", "RGB", "I", "I;16", "I;16B", "I;16L", "F"):
        im = im.convert("RGB")  # RGBA, CMYK, YCbCr, ...
    arr = np.asarray(im)
    return arr.astype(np.uint16) if im.mode.startswith("I;16") else arr


def to_uint8(arr: np.ndarray, *, window: tuple[float, float] | None = None,
             percentiles: tuple[float, float] | None = None) -> np.ndarray:
    """8-bit intensities. 8-bit input is kept as it is unless a window or percentiles are given; otherwise
    ``window`` (lo, hi) is mapped to 0..255 (CT), or the ``percentiles`` (default 0.5, 99.5) of the whole array
    (a volume: all slices together, so slices keep their relative brightness)."""
    if arr.dtype == np.uint8 and window is None and percentiles is None:
        return arr
    require_finite(arr, "image")
    a = arr.astype(np.float64)
    if window is not None:
        lo, hi = window
    else:
        lo, hi = np.percentile(a, percentiles or DEFAULT_PERCENTILES)
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.clip(np.rint((a - lo) * 255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def as_image(arr: np.ndarray, **intensity) -> np.ndarray:
    """HxW (gray) or HxWx3 (RGB) uint8 from a decoded 2D array."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 2:  # gray + alpha
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] > 3:
        arr = arr[..., :3]
    return to_uint8(arr, **intensity)


# -- masks -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Palette:
    colours: np.ndarray  # (P, 3) float; index = class
    names: list[str]

    @classmethod
    def parse(cls, text: str) -> Palette:
        """``"255,0,0=neoplastic;0,255,0=non_neoplastic"`` (or ``#ff0000=...``); black is background (index 0)
        unless a ``0,0,0=`` entry names it; the other entries are classes 1, 2, ... in the order written."""
        fix = 'write --palette "R,G,B=name;R,G,B=name" (e.g. "255,0,0=neoplastic;0,255,0=non_neoplastic").'
        colours, names = [], []
        for part in (p.strip() for p in text.split(";")):
            if not part:
                continue
            colour, eq, name = part.partition("=")
            colour, name = colour.strip(), name.strip()
            try:
                if colour.startswith("#") and len(colour) == 7:
                    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
                else:
                    rgb = [int(v) for v in colour.split(",")]
            except ValueError:
                rgb = []
            if not eq or not name or len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                raise SegdeployError(f"palette entry {part!r} is not R,G,B=name with values 0..255.", fix=fix)
            colours.append(rgb)
            names.append(name)
        if not colours:
            raise SegdeployError(f"palette {text!r} has no entry.", fix=fix)
        if [0, 0, 0] in colours:
            j = colours.index([0, 0, 0])
            colours.insert(0, colours.pop(j))
            names.insert(0, names.pop(j))
        else:
            colours.insert(0, [0, 0, 0])
            names.insert(0, "background")
        if len(set(map(tuple, colours))) != len(colours) or len(set(names)) != len(names):
            raise SegdeployError(f"palette {text!r} repeats a colour or a name.", fix=fix)
        return cls(np.array(colours, np.float64), names)


def decode_palette(rgb: np.ndarray, palette: Palette, tolerance: float) -> tuple[np.ndarray, int]:
    """Class index of each pixel's nearest palette colour, and the number of pixels farther than ``tolerance``
    from every colour (JPEG noise at edges stays below it; a colour the palette lacks does not)."""
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    colours, inverse = np.unique(rgb[..., :3].reshape(-1, 3), axis=0, return_inverse=True)
    d = np.linalg.norm(colours[:, None, :].astype(np.float64) - palette.colours[None], axis=2)
    nearest = d.argmin(axis=1).astype(np.uint8)
    far = d.min(axis=1) > tolerance
    inverse = inverse.reshape(-1)
    return nearest[inverse].reshape(rgb.shape[:2]), int(far[inverse].sum())


def decode_mask(arr: np.ndarray, *, encoding: str, lossy: bool, palette: Palette | None, tolerance: float,
                path: Path, ignore: int | None = None) -> np.ndarray:
    """HxW uint8 class indices from a decoded mask file.

    - palette: nearest palette colour (see :func:`decode_palette`);
    - binary: foreground where the value is above half the range (0/255 masks, JPEG-compressed ones included;
      0/1 masks as they are);
    - index: the values are the class indices;
    - auto: colour masks need a palette; JPEG masks and masks whose values are not small integers are binary;
      others are class indices. The masks importer decides auto once per data set (``masks.decide_encoding``);
      here it is a single file's guess.

    ``ignore``: that value (an "ignore" label) is background.
    """
    colour = arr.ndim == 3 and not (np.array_equal(arr[..., 0], arr[..., 1]) and
                                    np.array_equal(arr[..., 1], arr[..., 2]))
    if encoding == "palette" or (encoding == "auto" and palette is not None):
        if palette is None:
            raise SegdeployError("--mask-encoding palette needs --palette.", fix='add --palette "R,G,B=name;..."')
        idx, far = decode_palette(arr, palette, tolerance)
        if far > OFF_PALETTE_LIMIT * idx.size:
            cols, counts = np.unique(arr.reshape(-1, arr.shape[-1] if arr.ndim == 3 else 1), axis=0,
                                     return_counts=True)
            top = ", ".join(",".join(map(str, c)) for c in cols[np.argsort(-counts)][:4])
            raise SegdeployError(f"{far / idx.size:.1%} of the pixels are farther than {tolerance:g} from every "
                                 f"palette colour (most common colours: {top}).", path=path,
                                 fix="add the missing colours to --palette, or raise --tolerance.")
        return idx
    if colour:
        raise SegdeployError("colour mask: its RGB channels differ.", path=path,
                             fix='give the colours with --palette "R,G,B=name;..." (or --mask-encoding palette).')
    gray = arr[..., 0] if arr.ndim == 3 else arr
    if ignore is not None:
        gray = np.where(gray == ignore, 0, gray).astype(gray.dtype)
    if encoding == "auto":
        small_ints = np.issubdtype(gray.dtype, np.integer) and gray.size and int(gray.max()) < SMALL_INDEX
        encoding = "binary" if lossy or not small_ints else "index"
    if encoding == "binary":
        top = float(gray.max()) if gray.size else 0.0
        if top <= 1:
            return gray.astype(np.uint8)
        half = 127.5 if gray.dtype == np.uint8 or top <= 255 else top / 2  # 16-bit 0/65535 masks too
        return (gray > half).astype(np.uint8)
    return label_array(gray, path)


def label_array(arr: np.ndarray, path: Path) -> np.ndarray:
    """Class indices as uint8; refuses fractional or out-of-range labels (a mask stored as float)."""
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        r = np.rint(arr)
        if not np.allclose(arr, r, atol=1e-3):
            raise SegdeployError("label values are not whole numbers (an image given as a mask, or a resampled "
                                 "label map).", path=path, fix="give the label map itself.")
        arr = r
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise SegdeployError(f"label values {arr.min():g}..{arr.max():g} do not fit 0..255.", path=path,
                             fix="give class indices 0..K-1.")
    return arr.astype(np.uint8)


# -- volumes -----------------------------------------------------------------------------------------------------

def read_volume(path: Path) -> np.ndarray:
    """A NIfTI (nibabel) or NRRD/MHA/MHD (SimpleITK) file as an array in voxel order (x, y, z[, c]); 2D files
    get a z axis of length 1."""
    if ext_of(path) in NIFTI_EXTS:
        try:
            import nibabel as nib
        except ImportError as e:
            raise SegdeployError("reading NIfTI needs nibabel.", path=path, fix="pip install nibabel") from e
        arr = np.asanyarray(nib.load(str(path)).dataobj)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return arr
    try:
        import SimpleITK as sitk
    except ImportError as e:
        raise SegdeployError(f"reading {ext_of(path)} files needs SimpleITK.", path=path,
                             fix="pip install 'segdeploy[data]' (or pip install SimpleITK)") from e
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)  # (z, y, x[, c]) or (y, x[, c])
    comps = img.GetNumberOfComponentsPerPixel()
    spatial = arr.ndim - (1 if comps > 1 else 0)
    order = list(range(spatial))[::-1] + ([spatial] if comps > 1 else [])
    arr = np.transpose(arr, order)
    if spatial == 2:
        arr = arr[:, :, None] if comps == 1 else arr[:, :, None, :]
    return arr


def _geometry(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """(spatial shape, 4x4 voxel -> world affine) of a volume file, from its header alone."""
    if ext_of(path) in NIFTI_EXTS:
        import nibabel as nib

        img = nib.load(str(path))
        shape, affine = tuple(img.shape[:3]), np.asarray(img.affine, np.float64)
    else:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        n = reader.GetDimension()
        affine = np.eye(4)
        d = np.asarray(reader.GetDirection(), np.float64).reshape(n, n)
        affine[:n, :n] = d @ np.diag(reader.GetSpacing())
        affine[:n, 3] = reader.GetOrigin()
        shape = tuple(reader.GetSize())
    return shape + (1,) * (3 - len(shape)), affine


def _same_grid(a: tuple[tuple[int, ...], np.ndarray], b: tuple[tuple[int, ...], np.ndarray]) -> bool:
    return a[0] == b[0] and np.allclose(a[1], b[1], rtol=1e-5, atol=1e-3)  # header floats: float32 mm


def _describe(g: tuple[tuple[int, ...], np.ndarray]) -> str:
    spacing = np.linalg.norm(g[1][:3, :3], axis=0)
    axes = "".join(__import__("nibabel").orientations.aff2axcodes(g[1]))
    return (f"shape {g[0]}, spacing {', '.join(f'{v:g}' for v in spacing)}, axes {axes}, origin "
            f"{', '.join(f'{v:g}' for v in g[1][:3, 3])}")


def label_on_image_grid(image: Path, label: Path, lab: np.ndarray) -> tuple[np.ndarray, str | None]:
    """``lab`` (the label file's array, voxel order) on its image's voxel grid, and a note when it was moved.

    Image and label headers are compared (shape, spacing, direction, origin). A label stored in another voxel
    order of the same grid (axes flipped or permuted, e.g. affine diag(-1, 1, 1, 1)) is reoriented exactly
    (no interpolation); any other difference refuses the case: sliced as stored, it would lie mirrored or shifted
    against its image."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    gi, gl = _geometry(image), _geometry(label)
    if _same_grid(gi, gl):
        return lab, None
    t = ornt_transform(io_orientation(gl[1]), io_orientation(gi[1]))
    moved = apply_orientation(lab, t)  # read_volume gives 3 spatial axes, 2D files too
    if _same_grid((tuple(moved.shape[:3]), gl[1] @ inv_ornt_aff(t, gl[0])), gi):
        return moved, (f"{label.name}: its voxel axes are flipped/permuted against {image.name} (same grid); "
                       f"reoriented onto the image's")
    raise SegdeployError(f"label geometry ({_describe(gl)}) differs from its image {image.name} ({_describe(gi)}); "
                         f"not resampled, the case is left out.", path=label,
                         fix="resample the label onto its image's grid (e.g. SimpleITK.Resample with nearest "
                             "neighbour), or pair it with its own image.")


def require_finite(arr: np.ndarray, what: str) -> None:
    """Refuse NaN/inf intensities: clipped to 8 bits they become black slices that still carry labels."""
    if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
        bad = ~np.isfinite(arr)
        if bad.any():
            n = int(bad.sum())
            raise SegdeployError(f"{what}: {'all' if n == bad.size else n} of {bad.size} intensity values are not "
                                 f"finite (NaN or inf).", fix="repair the file (or remove the case) and import again.")


def volume_slices(vol: np.ndarray, axis: int) -> list[np.ndarray]:
    """2D slices of a (x, y, z[, c]) array along spatial ``axis``, each transposed to rows x columns (see the
    module docstring); channels stay last."""
    if axis not in (0, 1, 2):
        raise SegdeployError(f"--axis {axis}: volumes have axes 0, 1, 2.", fix="use --axis 2 (axial) or 0/1.")
    out = []
    for k in range(vol.shape[axis]):
        s = np.take(vol, k, axis=axis)
        out.append(np.swapaxes(s, 0, 1))
    return out


def volume_pairs(case: str, image: np.ndarray, label: np.ndarray, *, axis: int, window, percentiles, path: Path,
                 single_id: bool = False):
    """(id, image slice, mask slice) for each slice of an image volume (x, y, z[, c]) and its label volume.

    Intensities are mapped to 8 bits per channel over the whole volume (:func:`to_uint8`); a volume of one
    slice with ``single_id`` keeps the case id itself (2D data stored as NIfTI/MHD, e.g. CAMUS)."""
    from segdeploy.data.importers.base import slice_id

    require_finite(image, f"{case} (image volume)")
    label = label_array(label[..., 0] if label.ndim == 4 and label.shape[3] == 1 else label, path)
    if image.shape[:3] != label.shape[:3] or label.ndim != 3:
        raise SegdeployError(f"image volume is {image.shape[:3]} but the label volume is {label.shape}.",
                             path=path, fix="pair each image with its own label file.")
    if image.ndim == 4:
        image = np.stack([to_uint8(image[..., c], window=window, percentiles=percentiles)
                          for c in range(image.shape[3])], axis=-1)
        if image.shape[3] == 1:
            image = image[..., 0]
        elif image.shape[3] != 3:
            raise SegdeployError(f"{image.shape[3]} channels: segdeploy images have 1 (gray) or 3 (RGB).",
                                 path=path, fix="choose 1 or 3 channels with --channels.")
    else:
        image = to_uint8(image, window=window, percentiles=percentiles)
    images, masks = volume_slices(image, axis), volume_slices(label, axis)
    for k, (img, msk) in enumerate(zip(images, masks)):
        sid = case if single_id and len(images) == 1 else slice_id(case, k)
        yield sid, np.ascontiguousarray(img), np.ascontiguousarray(msk)
