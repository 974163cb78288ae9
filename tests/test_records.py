"""segdeploy.records: files written by earlier versions load, records round-trip with unknown keys kept, and the
one ΔDice reference rule gives one answer to the row, the table and the check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segdeploy.errors import SegdeployError
from segdeploy.fileio import atomic_write_json, read_json, read_jsonl
from segdeploy.records import BenchRow, RunMeta
from segdeploy.rowkeys import CheckKey, ConfigKey, References, dice_delta, reference_dice, reference_row

DATA = Path(__file__).parent / "data"
MODEL_JSON = DATA / "model-run0.json"  # written by `segdeploy train` before model.json had a schema
RESULTS = DATA / "results-bench1.jsonl"  # written by `segdeploy bench` with schema segdeploy.bench/1
BASELINE = DATA / "baseline-1.json"  # written by `segdeploy check --write-baseline` from RESULTS


def test_model_json_of_the_first_format_loads_with_every_value():
    raw = read_json(MODEL_JSON)
    assert "schema" not in raw
    meta = RunMeta.from_json(raw)
    assert meta.schema == "segdeploy.run/1" and meta.extra == {}
    assert (meta.model, meta.num_classes, meta.in_chans, meta.img_size) == (
        raw["model"], raw["num_classes"], raw["in_chans"], raw["img_size"])
    assert meta.input_shape == (1, 64, 64) and meta.classes == raw["classes"] and meta.complete is True
    assert meta.dataset.spec == raw["dataset"]["spec"] and meta.dataset.root == raw["dataset"]["root"]
    assert meta.split.split_args() == {k: raw["split"][k] for k in ("seed", "k", "fold", "group_regex")}
    assert meta.split.counts == raw["split"]["counts"] and meta.val["dice"] == raw["val"]["dice"]
    written = meta.to_json()
    # every stored value written back unchanged; fields this version added (split.ids_sha256) are null
    split = written.pop("split")
    assert {k: split[k] for k in raw["split"]} == raw["split"] and split["ids_sha256"] is None
    assert {k: written[k] for k in raw if k != "split"} == {k: v for k, v in raw.items() if k != "split"}
    assert RunMeta.from_json({**written, "split": split}) == meta


def test_run_meta_keeps_unknown_keys_and_rejects_incomplete_files(tmp_path):
    from segdeploy.run.folder import read_meta

    raw = {**read_json(MODEL_JSON), "schema": "segdeploy.run/7", "calibration": {"temperature": 1.3}}
    raw["dataset"]["checksum"] = "abc"
    atomic_write_json(tmp_path / "model.json", raw)
    meta = read_meta(tmp_path)
    assert meta.extra == {"calibration": {"temperature": 1.3}} and meta.dataset.extra == {"checksum": "abc"}
    assert meta.to_json()["calibration"] == {"temperature": 1.3} and meta.to_json()["schema"] == "segdeploy.run/7"
    assert meta.to_json()["dataset"]["checksum"] == "abc"
    del raw["img_size"]
    atomic_write_json(tmp_path / "model.json", raw)
    with pytest.raises(SegdeployError, match="lacks img_size"):
        read_meta(tmp_path)
    with pytest.raises(SegdeployError, match="schema"):
        RunMeta.from_json({**raw, "schema": "segdeploy.bench/1"})


def test_bench_rows_of_today_load_round_trip_and_key_as_before():
    stored = read_jsonl(RESULTS)
    rows = [BenchRow.from_json(r) for r in stored]
    for raw, r in zip(stored, rows):
        assert r.schema == "segdeploy.bench/1" and r.extra == {}
        written = r.to_json()
        assert {k: written[k] for k in raw} == raw
        assert set(written) - set(raw) <= {f for f, v in written.items() if v is None}  # only absent = null
        assert BenchRow.from_json(written) == r
        # the resume key names the fields the bare tuple held by position (rows of that version had no class map,
        # no artifact and no --threads)
        assert ConfigKey.of(r) == (*(raw.get(k) for k in ("dataset", "run", "backend", "precision",
                                                          "device_requested", "batch", "split", "n_images")), None,
                                   None, None)
        assert ConfigKey.of(r).artifact is None and ConfigKey.of(r).threads is None
    ok = rows[0]
    assert ok.ok and ok.latency_ms["p50"] == stored[0]["latency_ms"]["p50"] and ok.device_kind == "cpu"
    # keys this version does not know are kept; a schema version newer than this release is refused (issue 16)
    more = BenchRow.from_json({**stored[0], "schema": "segdeploy.bench/2", "dice_ci95": [0.1, 0.2]})
    assert more.extra == {"dice_ci95": [0.1, 0.2]} and more.to_json()["dice_ci95"] == [0.1, 0.2]
    with pytest.raises(SegdeployError, match="upgrade segdeploy"):
        BenchRow.from_json({**stored[0], "schema": "segdeploy.bench/9"})


def test_row_update_routes_unknown_producer_keys_to_extra():
    row = BenchRow(backend="torch")
    row.update({"dice": 0.5, "gpu_clock_mhz": 1410}, status="ok")
    assert (row.dice, row.status, row.extra) == (0.5, "ok", {"gpu_clock_mhz": 1410})
    assert row.to_json()["gpu_clock_mhz"] == 1410


def test_check_against_a_baseline_and_results_written_by_the_previous_version():
    from typer.testing import CliRunner

    from test_check import _app

    from segdeploy.report.check import check_results, load_baseline, load_results

    result = CliRunner().invoke(_app(), ["check", str(RESULTS), "--baseline", str(BASELINE)])
    assert result.exit_code == 0, result.output
    assert "OK: 4 configurations checked, none failed; 2 new." in result.output  # 2 ok + 2 unavailable
    # and the old baseline still catches a regression in the same rows
    rows = load_results(RESULTS)
    rows[0].dice -= 0.0101  # onnxruntime fp32, beyond the stored 1-point tolerance
    (bad,) = [f for f in check_results(rows, load_baseline(BASELINE)) if f.failed]
    assert bad.status == "regressed" and bad.key.backend == "onnxruntime"


def _row(backend, precision, dice, *, device="cpu", n_images=48, status="ok", run="runs/r", split="test"):
    return BenchRow(dataset="d", split=split, run=run, model="unet", backend=backend, precision=precision,
                    device=device, n_images=n_images, status=status, dice=dice if status == "ok" else None)


def test_one_reference_where_the_three_old_rules_disagreed():
    """The old rules, on these rows, answered for the tensorrt int8 row: bench's row (first torch fp32 of the run,
    split and image count, any device) 0.81; the table (first torch fp32 of the run, any images) 0.50; the check
    (tensorrt's own fp32 first) 0.70. The one rule: torch fp32 of the run on the same images and device kind."""
    from rich.console import Console

    from segdeploy.bench.table import render
    from segdeploy.report.check import check_results

    rows = [_row("torch", "fp32", 0.50, n_images=4),  # a --max-images smoke test
            _row("torch", "fp32", 0.81),  # on the CPU
            _row("torch", "fp32", 0.80, device="cuda:0"),
            _row("tensorrt", "fp32", 0.70, device="cuda:0"),
            _row("tensorrt", "int8", 0.78, device="cuda:0")]
    int8 = rows[-1]
    assert reference_row(int8, rows) is rows[2]
    assert reference_dice(int8, rows) == 0.80
    assert dice_delta(int8, rows) == pytest.approx(-0.02)
    assert [dice_delta(r, rows) for r in rows[:2]] == [0.0, 0.0]  # each torch fp32 row is its own reference

    console = Console(record=True, width=250)
    console.print(*render(rows))
    int8_line = next(line for line in console.export_text().splitlines() if "int8" in line)
    assert "0.7800" in int8_line and "-0.0200" in int8_line

    # the gate: 0.78 < 0.99 x 0.80 fails against the reference (it passed against tensorrt's own 0.70)
    findings = check_results([r.to_json() for r in rows], {"schema": "segdeploy.baseline/1", "entries": []})
    (bad,) = [f for f in findings if f.failed]
    assert bad.key == CheckKey("r", "d", "test", None, None, None, None, "unet", "tensorrt", "int8", "cuda", 48,
                               None, None, None) and bad.status == "<99% fp32"
    assert bad.reference == 0.80


def test_reference_is_the_latest_matching_row_and_must_be_ok():
    good, newer_failed = _row("torch", "fp32", 0.8), _row("torch", "fp32", None, status="failed")
    int8 = _row("onnxruntime", "int8", 0.79)
    assert References([good, int8]).dice(int8) == 0.8
    # a failed re-run is the latest measurement: the older ok row does not stand in for it
    assert References([good, newer_failed, int8]).row(int8) is None
    assert References([newer_failed, good, int8]).dice(int8) == 0.8
    # another run, split or image set is not a reference
    for other in (_row("torch", "fp32", 0.8, run="runs/other"), _row("torch", "fp32", 0.8, split="val"),
                  _row("torch", "fp32", 0.8, n_images=47)):
        assert dice_delta(int8, [other, int8]) is None
    # a row that did not run has no ΔDice
    assert dice_delta(_row("onnxruntime", "int8", None, status="failed"), [good]) is None


def test_rows_may_be_given_as_json_dicts():
    rows = [json.loads(json.dumps(_row("torch", "fp32", 0.8).to_json())), _row("onnxruntime", "fp16", 0.7).to_json()]
    assert dice_delta(rows[1], rows) == pytest.approx(-0.1)


def test_a_relative_dataset_path_falls_back_to_the_recorded_root(tmp_path, monkeypatch):
    """A run trained with --data ../shared/datasets/ph2 is exported from another directory: the recorded absolute
    root of the same folder is opened; a registered name and a spec that exists here are kept."""
    from segdeploy.records import DatasetRef

    root = tmp_path / "datasets" / "ph2"
    root.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert DatasetRef(spec="../shared/datasets/ph2", root=str(root)).open_spec() == str(root)
    assert DatasetRef(spec="../shared/datasets/other", root=str(root)).open_spec() == "../shared/datasets/other"
    assert DatasetRef(spec="synthetic:48", root=str(root)).open_spec() == "synthetic:48"
    monkeypatch.chdir(tmp_path / "datasets")
    assert DatasetRef(spec="./ph2", root="/gone/ph2").open_spec() == "./ph2"


STUDY_RESULTS = DATA / "results-study-bench3.jsonl"  # a study's rows as written before the study fields were typed


def test_study_fields_of_old_rows_load_typed_and_write_back_unchanged():
    from segdeploy.records import StudyCell

    raw_ok, raw_failed = read_jsonl(STUDY_RESULTS)
    ok, failed = BenchRow.from_json(raw_ok), BenchRow.from_json(raw_failed)
    assert ok.study == StudyCell(model="unet-tiny", dataset="synthetic", fold=0, lr=0.001,
                                 cell_id="unet-tiny__synthetic__f0__lr0.001")
    assert (ok.val_dice, ok.train_dataset, ok.target) == (0.412, "synthetic", "synthetic")
    assert ok.train_curve["val_dice"] == [0.3, 0.412] and ok.trivial_dice["all_fg"] == 0.0213
    assert ok.extra == {} and failed.extra == {"stage": "train"}  # nothing of the study is left untyped
    assert failed.study.fold == 1 and failed.val_dice is None and failed.status == "failed"
    for raw, row in ((raw_ok, ok), (raw_failed, failed)):
        written = row.to_json()
        assert {k: written[k] for k in raw} == raw  # every stored value back, the study cell as it was
        assert BenchRow.from_json(written) == row
    key = CheckKey.of(ok)
    assert (key.fold, key.lr, key.train_dataset, key.target) == ("0", 0.001, "synthetic", "synthetic")


def test_a_plain_bench_row_is_written_without_study_fields():
    row = BenchRow.from_json(read_jsonl(RESULTS)[0])
    assert row.study is None and row.target is None
    written = row.to_json()
    assert not {"study", "val_dice", "train_dataset", "target", "train_curve", "dice_status",
                "trivial_dice"} & set(written)
    tagged = BenchRow.from_json(written)
    tagged.update(study={"model": "m", "dataset": "d", "fold": 2, "lr": 0.01, "cell_id": "c"}, val_dice=None)
    out = tagged.to_json()  # a study row writes all its study fields, null where unknown
    assert out["study"]["fold"] == 2 and out["val_dice"] is None and "target" in out and "trivial_dice" not in out


@pytest.mark.parametrize("field,value,named", [("val_dice", "high", "'val_dice'"), ("target", 3, "'target'"),
                                               ("study", {"lr": "fast"}, "'study.lr'"), ("train_curve", [1], "'train_curve'")])
def test_a_mistyped_study_field_is_one_error_naming_the_line(tmp_path, field, value, named):
    from segdeploy.study.results import read_rows

    raw_ok, raw_failed = read_jsonl(STUDY_RESULTS)
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(raw_ok) + "\n" + json.dumps({**raw_failed, field: value}) + "\n")
    with pytest.raises(SegdeployError, match=rf"line 2: field {named} is"):
        read_rows(path)
