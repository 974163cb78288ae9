"""The training protocol: REX schedule, checkpoint + metadata, and resume after an interruption."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from segdeploy.errors import SegdeployError
from segdeploy.train import TrainConfig, rex_factor, train_model
from segdeploy.train import loop


def test_rex_schedule_matches_formula():
    total = 100
    assert rex_factor(0, total) == 1.0
    assert rex_factor(total, total) == 0.0
    for t in (10, 50, 90):
        z = 1 - t / total
        assert rex_factor(t, total) == pytest.approx(z / (0.5 + 0.5 * z))
    # REX decays slower than linear early on and faster at the end
    assert rex_factor(50, total) > 0.5


def _cfg(out, **kw):
    base = dict(data="synthetic:36", model="unet-tiny", out=out, epochs=3, img_size=64, batch_size=4, lr=1e-3,
                device="cpu", patience=10, k=3, amp="off")  # fp32 on every CPU: the same numbers everywhere
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow  # trains for several epochs
def test_train_writes_checkpoint_metadata_and_history(tmp_path):
    meta = train_model(_cfg(tmp_path / "run"), progress=False)
    run = tmp_path / "run"
    assert (run / "model.safetensors").is_file() and not (run / "train_state.safetensors").exists()
    on_disk = json.loads((run / "model.json").read_text())
    assert on_disk == json.loads(json.dumps(on_disk)) and on_disk["complete"] is True
    for key in ("model", "family", "classes", "num_classes", "in_chans", "img_size", "mean", "std", "split", "seed",
                "epochs_run", "best_epoch", "val", "versions", "protocol"):
        assert key in on_disk, key
    assert on_disk["model"] == "unet-tiny" and on_disk["family"] == "specialized"
    assert len(on_disk["classes"]) == on_disk["num_classes"] >= 3
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    # the saved weights are the best epoch's: its recorded val Dice is the maximum of the history
    assert on_disk["val"]["dice"] == pytest.approx(max(h["val_dice"] for h in history))
    assert meta.best_epoch == 1 + max(range(3), key=lambda i: history[i]["val_dice"])
    weights = load_file(str(run / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    # the Dice that selected the checkpoint is the Dice bench reports for it on the same (validation) images
    from segdeploy.bench.runner import run_bench

    [row] = run_bench([run], "synthetic:36", "torch", "fp32", tmp_path / "results.jsonl", split="val",
                      device="cpu", warmup=0.0, duration=0.0, min_iters=1, progress=False)
    assert row.status == "ok" and row.n_images == on_disk["split"]["counts"]["val"]
    assert row.dice == pytest.approx(on_disk["val"]["dice"], abs=1e-4)


def test_existing_run_is_not_overwritten(tmp_path):
    train_model(_cfg(tmp_path / "run", epochs=1), progress=False)
    with pytest.raises(SegdeployError, match="already exists"):
        train_model(_cfg(tmp_path / "run", epochs=1), progress=False)


@pytest.mark.slow  # trains the same run twice
def test_resume_after_interruption_reproduces_uninterrupted_run(tmp_path, monkeypatch):
    reference = train_model(_cfg(tmp_path / "ref"), progress=False)

    real_validate = loop.validate
    calls = {"n": 0}

    def crash_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(loop, "validate", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_model(_cfg(tmp_path / "run"), progress=False)
    assert (tmp_path / "run" / "train_state.safetensors").is_file()
    monkeypatch.setattr(loop, "validate", real_validate)

    with pytest.raises(SegdeployError, match="different settings"):
        train_model(_cfg(tmp_path / "run", lr=5e-4, resume=True), progress=False)
    # a state saved by a bf16 (GPU) run must not continue in fp32 here
    from segdeploy.train.state import load_train_state, save_train_state

    state_file = tmp_path / "run" / "train_state.safetensors"
    saved = state_file.read_bytes()
    state, run_id = load_train_state(state_file)
    assert state["amp"] is None  # CPU: no mixed precision
    save_train_state(state_file, {**state, "amp": "bf16"}, run_id)
    with pytest.raises(SegdeployError, match="trained in bf16"):
        train_model(_cfg(tmp_path / "run", resume=True), progress=False)
    state_file.write_bytes(saved)
    resumed = train_model(_cfg(tmp_path / "run", resume=True), progress=False)

    assert resumed.epochs_run == reference.epochs_run == 3
    assert resumed.val["dice"] == pytest.approx(reference.val["dice"], abs=1e-6)
    a = load_file(str(tmp_path / "ref" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    with pytest.raises(SegdeployError, match="nothing to resume"):
        train_model(_cfg(tmp_path / "run", resume=True), progress=False)
