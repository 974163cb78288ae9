"""Accuracy regression gate over a results file (``segdeploy check``).

A measurement is keyed by ``segdeploy.rowkeys.CheckKey``: run (its folder name), scored dataset, split, study fold,
lr, training dataset and target, model, backend, precision, device kind (``cpu`` or ``cuda``, never the GPU's
name), image count, class map, batch and threads, everything that identifies it. One results file holds each key once: a repeated
key is an error naming it (two measurements of one configuration: which is the reference is not for the gate to
guess; before, the last row won and a multi-fold study was checked on one fold).

Rules, each failing the check:

1. **regressed**: an ok row's Dice is more than ``tolerance`` Dice points below its baseline entry
   (``dice < baseline - tolerance / 100``; exactly at the limit passes). The tolerance is ``--tolerance``, else
   the entry's own ``tolerance_dice_points``, else the baseline's.
2. **below 99% of fp32** (MLPerf Inference's accuracy target for medical segmentation): an ok non-fp32 row's
   Dice is below 0.99 x the Dice of its fp32 reference, the one ΔDice rule of ``segdeploy.rowkeys.References``:
   the same run's PyTorch fp32 row on the same dataset, split and images, on the same device kind (it must be ok).
   A non-fp32 row without that reference gets a **no fp32 ref** finding, which fails only with ``strict``.
3. **missing**: a baseline entry whose row is present but not ``ok`` (its reason shown) fails; an entry with no
   row at all fails with ``strict`` and is a warning otherwise (a results file may hold part of a study).
4. **other machine class**: a configuration whose baseline entries are all for other machine classes fails with
   ``strict`` (a gate that compares nothing must not pass silently) and is a warning otherwise.

Baseline entries name the machine class they were recorded on (``machine``: a GPU's name; for a CPU its
architecture and int8/bf16/fp16 instruction paths, see ``machine_class``) and apply only to results from that
class: training is deterministic on one machine class, not across them. An entry without ``machine``
(``--any-machine``: fixed weights, only the deployment varies, e.g. the committed gate fixture) applies
everywhere, with a tolerance that covers what differs between classes (see docs in the Makefile's ``check``).

Configurations in the results but not in the baseline are reported as **new** (no failure; rule 2 still applies).

Baseline file (``--write-baseline``, written atomically)::

    {"schema": "segdeploy.baseline/2", "created": ISO time, "tolerance_dice_points": 1.0,
     "entries": [{"run", "dataset", "split", "fold", "lr", "train_dataset", "target", "model", "backend",
                  "precision", "device": "cpu"|"cuda", "n_images", "class_map", "batch", "threads", "dice",
                  "machine": "x86_64; int8 AMX-INT8, bf16 AMX-BF16, fp16 AVX512-FP16" (optional),
                  "tolerance_dice_points": 0.5 (optional)}, ...]}

A ``segdeploy.baseline/1`` file (keyed by dataset, model, backend, precision, device and split) still loads: each
entry's ``run`` becomes its ``model`` (the demo and CI name each run's folder after its model, ``runs/demo/unet-
tiny``), the study fields, class map and threads are None (version 1 was written from plain bench rows), and its
missing image count and batch match the configuration's one row whatever its count and batch. ``--write-baseline`` writes version 2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from segdeploy.machine.cpuinfo import kernel_paths
from segdeploy.errors import SegdeployError
from segdeploy.fileio import iter_jsonl, read_json
from segdeploy.records import BenchRow, device_kind
from segdeploy.rowkeys import FP32_SHARE, CheckKey, References

__all__ = ["BASELINE_SCHEMA", "CheckKey", "Finding", "applicable_entries", "check_results", "config_key",
           "device_kind", "keyed_rows", "load_baseline", "load_results", "machine_class", "make_baseline"]

BASELINE_SCHEMA = "segdeploy.baseline/2"
BASELINE_SCHEMAS = ("segdeploy.baseline/1", BASELINE_SCHEMA)
DEFAULT_TOLERANCE = 1.0  # Dice points
_EPS = 1e-12  # a value exactly at a limit passes despite float rounding of the limit
_V1_FIELDS = ("dataset", "model", "backend", "precision", "device", "split")  # what a baseline/1 entry keys by
_REQUIRED = ("model", "backend", "precision")
_OK_REQUIRED = ("backend", "precision")


def config_key(row: BenchRow | Mapping) -> CheckKey:
    """The key of a results row or of a baseline entry (the one key function, ``CheckKey.of``)."""
    return CheckKey.of(row)


def _as_rows(rows: Iterable[BenchRow | Mapping], source: str | Path | None) -> list[BenchRow]:
    out = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, (BenchRow, Mapping)):
            raise SegdeployError(f"row {i} is not a JSON object.", path=source,
                                 fix="pass a results file written by `segdeploy bench`.")
        row = BenchRow.coerce(row)
        # a study cell that failed before bench is one failed row without backend or precision: it measured
        # nothing and configures nothing the gate compares, so it is left out here (the report lists it)
        if _cell_failure(row):
            continue
        lacking = [f for f in _REQUIRED if getattr(row, f) is None]
        if lacking:
            raise SegdeployError(f"row {i} lacks {', '.join(lacking)}.", path=source,
                                 fix="pass a results file written by `segdeploy bench`.")
        out.append(row)
    return out


def _cell_failure(row: BenchRow) -> bool:
    return row.backend is None and row.precision is None and row.status != "ok" and row.model is not None


def _failed_cell_row(key: CheckKey, cells: list[BenchRow]) -> BenchRow | None:
    """The failed-cell row (training or export failed, no backend) that explains a baseline entry's absent row."""
    for row in cells:
        cell = config_key(row)
        if (cell.run, cell.model, cell.fold, cell.lr, cell.train_dataset) == \
                (key.run, key.model, key.fold, key.lr, key.train_dataset):
            return row
    return None


def keyed_rows(rows: Iterable[BenchRow | Mapping], source: str | Path | None = None) -> dict[CheckKey, BenchRow]:
    """One row per measurement key, in file order; a key given twice is an error naming it and both rows."""
    keyed: dict[CheckKey, BenchRow] = {}
    where: dict[CheckKey, int] = {}
    for i, row in enumerate(_as_rows(rows, source), 1):
        key = config_key(row)
        if key in keyed:
            raise SegdeployError(f"rows {where[key]} and {i} measure the same configuration ({key.text()}).",
                                 path=source, fix="keep one row per configuration (delete the older one, or "
                                                  "write each bench to its own results file) and check again.")
        keyed[key], where[key] = row, i
    return keyed


def _usable(row: BenchRow | None) -> bool:
    return row is not None and row.has_dice and math.isfinite(float(row.dice))


def machine_class(row: BenchRow | Mapping) -> str | None:
    """The machine class a row's numbers belong to: the GPU's name for a CUDA row; for a CPU row the architecture
    and the int8/bf16/fp16 instruction paths its kernels take (``segdeploy.machine.cpuinfo``), which is what changes
    oneDNN's kernels, not the marketing name. None when the row recorded no environment."""
    row = BenchRow.coerce(row)
    env = row.env if isinstance(row.env, Mapping) else {}
    if row.device_kind == "cuda":
        names = [g.get("name") if isinstance(g, Mapping) else g for g in env.get("gpus") or []]
        return next((str(n) for n in names if n), None)
    isa = env.get("cpu_isa")
    if not isinstance(isa, Mapping) or not isa.get("arch"):
        return None
    return f"{isa['arch']}; {kernel_paths(isa)}"


def _entry(key: CheckKey, row: BenchRow) -> dict:
    """A baseline entry in the row's own field names, so ``CheckKey.of`` reads it as it reads the row."""
    return {"run": key.run, "dataset": key.dataset, "split": row.split, "fold": key.fold, "lr": key.lr,
            "train_dataset": key.train_dataset, "target": key.target, "model": key.model, "backend": key.backend,
            "precision": key.precision, "device": key.device_kind, "n_images": key.n_images,
            "class_map": row.class_map or None, "batch": key.batch, "threads": key.threads, "dice": float(row.dice)}


def make_baseline(rows: Iterable[BenchRow | Mapping], tolerance: float = DEFAULT_TOLERANCE, *,
                  per_machine: bool = True, keep: Iterable[Mapping] = (), previous: Iterable[Mapping] = ()) -> dict:
    """A baseline from the ok row of every configuration, each entry naming its machine class unless
    ``per_machine`` is False; ``keep`` (an earlier baseline's entries) contributes those of other machine classes;
    an entry of ``previous`` (the file being replaced) with the same key and class passes on its own
    ``tolerance_dice_points`` (a tolerance is reasoned, not measured: re-recording the Dice keeps it)."""
    own_tolerance = {(config_key(e), e.get("machine")): e["tolerance_dice_points"] for e in previous
                     if e.get("tolerance_dice_points") is not None}
    entries = []
    for key, row in keyed_rows(rows).items():
        if _usable(row):
            entry = _entry(key, row)
            if per_machine and (machine := machine_class(row)) is not None:
                entry["machine"] = machine
            if (tol := own_tolerance.get((key, entry.get("machine")))) is not None:
                entry["tolerance_dice_points"] = tol
            entries.append(entry)
    if not entries:
        raise SegdeployError("no ok row with a Dice to record.", fix="run `segdeploy bench` first, then write the "
                                                                     "baseline from its results.")
    written = {e.get("machine") for e in entries}
    kept = [dict(e) for e in keep if e.get("machine") is not None and e.get("machine") not in written]
    return {"schema": BASELINE_SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tolerance_dice_points": tolerance, "entries": kept + entries}


def _applies(entry: Mapping, here: set[str]) -> bool:
    return entry.get("machine") is None or entry.get("machine") in here


def applicable_entries(baseline: dict, rows: Iterable[BenchRow | Mapping]) -> tuple[list[dict], list[str]]:
    """The baseline entries that apply to these results (no ``machine``, or a machine class the results came
    from; a class's entry overrides a machine-free one of the same configuration), and the other classes named
    by entries that do not apply."""
    here = {machine_class(row) for row in rows} - {None}
    chosen: dict[CheckKey, dict] = {}
    others: dict[str, None] = {}
    for entry in sorted(baseline["entries"], key=lambda e: e.get("machine") is not None):
        if _applies(entry, here):
            chosen[config_key(entry)] = entry
        else:
            others[str(entry["machine"])] = None
    return list(chosen.values()), [m for m in others if m not in here]


def load_results(path: str | Path) -> list[BenchRow]:
    """Every row of a results file (any ``segdeploy.bench/*`` schema) as a ``BenchRow``, in file order."""
    path = Path(path)
    if not path.is_file():
        raise SegdeployError("results file not found.", path=path, fix="run `segdeploy bench` to write it.")
    rows = [BenchRow.from_json(raw, path, line) for line, raw in iter_jsonl(path, numbered=True)]
    if not rows:
        raise SegdeployError("results file has no rows.", path=path, fix="run `segdeploy bench` to fill it.")
    rows = _as_rows(rows, path)
    keyed_rows(rows, path)  # a repeated configuration is named here, with the file
    return rows


def _upgrade_v1(entry: dict) -> dict:
    """A baseline/1 entry in version 2's fields (see the module docstring): run = the model's name, no study
    fields or class map, image count unknown (None: matches the configuration's row at any count)."""
    return {"run": entry["model"], "fold": None, "lr": None, "train_dataset": None, "target": None,
            "n_images": None, "class_map": None, "batch": None, "threads": None, **entry}


def load_baseline(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SegdeployError("baseline not found.", path=path,
                             fix="create it from a trusted results file: segdeploy check RESULTS.jsonl "
                                 f"--baseline {path} --write-baseline")
    baseline = read_json(path)
    fix = "regenerate it with --write-baseline."
    schema = baseline.get("schema") if isinstance(baseline, dict) else None
    if schema not in BASELINE_SCHEMAS:
        raise SegdeployError(f"not a {' or '.join(BASELINE_SCHEMAS)} baseline (schema {schema!r}).", path=path,
                             fix=fix if not str(schema).startswith("segdeploy.baseline/")
                             else "it was written by a newer segdeploy: upgrade segdeploy to check against it.")
    entries = baseline.get("entries")
    if not isinstance(entries, list):
        raise SegdeployError("baseline has no entries list.", path=path, fix=fix)
    required = (*_V1_FIELDS, "run") if schema == BASELINE_SCHEMA else _V1_FIELDS
    upgraded, seen = [], {}
    for i, entry in enumerate(entries, 1):
        lacking = [f for f in (*required, "dice") if not isinstance(entry, dict) or f not in entry]
        if lacking or not isinstance(entry.get("dice"), (int, float)) or isinstance(entry.get("dice"), bool):
            raise SegdeployError(f"entry {i} lacks {', '.join(lacking) or 'a numeric dice'}.", path=path, fix=fix)
        if entry.get("machine") is not None and not isinstance(entry["machine"], str):
            raise SegdeployError(f"entry {i} has a machine that is not a string.", path=path, fix=fix)
        if not math.isfinite(entry["dice"]):  # NaN passes every comparison unnoticed
            raise SegdeployError(f"entry {i} ({entry.get('model')} {entry.get('backend')} {entry.get('precision')}) "
                                 f"has dice {entry['dice']}, not a number to compare with.", path=path, fix=fix)
        tol = entry.get("tolerance_dice_points")
        if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol)
                                or tol < 0):
            raise SegdeployError(f"entry {i} has tolerance_dice_points {tol!r}, not a finite number >= 0.",
                                 path=path, fix=fix)
        entry = _upgrade_v1(entry) if schema != BASELINE_SCHEMA else entry
        key = (config_key(entry), entry.get("machine"))
        if key in seen:
            raise SegdeployError(f"entries {seen[key]} and {i} are for the same configuration ({key[0].text()}).",
                                 path=path, fix="keep one of them.")
        seen[key] = i
        upgraded.append(entry)
    return {**baseline, "entries": upgraded}


@dataclass
class Finding:
    key: CheckKey
    status: str  # ok | new | regressed | <99% fp32 | no fp32 ref | missing | other machine class
    failed: bool
    dice: float | None = None
    reference: float | None = None  # the baseline Dice, or the fp32 Dice for the 99% rule
    rule: str = ""
    reason: str | None = None

    @property
    def delta_points(self) -> float | None:
        if self.dice is None or self.reference is None:
            return None
        return 100.0 * (self.dice - self.reference)

    def as_dict(self) -> dict:
        return {**self.key._asdict(), "status": self.status, "failed": self.failed, "dice": self.dice,
                "reference": self.reference, "delta_points": self.delta_points, "rule": self.rule,
                "reason": self.reason}


def _any_count(key: CheckKey) -> CheckKey:
    """The key without what a baseline/1 entry did not record (image count, batch)."""
    return key._replace(n_images=None, batch=None)


def _row_of(key: CheckKey, keyed: dict[CheckKey, BenchRow]) -> CheckKey | None:
    """The results key an entry's key names: itself, or for an entry without an image count and batch
    (baseline/1) the one row of that configuration at any count and batch (several: the entry cannot say which,
    so none)."""
    if key in keyed:
        return key
    if key.n_images is None and key.batch is None:
        found = [k for k in keyed if _any_count(k) == key]
        if len(found) == 1:
            return found[0]
    return None


def _undecided_device_row(key: CheckKey, keyed: dict[CheckKey, BenchRow]) -> tuple[CheckKey, BenchRow] | None:
    """A row that failed before its device was decided (bench records the requested ``auto`` then) can only be
    matched without the device kind; it is what explains a missing configuration."""
    for k, row in reversed(keyed.items()):
        if k.device_kind not in ("cpu", "cuda") and not _usable(row) \
                and _any_count(k._replace(device_kind=key.device_kind)) == _any_count(key):
            return k, row
    return None


def check_results(rows: Iterable[BenchRow | Mapping], baseline: dict, tolerance: float | None = None, *,
                  strict: bool = False) -> list[Finding]:
    """Apply the rules of the module docstring; ``tolerance`` in Dice points overrides the entries' and the
    baseline's; ``strict`` makes a missing fp32 reference, a baseline entry without a row and a configuration with
    entries only for other machine classes failures. Every configuration gets its failures, or one ok/new finding
    when it has none (plus a non-failing note when a rule had nothing to compare with)."""
    default = float(baseline.get("tolerance_dice_points", DEFAULT_TOLERANCE))
    rows = [BenchRow.coerce(r) if isinstance(r, Mapping) else r for r in rows]
    failed_cells = [r for r in rows if isinstance(r, BenchRow) and _cell_failure(r)]
    rows = _as_rows(rows, None)
    keyed = keyed_rows(rows)
    references = References(rows)
    applied, _ = applicable_entries(baseline, keyed.values())
    here = {machine_class(row) for row in keyed.values()} - {None}
    elsewhere = {_any_count(config_key(e)) for e in baseline["entries"] if not _applies(e, here)}
    expected: dict[CheckKey, dict] = {}  # results key (or the entry's own, when no row has it) -> entry
    for entry in applied:
        key = config_key(entry)
        expected[_row_of(key, keyed) or key] = entry
    findings: list[Finding] = []

    explained: set[CheckKey] = set()
    for key in dict.fromkeys([*expected, *keyed]):
        if key in explained:
            continue
        row, entry = keyed.get(key), expected.get(key)
        base = None if entry is None else float(entry["dice"])
        tol = tolerance if tolerance is not None else float(
            entry.get("tolerance_dice_points", default) if entry is not None else default)
        if row is None and (undecided := _undecided_device_row(key, keyed)):
            explained.add(undecided[0])
            row = undecided[1]
        if row is None and base is not None:
            row = _failed_cell_row(key, failed_cells)  # its cell failed before bench: the reason is the row's
        dice = float(row.dice) if _usable(row) else None
        failures, notes = [], []
        if base is not None and row is None:
            note = Finding(key, "missing", strict, reference=base, rule="baseline configuration not in the results")
            (failures if strict else notes).append(note)
        elif base is not None and dice is None:
            why = "without a Dice" if row.status == "ok" else f"status {row.status!r}"
            failures.append(Finding(key, "missing", True, reference=base, rule=f"baseline configuration {why}",
                                    reason=row.reason))
        if base is not None and dice is not None and dice < base - tol / 100.0 - _EPS:
            failures.append(Finding(key, "regressed", True, dice, base, f"over {tol:g} pts below baseline"))
        if dice is not None and key.precision != "fp32":
            fp32 = references.dice(row)
            if fp32 is None:
                note = Finding(key, "no fp32 ref", strict, dice,
                               rule="99% rule: no ok torch fp32 row of this run on the same split, images and "
                                    "device kind")
                (failures if strict else notes).append(note)
            elif dice < FP32_SHARE * fp32 - _EPS:
                failures.append(Finding(key, "<99% fp32", True, dice, fp32,
                                        f"needs {100 * FP32_SHARE * fp32:.2f} = {FP32_SHARE:.0%} of torch fp32"))
        if row is not None and base is None and _any_count(key) in elsewhere:
            note = Finding(key, "other machine class", strict, dice,
                           rule="baseline entries only for other machine classes: nothing to compare with here")
            (failures if strict else notes).append(note)
        if failures:
            findings.extend(failures)
            continue
        if base is not None and row is not None:
            findings.append(Finding(key, "ok", False, dice, base, f"within {tol:g} pts"))
        elif row is not None:
            state = "" if dice is not None else f" (status {row.status!r})"
            findings.append(Finding(key, "new", False, dice, rule=f"not in baseline{state}",
                                    reason=None if dice is not None else row.reason))
        findings.extend(notes)
    return findings
