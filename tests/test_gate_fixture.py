"""The CI gate's fixed weights (tests/data/gate) and their machine-free baseline (results/baseline-fixed.json):
what `make gate` checks on any CPU class."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from segdeploy.report.check import load_baseline

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "tests/data/gate/unet-tiny-fixed"
BASELINE = ROOT / "results/baseline-fixed.json"


def test_the_fixture_is_a_small_complete_run_without_this_machines_paths():
    from segdeploy.run.folder import read_meta

    meta = read_meta(RUN)
    assert meta.complete and meta.model == "unet-tiny" and meta.dataset.spec == "synthetic:96"
    assert (RUN / "model.safetensors").stat().st_size < 2_500_000 and (RUN / "splits.json").is_file()
    text = (RUN / "model.json").read_text()
    assert "/root" not in text and "/home" not in text and "/tmp" not in text


def test_the_fixed_baseline_applies_on_every_machine_with_reasoned_tolerances():
    entries = load_baseline(BASELINE)["entries"]
    assert {(e["backend"], e["precision"]) for e in entries} == {
        (b, p) for b in ("torch", "onnxruntime", "openvino") for p in ("fp32", "int8")} - {("torch", "int8")}
    for e in entries:
        assert "machine" not in e and e["run"] == RUN.name and e["dataset"] == "synthetic:96"
        assert 0 < e["tolerance_dice_points"] <= (0.2 if e["precision"] == "fp32" else 3.0)
    fp32 = {e["dice"] for e in entries if e["precision"] == "fp32"}
    assert max(fp32) - min(fp32) < 0.001  # three runtimes' fp32 agree: the cross-ISA tolerance is not hiding a gap


@pytest.mark.slow
def test_make_gate_passes_here(tmp_path):
    """`make gate`'s commands on this machine: export, bench, check --strict."""
    from typer.testing import CliRunner

    from segdeploy.commands.app import app

    run = shutil.copytree(RUN, tmp_path / RUN.name)
    results = tmp_path / "results.jsonl"
    runner = CliRunner()
    for args in (["export", run, "--precisions", "fp32,int8"],
                 ["bench", run, "--data", "synthetic:96", "--backends", "torch,onnxruntime,openvino",
                  "--precisions", "fp32,int8", "--device", "cpu", "--warmup", "0", "--duration", "0",
                  "--min-iters", "2", "--results", results],
                 ["check", results, "--baseline", BASELINE, "--strict"]):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    assert len([json.loads(line) for line in results.read_text().splitlines()]) == 6
