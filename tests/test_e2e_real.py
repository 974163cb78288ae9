"""End to end on real data from ../shared/datasets, through the same CLI a user runs:
train -> export -> bench -> check -> cam on a PH2 subset (dermoscopy, RGB JPEG; learns within seconds, so Dice and
CAM figures are meaningful), and a multi-class ACDC subset (grayscale, 4 classes, patient-level split.json).
Assertions compare numbers computed in independent ways."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image
from typer.testing import CliRunner

from segdeploy.commands.app import app

pytestmark = pytest.mark.slow  # minutes: trains, exports and benchmarks real models (make test-fast skips it)
runner = CliRunner()


def cli(*args: str, ok: bool = True):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, f"segdeploy {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}"
    return result


def link_subset(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` pairs of ``src`` (per split when it has split.json), linked (not copied) into ``dst``."""
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    images = sorted((src / "images").iterdir())
    if (src / "split.json").is_file():
        split = json.loads((src / "split.json").read_text())
        chosen = [i for name, count in (("train", n * 6 // 10), ("val", n // 5), ("test", n // 5))
                  for i in [im for im in images if split[im.stem] == name][:count]]
        (dst / "split.json").write_text(json.dumps({i.stem: split[i.stem] for i in chosen}))
    else:
        chosen = images[:n]
    for image in chosen:
        (dst / "images" / image.name).symlink_to(image)
        (dst / "masks" / f"{image.stem}.png").symlink_to(src / "masks" / f"{image.stem}.png")
    shutil.copy(src / "meta.json", dst / "meta.json")
    return dst


@pytest.fixture(scope="module")
def ph2_subset(shared_datasets, tmp_path_factory) -> Path:
    return link_subset(shared_datasets / "ph2", tmp_path_factory.mktemp("data") / "ph2", 120)


@pytest.fixture(scope="module")
def pipeline(ph2_subset, tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    run = work / "unet"
    cli("data", "check", ph2_subset)
    cli("train", "--data", ph2_subset, "--model", "unet-tiny", "--out", run, "--epochs", "6", "--img-size", "128",
        "--lr", "2e-3", "--augment", "0.5", "--device", "cpu")
    cli("export", run, "--precisions", "fp32,fp16,int8", "--calib-images", "16")
    results = work / "results.jsonl"
    cli("bench", run, "--data", ph2_subset, "--backends", "torch,onnxruntime", "--precisions", "fp32,fp16,int8",
        "--results", results, "--save-predictions", work / "pred", "--duration", "0.2")
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    return {"run": run, "results": results, "rows": {(r["backend"], r["precision"]): r for r in rows},
            "pred": work / "pred", "data": ph2_subset, "work": work}


def test_onnx_fp32_dice_equals_pytorch(pipeline):
    rows = pipeline["rows"]
    torch_fp32, ort_fp32 = rows[("torch", "fp32")], rows[("onnxruntime", "fp32")]
    assert torch_fp32["status"] == ort_fp32["status"] == "ok"
    assert torch_fp32["n_images"] == ort_fp32["n_images"] > 0
    assert abs(torch_fp32["dice"] - ort_fp32["dice"]) <= 0.001
    int8 = pipeline["rows"][("onnxruntime", "int8")]
    assert int8["dice_vs_torch_fp32"] == pytest.approx(int8["dice"] - torch_fp32["dice"], abs=1e-12)
    for field in ("dice_per_class", "iou", "hd95", "latency_ms", "throughput_ips", "peak_memory_mb", "file_size_mb",
                  "params_m", "gflops", "env"):
        assert field in ort_fp32, field
    assert set(ort_fp32["latency_ms"]) >= {"p50", "p90", "p95", "p99"}


def test_unavailable_configuration_is_a_row(pipeline):
    row = pipeline["rows"][("torch", "fp16")]  # no CUDA here
    assert row["status"] == "unavailable" and "\n" not in row["reason"] and row["reason"]
    assert pipeline["rows"][("onnxruntime", "int8")]["status"] == "ok"


def test_int8_onnx_is_symmetric_per_channel_qdq(pipeline):
    model = onnx.load(pipeline["run"] / "onnx" / "model.int8.onnx")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "no Q/DQ nodes in the int8 model"
    zero_points = [inits[n.input[2]] for n in qdq if len(n.input) > 2 and n.input[2] in inits]
    assert zero_points and all(not zp.any() for zp in zero_points)
    assert all(zp.dtype == np.int8 for zp in zero_points)
    scales = [inits[n.input[1]] for n in qdq if n.input[1] in inits]
    assert any(s.ndim == 1 and s.size > 1 for s in scales), "weights are not quantized per channel"


def test_saved_predictions_reproduce_reported_dice(pipeline):
    row = pipeline["rows"][("onnxruntime", "fp32")]
    pred_dir = next(p for p in pipeline["pred"].rglob("onnxruntime-fp32") if p.is_dir())
    tp = np.zeros(2)
    fp = np.zeros(2)
    fn = np.zeros(2)
    files = sorted(pred_dir.glob("*.png"))
    assert len(files) == row["n_images"]
    for f in files:
        pred = np.array(Image.open(f))
        gt = np.array(Image.open(pipeline["data"] / "masks" / f.name))
        assert pred.shape == gt.shape  # original resolution
        for c in (1,):
            tp[c] += np.sum((pred == c) & (gt == c))
            fp[c] += np.sum((pred == c) & (gt != c))
            fn[c] += np.sum((pred != c) & (gt == c))
    assert 2 * tp[1] / (2 * tp[1] + fp[1] + fn[1]) == pytest.approx(row["dice"], abs=1e-9)


def test_check_passes_against_own_baseline_and_catches_a_regression(pipeline):
    results, baseline = pipeline["results"], pipeline["work"] / "baseline.json"
    cli("check", results, "--baseline", baseline, "--write-baseline")
    cli("check", results, "--baseline", baseline)
    worse = pipeline["work"] / "worse.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    for r in rows:
        if r["backend"] == "onnxruntime" and r["precision"] == "int8" and r["dice"] is not None:
            r["dice"] -= 0.05
    worse.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("check", worse, "--baseline", baseline, ok=False)
    assert result.exit_code == 1, result.output
    # which rows failed: exactly the lowered onnxruntime int8 ones, each 5 Dice points below its baseline entry
    from segdeploy.rowkeys import CheckKey
    from segdeploy.report.check import check_results, load_baseline, load_results

    lowered = {CheckKey.of(r) for r in rows if r["backend"] == "onnxruntime" and r["precision"] == "int8"
               and r["dice"] is not None}
    failed = [f for f in check_results(load_results(worse), load_baseline(baseline)) if f.failed]
    assert lowered and {f.key for f in failed} == lowered, [f.as_dict() for f in failed]
    regressed = {f.key: f for f in failed if f.status == "regressed"}
    assert set(regressed) == lowered and {f.status for f in failed} <= {"regressed", "<99% fp32"}
    for f in regressed.values():
        assert f.delta_points == pytest.approx(-5.0, abs=1e-6), f.as_dict()


def test_gradcam_writes_overlays_and_energy(pipeline):
    out = pipeline["work"] / "cam"
    cli("cam", pipeline["run"], "--data", pipeline["data"], "--out", out, "--worst", "2", "--random", "1")
    report = json.loads((out / "cam.json").read_text())
    assert len(list(out.glob("*.png"))) >= 3
    shares = [c["cam_energy_in_gt"] for img in report["images"] for c in img["classes"].values()
              if c["cam_energy_in_gt"] is not None]
    assert shares and all(0.0 <= s <= 1.0 for s in shares)


def test_bad_dataset_folder_is_reported_by_file(ph2_subset, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(ph2_subset, bad, symlinks=True)
    images = sorted((bad / "images").iterdir())
    images[0].unlink()
    images[0].write_bytes(b"not an image")  # corrupt image
    (bad / "masks" / f"{images[1].stem}.png").unlink()  # image without mask
    result = cli("data", "check", bad, ok=False)
    assert result.exit_code != 0
    assert images[0].name in result.output and images[1].name in result.output
    result = cli("train", "--data", bad, "--model", "unet-tiny", "--out", tmp_path / "run", ok=False)
    assert result.exit_code != 0


def test_multiclass_acdc_subset_respects_split_json(shared_datasets, tmp_path):
    data = link_subset(shared_datasets / "acdc", tmp_path / "acdc", 100)
    split = json.loads((data / "split.json").read_text())
    run, results = tmp_path / "run", tmp_path / "results.jsonl"
    cli("train", "--data", data, "--model", "segformer-tiny", "--out", run, "--epochs", "3", "--img-size", "128",
        "--lr", "2e-3", "--device", "cpu")
    meta = json.loads((run / "model.json").read_text())
    assert meta["in_chans"] == 1 and meta["num_classes"] == 4 and meta["split"]["method"] == "split.json"
    cli("export", run, "--precisions", "fp32")
    cli("bench", run, "--data", data, "--backends", "torch,onnxruntime", "--precisions", "fp32", "--results", results,
        "--save-predictions", tmp_path / "pred", "--duration", "0.1")
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert abs(rows[0]["dice"] - rows[1]["dice"]) <= 0.001
    assert set(rows[0]["dice_per_class"]) == {"right_ventricle", "myocardium", "left_ventricle"}
    predicted = {p.stem for p in (tmp_path / "pred").rglob("*.png")}
    assert predicted == {i for i, s in split.items() if s == "test"}
