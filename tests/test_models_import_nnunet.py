"""``segdeploy models import nnunet``: an nnU-Net v2 2d results folder, made and trained by nnunetv2 itself
(tests/nnunet_fixture.py), becomes a run; its masks agree with nnUNetPredictor's; bench refuses its training
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
    meta = import_model("nnunet", nnunet_model, run_dir, ImportOptions(folds="0"), data=str(data), parity_images=2)
    record = meta["imported"]
    assert meta["family"] == "specialized" and meta["classes"] == ["background", "disc"] and meta["img_size"] == 64
    assert {"plans.json", "dataset.json", "fold_0/checkpoint_final.pth"} <= set(record["files"])
    assert record["details"]["pipeline"]["forwards_per_image"] == 4  # 1 fold x 4 mirrorings
    # nnU-Net's own prediction (sliding window, Gaussian, mirroring) on the held-out test cases
    assert record["parity"]["n_images"] == 2 and record["parity"]["pixel_agreement"] >= 0.999, record["parity"]
    # the training cases of fold 0 come from splits_final.json via debug.json
    splits = json.loads(Path(record["details"]["training_cases"]["splits_file"]).read_text())
    assert record["details"]["training_cases"]["train"] == sorted(splits[0]["train"])
    manifest = export_run(run_dir, ["fp32"], parity_images=2)
    assert manifest["precisions"]["fp32"]["parity"]["argmax_agreement"] == 1.0
    with pytest.raises(SegdeployError, match="trained on.*in-sample"):
        run_bench([run_dir], str(data), "onnxruntime", "fp32", tmp_path / "r.jsonl", split="train")
    rows = run_bench([run_dir], str(data), "onnxruntime", "fp32", tmp_path / "r.jsonl", split="test",
                     warmup_s=0.0, warmup_iters=1, duration_s=0.1, min_iters=2, progress=False)
    assert rows[0].status == "ok" and rows[0].n_images == 2


def test_bench_ids_among_the_training_cases_are_refused(tmp_path):
    from types import SimpleNamespace

    from segdeploy.models.importers import refuse_in_sample
    from segdeploy.runs import Run
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


@pytest.mark.slow  # reuses the trained fixture; imports and exports two pipeline settings
def test_pipeline_grid_measures_mirroring_on_and_off(nnunet_model, tiny_data, tmp_path):
    from segdeploy.bench.runner import run_bench
    from segdeploy.models.importers.grid import expand_pipeline_grid

    run_dir = tmp_path / "run"
    import_model("nnunet", nnunet_model, run_dir, ImportOptions(folds="0"), data=str(tiny_data), parity_images=0)
    dirs = expand_pipeline_grid([run_dir], ["fp32"], parity_images=1)
    assert [d.name for d in dirs] == ["folds-0_mirror-on", "folds-0_mirror-off"]
    metas = [json.loads((d / "model.json").read_text()) for d in dirs]
    assert [m["imported"]["details"]["pipeline"]["forwards_per_image"] for m in metas] == [4, 1]
    # without mirroring the deployed graph is nnUNetPredictor without mirroring: parity holds for both settings
    assert all(m["imported"]["parity"]["pixel_agreement"] >= 0.999 for m in metas)
    rows = run_bench(dirs, metas[0]["dataset"]["spec"], "onnxruntime", "fp32", tmp_path / "r.jsonl",
                     warmup_s=0.0, warmup_iters=1, duration_s=0.1, min_iters=2, progress=False)
    assert [r.status for r in rows] == ["ok", "ok"]
    assert [r.extra["imported"]["pipeline"]["mirroring"] for r in rows] == [True, False]
    assert rows[0].model != rows[1].model  # each setting is its own point on the fronts
