"""A cost-only study (train = false): seeded random weights, exported and benchmarked; Dice never invented."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from segdeploy.models import count_params, create_model
from segdeploy.study.plan import cell_dir, expand
from segdeploy.study.results import RESULTS, SELECTION, read_rows

STUDY = """
train = false
models = ["unet-tiny"]
datasets = ["synthetic:36"]
img_size = 64
seed = 7
backends = ["torch", "onnxruntime"]
precisions = ["fp32", "int8"]
duration = 0.1
"""


@pytest.mark.slow
def test_cost_only_study_measures_cost_and_marks_dice_not_measured(tmp_path):
    from segdeploy.study.config import load_study
    from segdeploy.study.runner import run_study

    path = tmp_path / "cost.toml"
    path.write_text(STUDY)
    out = tmp_path / "out"
    result = run_study(path, out)
    assert (result.ok, result.failed) == (1, 0)
    (cell,) = expand(load_study(path))
    rows = read_rows(out / RESULTS)
    assert len(rows) == 4 and not (out / SELECTION).exists()
    for row in rows:
        assert row["dice"] is None and row["dice_status"] == "not measured" and row["val_dice"] is None
        assert row["per_image"] is None
        assert row["study"] == {"model": "unet-tiny", "dataset": "synthetic:36", "fold": None, "lr": None,
                                "cell_id": cell.cell_id}
    ok = {(r["backend"], r["precision"]): r for r in rows if r["status"] == "ok"}
    assert set(ok) == {("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")}

    # the saved weights are the registered model's seeded initialisation, recomputed here
    torch.manual_seed(7)
    fresh = create_model("unet-tiny", num_classes=4, in_chans=1, img_size=64)
    saved = load_file(str(cell_dir(out, cell) / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in fresh.state_dict().items())
    assert not (cell_dir(out, cell) / "history.jsonl").exists()  # nothing was trained
    for row in ok.values():
        assert row["n_images"] == 0 and row["latency_ms"]["p50"] > 0 and row["throughput_ips"] > 0
        assert row["params_m"] == pytest.approx(count_params(fresh) / 1e6) and row["gmacs"] > 0
        assert row["file_size_mb"] > 0
