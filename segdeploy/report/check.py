"""Accuracy regression gate over a results file (``segdeploy check``).

A configuration is keyed by ``(dataset, model, backend, precision, split)`` and the *device kind* (``cpu`` or
``cuda``, never the GPU's name), so a baseline recorded on one CI machine applies on any machine of the same
kind. Results files are appended to across runs: when a key repeats, the latest row wins.

Rules, each failing the check:

1. **regressed**: an ok row's Dice is more than ``tolerance`` Dice points below its baseline entry
   (``dice < baseline - tolerance / 100``; exactly at the limit passes).
2. **below 99% of fp32** (MLPerf Inference's accuracy target for medical segmentation): an ok non-fp32 row's
   Dice is below 0.99 x the Dice of the same model's fp32 row in the results (same dataset, model and split;
   the same backend preferred, else ``torch``; the same device kind preferred within each).
3. **missing**: a baseline configuration absent from the results, or present but not ``ok`` (its reason shown).

Configurations in the results but not in the baseline are reported as **new** (no failure; rule 2 still applies).

Baseline file (``--write-baseline``, written atomically)::

    {"schema": "segdeploy.baseline/1", "created": ISO time, "tolerance_dice_points": 1.0,
     "entries": [{"dataset", "model", "backend", "precision", "device": "cpu"|"cuda", "split", "dice"}, ...]}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from segdeploy.errors import SegdeployError
from segdeploy.fileio import read_json, read_jsonl

BASELINE_SCHEMA = "segdeploy.baseline/1"
DEFAULT_TOLERANCE = 1.0  # Dice points
FP32_SHARE = 0.99
_EPS = 1e-12  # a value exactly at a limit passes despite float rounding of the limit
_GPU_BACKENDS = {"onnxruntime-cuda", "onnxruntime-trt", "tensorrt"}
_KEY_FIELDS = ("dataset", "model", "backend", "precision", "device", "split")
_REQUIRED = ("model", "backend", "precision")

Key = tuple  # (dataset, model, backend, precision, device kind, split as text)


def device_kind(device: str | None, backend: str | None = None) -> str:
    """``cpu`` or ``cuda`` from a row's device (``cpu``, ``cuda:0``, ...); GPU-only backends are ``cuda``."""
    text = (device or "").lower()
    if text.startswith(("cuda", "gpu")) or backend in _GPU_BACKENDS:
        return "cuda"
    return "cpu" if text.startswith("cpu") or not text else text


def _split_text(split) -> str | None:
    # bench may record the split as a name or as its parameters; compare a canonical text either way
    return split if split is None or isinstance(split, str) else json.dumps(split, sort_keys=True)


def config_key(row: dict) -> Key:
    return (row.get("dataset") or row.get("data"), row["model"], row["backend"], row["precision"],
            device_kind(row.get("device"), row.get("backend")), _split_text(row.get("split")))


def _validate_rows(rows: list[dict], source: str | Path | None) -> None:
    for i, row in enumerate(rows, 1):
        lacking = [f for f in _REQUIRED if not isinstance(row, dict) or row.get(f) is None]
        if lacking:
            raise SegdeployError(f"row {i} lacks {', '.join(lacking)}.", path=source,
                                 fix="pass a results file written by `segdeploy bench`.")


def latest_rows(rows: list[dict]) -> dict[Key, dict]:
    """One row per configuration, the last one in file order."""
    _validate_rows(rows, None)
    latest: dict[Key, dict] = {}
    for row in rows:
        latest.pop(config_key(row), None)  # re-insert so the order follows the latest rows
        latest[config_key(row)] = row
    return latest


def _usable(row: dict | None) -> bool:
    if row is None or row.get("status") != "ok":
        return False
    dice = row.get("dice")
    return isinstance(dice, (int, float)) and math.isfinite(dice)


def make_baseline(rows: list[dict], tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """A baseline from the latest ok row of every configuration."""
    entries = []
    for key, row in latest_rows(rows).items():
        if _usable(row):
            dataset, model, backend, precision, kind, _ = key
            entries.append({"dataset": dataset, "model": model, "backend": backend, "precision": precision,
                            "device": kind, "split": row.get("split"), "dice": float(row["dice"])})
    if not entries:
        raise SegdeployError("no ok row with a Dice to record.", fix="run `segdeploy bench` first, then write the "
                                                                     "baseline from its results.")
    return {"schema": BASELINE_SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tolerance_dice_points": tolerance, "entries": entries}


def load_results(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise SegdeployError("results file not found.", path=path, fix="run `segdeploy bench` to write it.")
    rows = read_jsonl(path)
    if not rows:
        raise SegdeployError("results file has no rows.", path=path, fix="run `segdeploy bench` to fill it.")
    _validate_rows(rows, path)
    return rows


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
        if not math.isfinite(entry["dice"]):  # NaN passes every comparison unnoticed
            raise SegdeployError(f"entry {i} ({entry.get('model')} {entry.get('backend')} {entry.get('precision')}) "
                                 f"has dice {entry['dice']}, not a number to compare with.", path=path, fix=fix)
    return baseline


@dataclass
class Finding:
    key: Key
    status: str  # ok | new | regressed | <99% fp32 | missing
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


def _fp32_reference(key: Key, latest: dict[Key, dict]) -> tuple[str, dict] | None:
    """The fp32 row to hold a lower precision of ``key`` against: same backend first, else torch; the same
    device kind first within each."""
    dataset, model, backend, _, kind, split = key
    for ref_backend in dict.fromkeys((backend, "torch")):
        same = [(k, r) for k, r in latest.items() if k[:4] == (dataset, model, ref_backend, "fp32")
                and k[5] == split and _usable(r)]
        same.sort(key=lambda kr: kr[0][4] != kind)
        if same:
            return ref_backend, same[0][1]
    return None


def _undecided_device_row(key: Key, latest: dict[Key, dict]) -> tuple[Key, dict] | None:
    """A row that failed before its device was decided (bench records the requested ``auto`` then) can only be
    matched without the device kind; it is what explains a missing configuration."""
    for k, row in reversed(latest.items()):
        if k[4] not in ("cpu", "cuda") and k[:4] + k[5:] == key[:4] + key[5:] and not _usable(row):
            return k, row
    return None


def check_results(rows: list[dict], baseline: dict, tolerance: float | None = None) -> list[Finding]:
    """Apply the three rules of the module docstring; ``tolerance`` in Dice points defaults to the baseline's.
    Every configuration gets its failures, or one ok/new finding when it has none."""
    if tolerance is None:
        tolerance = float(baseline.get("tolerance_dice_points", DEFAULT_TOLERANCE))
    latest = latest_rows(rows)
    expected = {config_key(e): float(e["dice"]) for e in baseline["entries"]}
    findings: list[Finding] = []

    explained: set[Key] = set()
    for key in dict.fromkeys([*expected, *latest]):
        if key in explained:
            continue
        row, base = latest.get(key), expected.get(key)
        if row is None and (undecided := _undecided_device_row(key, latest)):
            explained.add(undecided[0])
            row = undecided[1]
        dice = float(row["dice"]) if _usable(row) else None
        failures = []
        if base is not None and dice is None:
            why = ("not in the results" if row is None else "without a Dice" if row.get("status") == "ok"
                   else f"status {row.get('status')!r}")
            failures.append(Finding(key, "missing", True, reference=base, rule=f"baseline configuration {why}",
                                    reason=None if row is None else row.get("reason")))
        if base is not None and dice is not None and dice < base - tolerance / 100.0 - _EPS:
            failures.append(Finding(key, "regressed", True, dice, base,
                                    f"over {tolerance:g} pts below baseline"))
        ref = _fp32_reference(key, latest) if dice is not None and key[3] != "fp32" else None
        if ref is not None:
            ref_backend, fp32 = ref[0], float(ref[1]["dice"])
            if dice < FP32_SHARE * fp32 - _EPS:
                failures.append(Finding(key, "<99% fp32", True, dice, fp32,
                                        f"needs {100 * FP32_SHARE * fp32:.2f} = {FP32_SHARE:.0%} of "
                                        f"{ref_backend} fp32"))
        if failures:
            findings.extend(failures)
        elif base is not None:
            findings.append(Finding(key, "ok", False, dice, base, f"within {tolerance:g} pts"))
        else:
            state = "" if dice is not None else f" (status {row.get('status')!r})"
            findings.append(Finding(key, "new", False, dice, rule=f"not in baseline{state}",
                                    reason=None if dice is not None else row.get("reason")))
    return findings
