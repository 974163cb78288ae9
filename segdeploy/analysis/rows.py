"""The one place that reads results rows for the study statistics and the report.

Everything downstream uses :class:`StudyRow`, a typed view of one bench row plus the optional study fields
(docs/architecture.md, "Study results contract"). :func:`from_record` reads the bench fields through
``segdeploy.records.BenchRow`` (the one definition of a bench row), the study fields (``study``, ``val_dice``,
``target``, ``train_dataset``, ``train_curve``) included.

Loading rules:

* a results file is appended to across runs: when a configuration repeats (same run, scored dataset, backend,
  precision, requested device, batch, split and image count), the last row in file order wins;
* ``per_image`` is a path relative to the results file's folder; it is resolved here, read lazily
  (:func:`load_per_image`) and checked: ``ids`` must be unique and as many as the ``confusion`` matrices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segdeploy.bench.latency import supported
from segdeploy.errors import SegdeployError
from segdeploy.evaluation.per_image import load_per_image as read_sidecar
from segdeploy.fileio import iter_jsonl
from segdeploy.machine.device import cuda_index
from segdeploy.records import BenchRow, StudyCell
from segdeploy.rowkeys import ConfigKey, References

RESULTS_NAME = "results.jsonl"


@dataclass(frozen=True)
class StudyRow:
    """What the statistics and the report read from one results row; ``None`` where a row has no value."""

    model: str
    family: str
    train_dataset: str  # the dataset the run was trained on
    target: str  # the dataset scored (== train_dataset in-domain)
    backend: str
    precision: str
    device: str  # where it ran: cpu, cuda:0, ...
    status: str  # ok | unavailable | failed
    reason: str | None = None
    run: str | None = None
    run_name: str | None = None
    split: str | None = None
    batch: int | None = None
    n_images: int | None = None
    fold: str | None = None  # as text, so "0" and 0 are one fold; the run's name for rows without study fields
    lr: float | None = None
    cell_id: str | None = None
    val_dice: float | None = None
    dice: float | None = None
    dice_status: str | None = None  # "not measured" for cost-only rows
    dice_per_class: dict = field(default_factory=dict)
    iou: float | None = None
    recall: float | None = None
    precision_fg: float | None = None
    hd95: float | None = None
    dice_vs_torch_fp32: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_n: int | None = None
    threads: int | None = None  # host threads the runtime used (engine_info), else the --threads asked for
    host_load_1m: float | None = None
    noisy: bool | None = None  # segdeploy.bench.latency.noise; None: not judged (rows before bench/3)
    noisy_reason: str | None = None
    memory_note: str | None = None  # why memory_mb is None although the row is ok (a shared process)
    throughput_ips: float | None = None
    memory_mb: float | None = None
    energy_j: float | None = None
    file_size_mb: float | None = None
    params_m: float | None = None
    gmacs: float | None = None
    per_image: Path | None = None
    env: dict = field(default_factory=dict)
    source: str | None = None  # results file the row came from
    in_study: bool = False  # the row has study fields (fold, lr) rather than a plain bench row
    trivial_dice: dict = field(default_factory=dict)  # {"all_bg", "all_fg", "prior"}: trivial predictors' Dice
    curve: dict | None = None  # the cell's training curve: {"loss": [...], "val_dice": [...], "stopped_early"}

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def in_domain(self) -> bool:
        return self.target == self.train_dataset

    @property
    def cell(self) -> tuple:
        """One trained model: (model, training dataset, fold, lr)."""
        return (self.model, self.train_dataset, self.fold, self.lr)

    @property
    def device_label(self) -> str:
        """The device with the hardware it is, so rows from two machines are never pooled."""
        index = cuda_index(self.device) if self.device.startswith("cuda") else None
        if index is not None:
            gpus = self.env.get("gpus") or []
            name = gpus[index].get("name") if index < len(gpus) else None
            return f"{self.device}: {name}" if name else self.device
        cpu, cores = self.env.get("cpu"), self.env.get("cpu_cores")
        if cpu:
            return f"{self.device}: {cpu}, {cores} cores" if cores else f"{self.device}: {cpu}"
        return self.device


def _float(value) -> float | None:
    return None if value is None else float(value)


def from_record(raw: dict, base_dir: Path | None = None, source: str | None = None) -> StudyRow:
    """A :class:`StudyRow` from one results row (a JSON object as ``bench`` or ``study run`` writes it)."""

    row = BenchRow.from_json(raw)
    study = row.study or StudyCell()
    latency = row.latency_ms or {}
    train = row.train_dataset or study.dataset or row.dataset
    fold = study.fold
    if fold is None and row.study is None:
        fold = row.run_name  # plain bench rows: each run is one repetition (see "Study results contract")
    per_image = row.per_image
    if per_image is not None:
        per_image = Path(per_image)
        if not per_image.is_absolute() and base_dir is not None:
            per_image = base_dir / per_image
    return StudyRow(
        model=str(row.model or study.model), family=str(row.family or "unknown"),
        train_dataset=str(train), target=str(row.target or row.dataset or train),
        # "-": a failed cell's row names no backend, precision or device (it never reached bench)
        backend=str(row.backend or "-"), precision=str(row.precision or "-"), device=str(row.device or "-"),
        status=str(row.status), reason=row.reason, run=row.run, run_name=row.run_name,
        split=row.split if isinstance(row.split, (str, type(None))) else str(row.split),
        batch=row.batch, n_images=row.n_images,
        fold=None if fold is None else str(fold), lr=_float(study.lr), cell_id=study.cell_id,
        val_dice=_float(row.val_dice), dice=_float(row.dice),
        dice_status=row.dice_status, dice_per_class=dict(row.dice_per_class or {}),
        iou=_float(row.iou), recall=_float(row.recall_fg), precision_fg=_float(row.precision_fg),
        hd95=_float(row.hd95), dice_vs_torch_fp32=_float(row.dice_vs_torch_fp32),
        latency_p50_ms=_float(latency.get("p50")), latency_p95_ms=_float(supported(latency, 95)),
        latency_p99_ms=_float(supported(latency, 99)), latency_n=latency.get("n"),
        threads=(row.engine_info or {}).get("threads", row.threads), host_load_1m=_float(row.host_load_1m),
        noisy=row.noisy, noisy_reason=row.noisy_reason, memory_note=row.memory_note,
        throughput_ips=_float(row.throughput_ips),
        memory_mb=_float(row.peak_memory_delta_mb), energy_j=_float(row.energy_j_per_image),
        file_size_mb=_float(row.file_size_mb), params_m=_float(row.params_m),
        gmacs=_float(row.gmacs), per_image=per_image, env=dict(row.env or {}), source=source,
        in_study=row.study is not None,
        trivial_dice={k: float(v) for k, v in (row.trivial_dice or {}).items() if v is not None},
        curve=row.train_curve,
    )


def _config_key(row: BenchRow) -> tuple:
    # the bench runner's configuration (segdeploy.rowkeys.ConfigKey without the artifact: a row measured on a
    # re-exported file replaces the stale one) plus what tells rows without a run folder apart: the model, the
    # scored target and the study cell
    study = row.study or StudyCell()
    return (*ConfigKey.of(row).configuration(), row.model, row.run_name, row.target, study.fold, study.lr,
            study.dataset)


def results_files(paths: Iterable[str | Path]) -> list[Path]:
    """Each argument is a results file, or a study folder holding ``results.jsonl``."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            p = p / RESULTS_NAME
        if not p.is_file():
            raise SegdeployError("no results file here.", path=p,
                                 fix=f"pass a results .jsonl or a study folder containing {RESULTS_NAME}.")
        files.append(p)
    return files


def load_rows(paths: Sequence[str | Path]) -> list[StudyRow]:
    """Rows of every results file (or study folder) in ``paths``; the latest row per configuration."""

    latest: dict[tuple, tuple[dict, StudyRow]] = {}
    for path in results_files(paths):
        for line, raw in iter_jsonl(path, numbered=True):
            record = BenchRow.from_json(raw, path, line)  # the schema version and every field's type, naming the line
            # a cell that failed before bench (training, export) is one failed row without a backend or
            # precision: the report lists it among the failures; only a measured row needs them
            if not isinstance(raw, dict) or not raw.get("model") or (not raw.get("backend")
                                                                     and raw.get("status") == "ok"):
                raise SegdeployError("a row lacks model or backend.", path=path,
                                     fix="pass results written by `segdeploy bench` or `segdeploy study run`.")
            key = (str(path.resolve()), *_config_key(record))
            latest.pop(key, None)  # re-insert: the order follows the latest rows
            latest[key] = raw, from_record(raw, path.parent, str(path))
    if not latest:
        raise SegdeployError("the results have no rows.", path=", ".join(map(str, paths)),
                             fix="run `segdeploy bench` or `segdeploy study run` first.")
    # rows written before their torch fp32 reference existed (or by older versions) get their ΔDice from the
    # one reference rule over all rows loaded, never from another rule
    from dataclasses import replace


    refs = References(raw for raw, _ in latest.values())
    return [row if row.dice_vs_torch_fp32 is not None else replace(row, dice_vs_torch_fp32=refs.delta(raw))
            for raw, row in latest.values()]


@dataclass(frozen=True)
class PerImage:
    ids: np.ndarray  # (N,) str
    confusion: np.ndarray  # (N, K, K) int64, rows = ground truth


def load_per_image(row: StudyRow) -> PerImage | None:
    """The row's per-image confusion sidecar, or None when the row has none."""
    if row.per_image is None:
        return None

    ids, confusion = read_sidecar(row.per_image)
    return PerImage(ids, confusion)
