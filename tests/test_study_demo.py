"""``segdeploy demo`` is a study: its cells run through the study's cell code (one set of train/export/bench resume
rules), while its files stay where the Makefile and results/baseline.json expect them."""

from __future__ import annotations

import pytest

from segdeploy.fileio import read_jsonl
from segdeploy.rowkeys import CheckKey
from segdeploy.study import cell as cell_module
from segdeploy.study.demo import demo_study, run_demo
from segdeploy.study.plan import expand


def test_the_demo_study_is_one_fold_at_one_lr_per_model():
    config = demo_study("unet-tiny,segformer-tiny", epochs=7, lr=3e-3, img_size=64)
    cells = expand(config)
    assert [(c.model, c.fold, c.lr) for c in cells] == [("unet-tiny", 0, 3e-3), ("segformer-tiny", 0, 3e-3)]
    # the demo's protocol: no early stop before the last epoch, batch 8, process isolation at bench
    assert (config.patience, config.epochs, config.batch_size, config.isolate) == (7, 7, 8, "process")


@pytest.mark.slow
def test_the_demo_runs_its_cells_through_the_cell_code_and_resumes(tmp_path, monkeypatch):
    calls = {"train": 0, "export": 0, "bench": 0}
    for name in calls:
        real = getattr(cell_module, f"{name}_cell")

        def spy(*a, _real=real, _name=name, **kw):
            calls[_name] += 1
            return _real(*a, **kw)

        monkeypatch.setattr(f"segdeploy.study.demo.{name}_cell", spy)
    out = tmp_path / "demo"
    kw = dict(data="synthetic:48", epochs=1, img_size=32, backends="torch,onnxruntime", precisions="fp32",
              device="cpu", duration=0.0, min_iters=2, say=lambda s: None, stage=lambda s: None)
    run_dirs, rows = run_demo(out, "unet-tiny", **kw)
    assert calls == {"train": 1, "export": 1, "bench": 1}
    assert run_dirs == [out / "unet-tiny"] and (out / "unet-tiny" / "model.json").is_file()
    assert (out / "unet-tiny" / "onnx" / "model.fp32.onnx").is_file()
    stored = read_jsonl(out / "results.jsonl")
    assert [(r["backend"], r["precision"], r["status"]) for r in stored] == [("torch", "fp32", "ok"),
                                                                            ("onnxruntime", "fp32", "ok")]
    # the rows keep the demo's identity (no study fields), so results/baseline.json's entries still match them
    key = CheckKey.of(stored[0])
    assert (key.run, key.dataset, key.split, key.fold, key.lr, key.target, key.threads) == \
        ("unet-tiny", "synthetic:48", "test", None, None, None, None)
    assert 0.0 <= stored[0]["dice"] <= 1.0 and stored[0]["dice"] == pytest.approx(stored[1]["dice"], abs=0.01)
    said = []
    again_dirs, again = run_demo(out, "unet-tiny", **{**kw, "say": said.append})
    assert said == [f"train unet-tiny: done earlier ({out / 'unet-tiny'})", "export unet-tiny: done earlier"]
    assert len(read_jsonl(out / "results.jsonl")) == 2  # the stored rows are reused, none appended
    assert [r.dice for r in again] == [r["dice"] for r in stored]
