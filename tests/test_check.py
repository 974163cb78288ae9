"""segdeploy check: the three rules at their boundaries, latest-row-wins, exit codes, baseline round trip."""

from __future__ import annotations

import json
import sys

import pytest
import typer
from typer.testing import CliRunner

from segdeploy.errors import SegdeployError
from segdeploy.fileio import append_jsonl, read_json
from segdeploy.report.check import (BASELINE_SCHEMA, check_results, config_key, device_kind, load_baseline,
                                    load_results, make_baseline)
from segdeploy.commands.report import check


def row(dice, *, model="unet", backend="torch", precision="fp32", device="cpu", status="ok", **extra) -> dict:
    return {"status": status, "dataset": "synthetic", "data": "synthetic", "split": "test", "run": "runs/x",
            "model": model, "family": "specialized", "backend": backend, "precision": precision, "device": device,
            "batch": 1, "dice": dice, "dice_per_class": {}, "reason": None, **extra}


def statuses(findings) -> dict:
    out: dict = {}
    for f in findings:
        out.setdefault((f.key.model, f.key.backend, f.key.precision), []).append(f.status)
    return out


def test_regression_rule_boundary():
    baseline = make_baseline([row(0.85)])
    # tolerance 1.0 point: 0.8401 and exactly 0.84 pass, 0.8399 fails
    for dice, expected in [(0.8401, "ok"), (0.84, "ok"), (0.8399, "regressed"), (0.95, "ok")]:
        (finding,) = check_results([row(dice)], baseline, tolerance=1.0)
        assert finding.status == expected, dice
        assert finding.failed == (expected == "regressed")
        assert finding.delta_points == pytest.approx(100 * (dice - 0.85))
    # a wider tolerance admits the same drop
    (finding,) = check_results([row(0.8399)], baseline, tolerance=2.0)
    assert finding.status == "ok"


def test_tolerance_defaults_to_baseline_value():
    baseline = make_baseline([row(0.85)], tolerance=3.0)
    assert check_results([row(0.83)], baseline)[0].status == "ok"
    assert check_results([row(0.81)], baseline)[0].status == "regressed"


def test_mlperf_99_percent_rule():
    fp32 = row(0.80, backend="onnxruntime")
    rows = [fp32, row(0.80, backend="torch"),
            row(0.7921, backend="onnxruntime", precision="fp16"),  # 99.0125% of 0.80
            row(0.792, backend="onnxruntime", precision="int8")]  # exactly 99%: passes
    found = statuses(check_results(rows, {"schema": "segdeploy.baseline/1", "entries": []}))
    assert found[("unet", "onnxruntime", "fp16")] == ["new"]
    assert found[("unet", "onnxruntime", "int8")] == ["new"]
    rows[-1] = row(0.7919, backend="onnxruntime", precision="int8")  # just below: fails
    findings = check_results(rows, {"schema": "segdeploy.baseline/1", "entries": []})
    (bad,) = [f for f in findings if f.failed]
    assert bad.status == "<99% fp32" and bad.key.precision == "int8"
    assert bad.reference == pytest.approx(0.80)


def test_99_percent_rule_holds_every_precision_against_torch_fp32_on_the_same_device_kind():
    empty = {"schema": "segdeploy.baseline/1", "entries": []}
    # the reference is torch fp32 (0.90), not onnxruntime's own fp32 (0.70): 0.695 < 0.891 fails
    rows = [row(0.90), row(0.70, backend="onnxruntime"), row(0.695, backend="onnxruntime", precision="int8")]
    (bad,) = [f for f in check_results(rows, empty) if f.failed]
    assert bad.key.backend == "onnxruntime" and bad.reference == pytest.approx(0.90)
    # a cuda row is not held against a cpu torch fp32: no reference, reported, failing only when strict
    rows = [row(0.90), row(0.88, backend="tensorrt", precision="fp16", device="cuda:0")]
    findings = check_results(rows, empty)
    assert not any(f.failed for f in findings)
    assert statuses(findings)[("unet", "tensorrt", "fp16")] == ["new", "no fp32 ref"]
    (strict,) = [f for f in check_results(rows, empty, strict=True) if f.failed]
    assert strict.status == "no fp32 ref" and strict.key.device_kind == "cuda"
    # with a torch fp32 row on cuda, 0.88 < 0.891 fails against it
    rows.append(row(0.90, device="cuda:0"))
    (bad,) = [f for f in check_results(rows, empty) if f.failed]
    assert bad.key.backend == "tensorrt" and bad.status == "<99% fp32" and bad.reference == pytest.approx(0.90)
    # no fp32 anywhere: nothing to compare against, no failure unless strict
    assert not any(f.failed for f in check_results([row(0.1, precision="fp16")], empty))
    assert any(f.failed for f in check_results([row(0.1, precision="fp16")], empty, strict=True))


def test_missing_and_new_configurations():
    baseline = make_baseline([row(0.85), row(0.84, backend="onnxruntime"), row(0.83, backend="onnxruntime-cuda")])
    rows = [row(0.85), row(0.6, model="segformer"),  # new (not in baseline): informational
            row(None, backend="onnxruntime-cuda", status="unavailable", reason="CUDA EP not installed")]
    findings = check_results(rows, baseline)
    found = statuses(findings)
    assert found[("unet", "torch", "fp32")] == ["ok"]
    assert found[("unet", "onnxruntime", "fp32")] == ["missing"]
    assert found[("unet", "onnxruntime-cuda", "fp32")] == ["missing"]
    assert found[("segformer", "torch", "fp32")] == ["new"]
    unavailable = next(f for f in findings if f.key.backend == "onnxruntime-cuda")
    assert unavailable.failed and unavailable.reason == "CUDA EP not installed"
    assert not next(f for f in findings if f.status == "new").failed


def test_missing_explained_by_row_that_failed_before_choosing_a_device():
    # bench writes the requested device ("auto") into rows that failed before an engine existed
    baseline = make_baseline([row(0.85, backend="onnxruntime")])
    failed = row(None, backend="onnxruntime", device="auto", status="failed", reason="RuntimeError: boom")
    (finding,) = check_results([failed], baseline)
    assert finding.status == "missing" and finding.failed and finding.reason == "RuntimeError: boom"
    assert finding.key.device_kind == "cpu"


def test_a_repeated_configuration_is_an_error_not_the_last_row_winning(tmp_path):
    baseline = make_baseline([row(0.85)])
    with pytest.raises(SegdeployError, match="rows 1 and 2 measure the same configuration .*run x.*backend torch"):
        check_results([row(0.50), row(0.85)], baseline)
    with pytest.raises(SegdeployError, match="same configuration"):
        make_baseline([row(0.5), row(0.7)])
    results = tmp_path / "r.jsonl"
    for r in (row(0.85), row(0.50)):
        append_jsonl(results, r)
    with pytest.raises(SegdeployError) as info:
        load_results(results)
    assert str(results) in str(info.value)
    # another image count, fold or lr is another measurement, not a repeat
    assert len(check_results([row(0.85), row(0.84, n_images=4), row(0.83, study={"fold": 1, "lr": 1e-4})],
                             baseline)) == 3


def test_device_kind_not_gpu_name():
    assert device_kind("cuda:0") == device_kind("cuda:3") == "cuda"
    assert device_kind("cpu") == "cpu"
    assert device_kind("auto", "tensorrt") == "cuda"
    # a cuda baseline does not apply to a cpu row of the same configuration
    baseline = make_baseline([row(0.85, device="cuda:0")])
    assert config_key(row(0.85, device="cuda:1")) == config_key(baseline["entries"][0])
    assert {f.status for f in check_results([row(0.85, device="cpu")], baseline)} == {"missing", "new"}


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(check)
    app.command("noop")(lambda: None)  # two commands, so the CLI takes "check" as a sub-command like segdeploy's
    return app


def test_cli_exit_codes_and_baseline_round_trip(tmp_path):
    results, baseline = tmp_path / "results.jsonl", tmp_path / "baseline.json"
    for r in [row(0.85), row(0.845, backend="onnxruntime"), row(0.85, backend="onnxruntime", precision="int8")]:
        append_jsonl(results, r)
    runner = CliRunner()
    app = _app()

    written = runner.invoke(app, ["check", str(results), "--baseline", str(baseline), "--write-baseline",
                                  "--tolerance", "0.5"])
    assert written.exit_code == 0, written.output
    data = load_baseline(baseline)
    assert data["tolerance_dice_points"] == 0.5
    assert {(e["backend"], e["precision"], e["device"], e["dice"]) for e in data["entries"]} == {
        ("torch", "fp32", "cpu", 0.85), ("onnxruntime", "fp32", "cpu", 0.845), ("onnxruntime", "int8", "cpu", 0.85)}

    ok = runner.invoke(app, ["check", str(results), "--baseline", str(baseline)])
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output and "3 configurations" in ok.output

    # -0.6 points: beyond the stored 0.5 (and still 99.3% of torch fp32)
    results.unlink()
    for r in [row(0.85), row(0.845, backend="onnxruntime"), row(0.844, backend="onnxruntime", precision="int8")]:
        append_jsonl(results, r)
    failed = runner.invoke(app, ["check", str(results), "--baseline", str(baseline)])
    assert failed.exit_code == 1, failed.output
    assert "FAIL" in failed.output and "regressed" in failed.output
    # the command-line tolerance overrides the stored one
    assert runner.invoke(app, ["check", str(results), "--baseline", str(baseline), "--tolerance", "1.5"]).exit_code == 0


def test_cli_bad_input_is_a_user_error(tmp_path):
    results = tmp_path / "results.jsonl"
    append_jsonl(results, row(0.85))
    app = _app()
    runner = CliRunner()
    not_there = runner.invoke(app, ["check", str(results), "--baseline", str(tmp_path / "none.json")])
    assert isinstance(not_there.exception, SegdeployError) and "--write-baseline" in str(not_there.exception)
    (tmp_path / "wrong.json").write_text(json.dumps({"schema": "other"}))
    wrong = runner.invoke(app, ["check", str(results), "--baseline", str(tmp_path / "wrong.json")])
    assert isinstance(wrong.exception, SegdeployError) and "segdeploy.baseline/1" in str(wrong.exception)
    no_results = runner.invoke(app, ["check", str(tmp_path / "none.jsonl"), "--baseline", str(tmp_path / "b.json"),
                                     "--write-baseline"])
    assert isinstance(no_results.exception, SegdeployError) and not (tmp_path / "b.json").exists()


def test_main_exits_2_on_bad_input(tmp_path, monkeypatch):
    from segdeploy.commands.app import main

    monkeypatch.setattr(sys, "argv", ["segdeploy", "check", str(tmp_path / "none.jsonl"), "--baseline",
                                      str(tmp_path / "b.json")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2


def test_baseline_file_is_valid_json_with_schema(tmp_path):
    results, baseline = tmp_path / "r.jsonl", tmp_path / "b.json"
    append_jsonl(results, row(0.9))
    append_jsonl(results, row(None, backend="tensorrt", status="unavailable", reason="no GPU"))
    assert CliRunner().invoke(_app(), ["check", str(results), "--baseline", str(baseline),
                                       "--write-baseline"]).exit_code == 0
    data = read_json(baseline)
    assert data["schema"] == BASELINE_SCHEMA and "created" in data
    assert len(data["entries"]) == 1  # the unavailable row is not a baseline


XEON = {"cpu": "Intel(R) Xeon(R) Processor",
        "cpu_isa": {"arch": "x86_64", "int8": "AMX-INT8", "bf16": "AMX-BF16", "fp16": "AVX512-FP16"}}
EPYC = {"cpu": "AMD EPYC 9654", "cpu_isa": {"arch": "x86_64", "int8": "AVX512-VNNI", "bf16": "AVX512-BF16",
                                            "fp16": None}}


def test_baseline_entries_apply_to_their_machine_class_only():
    # the same code trains different weights on an AMX Xeon and an AVX-512 EPYC: each class has its own entry
    baseline = make_baseline([row(0.83, env=EPYC)])
    (entry,) = baseline["entries"]
    assert entry["machine"] == "x86_64; int8 AVX512-VNNI, bf16 AVX512-BF16, fp16 -"
    (finding,) = check_results([row(0.73, env=EPYC)], baseline)
    assert finding.status == "regressed" and finding.failed
    # on the Xeon the EPYC's entry is not a yardstick: new, not regressed (and the 99% rule still holds)
    findings = check_results([row(0.73, env=XEON)], baseline)
    assert [(f.status, f.failed) for f in findings] == [("new", False), ("other machine class", False)]
    # ... unless --strict: a gate that compared nothing on this class fails there
    strict = check_results([row(0.73, env=XEON)], baseline, strict=True)
    assert [(f.status, f.failed) for f in strict] == [("other machine class", True)]
    bad = check_results([row(0.73, env=XEON), row(0.70, precision="int8", backend="onnxruntime", env=XEON)],
                        baseline)
    assert [f.status for f in bad if f.failed] == ["<99% fp32"]
    # recording the Xeon keeps the EPYC's entry; each class is then held to its own Dice
    both = make_baseline([row(0.73, env=XEON)], keep=baseline["entries"])
    assert sorted(e["dice"] for e in both["entries"]) == [0.73, 0.83]
    assert check_results([row(0.725, env=XEON)], both)[0].status == "ok"
    assert check_results([row(0.715, env=XEON)], both)[0].status == "regressed"
    assert check_results([row(0.825, env=EPYC)], both)[0].status == "ok"
    # re-recording a class replaces its entries, not adds to them
    again = make_baseline([row(0.74, env=XEON)], keep=both["entries"])
    assert sorted(e["dice"] for e in again["entries"]) == [0.74, 0.83]


def test_machine_free_entry_applies_everywhere_and_a_class_entry_overrides_it():
    anywhere = make_baseline([row(0.80, env=EPYC)], per_machine=False)
    assert "machine" not in anywhere["entries"][0]
    assert check_results([row(0.785, env=XEON)], anywhere)[0].status == "regressed"
    mixed = {**anywhere, "entries": anywhere["entries"] + make_baseline([row(0.70, env=XEON)])["entries"]}
    assert check_results([row(0.695, env=XEON)], mixed)[0].status == "ok"      # the Xeon's own 0.70
    assert check_results([row(0.785, env=EPYC)], mixed)[0].status == "regressed"  # the machine-free 0.80


def test_cli_says_when_no_entry_is_for_this_machine(tmp_path):
    results, base = tmp_path / "r.jsonl", tmp_path / "b.json"
    append_jsonl(results, row(0.83, env=EPYC))
    runner = CliRunner()
    app = typer.Typer()
    app.command()(check)
    assert runner.invoke(app, [str(results), "--baseline", str(base), "--write-baseline"]).exit_code == 0
    results.unlink()
    append_jsonl(results, row(0.73, env=XEON))
    out = runner.invoke(app, [str(results), "--baseline", str(base)], terminal_width=300)
    assert out.exit_code == 0, out.output
    assert "no baseline entries for this machine class" in out.output and "AVX512-VNNI" in out.output
    assert runner.invoke(app, [str(results), "--baseline", str(base), "--write-baseline"]).exit_code == 0
    assert len(read_json(base)["entries"]) == 2
    results.unlink()
    append_jsonl(results, row(0.70, env=XEON))
    assert runner.invoke(app, [str(results), "--baseline", str(base)]).exit_code == 1
