"""What identifies a results row and what it is compared with: :class:`ConfigKey` (bench's resume: the same
measurement), :class:`CheckKey` (``segdeploy check``: the same accuracy measurement on another machine or day) and
:class:`References`, the one ΔDice rule (a deployed row against its PyTorch fp32 row)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from segdeploy.records import BenchRow, StudyCell, split_text

REFERENCE_BACKEND, REFERENCE_PRECISION = "torch", "fp32"
# a deployed precision must keep 99% of its reference Dice (MLPerf Inference's target for medical segmentation)
FP32_SHARE = 0.99


class ConfigKey(NamedTuple):
    """What makes two bench measurements the same one (resume): the device is the one asked for, the number of
    images keeps a ``--max-images`` smoke test from standing in for the full split, ``threads`` (``--threads``,
    None for the runtimes' defaults and in rows older than it) makes another thread count another configuration,
    and ``artifact`` (the row's
    ``artifact_sha256``) is what was measured, so a re-exported ONNX file or a rebuilt engine is measured again.
    :meth:`configuration` drops the artifact: the same configuration, whichever file it ran (the study keeps
    the latest row of each)."""

    dataset: str | None
    run: str | None
    backend: str | None
    precision: str | None
    device_requested: str | None
    batch: int | None
    split: str | None
    n_images: int | None
    class_map: str | None = None  # canonical JSON: the same images under another class map are another config
    artifact: str | None = None
    threads: int | None = None

    @classmethod
    def of(cls, row: BenchRow) -> ConfigKey:
        mapped = json.dumps(row.class_map, sort_keys=True) if row.class_map else None
        return cls(row.dataset, row.run, row.backend, row.precision, row.device_requested, row.batch, row.split,
                   row.n_images, mapped, row.artifact_sha256, row.threads)

    def configuration(self) -> ConfigKey:
        return self._replace(artifact=None)


class CheckKey(NamedTuple):
    """What ``segdeploy check`` compares: everything that identifies one accuracy measurement, so two rows with the
    same key measured the same thing and a baseline entry names exactly one row. ``run`` is the run's folder name
    (``run_name``), not its path, so a baseline applies in another checkout; ``fold``, ``lr``, ``train_dataset`` and
    ``target`` are a study cell's (None in a plain bench row); ``n_images`` keeps a ``--max-images`` smoke test
    from standing in for the split and ``class_map`` (canonical JSON) a mapped scoring from the unmapped one;
    ``batch`` and ``threads`` are bench's pipeline settings (``ConfigKey``: another batch is another row). The
    device is its kind, never the GPU's name (the machine class is the baseline entry's ``machine``)."""

    run: str | None
    dataset: str | None
    split: str | None
    fold: str | None
    lr: float | None
    train_dataset: str | None
    target: str | None
    model: str | None
    backend: str | None
    precision: str | None
    device_kind: str
    n_images: int | None
    class_map: str | None
    batch: int | None = None
    threads: int | None = None

    @classmethod
    def of(cls, row: BenchRow | Mapping) -> CheckKey:
        """THE key of a results row, or of a baseline entry (which records the device kind as ``device``, the
        run's name as ``run`` and the study fields at its top level)."""
        row = BenchRow.coerce(row)
        study = row.study or StudyCell()
        # a study row's fold and lr are its cell's; a baseline entry has them at its top level
        fold = study.fold if row.study is not None else row.extra.get("fold")
        lr = study.lr if row.study is not None else row.extra.get("lr")
        run = row.run_name or (Path(str(row.run)).name if row.run else None)
        mapped = json.dumps(row.class_map, sort_keys=True) if row.class_map else None
        return cls(run, row.dataset_name, split_text(row.split), None if fold is None else str(fold),
                   None if lr is None else float(lr), row.train_dataset or study.dataset,
                   row.target, row.model, row.backend, row.precision, row.device_kind, row.n_images,
                   mapped, row.batch, row.threads)

    def text(self) -> str:
        """The key in words (the fields it has), for an error or a table."""
        return ", ".join(f"{name} {value}" for name, value in self._asdict().items() if value is not None)


# -- the ΔDice reference -------------------------------------------------------------------------------------


def _evaluation(row: BenchRow) -> tuple:
    # the same run scored on the same images of the same dataset split, on the same kind of device
    return (row.run, row.dataset_name, split_text(row.split), row.n_images, row.device_kind)


class References:
    """THE ΔDice reference rule, indexed once for many rows.

    A row's reference is the same run's PyTorch fp32 row on the same dataset, split and image set
    (``n_images``), on the same device kind: MLPerf's 99% rule holds a deployed precision against the fp32
    reference implementation, and only the same images on the same kind of device make the Dice comparable.
    When several such rows exist the latest (last given) one is the reference; when that one is not ok or has
    no Dice, there is no reference (None): an older measurement does not stand in for a failed new one.
    The torch fp32 row is its own reference (ΔDice 0)."""

    def __init__(self, rows: Iterable[BenchRow | Mapping]):
        self._by_evaluation: dict[tuple, BenchRow] = {}
        for r in map(BenchRow.coerce, rows):
            if (r.backend, r.precision) == (REFERENCE_BACKEND, REFERENCE_PRECISION):
                self._by_evaluation[_evaluation(r)] = r

    def row(self, row: BenchRow) -> BenchRow | None:
        ref = self._by_evaluation.get(_evaluation(BenchRow.coerce(row)))
        return ref if ref is not None and ref.has_dice else None

    def dice(self, row: BenchRow) -> float | None:
        ref = self.row(row)
        return None if ref is None else float(ref.dice)

    def delta(self, row: BenchRow) -> float | None:
        """``row.dice`` minus its reference's Dice; None when the row has no Dice or no reference."""
        row = BenchRow.coerce(row)
        ref = self.dice(row)
        return None if ref is None or not row.has_dice else float(row.dice) - ref


def reference_row(row: BenchRow | Mapping, rows: Iterable[BenchRow | Mapping]) -> BenchRow | None:
    """The row ``row``'s Dice is compared with, among ``rows`` (see :class:`References`)."""
    return References(rows).row(row)


def reference_dice(row: BenchRow | Mapping, rows: Iterable[BenchRow | Mapping]) -> float | None:
    return References(rows).dice(row)


def dice_delta(row: BenchRow | Mapping, rows: Iterable[BenchRow | Mapping]) -> float | None:
    """ΔDice of ``row``: its Dice minus its reference's (see :class:`References`)."""
    return References(rows).delta(row)
