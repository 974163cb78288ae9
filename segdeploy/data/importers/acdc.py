"""``acdc``: the Automated Cardiac Diagnosis Challenge in its published per-patient layout.

``patientNNN/patientNNN_frameMM.nii.gz`` (an ED or ES cine-MRI volume) with ``patientNNN_frameMM_gt.nii.gz``
(0 background, 1 right ventricle, 2 myocardium, 3 left ventricle), under ``training/`` and ``testing/`` (the
``_4d`` sequences have no labels and are ignored). Each frame becomes short-axis slices
``patientNNN_frameMM_slice_KKK``; the patient is the group, so no patient spans two splits. MR intensities are
clipped to the volume's 0.5-99.5 percentiles unless ``--percentiles``/``--window`` say otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path

from segdeploy.data.importers import register_importer
from segdeploy.data.importers.base import ImportOptions, Item, Pair, Plan, Skipped
from segdeploy.data.importers.readers import label_on_image_grid, read_volume, stem_of, volume_pairs

CLASSES = ["background", "right_ventricle", "myocardium", "left_ventricle"]
FRAME = re.compile(r"^(patient\d+)_frame\d+$")


@register_importer("acdc")
def scan(src: Path, opts: ImportOptions) -> Plan:
    items, skipped, notes = [], [], []
    for path in sorted(src.rglob("patient*_frame*.nii*")):
        case = stem_of(path)
        m = FRAME.match(case)
        if m is None or any(p.startswith(".") for p in path.relative_to(src).parts):
            continue  # the _gt files themselves, macOS '._' copies
        gt = path.with_name(path.name.replace(case, f"{case}_gt", 1))
        if not gt.is_file():
            skipped.append(Skipped(str(path), f"no label file {gt.name}."))
            continue
        items.append(Item(sources=(path, gt), group=m.group(1), load=_loader(case, path, gt, opts, notes)))
    return Plan(name="acdc", classes=CLASSES, items=items, skipped=skipped, group_regex=r"^(patient\d+)",
                notes=notes,
                meta={"source_format": "acdc", "modality": "cardiac cine MRI (short-axis, ED/ES frames)"})


def _loader(case: str, image: Path, label: Path, opts: ImportOptions, notes: list[str]):
    def load():
        lab, note = label_on_image_grid(image, label, read_volume(label))
        if note:
            notes.append(note)
        for sid, img, msk in volume_pairs(case, read_volume(image), lab, axis=opts.axis,
                                          window=opts.window, percentiles=opts.percentiles, path=label):
            yield Pair(sid, img, msk)

    return load
