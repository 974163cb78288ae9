"""Fault catalogue, issue 16 (round two): non-finite durations, a failed study cell in the report, the regression
gate over multi-fold files and other machine classes, and results rows of the wrong type or schema version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import DATA, cli
from segdeploy.errors import SegdeployError


def _error_line(result) -> str:
    text = result.stderr if result.stderr else result.output
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert lines, text
    return " ".join(text.split())


# -- bug 3: NaN/inf/negative durations, warm-ups, timeouts and learning rates ---------------------------------

@pytest.mark.parametrize("option,value", [("--duration", "nan"), ("--duration", "inf"), ("--duration", "-1"),
                                          ("--warmup", "nan"), ("--warmup", "-5"), ("--timeout", "inf"),
                                          ("--timeout", "nan")])
def test_bench_refuses_non_finite_or_negative_times_before_running(option, value, tmp_path):
    # a run folder that does not exist: the option must be refused while parsing, before any run is opened
    # (before the fix NaN and inf reached the timing loop, which never ends)
    result = cli("bench", tmp_path / "no-run", "--data", DATA, "--results", tmp_path / "r.jsonl", option, value)
    text = _error_line(result)
    assert option in text and ("finite" in text or ">= 0" in text or "> 0" in text), text
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-1e-4", "0"])
def test_train_refuses_a_learning_rate_that_is_not_a_positive_finite_number(value, tmp_path):
    result = cli("train", "--data", DATA, "--model", "unet-tiny", "--out", tmp_path / "run", "--lr", value)
    assert "--lr" in _error_line(result)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("line", ["duration = nan", "duration = inf", "duration = -1.0", "lr = [inf]",
                                  "lr = [1e-4, nan]", "timeout = nan", "timeout = inf", "augment = nan"])
def test_a_study_file_with_a_non_finite_time_or_rate_is_refused_when_loaded(line, tmp_path):
    from segdeploy.study.config import load_study

    path = tmp_path / "s.toml"
    path.write_text(f'models = ["unet-tiny"]\ndatasets = ["synthetic:24"]\n{line}\n')
    key = line.split()[0]
    with pytest.raises(SegdeployError, match=f"`{key}`") as info:
        load_study(path)
    assert str(path) in str(info.value)


# -- bug 4: a failed cell is a row the report lists, not a reason to stop -------------------------------------

def _failed_cell_row(tmp_path) -> dict:
    """The row study/cell.py writes for a cell that failed in training: no backend, no precision."""
    from segdeploy.study.cell import failed_row
    from segdeploy.study.config import parse_study
    from segdeploy.study.plan import Cell

    config = parse_study({"models": ["unet-tiny"], "datasets": ["synthetic:24"]})
    cell = Cell("segnext-l-derm-f1-lr0.0001", "segnext-l", "derm", "derm", 1, 1e-4)
    return failed_row(config, cell, "train", "RuntimeError: out of memory")


def test_a_failed_cell_is_listed_by_report_and_summarize(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from study_synth import SynthStudy

    study = tmp_path / "study"
    results = SynthStudy(datasets={"derm": ["lesion"]}, skills={"unet": 0.8, "segnext-l": 0.85}, folds=(0, 1),
                         lrs=(1e-4,), n_images=12, cross={}).write(study)
    row = _failed_cell_row(tmp_path)
    assert row["backend"] is None and row["status"] == "failed"
    with results.open("a") as f:
        f.write(json.dumps(row) + "\n")
    out = study / "report"
    result = cli("report", study, "--out", out, "--resamples", "100")
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert "out of memory" in html and "segnext-l" in html
    result = cli("study", "summarize", study, "--resamples", "100")
    assert result.exit_code == 0, result.output
    listed = " ".join(result.output.split())
    assert "segnext-l derm 1 0.0001 - - - failed train: RuntimeError: out of memory" in listed, result.output


# -- bug 11: the regression gate keys every measurement, not one fold --------------------------------------

def _study_results(tmp_path) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from study_synth import SynthStudy

    return SynthStudy(datasets={"derm": ["lesion"]}, skills={"unet": 0.8}, folds=(0, 1, 2), lrs=(1e-4, 1e-5),
                      n_images=8, cross={}, backends=(("torch", "fp32"),)).write(tmp_path / "study")


def _rewrite(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _failures(results: Path, baseline: Path, *, strict: bool = False) -> list:
    """The failing findings of the gate's API on the same files the CLI read: which rows failed, and why."""
    from segdeploy.report.check import check_results, load_baseline, load_results

    return [f for f in check_results(load_results(results), load_baseline(baseline), strict=strict) if f.failed]


def test_check_sees_every_fold_and_lr_of_a_study(tmp_path):
    results = _study_results(tmp_path)
    rows = [r for r in map(json.loads, results.read_text().splitlines()) if r["status"] == "ok"]
    _rewrite(results, rows)
    baseline = tmp_path / "baseline.json"
    written = cli("check", results, "--baseline", baseline, "--write-baseline")
    assert written.exit_code == 0, written.output
    assert "6 configurations" in written.output, written.output  # 3 folds x 2 lrs, not 1
    assert cli("check", results, "--baseline", baseline).exit_code == 0
    # fold 0 of lr 1e-4 regressed: the gate fails wherever the row sits in the file
    (bad,) = [r for r in rows if r["study"]["fold"] == 0 and r["study"]["lr"] == 1e-4]
    bad["dice"] = 0.10
    base_dice = next(e["dice"] for e in json.loads(baseline.read_text())["entries"]
                     if e["fold"] == "0" and e["lr"] == 1e-4)
    for order in (rows, [bad] + [r for r in rows if r is not bad]):
        _rewrite(results, order)
        result = cli("check", results, "--baseline", baseline)
        assert result.exit_code == 1, result.output
        assert "regressed" in result.output and "1 of 6 configurations failed" in result.output, result.output
        (failure,) = _failures(results, baseline)  # exactly that cell's row, by its own Dice and its baseline's
        assert (failure.status, failure.key.fold, failure.key.lr) == ("regressed", "0", 1e-4)
        assert (failure.dice, failure.reference) == (0.10, base_dice)
        assert failure.delta_points == pytest.approx(100 * (0.10 - base_dice))


def test_check_refuses_a_repeated_configuration_naming_it(tmp_path):
    results = _study_results(tmp_path)
    rows = [r for r in map(json.loads, results.read_text().splitlines()) if r["status"] == "ok"]
    _rewrite(results, rows + [dict(rows[2], dice=0.5)])
    text = _error_line(cli("check", results, "--baseline", tmp_path / "b.json", "--write-baseline"))
    assert str(results) in text and "same configuration" in text and "fold 2" in text, text


def test_a_baseline_entry_without_a_row_warns_and_fails_when_strict(tmp_path):
    results = _study_results(tmp_path)
    rows = [r for r in map(json.loads, results.read_text().splitlines()) if r["status"] == "ok"]
    _rewrite(results, rows)
    baseline = tmp_path / "baseline.json"
    assert cli("check", results, "--baseline", baseline, "--write-baseline").exit_code == 0
    _rewrite(results, rows[1:])
    loose = cli("check", results, "--baseline", baseline)
    assert loose.exit_code == 0 and "warning" in loose.output and "1 baseline entries have no row" in loose.output
    strict = cli("check", results, "--baseline", baseline, "--strict")
    assert strict.exit_code == 1 and "missing" in strict.output, strict.output
    # the missing entry is the dropped row's, and only it
    from segdeploy.rowkeys import CheckKey

    assert _failures(results, baseline) == []
    (missing,) = _failures(results, baseline, strict=True)
    assert (missing.status, missing.key) == ("missing", CheckKey.of(rows[0]))


def test_old_baselines_still_load_and_map_to_the_new_key():
    from segdeploy.report.check import config_key, load_baseline

    root = Path(__file__).resolve().parents[2]
    for path in (root / "tests/data/baseline-1.json", root / "results/baseline.json"):
        entries = load_baseline(path)["entries"]
        assert entries and all(config_key(e).run == e["model"] for e in entries), path


# -- poor paths: a results row of the wrong type or of an unknown schema version ------------------------------

def _two_rows(tmp_path, **second) -> Path:
    first = {"schema": "segdeploy.bench/2", "dataset": "d", "run": "runs/r", "model": "unet", "backend": "torch",
             "precision": "fp32", "device": "cpu", "split": "test", "n_images": 4, "batch": 2, "status": "ok",
             "dice": 0.8}
    path = tmp_path / "results.jsonl"
    _rewrite(path, [first, {**first, "backend": "onnxruntime", **second}])
    return path


@pytest.mark.parametrize("command", ["check", "report", "summarize"])
def test_a_row_with_a_field_of_the_wrong_type_is_one_line_naming_file_line_and_field(command, tmp_path):
    results = _two_rows(tmp_path, dice="high")
    args = {"check": ["check", results, "--baseline", tmp_path / "b.json", "--write-baseline"],
            "report": ["report", results, "--out", tmp_path / "rep"],
            "summarize": ["study", "summarize", results]}[command]
    text = _error_line(cli(*args))
    assert str(results) in text and "line 2" in text and "'dice'" in text and "'high'" in text, text


@pytest.mark.parametrize("command", ["check", "report"])
def test_a_row_of_a_newer_schema_version_is_refused_naming_the_upgrade(command, tmp_path):
    results = _two_rows(tmp_path, schema="segdeploy.bench/99")
    args = {"check": ["check", results, "--baseline", tmp_path / "b.json", "--write-baseline"],
            "report": ["report", results, "--out", tmp_path / "rep"]}[command]
    text = _error_line(cli(*args))
    assert str(results) in text and "line 2" in text and "segdeploy.bench/99" in text and "upgrade" in text, text


def test_rows_of_older_schema_versions_or_none_are_read_as_the_first_version(tmp_path):
    from segdeploy.report.check import load_results

    results = _two_rows(tmp_path, schema=None)
    rows = load_results(results)
    assert [r.schema for r in rows] == ["segdeploy.bench/2", "segdeploy.bench/1"]


# -- bug 12: a machine class with no baseline entries is not a silent pass ---------------------------------

ZEN2 = {"cpu": "AMD EPYC 7B12", "cpu_isa": {"arch": "x86_64", "int8": "AVX2", "bf16": None, "fp16": None}}
XEON = {"cpu": "Intel(R) Xeon(R) Platinum", "cpu_isa": {"arch": "x86_64", "int8": "AMX-INT8", "bf16": "AMX-BF16",
                                                        "fp16": "AVX512-FP16"}}


def test_a_machine_class_without_baseline_entries_fails_when_strict_and_warns_otherwise(tmp_path):
    results = _two_rows(tmp_path, env=XEON)
    rows = [dict(r, env=XEON) for r in map(json.loads, results.read_text().splitlines())]
    _rewrite(results, rows)
    baseline = tmp_path / "baseline.json"
    assert cli("check", results, "--baseline", baseline, "--write-baseline").exit_code == 0
    _rewrite(results, [dict(r, env=ZEN2) for r in rows])  # the same configurations on an AVX2-only EPYC
    loose = cli("check", results, "--baseline", baseline)
    text = " ".join(loose.output.split())
    assert loose.exit_code == 0 and "warning: no baseline entries for this machine class" in text, text
    assert "int8 AVX2" in text and "(--strict fails them)" in text
    strict = cli("check", results, "--baseline", baseline, "--strict")
    text = " ".join(strict.output.split())
    assert strict.exit_code == 1 and "error: no baseline entries for this machine class" in text, text
    assert "2 of 2 configurations failed (2 other machine class)" in text, text
    from segdeploy.rowkeys import CheckKey

    assert _failures(results, baseline) == []
    failed = _failures(results, baseline, strict=True)  # both rows, each for its machine class, not a Dice drop
    assert sorted(f.key for f in failed) == sorted(CheckKey.of(r) for r in rows)
    assert {f.status for f in failed} == {"other machine class"}


def test_check_names_a_failed_cell_as_the_reason_its_entries_are_missing(tmp_path):
    from segdeploy.report.check import check_results, make_baseline

    row = {"dataset": "derm", "run_name": "unet-derm-f1-lr0.0001", "model": "unet", "backend": "torch",
           "precision": "fp32", "device": "cpu", "split": "test", "n_images": 8, "batch": 8, "status": "ok",
           "dice": 0.8, "study": {"model": "unet", "dataset": "derm", "fold": 1, "lr": 1e-4},
           "train_dataset": "derm", "target": "derm"}
    baseline = make_baseline([row])
    failed = {"status": "failed", "reason": "train: RuntimeError: out of memory", "model": "unet",
              "dataset": "derm", "run_name": "unet-derm-f1-lr0.0001", "backend": None, "precision": None,
              "study": row["study"], "train_dataset": "derm", "target": "derm"}
    (finding,) = check_results([failed], baseline)
    assert finding.status == "missing" and finding.failed and "out of memory" in finding.reason
