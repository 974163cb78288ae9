"""``camus``: the CAMUS echocardiography set (apical two- and four-chamber views, ED and ES).

``patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}.nii.gz`` with ``..._gt.nii.gz`` (the 2023 NIfTI release), or the
same names as ``.mhd``/``.raw`` (the original release; read with SimpleITK). Labels: 0 background, 1 left
ventricle (endocardium), 2 myocardium, 3 left atrium. Each view is one 2D pair named like its file; the patient
is the group. The half-sequence files are not labelled frames and are ignored. Images are 8-bit and kept as
they are.
"""

from __future__ import annotations

import re
from pathlib import Path

from segdeploy.data.importers import register_importer
from segdeploy.data.importers.base import ImportOptions, Item, Pair, Plan, Skipped
from segdeploy.data.importers.readers import ext_of, read_volume, stem_of, volume_pairs

CLASSES = ["background", "left_ventricle", "myocardium", "left_atrium"]
VIEW = re.compile(r"^(patient\d+)_(2CH|4CH)_(ED|ES)$")
EXTS = (".nii.gz", ".nii", ".mhd", ".mha")


@register_importer("camus")
def scan(src: Path, opts: ImportOptions) -> Plan:
    items, skipped, seen = [], [], {}
    for path in sorted(src.rglob("patient*")):
        case = stem_of(path)
        m = VIEW.match(case)
        if m is None or ext_of(path) not in EXTS or any(p.startswith(".") for p in path.relative_to(src).parts):
            continue
        if case in seen:  # both releases unpacked side by side: keep the first, say so
            skipped.append(Skipped(str(path), f"{case} is already read from {seen[case].name}."))
            continue
        gt = path.with_name(f"{case}_gt{ext_of(path)}")
        if not gt.is_file():
            skipped.append(Skipped(str(path), f"no label file {gt.name}."))
            continue
        seen[case] = path
        items.append(Item(sources=(path, gt), group=m.group(1), load=_loader(case, path, gt, opts)))
    return Plan(name="camus", classes=CLASSES, items=items, skipped=skipped, group_regex=r"^(patient\d+)",
                meta={"source_format": "camus", "modality": "2D echocardiography (apical 2CH/4CH, ED/ES)"})


def _loader(case: str, image: Path, label: Path, opts: ImportOptions):
    def load():
        for sid, img, msk in volume_pairs(case, read_volume(image), read_volume(label), axis=2, window=opts.window,
                                          percentiles=opts.percentiles, path=label, single_id=True):
            yield Pair(sid, img, msk)

    return load
