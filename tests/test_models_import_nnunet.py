"""``segdeploy models import nnunet``: an nnU-Net v2 2d results folder, made and trained by nnunetv2 itself
(tests/nnunet_fixture.py), becomes a run; its deployed pipeline's masks agree with nnUNetPredictor's on test images
larger than the patch (so both tile them); bench measures the whole pipeline per image and refuses its training
cases; 3d configurations are refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from segdeploy.errors import SegdeployError
from segdeploy.models.importers import import_model
from segdeploy.models.importers.base import ImportOptions

ROOT = Path(__file__).resolve().parents[1]


def test_a_3d_configuration_is_refused_in_one_line(tmp_path):
    src = tmp_path / "Dataset001_X" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    src.mkdir(parents=True)
    (src / "plans.json").write_text(json.dumps({"configurations": {"3d_fullres": {"patch_size": [32, 64, 64]}}}))
    (src / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0}}))
    with pytest.raises(SegdeployError, match="is 3d; segdeploy imports nnU-Net 2d configurations only") as e:
        import_model("nnunet", src, tmp_path / "run", ImportOptions())
    assert "\n" not in str(e.value) and "__2d" in str(e.value)


def test_a_tile_step_outside_0_to_1_is_refused_in_one_line(tmp_path):
    pytest.importorskip("nnunetv2")
    src = tmp_path / "Dataset001_X" / "nnUNetTrainer__nnUNetPlans__2d"
    src.mkdir(parents=True)
    (src / "plans.json").write_text(json.dumps({"configurations": {"2d": {"patch_size": [64, 64]}}}))
    (src / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0}}))
    for step in (0.0, 1.5):
        with pytest.raises(SegdeployError, match=f"--tile-step {step}: nnU-Net's sliding window") as e:
            import_model("nnunet", src, tmp_path / "run", ImportOptions(tile_step=step))
        assert "\n" not in str(e.value)


def test_a_2d_configuration_that_resamples_is_refused_in_one_line(tmp_path):
    # nnU-Net resamples a 2d configuration of, e.g., NIfTI slices to the plans' spacing; the deployed pipeline does
    # not, so its masks would differ from nnU-Net's: refused at import, not measured wrong
    pytest.importorskip("nnunetv2")
    src = tmp_path / "Dataset001_X" / "nnUNetTrainer__nnUNetPlans__2d"
    (src / "fold_0").mkdir(parents=True)
    (src / "fold_0" / "checkpoint_final.pth").write_bytes(b"never read")
    (src / "plans.json").write_text(json.dumps({"configurations": {"2d": {
        "patch_size": [64, 64], "spacing": [0.7, 0.7], "normalization_schemes": ["ZScoreNormalization"]}}}))
    (src / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0,
                                                                                           "heart": 1}}))
    with pytest.raises(SegdeployError, match=r"resamples images to spacing \[0.7, 0.7\]") as e:
        import_model("nnunet", src, tmp_path / "run", ImportOptions(folds="0"))
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def nnunet_model(tmp_path_factory) -> Path:
    pytest.importorskip("nnunetv2")
    root = tmp_path_factory.mktemp("nnunet")
    # a process of its own: nnunetv2 reads its folders from the environment at import
    out = subprocess.run([sys.executable, "-m", "tests.nnunet_fixture", str(root)], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_data(nnunet_model, tmp_path_factory) -> Path:
    """The fixture's raw data set as a segdeploy folder (``data import nnunet``: imagesTs is the test split)."""
    from segdeploy.data.importers.base import ImportOptions as DataImportOptions
    from segdeploy.data.importers.build import import_dataset

    data = tmp_path_factory.mktemp("data") / "tiny"
    import_dataset("nnunet", nnunet_model.parents[2] / "raw" / "Dataset901_Tiny", data, DataImportOptions())
    return data


@pytest.mark.slow  # nnunetv2 plans, preprocesses and trains a tiny 2d model (about a minute here)
def test_nnunet_import_matches_nnunet_predictor_and_refuses_in_sample_bench(nnunet_model, tiny_data, tmp_path):
    from segdeploy.bench.runner import run_bench
    from segdeploy.export import export_run

    data = tiny_data
    run_dir = tmp_path / "run"
    meta = import_model("nnunet", nnunet_model, run_dir, ImportOptions(folds="0"), data=str(data), parity_images=3)
    record = meta["imported"]
    assert meta["family"] == "specialized" and meta["classes"] == ["background", "disc"] and meta["img_size"] == 64
    assert {"plans.json", "dataset.json", "fold_0/checkpoint_final.pth"} <= set(record["files"])
    pipeline = record["details"]["pipeline"]
    assert pipeline["network_passes_per_tile"] == 4 and pipeline["tile_step"] == 0.5  # 1 fold x 4 mirrorings
    # nnU-Net's own prediction (crop, sliding window, Gaussian, mirroring) on the held-out test cases, 96 and
    # 128 px against a 64 px patch (one with a zero border nnU-Net crops away)
    parity = record["parity"]
    assert parity["n_images"] == 3 and parity["image_sizes"] == ["128x128", "96x96"], parity
    assert parity["pixel_agreement"] >= 0.999 and parity["met"], parity
    # every fold, averaged as nnUNetPredictor averages them (here without mirroring: 2 network passes per tile)
    both = import_model("nnunet", nnunet_model, tmp_path / "run-2f", ImportOptions(folds="all", mirroring=False),
                        data=str(data), parity_images=3)["imported"]
    assert both["details"]["pipeline"]["folds"] == [0, 1]
    assert both["details"]["pipeline"]["network_passes_per_tile"] == 2
    assert both["parity"]["pixel_agreement"] >= 0.999 and both["parity"]["n_images"] == 3, both["parity"]
    # the training cases of fold 0 come from splits_final.json via debug.json
    splits = json.loads(Path(record["details"]["training_cases"]["splits_file"]).read_text())
    assert record["details"]["training_cases"]["train"] == sorted(splits[0]["train"])
    manifest = export_run(run_dir, ["fp32"], parity_images=2)
    assert manifest.precisions["fp32"]["parity"]["argmax_agreement"] == 1.0
    with pytest.raises(SegdeployError, match="trained on.*in-sample"):
        run_bench([run_dir], str(data), "onnxruntime", "fp32", tmp_path / "r.jsonl", split="train")
    rows = run_bench([run_dir], str(data), "torch,onnxruntime", "fp32", tmp_path / "r.jsonl", split="test",
                     batch=4, warmup=0.0, warmup_iters=1, duration=0.1, min_iters=2, progress=False)
    assert [r.status for r in rows] == ["ok", "ok"] and rows[0].n_images == 3
    for row in rows:
        # the whole pipeline per image: tiles of nnU-Net's steps (96 px: 2x2, 128 px: 3x3, the cropped 76x84: 2x2)
        # in calls of up to 4 tiles; the graph's cost per tile scaled to the image
        piped = row.extra["pipeline"]
        assert piped["tiles_per_image"] == {"mean": pytest.approx(17 / 3), "min": 4, "max": 9}, piped
        assert piped["forward_calls"] == 1 + 3 + 1 and piped["tile_batch"] == 4
        assert row.gmacs == pytest.approx(row.extra["forward_gmacs"] * 17 / 3)
        assert row.latency_ms["n"] == 3 and row.throughput_ips == pytest.approx(1e3 / row.latency_ms["p50"])
        # the engine alone, timed on a tile batch (no timing comparison: this machine's cores are shared)
        assert row.extra["forward"]["latency_ms"]["n"] >= 2 and row.extra["forward"]["tiles_per_s"] > 0
    assert rows[1].dice == pytest.approx(rows[0].dice, abs=1e-3)  # onnxruntime's pipeline scores as torch's


def test_bench_ids_among_the_training_cases_are_refused(tmp_path):
    from types import SimpleNamespace

    from segdeploy.models.importers import refuse_in_sample
    from segdeploy.run.folder import Run
    from tests.helpers import make_meta

    meta = make_meta()
    meta.extra["imported"] = {"format": "nnunet", "source": "x", "files": {}, "preprocessing": {},
                              "details": {"training_cases": {"train": ["case_001", "case_002"]}}}
    run, ds = Run(dir=tmp_path, meta=meta), SimpleNamespace(name="tiny")
    refuse_in_sample(run, ds, ["case_000", "test_010"])  # held-out cases: scored
    with pytest.raises(SegdeployError, match=r"1 of the 2 images .*\(case_002_slice_003\): their Dice would be "
                                             r"in-sample") as e:
        refuse_in_sample(run, ds, ["case_000", "case_002_slice_003"])
    assert "\n" not in str(e.value)


@pytest.mark.slow  # reuses the trained fixture; imports and exports six pipeline settings
def test_pipeline_grid_measures_mirroring_and_tile_step(nnunet_model, tiny_data, tmp_path):
    from segdeploy.bench.runner import run_bench
    from segdeploy.models.importers.grid import expand_pipeline_grid

    run_dir = tmp_path / "run"
    import_model("nnunet", nnunet_model, run_dir, ImportOptions(folds="0"), data=str(tiny_data), parity_images=0)
    dirs = expand_pipeline_grid([run_dir], ["fp32"], parity_images=3)
    assert [d.name for d in dirs] == [f"folds-0_mirror-{m}_step-{s}" for m in ("on", "off")
                                      for s in ("0.5", "0.75", "1")]
    metas = [json.loads((d / "model.json").read_text()) for d in dirs]
    pipelines = [m["imported"]["details"]["pipeline"] for m in metas]
    assert [p["network_passes_per_tile"] for p in pipelines] == [4, 4, 4, 1, 1, 1]
    assert [p["tile_step"] for p in pipelines] == [0.5, 0.75, 1.0] * 2
    # every setting's deployed pipeline is nnUNetPredictor with the same setting, on images it tiles
    assert all(m["imported"]["parity"]["pixel_agreement"] >= 0.999 for m in metas), [m["imported"]["parity"]
                                                                                       for m in metas]
    rows = run_bench(dirs, metas[0]["dataset"]["spec"], "onnxruntime", "fp32", tmp_path / "r.jsonl",
                     warmup=0.0, warmup_iters=1, duration=0.1, min_iters=2, progress=False)
    assert [r.status for r in rows] == ["ok"] * 6
    assert [r.extra["imported"]["pipeline"]["mirroring"] for r in rows] == [True] * 3 + [False] * 3
    # step 1.0 tiles the 128 px image 2x2 instead of 3x3
    assert [r.extra["pipeline"]["tiles_per_image"]["max"] for r in rows] == [9, 9, 4] * 2
    assert len({r.model for r in rows}) == 6  # each setting is its own point on the fronts
