"""Typed records shared by every stage: a run's metadata (``model.json``) and a results row (one JSON line of
``segdeploy bench``); the keys that identify a row and the one ΔDice reference rule are :mod:`segdeploy.rowkeys`.

Both records read every file written by earlier versions (``from_json``) and write the current format
(``to_json``). A file's ``schema`` says which format it is; a ``model.json`` without one is the first format
(``segdeploy.run/1``). Keys this version does not know are kept in ``extra`` and written back unchanged, so what a
later version recorded is not dropped. This module imports nothing heavy: every layer may depend on it.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from segdeploy.backends import needs_gpu
from segdeploy.errors import SegdeployError

RUN_SCHEMA = "segdeploy.run/1"
BENCH_SCHEMA = "segdeploy.bench/3"
# bench/1 -> bench/2: dice_vs_torch_fp32 follows rowkeys.reference_row() (also the same dataset and device kind; the
# torch fp32 row itself gets 0.0), and every field is written, null where nothing was measured.
# bench/2 -> bench/3: a timing's p90/p95/p99 is null where its count does not support it
# (segdeploy.bench.latency.PERCENTILE_MIN_N) and it has a ``cv``; ``noisy``/``noisy_reason``; memory figures are
# null in rows measured in a shared process (isolation "none"), with ``memory_note`` saying why. Older rows load
# with noisy and memory_note null (unknown), their percentiles as they were written.
BENCH_SCHEMAS = ("segdeploy.bench/1", "segdeploy.bench/2", BENCH_SCHEMA)  # every version this release reads (a row without one: /1)



def _known(cls) -> list[str]:
    return [f.name for f in fields(cls) if f.name != "extra"]


def _split_known(cls, data: Mapping) -> tuple[dict, dict]:
    names = set(_known(cls))
    return ({k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names})


def _dump(record) -> dict:
    """Known fields in declaration order (nested records as their JSON), then the unknown keys kept on reading."""
    out = {}
    for name in _known(type(record)):
        value = getattr(record, name)
        out[name] = value.to_json() if hasattr(value, "to_json") else value
    out.update({k: v for k, v in record.extra.items() if k not in out})
    return out


class _JsonRecord:
    """A dataclass read from and written to a JSON object: known fields by name, the other keys in ``extra``."""

    @classmethod
    def from_json(cls, data: Mapping | None):
        known, extra = _split_known(cls, data or {})
        return cls(**known, extra=extra)

    def to_json(self) -> dict:
        return _dump(self)


def _expect_mapping(data, what: str, path, fix: str) -> Mapping:
    if not isinstance(data, Mapping):
        raise SegdeployError(f"{what} is not a JSON object.", path=path, fix=fix)
    return data


# -- run metadata (model.json) -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class DatasetRef(_JsonRecord):
    """The dataset a run was trained on: ``spec`` as given to ``--data``, its ``name`` and ``root`` folder."""

    spec: str | None = None
    name: str | None = None
    root: str | None = None
    n_images: int | None = None
    # a class map applied at training (segdeploy.data.class_map): {name: [source labels]} and the source's classes
    class_map: dict | None = None
    source_classes: list | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = _dump(self)
        for key in ("class_map", "source_classes"):  # written only where a map was applied, as model.json had it
            if data.get(key) is None:
                data.pop(key, None)
        return data

    def names(self) -> set[str]:
        return {n for n in (self.name, self.spec) if n}

    def open_spec(self) -> str | None:
        """What to open the run's dataset with: ``spec``, unless it is a relative folder path that does not exist
        from the current directory (the run was trained from elsewhere) while the recorded ``root``, an absolute
        folder of the same name, does."""
        spec = self.spec
        if not spec or not self.root or ("/" not in spec and "\\" not in spec) or Path(spec).expanduser().exists():
            return spec
        root = Path(self.root)
        return str(root) if root.is_absolute() and root.is_dir() and root.name == Path(spec).name else spec


@dataclass(kw_only=True)
class SplitRecord(_JsonRecord):
    """How the run's splits were made (``SegDataset.split_info``): the arguments that reproduce them
    (``seed, k, fold, group_regex``; None where a split.json decided), the method and the counts.
    ``ids_sha256`` (split name -> sha256 of its id list, :func:`segdeploy.run.splits.ids_sha256`) seals the ids
    recorded in the run's ``splits.json`` (and its key ``pixels`` the images' pixel digests there, where recorded);
    None in runs trained before ids were recorded."""

    method: str | None = None
    seed: int | None = None
    k: int | None = None
    fold: int | None = None
    group_regex: str | None = None
    test_fraction: float | None = None
    counts: dict | None = None
    train_used: int | None = None
    ids_sha256: dict | None = None
    extra: dict = field(default_factory=dict)

    def split_args(self) -> dict:
        """Keyword arguments of ``SegDataset.split`` that give the recorded split (only those recorded)."""
        return {k: getattr(self, k) for k in ("seed", "k", "fold", "group_regex") if getattr(self, k) is not None}


_RUN_REQUIRED = ("model", "num_classes", "in_chans", "img_size", "mean", "std")


@dataclass(kw_only=True)
class RunMeta(_JsonRecord):
    """``model.json``: what the checkpoint is (model, classes, input, normalisation), what it was trained on
    (dataset, split) and how (protocol, config, versions), and how training went (epochs, ``val``, ``complete``)."""

    schema: str = RUN_SCHEMA
    model: str
    family: str | None = None
    run_name: str | None = None
    run_id: str | None = None  # names this training run: a resume state from another run is refused
    num_classes: int
    classes: list[str] | None = None
    in_chans: int
    img_size: int
    mean: list[float]
    std: list[float]
    fixed_size: int | None = None
    params_m: float | None = None
    dataset: DatasetRef = field(default_factory=DatasetRef)
    split: SplitRecord = field(default_factory=SplitRecord)
    seed: int | None = None
    device: str | None = None  # where it was trained
    amp: str | None = None  # bfloat16 / float16 / None
    protocol: dict | None = None
    config: dict | None = None  # TrainConfig.for_record()
    versions: dict | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    complete: bool = False  # False while training, or when it was interrupted
    stopped_early: bool | None = None
    train_seconds: float | None = None
    val: dict | None = None  # validation metrics of the best epoch
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping, path: str | Path | None = None) -> RunMeta:
        data = _expect_mapping(data, "model.json", path, fix="re-run segdeploy train.")
        schema = data.get("schema") or RUN_SCHEMA  # files without a schema are the first format
        if not str(schema).startswith("segdeploy.run/"):
            raise SegdeployError(f"not a run metadata file (schema {schema!r}).", path=path,
                                 fix="pass a run directory written by `segdeploy train`.")
        lacking = [k for k in _RUN_REQUIRED if data.get(k) is None]
        if lacking:
            raise SegdeployError(f"model.json lacks {', '.join(lacking)}.", path=path,
                                 fix="re-run segdeploy train, or add the fields to model.json.")
        known, extra = _split_known(cls, data)
        known.update(schema=schema, dataset=DatasetRef.from_json(known.get("dataset")),
                     split=SplitRecord.from_json(known.get("split")))
        known["complete"] = bool(known.get("complete"))
        return cls(**known, extra=extra)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_chans, self.img_size, self.img_size)


# -- results rows --------------------------------------------------------------------------------------------


def device_kind(device: str | None, backend: str | None = None) -> str:
    """``cpu`` or ``cuda`` from a row's device (``cpu``, ``cuda:0``, ...), never the GPU's name; GPU-only backends
    are ``cuda``. Anything else (``auto`` in a row that failed before a device was chosen) is returned as is."""
    text = (device or "").lower()
    if text.startswith(("cuda", "gpu")) or needs_gpu(backend):
        return "cuda"
    return "cpu" if text.startswith("cpu") or not text else text


def split_text(split) -> str | None:
    """A row's split as comparable text (a name, or its parameters as sorted JSON)."""
    return split if split is None or isinstance(split, str) else json.dumps(split, sort_keys=True)


@dataclass(kw_only=True)
class StudyCell(_JsonRecord):
    """The ``study`` field of a study's rows: the cell that wrote it (``segdeploy.study.plan.Cell.study_field``).
    ``fold`` and ``lr`` are None in a cost-only study."""

    model: str | None = None
    dataset: str | None = None
    fold: int | None = None
    lr: float | None = None
    cell_id: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class BenchRow(_JsonRecord):
    """One configuration (run x backend x precision on a dataset split) as ``segdeploy bench`` writes it.
    ``status`` is ``ok``, ``unavailable`` or ``failed`` (with ``reason``); measured fields are None otherwise.
    ``device`` is where the engine ran, ``device_requested`` what was asked for. Timing dicts are
    ``segdeploy.bench.latency.summarize`` output (``mean, p50, p90, p95, p99, min, max, n, total_s``, in ms)."""

    schema: str = BENCH_SCHEMA
    # what was run
    dataset: str | None = None
    data: str | None = None  # the --data spec
    split: str | None = None
    run: str | None = None  # resolved run directory
    run_name: str | None = None
    model: str | None = None
    family: str | None = None
    device_requested: str | None = None
    batch: int | None = None
    n_images: int | None = None
    timestamp: str | None = None
    backend: str | None = None
    precision: str | None = None
    device: str | None = None
    status: str | None = None
    reason: str | None = None
    # the model and the artifact
    params_m: float | None = None
    gmacs: float | None = None
    gflops: float | None = None
    gflops_error: str | None = None
    provider: str | None = None
    file_size_mb: float | None = None
    # accuracy (segdeploy.evaluation.metrics.SegMetrics.result)
    dice: float | None = None
    dice_per_class: dict | None = None
    dice_per_image: float | None = None
    iou: float | None = None
    iou_per_class: dict | None = None
    precision_fg: float | None = None
    recall_fg: float | None = None
    hd95: float | None = None
    hd95_per_class: dict | None = None
    hd95_excluded: int | None = None
    # speed and energy (segdeploy.bench.latency.measure_engine, segdeploy.bench.power)
    latency_ms: dict | None = None
    compute_ms: dict | None = None
    compute_timer: str | None = None
    batch_latency_ms: dict | None = None
    throughput_ips: float | None = None
    avg_power_w: float | None = None
    energy_j_per_image: float | None = None
    power_method: str | None = None
    power_samples: int | None = None
    power_reason: str | None = None
    # memory (segdeploy.bench.memory.MemoryProbe)
    peak_memory_mb: float | None = None
    peak_memory_delta_mb: float | None = None
    peak_memory_method: str | None = None
    host_peak_rss_mb: float | None = None
    baseline_memory_mb: float | None = None  # the process before the engine was loaded
    load_memory_mb: float | None = None  # the load footprint: right after loading, above the baseline
    load_memory_method: str | None = None
    host_load_1m: float | None = None
    # why the memory figures are null although the row is ok (measured in a shared process)
    memory_note: str | None = None
    # how the configuration ran: "process" (a fresh worker, segdeploy.bench.isolate) or "none" (the bench process)
    isolation: str | None = None
    # noise and the machine's limit (segdeploy.machine.roofline.derived_fields): latency p90/p50; achieved GMAC/s
    # (gmacs x throughput_ips) and its fraction of the probed GEMM peak named by roofline_basis
    latency_spread: float | None = None
    # a timed loop scattered (CV or p90/p50 above segdeploy.bench.latency's thresholds) or the host was overloaded:
    # True/False with the reason; None where it was not judged (rows written before bench/3, or not ok)
    noisy: bool | None = None
    noisy_reason: str | None = None
    gmacs_per_s: float | None = None
    roofline_gmacs_per_s: float | None = None
    roofline_fraction: float | None = None
    roofline_basis: str | None = None
    engine_info: dict | None = None
    env: dict | None = None
    version: str | None = None
    dice_vs_torch_fp32: float | None = None  # dice_delta() when the row was written
    # per-image confusion counts (segdeploy.evaluation.per_image), relative to the results file's folder
    per_image: str | None = None
    class_map: dict | None = None  # the scored dataset's labels mapped onto the run's classes (cross-dataset)
    run_complete: bool | None = None  # model.json "complete" when benchmarked: False marks an unfinished run
    # sha256 of what was measured (segdeploy.bench.artifacts): the checkpoint, the ONNX file or the TensorRT
    # engine's build record; None in rows written before it was recorded, or where there is no artifact
    artifact_sha256: str | None = None
    # --threads: host threads asked of the CPU runtimes (None: each runtime's default, and rows written before
    # it existed); engine_info says how many each runtime used
    threads: int | None = None
    # accuracy without learning: "not measured" where bench timed only (a cost-only study); the trivial
    # predictors' Dice on the same images (segdeploy.evaluation.trivial: all_bg, all_fg, prior)
    dice_status: str | None = None
    trivial_dice: dict | None = None
    # a study cell's fields (segdeploy.study.cell): which cell (``study``), its validation Dice, the dataset it was
    # trained on and the one scored (``target``; == train_dataset in-domain), its training curve (in-domain rows)
    study: StudyCell | None = None
    val_dice: float | None = None
    train_dataset: str | None = None
    target: str | None = None
    train_curve: dict | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.study, Mapping):
            self.study = StudyCell.from_json(self.study)

    def to_json(self) -> dict:
        """Every bench field (null where nothing was measured); the optional fields only where set, and the study
        fields only in a study's rows, so a plain bench row is written as before they existed."""
        data = _dump(self)
        for name in _OPTIONAL_FIELDS + (() if self.study is not None else _STUDY_FIELDS):
            if data.get(name) is None:
                data.pop(name, None)
        return data

    @classmethod
    def from_json(cls, data: Mapping, path: str | Path | None = None, line: int | None = None) -> BenchRow:
        """A row read from a results file: its schema version must be one this release reads (a row without one
        is the first, ``segdeploy.bench/1``) and every known field must have its type (``dice: "high"`` would
        otherwise surface as a traceback, or a string compared with a number, far from the file)."""
        where = f"line {line}" if line is not None else "a results row"
        fix = "pass a results file written by `segdeploy bench`."
        data = _expect_mapping(data, where if line is not None else "a results row", path, fix=fix)
        schema = data.get("schema") or BENCH_SCHEMAS[0]
        if schema not in BENCH_SCHEMAS:
            newer = isinstance(schema, str) and schema.startswith("segdeploy.bench/")
            raise SegdeployError(
                f"{where} has schema {schema!r}; this release of segdeploy reads {', '.join(BENCH_SCHEMAS)}.",
                path=path, fix="upgrade segdeploy (pip install -U segdeploy) to read rows a newer version wrote."
                if newer else fix)
        known, extra = _split_known(cls, data)
        study = known.get("study")
        checks = [(name, value, _FIELD_TYPES[name]) for name, value in known.items()]
        if isinstance(study, Mapping):  # the cell's own fields, typed as well
            checks += [(f"study.{k}", v, _STUDY_CELL_TYPES[k]) for k, v in study.items() if k in _STUDY_CELL_TYPES]
        for name, value, expected in checks:
            if value is not None and not _has_type(value, expected):
                raise SegdeployError(f"{where}: field {name!r} is {value!r}, not {' or '.join(expected)}.",
                                     path=path, fix=f"correct or delete that row; {fix}")
        return cls(**{**known, "schema": schema}, extra=extra)

    @classmethod
    def coerce(cls, row: BenchRow | Mapping) -> BenchRow:
        return row if isinstance(row, BenchRow) else cls.from_json(row)

    def update(self, values: Mapping[str, Any] = (), **more) -> None:
        """Set fields from a producer's dict (metrics, timings, memory); keys without a field go to ``extra``."""
        names = set(_known(type(self)))
        for key, value in {**dict(values), **more}.items():
            if key == "study" and isinstance(value, Mapping):
                value = StudyCell.from_json(value)
            if key in names:
                setattr(self, key, value)
            else:
                self.extra[key] = value

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def has_dice(self) -> bool:
        """An ok row with a Dice: the only kind that is compared with anything."""
        return self.status == "ok" and self.dice is not None

    @property
    def dataset_name(self) -> str | None:
        return self.dataset or self.data

    @property
    def device_kind(self) -> str:
        return device_kind(self.device, self.backend)


def _has_type(value, expected: tuple[str, ...]) -> bool:
    checks = {"str": lambda v: isinstance(v, str), "dict": lambda v: isinstance(v, Mapping),
              "list": lambda v: isinstance(v, list), "bool": lambda v: isinstance(v, bool),
              "int": lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)}
    return any(checks[t](value) for t in expected)


def _json_types(cls) -> dict[str, tuple[str, ...]]:
    """field -> the JSON types it may hold besides null, from the annotations ("float | None" -> ("float",))."""
    return {f.name: tuple(t.strip() for t in str(f.type).split("|") if t.strip() != "None")
            for f in fields(cls) if f.name != "extra"}


_FIELD_TYPES = _json_types(BenchRow)
_FIELD_TYPES["split"] = ("str", "dict")  # a split given by its parameters (split_text)
_FIELD_TYPES["study"] = ("dict",)  # read into a StudyCell
_STUDY_CELL_TYPES = _json_types(StudyCell)
_STUDY_CELL_TYPES["fold"] = ("int", "str")  # "0" and 0 are one fold (CheckKey, analysis.rows)
_OPTIONAL_FIELDS = ("dice_status", "trivial_dice")
_STUDY_FIELDS = ("study", "val_dice", "train_dataset", "target", "train_curve")


def comma_list(value: str | Iterable[str]) -> list[str]:
    """``"fp32, fp16,,fp32"`` -> ``["fp32", "fp16"]``: the items of a comma-separated option (or of a list of
    them, as the Python API takes), blanks dropped, each item once, in the order first given."""
    items = value.split(",") if isinstance(value, str) else [part for v in value for part in str(v).split(",")]
    return list(dict.fromkeys(s.strip() for s in items if s.strip()))


# Settings keys defined once (TrainConfig, BenchConfig): a field's default and its help text live on the field, and
# the command-line options, the study file's keys and the template comments read them from there.
def key(default: Any, help: str) -> Any:  # noqa: A002 -- the name Typer and argparse give it
    """A settings field with its help text: ``epochs: int = key(150, "Maximum epochs.")``."""
    return field(default=default, metadata={"help": help})


def key_help(cls: type, name: str) -> str:
    """The help text of settings field ``name`` of dataclass ``cls`` (empty if it has none)."""
    return next(f.metadata.get("help", "") for f in fields(cls) if f.name == name)


def key_default(cls: type, name: str) -> Any:
    """The default of settings field ``name`` of dataclass ``cls``."""
    return next(f.default for f in fields(cls) if f.name == name)
