"""Accuracy figures measured elsewhere (a CSV ``model,dataset,dice,source``), joined with the costs measured here.

segdeploy ships the reference study's table: ``published/borst2026_mdsc.csv`` — Borst & Kounev 2026, *Are
General-Purpose Vision Models All We Need for 2D Medical Image Segmentation? A Cross-Dataset Empirical Study*,
arXiv 2603.13044: 5-fold mean mDSC on BKAI-IGH NeoPolyp-Small, CAMUS and ISIC 2018, as fractions; ``approx`` marks
values the public notes give only approximately. Every such figure is labelled "published, not measured here"
wherever it is shown, and drawn hollow in plots.

Model names are matched after mapping the study's names (``paper_name``, e.g. ``TransNeXt-T``) to segdeploy's
registry names (``transnext-t-upernet``). A ``-tiny`` configuration never takes its full model's published Dice:
it is a different network.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from segdeploy.errors import SegdeployError

SHIPPED = Path(__file__).with_name("published") / "borst2026_mdsc.csv"
SHIPPED_NAME = "borst2026"
LABEL = "published, not measured here"
_DATASET_ALIASES = {"isic18": "isic2018", "isic": "isic2018", "isic2018": "isic2018", "camus": "camus",
                    "neopolyp": "neopolyp", "neopolypsmall": "neopolyp", "bkaiighneopolyp": "neopolyp",
                    "bkaiighneopolypsmall": "neopolyp"}


@dataclass(frozen=True)
class PublishedDice:
    model: str  # registry name
    dataset: str  # canonical dataset name (canonical_dataset)
    dice: float  # fraction
    source: str
    approx: bool = False


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def canonical_dataset(name: str) -> str:
    key = _key(name)
    return _DATASET_ALIASES.get(key, name.lower())


@cache
def _paper_names() -> dict[str, str]:
    """normalised study name or registry name -> registry name, from the shipped table."""
    names = {}
    with open(SHIPPED, encoding="utf-8") as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            names[_key(row["paper_name"])] = row["model"]
            names[_key(row["model"])] = row["model"]
    return names


def canonical_model(name: str) -> str:
    """The registry name for a study name (``U-KAN-L`` -> ``ukan-l``); other names unchanged (lower case)."""
    return _paper_names().get(_key(name), name.strip().lower())


def load_published(path: str | Path | None = None) -> list[PublishedDice]:
    """The rows of a published-accuracy CSV (default: the shipped reference-study table); ``#`` lines are
    comments; ``dice`` must be a fraction in [0, 1]."""
    path = Path(path) if path is not None else SHIPPED
    if not path.is_file():
        raise SegdeployError("published-accuracy CSV not found.", path=path,
                             fix="pass a CSV with columns model,dataset,dice,source.")
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(line for line in f if not line.lstrip().startswith("#"))
        missing = {"model", "dataset", "dice", "source"} - set(reader.fieldnames or [])
        if missing:
            raise SegdeployError(f"columns {', '.join(sorted(missing))} are missing.", path=path,
                                 fix="the header must name model,dataset,dice,source.")
        for n, row in enumerate(reader, 2):
            try:
                dice = float(row["dice"])
            except (TypeError, ValueError):
                raise SegdeployError(f"row {n}: dice {row['dice']!r} is not a number.", path=path,
                                     fix="write Dice as a fraction, e.g. 0.897.") from None
            if not 0.0 <= dice <= 1.0:
                raise SegdeployError(f"row {n}: dice {dice} is outside [0, 1].", path=path,
                                     fix="write Dice as a fraction (89.7% -> 0.897).")
            out.append(PublishedDice(canonical_model(row["model"]), canonical_dataset(row["dataset"]), dice,
                                     (row.get("source") or "").strip() or LABEL,
                                     str(row.get("approx", "")).strip().lower() in ("true", "1", "yes", "~")))
    return out


def published_for(model: str, published: Sequence[PublishedDice]) -> list[PublishedDice]:
    """The published figures of ``model`` (a registry name; ``-tiny`` configurations have none)."""
    key = canonical_model(model)
    return [p for p in published if p.model == key]


def join_costs(entries: Sequence, published: Sequence[PublishedDice]) -> list[tuple[object, PublishedDice]]:
    """Every (cost entry, published Dice) pair with the same model (entries: ``segdeploy.analysis.cost.CostEntry``
    or anything with a ``model`` attribute), in the entries' order."""
    return [(e, p) for e in entries for p in published_for(e.model, published)]
