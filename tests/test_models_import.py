"""``segdeploy models import``: smp, onnx and hf models trained elsewhere become run folders that export, bench
and cam accept, with their provenance, preprocessing and parity with the source library in model.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segdeploy.errors import BackendUnavailable, SegdeployError
from segdeploy.models.importers import import_model
from segdeploy.models.importers.base import ImportOptions
from segdeploy.run.folder import load_run

DATA = "synthetic:48"  # grayscale, 4 classes, 8 case groups (enough for a test split plus 5 folds)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def smp_folder(tmp_path_factory) -> Path:
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=4, encoder_depth=3,
                     decoder_channels=(32, 16, 8))
    folder = tmp_path_factory.mktemp("smp") / "unet"
    model.save_pretrained(str(folder))
    return folder


def test_smp_import_records_provenance_and_rebuilds_the_model(smp_folder, tmp_path):
    run_dir = tmp_path / "run"
    meta = import_model("smp", smp_folder, run_dir, ImportOptions(size=64, mean=[0.5], std=[0.25]), data=DATA)
    record = meta["imported"]
    assert record["format"] == "smp" and record["source"] == str(smp_folder.resolve())
    assert record["files"] == {"config.json": _sha(smp_folder / "config.json"),
                               "model.safetensors": _sha(smp_folder / "model.safetensors")}
    assert (meta["num_classes"], meta["in_chans"], meta["img_size"], meta["family"]) == (4, 1, 64, "general")
    assert (meta["mean"], meta["std"]) == ([0.5], [0.25])
    parity = record["parity"]
    assert parity["n_images"] == 4 and parity["pixel_agreement"] == 1.0 and parity["max_abs_logit_diff"] < 1e-5
    # the run rebuilds the same network from its own copy (the source folder may go away)
    import segmentation_models_pytorch as smp

    x = torch.randn(2, 1, 64, 64)
    with torch.inference_mode():
        ref = smp.from_pretrained(str(smp_folder)).eval()(x)
        got = load_run(run_dir).build_model()(x)
    assert torch.equal(ref, got)
    # the data set's split is recorded as a trained run's is: export and bench read test/train ids from it
    splits = json.loads((run_dir / "splits.json").read_text())
    assert len(splits["test"]) == meta["split"]["counts"]["test"] > 0
    with pytest.raises(SegdeployError, match="already a run folder"):
        import_model("smp", smp_folder, run_dir, ImportOptions(size=64))


def test_smp_import_refuses_a_pickle_unless_allowed(smp_folder, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_bytes((smp_folder / "config.json").read_bytes())
    from safetensors.torch import load_file

    torch.save(load_file(str(smp_folder / "model.safetensors")), folder / "pytorch_model.bin")
    with pytest.raises(SegdeployError, match="execute arbitrary code.*--allow-pickle"):
        import_model("smp", folder, tmp_path / "run", ImportOptions(size=64), parity_images=0)
    assert not (tmp_path / "run").exists()
    meta = import_model("smp", folder, tmp_path / "run", ImportOptions(size=64, allow_pickle=True), parity_images=1)
    assert meta["imported"]["parity"]["pixel_agreement"] == 1.0  # read with torch.load(weights_only=True)


def _onnx_file(folder: Path, smp_folder: Path) -> Path:
    """The smp model as a user's ONNX file: its own I/O names, batch fixed at 1."""
    import segmentation_models_pytorch as smp

    path = folder / "user.onnx"
    torch.onnx.export(smp.from_pretrained(str(smp_folder)).eval(), torch.randn(1, 1, 64, 64), str(path),
                      input_names=["pixels"], output_names=["scores"], dynamo=False, opset_version=17)
    return path


def test_onnx_import_asks_for_what_the_file_cannot_say_then_exports_it_as_fp32(smp_folder, tmp_path):
    from segdeploy.export import export_run

    path = _onnx_file(tmp_path, smp_folder)
    with pytest.raises(SegdeployError, match=r"does not say --mean, --std") as e:
        import_model("onnx", path, tmp_path / "run", ImportOptions())
    assert "\n" not in str(e.value)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"mean": [0.5], "std": [0.25], "classes": ["bg", "a", "b", "c"]}))
    meta = import_model("onnx", path, tmp_path / "run", ImportOptions(spec=spec), data=DATA)
    assert meta["classes"] == ["bg", "a", "b", "c"] and meta["img_size"] == 64
    assert meta["imported"]["files"] == {"user.onnx": _sha(path), "spec.json": _sha(spec)}
    assert meta["imported"]["parity"]["max_abs_logit_diff"] == 0.0
    run = load_run(tmp_path / "run")
    with pytest.raises(BackendUnavailable, match="no PyTorch original"):  # torch rows and cam say why
        run.build_model()
    manifest = export_run(run.dir, ["fp32", "fp16"], parity_images=2)
    fp32 = manifest.precisions["fp32"]
    assert fp32["status"] == "ok" and fp32["exporter"] == "imported" and fp32["parity"]["max_abs_diff"] == 0.0
    assert manifest.precisions["fp16"]["parity"]["argmax_agreement"] > 0.99
    assert manifest.imported["format"] == "onnx"
    # the fp32 file takes any batch and keeps segdeploy's I/O names
    from segdeploy.export.onnx_export import ort_session

    out = ort_session(run.dir / "onnx" / "model.fp32.onnx").run(["logits"], {"input": np.zeros((3, 1, 64, 64),
                                                                                             np.float32)})[0]
    assert out.shape == (3, 4, 64, 64)


def test_missing_extra_is_named_in_one_line(monkeypatch, tmp_path):
    import sys

    from segdeploy.models.importers.base import require_extra

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(SegdeployError, match=r"pip install 'segdeploy\[hf\]'") as e:
        require_extra("transformers", "hf", "hf")
    assert "\n" not in str(e.value)


def _hf_segformer(folder: Path, size: int = 64) -> Path:
    import transformers as T

    torch.manual_seed(0)
    cfg = T.SegformerConfig(num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                            hidden_sizes=[8, 16], patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1],
                            mlp_ratios=[2, 2], decoder_hidden_size=16, num_labels=3,
                            id2label={0: "bg", 1: "a", 2: "b"}, label2id={"bg": 0, "a": 1, "b": 2})
    T.SegformerForSemanticSegmentation(cfg).save_pretrained(str(folder))
    T.SegformerImageProcessor(size={"height": size, "width": size}).save_pretrained(str(folder))
    return folder


def _hf_upernet(folder: Path, size: int = 64) -> Path:
    import transformers as T

    torch.manual_seed(0)
    backbone = T.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                                out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = T.UperNetConfig(backbone_config=backbone, hidden_size=16, auxiliary_in_channels=16,
                          use_auxiliary_head=False, num_labels=2, pool_scales=[1, 2, 3])
    T.UperNetForSemanticSegmentation(cfg).save_pretrained(str(folder))
    T.SegformerImageProcessor(size={"height": size, "width": size}).save_pretrained(str(folder))
    return folder


@pytest.mark.slow  # transformers' import alone takes ~20 s on a loaded 2-core machine
def test_hf_segformer_and_upernet_agree_with_processor_model_and_post_process(tmp_path):
    for name, make, k in (("segformer", _hf_segformer, 3), ("upernet", _hf_upernet, 2)):
        src = make(tmp_path / name)
        meta = import_model("hf", src, tmp_path / f"run-{name}", ImportOptions(), parity_images=3)
        assert meta["model"] == f"hf:{name}" and meta["num_classes"] == k and meta["family"] == "general"
        assert meta["img_size"] == 64 and meta["mean"] == pytest.approx([0.485, 0.456, 0.406])
        parity = meta["imported"]["parity"]
        assert parity["n_images"] == 3 and parity["pixel_agreement"] >= 0.999, parity
        assert set(meta["imported"]["files"]) == {"config.json", "preprocessor_config.json", "model.safetensors"}
        out = load_run(tmp_path / f"run-{name}").build_model()(torch.zeros(2, 3, 64, 64))
        assert out.shape == (2, k, 64, 64)  # upsampled to the input, as post_process does


def test_hf_refuses_pickles_and_remote_code_before_loading_anything(tmp_path):
    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "segformer", "id2label": {"0": "bg"}}))
    (src / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 64, "width": 64}}))
    (src / "pytorch_model.bin").write_bytes(b"not even read")
    with pytest.raises(SegdeployError, match="pickle.*arbitrary code.*--allow-pickle"):
        import_model("hf", src, tmp_path / "run", ImportOptions())
    (src / "config.json").write_text(json.dumps({"model_type": "x", "auto_map": {"AutoModel": "m.M"}}))
    with pytest.raises(SegdeployError, match="never runs remote code"):
        import_model("hf", src, tmp_path / "run", ImportOptions(allow_pickle=True))
    assert not (tmp_path / "run" / "model.json").exists()


def test_cli_import_prints_parity_and_unknown_format_in_one_line(smp_folder, tmp_path):
    from typer.testing import CliRunner

    from segdeploy.commands.app import app

    result = CliRunner().invoke(app, ["models", "import", "keras", str(smp_folder), str(tmp_path / "r")])
    assert result.exit_code == 2 and "unknown model format 'keras'" in result.output  # a user error
    result = CliRunner().invoke(app, ["models", "import", "smp", str(smp_folder), str(tmp_path / "r"),
                                      "--size", "64", "--mean", "0.5", "--std", "0.25", "--parity-images", "2",
                                      "--family", "specialized"])
    assert result.exit_code == 0, result.output
    assert "100.0000% of pixels agree" in " ".join(result.output.split())  # however the console wrapped it
    assert json.loads((tmp_path / "r" / "model.json").read_text())["family"] == "specialized"


@pytest.mark.slow
def test_a_study_names_an_imported_model_beside_the_zoos(smp_folder, tmp_path):
    """``[[imported]]`` in a study file: one cell per dataset, imported (not trained) with the dataset's test split
    for bench, its family as given, its rows named as the table names it; the zoo's cells keep their
    fingerprints; a bad table is one line naming the key."""
    from segdeploy.study.cell import run_cell
    from segdeploy.study.config import load_study
    from segdeploy.study.plan import expand, fingerprint

    base = ('models = ["unet-tiny"]\ndatasets = ["synthetic:48"]\nk = 4\nfolds = [0]\nlr = [1e-3]\nepochs = 1\n'
            'seed = 7\nimg_size = 64\nbackends = ["onnxruntime"]\nprecisions = ["fp32"]\nduration = 0.05\nisolate = "none"\n')
    (tmp_path / "models").mkdir()
    smp_copy = tmp_path / "models" / "unet"
    import shutil

    shutil.copytree(smp_folder, smp_copy)
    table = ('[[imported]]\nname = "my-unet"\nformat = "smp"\nsource = "models/unet"\nfamily = "specialized"\n'
             'size = 64\nmean = [0.5]\nstd = [0.25]\n')
    (tmp_path / "plain.toml").write_text(base)
    (tmp_path / "s.toml").write_text(base + table)
    plain, config = load_study(tmp_path / "plain.toml"), load_study(tmp_path / "s.toml")
    assert config.imported[0].source == str(smp_copy.resolve())  # relative to the study file
    assert "imported" not in plain.as_dict()  # plans written before [[imported]] existed stay the same plan
    cells = expand(config)
    assert [c.cell_id for c in cells] == ["synthetic-48--unet-tiny--f0--lr0.001", "synthetic-48--my-unet--imported"]
    assert fingerprint(config, cells[0]) == fingerprint(plain, expand(plain)[0])
    outcome = run_cell(config, cells[1], tmp_path / "study")
    assert outcome.status == "ok", outcome.reason
    (row,) = outcome.rows
    assert row["status"] == "ok" and row["study"] == {"model": "my-unet", "dataset": "synthetic:48", "fold": None,
                                                      "lr": None, "cell_id": "synthetic-48--my-unet--imported"}
    assert row["family"] == "specialized" and row["model"].startswith("smp:") and 0 <= row["dice"] <= 1
    assert row["imported"]["format"] == "smp" and row["val_dice"] is None
    # scored on the test images the study's trained cells are scored on (the study's seed, not the default)
    from segdeploy.data import open_dataset
    from segdeploy.run.folder import load_run

    ds = open_dataset("synthetic:48")
    tested = load_run(tmp_path / "study" / "cells" / cells[1].cell_id).split_ids(ds, "test")
    assert tested == ds.split("test", seed=7, k=4) != ds.split("test")
    assert row["n_images"] == len(tested)
    for bad, key in (('[[imported]]\nname = "unet-tiny"\nformat = "smp"\nsource = "x"\n', "unet-tiny used twice"),
                     ('[[imported]]\nname = "a"\nformat = "smp"\nsource = "x"\nfold = "0"\n', "`imported.fold`"),
                     ('[[imported]]\nname = "a"\nformat = "keras"\nsource = "x"\n', "not a model format")):
        (tmp_path / "bad.toml").write_text(base + bad)
        with pytest.raises(SegdeployError, match=key) as e:
            load_study(tmp_path / "bad.toml")
        assert "\n" not in str(e.value)
