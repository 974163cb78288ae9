"""Accuracy regression gate over a results file (``segdeploy check``).

A configuration is keyed by ``segdeploy.records.CheckKey``: ``(dataset, model, backend, precision, device kind,
split)``, the device kind being ``cpu`` or ``cuda``, never the GPU's name, so a baseline recorded on one CI machine
applies on any machine of the same kind. Results files are appended to across runs: when a key repeats, the latest
row wins.

Rules, each failing the check:

1. **regressed**: an ok row's Dice is more than ``tolerance`` Dice points below its baseline entry
   (``dice < baseline - tolerance / 100``; exactly at the limit passes).
2. **below 99% of fp32** (MLPerf Inference's accuracy target for medical segmentation): an ok non-fp32 row's
   Dice is below 0.99 x the Dice of its fp32 reference, the one ΔDice rule of ``segdeploy.records.References``:
   the same run's PyTorch fp32 row on the same dataset, split and images, on the same device kind (the latest
   such row; it must be ok). A non-fp32 row without that reference gets a **no fp32 ref** finding, which fails
   only with ``strict`` (``--strict``): without a reference nothing was measured against the 99% target, which
   a CI gate may or may not accept.
3. **missing**: a baseline configuration absent from the results, or present but not ``ok`` (its reason shown).

Baseline entries name the machine class they were recorded on (``machine``: a GPU's name; for a CPU its
architecture and int8/bf16/fp16 instruction paths, see ``machine_class``) and apply only to results from that
class. Training is deterministic on one machine class, not across them: oneDNN picks other kernels on an AMX Xeon
than on an AVX-512 EPYC, the weights drift apart from the first step, and a small model from scratch can end on
either side of learning a rare class (the demo's unet-tiny: Dice 0.83 on one, 0.73 on the other, same code). So a
baseline holds one set of entries per machine class (``--write-baseline`` replaces this class's and keeps the
others); results from a class without entries are all **new**, rule 2 still applies, and the CLI says so. An entry
without ``machine`` (``--any-machine``: fixed weights, only the deployment varies) applies everywhere.

Configurations in the results but not in the baseline are reported as **new** (no failure; rule 2 still applies).

Baseline file (``--write-baseline``, written atomically)::

    {"schema": "segdeploy.baseline/1", "created": ISO time, "tolerance_dice_points": 1.0,
     "entries": [{"dataset", "model", "backend", "precision", "device": "cpu"|"cuda", "split", "dice",
                  "machine": "x86_64; int8 AMX-INT8, bf16 AMX-BF16, fp16 AVX512-FP16" (optional)}, ...]}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from segdeploy.machine.cpuinfo import kernel_paths
from segdeploy.errors import SegdeployError
from segdeploy.fileio import read_json, read_jsonl
from segdeploy.records import FP32_SHARE, BenchRow, CheckKey, References, device_kind

__all__ = ["BASELINE_SCHEMA", "CheckKey", "Finding", "applicable_entries", "check_results", "config_key",
           "device_kind", "latest_rows", "load_baseline", "load_results", "machine_class", "make_baseline"]

BASELINE_SCHEMA = "segdeploy.baseline/1"
DEFAULT_TOLERANCE = 1.0  # Dice points
_EPS = 1e-12  # a value exactly at a limit passes despite float rounding of the limit
_KEY_FIELDS = ("dataset", "model", "backend", "precision", "device", "split")  # baseline entries' names
_REQUIRED = ("model", "backend", "precision")


def config_key(row: BenchRow | Mapping) -> CheckKey:
    """The key of a results row or of a baseline entry."""
    return CheckKey.of(row)


def _as_rows(rows: Iterable[BenchRow | Mapping], source: str | Path | None) -> list[BenchRow]:
    out = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, (BenchRow, Mapping)):
            raise SegdeployError(f"row {i} is not a JSON object.", path=source,
                                 fix="pass a results file written by `segdeploy bench`.")
        row = BenchRow.coerce(row)
        lacking = [f for f in _REQUIRED if getattr(row, f) is None]
        if lacking:
            raise SegdeployError(f"row {i} lacks {', '.join(lacking)}.", path=source,
                                 fix="pass a results file written by `segdeploy bench`.")
        out.append(row)
    return out


def latest_rows(rows: Iterable[BenchRow | Mapping]) -> dict[CheckKey, BenchRow]:
    """One row per configuration, the last one in file order."""
    latest: dict[CheckKey, BenchRow] = {}
    for row in _as_rows(rows, None):
        key = config_key(row)
        latest.pop(key, None)  # re-insert so the order follows the latest rows
        latest[key] = row
    return latest


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


def make_baseline(rows: Iterable[BenchRow | Mapping], tolerance: float = DEFAULT_TOLERANCE, *,
                  per_machine: bool = True, keep: Iterable[Mapping] = ()) -> dict:
    """A baseline from the latest ok row of every configuration, each entry naming its machine class unless
    ``per_machine`` is False; ``keep`` (an earlier baseline's entries) contributes those of other machine classes."""
    entries = []
    for key, row in latest_rows(rows).items():
        if _usable(row):
            entry = {"dataset": key.dataset, "model": key.model, "backend": key.backend,
                     "precision": key.precision, "device": key.device_kind, "split": row.split,
                     "dice": float(row.dice)}
            if per_machine and (machine := machine_class(row)) is not None:
                entry["machine"] = machine
            entries.append(entry)
    if not entries:
        raise SegdeployError("no ok row with a Dice to record.", fix="run `segdeploy bench` first, then write the "
                                                                     "baseline from its results.")
    written = {e.get("machine") for e in entries}
    kept = [dict(e) for e in keep if e.get("machine") is not None and e.get("machine") not in written]
    return {"schema": BASELINE_SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tolerance_dice_points": tolerance, "entries": kept + entries}


def applicable_entries(baseline: dict, rows: Iterable[BenchRow | Mapping]) -> tuple[list[dict], list[str]]:
    """The baseline entries that apply to these results (no ``machine``, or a machine class the results came
    from; a class's entry overrides a machine-free one of the same configuration), and the other classes named
    by entries that do not apply."""
    here = {machine_class(row) for row in rows} - {None}
    chosen: dict[CheckKey, dict] = {}
    others: dict[str, None] = {}
    for entry in sorted(baseline["entries"], key=lambda e: e.get("machine") is not None):
        machine = entry.get("machine")
        if machine is None or machine in here:
            chosen[config_key(entry)] = entry
        else:
            others[str(machine)] = None
    return list(chosen.values()), [m for m in others if m not in here]


def load_results(path: str | Path) -> list[BenchRow]:
    """Every row of a results file (any ``segdeploy.bench/*`` schema) as a ``BenchRow``, in file order."""
    path = Path(path)
    if not path.is_file():
        raise SegdeployError("results file not found.", path=path, fix="run `segdeploy bench` to write it.")
    rows = read_jsonl(path)
    if not rows:
        raise SegdeployError("results file has no rows.", path=path, fix="run `segdeploy bench` to fill it.")
    return _as_rows(rows, path)


def load_baseline(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SegdeployError("baseline not found.", path=path,
                             fix="create it from a trusted results file: segdeploy check RESULTS.jsonl "
                                 f"--baseline {path} --write-baseline")
    baseline = read_json(path)
    fix = "regenerate it with --write-baseline."
    if not isinstance(baseline, dict) or baseline.get("schema") != BASELINE_SCHEMA:
        raise SegdeployError(f"not a {BASELINE_SCHEMA} baseline.", path=path, fix=fix)
    entries = baseline.get("entries")
    if not isinstance(entries, list):
        raise SegdeployError("baseline has no entries list.", path=path, fix=fix)
    for i, entry in enumerate(entries, 1):
        lacking = [f for f in (*_KEY_FIELDS, "dice") if not isinstance(entry, dict) or f not in entry]
        if lacking or not isinstance(entry.get("dice"), (int, float)):
            raise SegdeployError(f"entry {i} lacks {', '.join(lacking) or 'a numeric dice'}.", path=path, fix=fix)
        if entry.get("machine") is not None and not isinstance(entry["machine"], str):
            raise SegdeployError(f"entry {i} has a machine that is not a string.", path=path, fix=fix)
        if not math.isfinite(entry["dice"]):  # NaN passes every comparison unnoticed
            raise SegdeployError(f"entry {i} ({entry.get('model')} {entry.get('backend')} {entry.get('precision')}) "
                                 f"has dice {entry['dice']}, not a number to compare with.", path=path, fix=fix)
    return baseline


@dataclass
class Finding:
    key: CheckKey
    status: str  # ok | new | regressed | <99% fp32 | no fp32 ref | missing
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
        return {**dict(zip(_KEY_FIELDS, self.key)), "status": self.status, "failed": self.failed, "dice": self.dice,
                "reference": self.reference, "delta_points": self.delta_points, "rule": self.rule,
                "reason": self.reason}


def _undecided_device_row(key: CheckKey, latest: dict[CheckKey, BenchRow]) -> tuple[CheckKey, BenchRow] | None:
    """A row that failed before its device was decided (bench records the requested ``auto`` then) can only be
    matched without the device kind; it is what explains a missing configuration."""
    for k, row in reversed(latest.items()):
        if k.device_kind not in ("cpu", "cuda") and k._replace(device_kind=key.device_kind) == key \
                and not _usable(row):
            return k, row
    return None


def check_results(rows: Iterable[BenchRow | Mapping], baseline: dict, tolerance: float | None = None, *,
                  strict: bool = False) -> list[Finding]:
    """Apply the three rules of the module docstring; ``tolerance`` in Dice points defaults to the baseline's;
    ``strict`` makes a missing fp32 reference a failure. Every configuration gets its failures, or one ok/new
    finding when it has none (plus a non-failing "no fp32 ref" when rule 2 had nothing to compare with)."""
    if tolerance is None:
        tolerance = float(baseline.get("tolerance_dice_points", DEFAULT_TOLERANCE))
    rows = _as_rows(rows, None)
    latest = latest_rows(rows)
    references = References(rows)  # every row in file order: the reference is the latest matching one
    expected = {config_key(e): float(e["dice"]) for e in applicable_entries(baseline, latest.values())[0]}
    findings: list[Finding] = []

    explained: set[CheckKey] = set()
    for key in dict.fromkeys([*expected, *latest]):
        if key in explained:
            continue
        row, base = latest.get(key), expected.get(key)
        if row is None and (undecided := _undecided_device_row(key, latest)):
            explained.add(undecided[0])
            row = undecided[1]
        dice = float(row.dice) if _usable(row) else None
        failures, notes = [], []
        if base is not None and dice is None:
            why = ("not in the results" if row is None else "without a Dice" if row.status == "ok"
                   else f"status {row.status!r}")
            failures.append(Finding(key, "missing", True, reference=base, rule=f"baseline configuration {why}",
                                    reason=None if row is None else row.reason))
        if base is not None and dice is not None and dice < base - tolerance / 100.0 - _EPS:
            failures.append(Finding(key, "regressed", True, dice, base,
                                    f"over {tolerance:g} pts below baseline"))
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
        if failures:
            findings.extend(failures)
            continue
        if base is not None:
            findings.append(Finding(key, "ok", False, dice, base, f"within {tolerance:g} pts"))
        else:
            state = "" if dice is not None else f" (status {row.status!r})"
            findings.append(Finding(key, "new", False, dice, rule=f"not in baseline{state}",
                                    reason=None if dice is not None else row.reason))
        findings.extend(notes)
    return findings
