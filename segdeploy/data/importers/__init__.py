"""Importers: a data set as users download it -> segdeploy's folder layout. One file per format.

An importer is a function ``scan(src: Path, options: ImportOptions) -> Plan`` registered under its format name
with :func:`register_importer`; :func:`segdeploy.data.importers.build.import_dataset` runs it and writes the
folder. Formats: ``masks`` (image + mask files: Kvasir-SEG, CVC-ClinicDB, ISIC 2018, PH2, BUSI, DRIVE, NeoPolyp),
``nnunet`` (nnU-Net v2 raw data sets and the Medical Segmentation Decathlon), ``acdc`` and ``camus``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from segdeploy.errors import SegdeployError

_IMPORTERS: dict[str, Callable] = {}
_MODULES = ("masks", "nnunet", "acdc", "camus")  # imported on first lookup; each registers itself
_loaded = False


def register_importer(name: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        if name in _IMPORTERS:
            raise ValueError(f"importer {name!r} registered twice")
        _IMPORTERS[name] = fn
        return fn

    return deco


def list_importers() -> list[str]:
    _load()
    return sorted(_IMPORTERS)


def get_importer(name: str) -> Callable:
    _load()
    if name not in _IMPORTERS:
        raise SegdeployError(f"unknown import format {name!r}.", fix=f"use one of {', '.join(list_importers())}.")
    return _IMPORTERS[name]


def _load() -> None:
    global _loaded
    if not _loaded:
        for mod in _MODULES:
            importlib.import_module(f"{__name__}.{mod}")
        _loaded = True
