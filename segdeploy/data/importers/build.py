"""``import_dataset``: run an importer and write segdeploy's folder layout, atomically.

The folder is built beside DEST under a temporary name (a zip is unpacked there too), de-duplicated, checked
with ``data check``, and only then renamed to DEST; an existing DEST is replaced only with ``force``. Every
source file that could not be read is listed with its reason (``import.json`` and the summary).
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from segdeploy.data.importers import get_importer
from segdeploy.data.importers.base import DEDUPE_MODES, ImportOptions, Item, Pair, Plan, Skipped
from segdeploy.errors import SegdeployError
from segdeploy.fileio import atomic_write_json

IMPORT_REPORT = "import.json"


@dataclass
class ImportReport:
    dest: str
    format: str
    source: str
    pairs: int
    classes: list[str]
    class_pixel_fraction: dict[str, float]
    images_per_class: dict[str, int]
    empty_masks: int
    size_hw: dict[str, list[float]]  # min / median / max
    groups: int
    skipped: list[Skipped] = field(default_factory=list)
    duplicates: dict | None = None  # segdeploy.data.dedupe summary, None with --dedupe off
    dropped: list[str] = field(default_factory=list)
    check: dict = field(default_factory=dict)  # data check counts on the result
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class _Written:
    id: str
    group: str
    hw: tuple[int, int]
    counts: np.ndarray  # label histogram (256)
    hash: object | None  # segdeploy.data.dedupe.ImageHash


def import_dataset(fmt: str, src: str | Path, dest: str | Path, options: ImportOptions | None = None, *,
                   progress: bool = False) -> ImportReport:
    """Import ``src`` (folder or .zip) of format ``fmt`` into the dataset folder ``dest``."""
    from segdeploy.data.check import check_dataset, summarize
    from segdeploy.data.importers.archive import extract_zip

    opts = options or ImportOptions()
    importer = get_importer(fmt)
    src, dest = Path(src).expanduser(), Path(dest).expanduser()
    if opts.dedupe not in DEDUPE_MODES:
        raise SegdeployError(f"--dedupe {opts.dedupe}: unknown mode.", fix=f"use one of {', '.join(DEDUPE_MODES)}.")
    if not src.exists():
        raise SegdeployError("source not found.", path=src, fix="give the downloaded folder or .zip.")
    if dest.resolve() == Path.cwd().resolve() or dest.resolve() in Path.cwd().resolve().parents:
        raise SegdeployError("destination is the working directory or a folder around it; replacing it would "
                             "delete the folder you are working in.", path=dest,
                             fix="give a new folder as DEST (e.g. data/NAME).")
    if dest.exists() and not opts.force:
        raise SegdeployError("destination exists; it is not overwritten.", path=dest,
                             fix="choose another DEST, or pass --force to replace it.")
    if dest.resolve() == src.resolve() or {dest.resolve(), src.resolve()} & {*dest.resolve().parents,
                                                                             *src.resolve().parents}:
        raise SegdeployError("destination and source contain one another.", path=dest,
                             fix="import into a folder outside the source (and not around it).")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.importing-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        root = (extract_zip(src, work / "unpacked" / src.stem, max_ratio=opts.max_ratio,
                            max_bytes=opts.max_unpacked_gb * 1e9) if src.suffix.lower() == ".zip" else src)
        plan = importer(root, opts)
        out = work / "dataset"
        report = _write(plan, out, opts, fmt=fmt, source=src, progress=progress)
        problems = check_dataset(out)
        counts = summarize(problems)
        if counts["error"]:
            first = next(p for p in problems if p.severity == "error")
            raise SegdeployError(f"the imported folder fails data check ({counts['error']} errors; first: "
                                 f"{Path(first.file).name}: {first.message})", path=src,
                                 fix="this is a bug in the importer: please report it with the source layout.")
        report.check = {**counts, "warnings_list": [f"{Path(p.file).name}: {p.message}" for p in problems]}
        report.dest = str(dest)
        atomic_write_json(out / IMPORT_REPORT, report.to_json())
        if dest.exists():  # --force: the old folder goes only once the new one is complete
            os.replace(dest, work / "replaced")
        os.replace(out, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _write(plan: Plan, out: Path, opts: ImportOptions, *, fmt: str, source: Path, progress: bool) -> ImportReport:
    from segdeploy.data.dedupe import DEFAULT_THRESHOLD, REPORT_FILE, find_duplicates, hash_image
    from segdeploy.data.folder import GROUPS_FILE, META_FILE, SPLIT_FILE
    from segdeploy.data.splits import group_of

    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    skipped = list(plan.skipped)
    written: list[_Written] = []
    lock = threading.Lock()
    hashing = opts.dedupe != "off"

    empty = [0]

    def run(item: Item) -> None:
        try:
            pairs = list(item.load())
        except Exception as e:  # noqa: BLE001 -- one unreadable case is listed, the import goes on
            reason = e.message if isinstance(e, SegdeployError) else f"{type(e).__name__}: {e}"
            with lock:
                skipped.append(Skipped(str(item.sources[0]), reason))
            return
        for pair in pairs:
            if opts.skip_empty and not pair.mask.any():
                with lock:
                    empty[0] += 1
                continue
            rec = _write_pair(pair, out, opts.resize_longer, item.group, hashing, hash_image)
            with lock:
                written.append(rec)

    bar = _bar(progress, len(plan.items))
    with bar, ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        task = bar.add_task("import", total=len(plan.items))
        for _ in pool.map(lambda it: (run(it), bar.advance(task)), plan.items):
            pass
    if not written:
        why = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in skipped[:3])
        raise SegdeployError(f"nothing was imported ({len(plan.items)} items found, {len(skipped)} files skipped"
                             + (f"; e.g. {why}" if why else "") + ").", path=source,
                             fix="check the format name and the layout (see README, 'Bring your own data').")
    written.sort(key=lambda w: w.id)
    ids = [w.id for w in written]
    if len(set(ids)) != len(ids):
        raise SegdeployError("two source files map to the same id.", path=source, fix="report the layout as a bug.")
    hist = np.sum([w.counts for w in written], axis=0)
    top = int(np.nonzero(hist)[0].max())
    classes = plan.classes or (["background", "foreground"] if top <= 1 else
                               ["background"] + [f"class_{c}" for c in range(1, top + 1)])
    if top >= len(classes):
        raise SegdeployError(f"masks hold label {top} but only {len(classes)} classes are named "
                             f"({', '.join(classes)}).", path=source,
                             fix="name every class (--classes, --palette, dataset.json), or check the encoding "
                                 "(--mask-encoding binary for 0/255 masks).")

    group_of_id = {w.id: w.group for w in written}
    meta = {"name": plan.name, "classes": classes, **plan.meta, "source": str(source),
            "import": {"format": fmt, "options": {k: v for k, v in asdict(opts).items() if v is not None}}}
    if plan.group_regex:
        meta["group_regex"] = plan.group_regex
    report = ImportReport(dest="", format=fmt, source=str(source), pairs=len(written), classes=classes,
                          class_pixel_fraction={}, images_per_class={}, empty_masks=0, size_hw={}, groups=0,
                          skipped=sorted(skipped, key=lambda s: s.path), notes=list(plan.notes))
    if empty[0]:
        report.notes.append(f"--skip-empty left out {empty[0]} slices with an empty mask")
    groups_file = None
    if hashing:
        splits = _split_of(plan, written)
        dup = find_duplicates([w.hash for w in written], threshold=opts.threshold if opts.threshold is not None
                              else DEFAULT_THRESHOLD, groups=group_of_id, splits=splits)
        report.duplicates = dup.to_json()["summary"]
        atomic_write_json(out / REPORT_FILE, {**dup.to_json(), "mode": opts.dedupe})
        if opts.dedupe == "drop":
            report.dropped = dup.dropped()
            for i in report.dropped:
                for sub in ("images", "masks"):
                    for f in (out / sub).glob(f"{i}.*"):
                        f.unlink()
            gone = set(report.dropped)
            written = [w for w in written if w.id not in gone]
        elif dup.sets:
            groups_file = dup.groups_json()
            atomic_write_json(out / GROUPS_FILE, groups_file)
        if splits and dup.to_json()["summary"]["sets_across_splits"]:
            report.notes.append("near-duplicates span the format's own train/test split (see dedupe.json); "
                                "groups cannot change a given split.")
    atomic_write_json(out / META_FILE, meta)
    if plan.split:
        atomic_write_json(out / SPLIT_FILE, dict(sorted(_split_of(plan, written).items())))

    counts = np.stack([w.counts[: len(classes)] for w in written])
    pixels = counts.sum(axis=0)
    sizes = np.array([w.hw for w in written])
    report.pairs = len(written)
    report.class_pixel_fraction = {c: float(pixels[j] / pixels.sum()) for j, c in enumerate(classes)}
    report.images_per_class = {c: int((counts[:, j] > 0).sum()) for j, c in enumerate(classes)}
    report.empty_masks = int((counts[:, 1:].sum(axis=1) == 0).sum())
    report.size_hw = {"min": sizes.min(axis=0).tolist(), "median": np.median(sizes, axis=0).tolist(),
                      "max": sizes.max(axis=0).tolist()}
    kept_ids = [w.id for w in written]
    report.groups = len(set(group_of(kept_ids, plan.group_regex, groups_file).values()))
    return report


def _split_of(plan: Plan, written: list[_Written]) -> dict[str, str] | None:
    """id -> split from the plan's group (case) -> split."""
    return {w.id: plan.split[w.group] for w in written} if plan.split else None


def _write_pair(pair: Pair, out: Path, longer: int | None, group: str, hashing: bool, hash_image) -> _Written:
    image, mask = pair.image, pair.mask
    if image.shape[:2] != mask.shape:
        raise SegdeployError(f"{pair.id}: image {image.shape[:2]} and mask {mask.shape} differ in size.")
    h, w = mask.shape
    resized = longer is not None and max(h, w) > longer
    if resized:
        scale = longer / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    if pair.copy_from is not None and not resized:
        shutil.copyfile(pair.copy_from, out / "images" / f"{pair.id}.jpg")
    elif pair.copy_from is not None:  # a JPEG source stays JPEG (its detail is already lossy), at quality 95
        Image.fromarray(image).save(out / "images" / f"{pair.id}.jpg", quality=95)
    else:
        Image.fromarray(image).save(out / "images" / f"{pair.id}.png")
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    (out / "masks" / f"{pair.id}.png").write_bytes(buf.getvalue())
    return _Written(pair.id, group, mask.shape, np.bincount(mask.ravel(), minlength=256),
                    hash_image(pair.id, image) if hashing else None)


def _bar(enabled: bool, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True, disable=not enabled)
