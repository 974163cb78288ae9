"""Fault catalogue, training: pickled and foreign state files, stuck and truncated runs, divergence, bad values,
two trainings into one folder, kill -9."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TRAIN_ARGS, assert_one_line_error, cli

ROOT = Path(__file__).resolve().parents[2]


def _state_files(run: Path) -> list[Path]:
    return sorted(run.glob("train_state*"))


def _unfinish(run: Path) -> None:
    meta = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**meta, "complete": False}))


def _interrupted(out: Path, monkeypatch, epochs: int = 2) -> Path:
    """A run stopped by Ctrl-C in its second epoch: checkpoint and training state of epoch 1 on disk."""
    from segdeploy.train import loop

    real, calls = loop.validate, {"n": 0}

    def interrupt_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(loop, "validate", interrupt_second)
        assert cli("train", *TRAIN_ARGS, "--epochs", epochs, "--out", out).exit_code == 130
    assert _state_files(out)
    return out


class Payload:
    """What a hostile train_state.pt carries: unpickling it calls open(marker, "w")."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_never_unpickles_a_state_file(tiny_run_copy, tmp_path):
    _unfinish(tiny_run_copy)
    marker = tmp_path / "payload-ran"
    torch.save({"config": {}, "epoch": 0, "payload": Payload(marker)}, tiny_run_copy / "train_state.pt")
    result = cli("train", *TRAIN_ARGS, "--epochs", 2, "--out", tiny_run_copy, "--resume")
    assert not marker.exists(), "the pickle in train_state.pt was executed"
    assert_one_line_error(result, names=tiny_run_copy / "train_state.pt", says="pickle")
    assert "--restart" in result.output


@pytest.mark.slow  # two trainings
def test_resume_refuses_a_state_file_from_another_run(tmp_path, monkeypatch):
    mine = _interrupted(tmp_path / "mine", monkeypatch)
    other = _interrupted(tmp_path / "other", monkeypatch)  # same settings, another run
    weights = (mine / "model.safetensors").read_bytes()
    for f in _state_files(mine):
        f.unlink()
    for f in _state_files(other):
        shutil.copy(f, mine / f.name)
    result = cli("train", *TRAIN_ARGS, "--epochs", 2, "--out", mine, "--resume")
    assert_one_line_error(result, names=_state_files(mine)[0], says="belongs to another run")
    assert (mine / "model.safetensors").read_bytes() == weights  # the checkpoint is untouched


def test_truncated_state_is_reported_not_a_traceback(tmp_path, monkeypatch):
    run = _interrupted(tmp_path / "run", monkeypatch)
    weights = (run / "model.safetensors").read_bytes()
    for f in _state_files(run):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # the disk filled up while it was written
    result = cli("train", *TRAIN_ARGS, "--epochs", 2, "--out", run, "--resume")
    assert_one_line_error(result, names=_state_files(run)[0], says="truncated")
    assert "--restart" in result.output
    assert (run / "model.safetensors").read_bytes() == weights


def test_stuck_run_offers_restart_and_restart_trains_again(tiny_run_copy):
    """After a crash: model.json of an unfinished run, no training state, a .partial file and stale exports."""
    _unfinish(tiny_run_copy)
    (tiny_run_copy / ".model.safetensors.partial.safetensors").write_bytes(b"half a checkpoint")
    (tiny_run_copy / "onnx").mkdir()
    (tiny_run_copy / "onnx" / "model.fp32.onnx").write_bytes(b"made from the discarded weights")
    for extra in (["--resume"], []):
        result = cli("train", *TRAIN_ARGS, "--epochs", 1, "--out", tiny_run_copy, *extra)
        assert_one_line_error(result, names=tiny_run_copy, says="--restart")
    result = cli("train", *TRAIN_ARGS, "--epochs", 1, "--out", tiny_run_copy, "--restart")
    assert result.exit_code == 0, result.output
    assert json.loads((tiny_run_copy / "model.json").read_text())["complete"] is True
    assert not list(tiny_run_copy.glob(".*partial*")) and not (tiny_run_copy / "onnx").exists()


def test_lr_1e9_stops_with_a_divergence_error_and_no_nan_checkpoint(tmp_path):
    out = tmp_path / "run"
    result = cli("train", *TRAIN_ARGS, "--epochs", 2, "--lr", "1e9", "--out", out)
    assert_one_line_error(result, names=out, says="diverged")
    assert "--lr" in result.output
    if (out / "model.safetensors").exists():
        assert all(torch.isfinite(t).all() for t in load_file(str(out / "model.safetensors")).values())
        assert json.loads((out / "model.json").read_text())["complete"] is False


def test_divergence_keeps_the_last_finite_checkpoint(tmp_path, monkeypatch):
    import torch.nn.functional as F

    from segdeploy.train import loop

    real_ce, real_eval, evaluated = F.cross_entropy, loop.validate, []

    def eval_and_count(*args, **kwargs):
        evaluated.append(1)
        return real_eval(*args, **kwargs)

    def nan_after_first_epoch(*args, **kwargs):
        loss = real_ce(*args, **kwargs)
        return loss * math.nan if evaluated else loss

    monkeypatch.setattr(loop, "validate", eval_and_count)
    monkeypatch.setattr(loop.F, "cross_entropy", nan_after_first_epoch)
    out = tmp_path / "run"
    result = cli("train", *TRAIN_ARGS, "--epochs", 3, "--out", out)
    assert_one_line_error(result, names=out, says="diverged")
    assert "epoch 2" in result.output and "epoch 1" in result.output  # where it diverged, what is kept
    meta = json.loads((out / "model.json").read_text())
    assert meta["best_epoch"] == 1 and meta["complete"] is False
    assert all(torch.isfinite(t).all() for t in load_file(str(out / "model.safetensors")).values())
    assert len((out / "history.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--lr", "-1"), ("--img-size", "30"),
                                           ("--epochs", "0"), ("--lr", "nan")])
def test_bad_training_values_are_rejected_before_any_work(tmp_path, option, value):
    out = tmp_path / "run"
    args = [a for a in TRAIN_ARGS]
    if option in args:
        i = args.index(option)
        del args[i:i + 2]
    result = cli("train", *args, "--epochs", 1, option, value, "--out", out) if option != "--epochs" else \
        cli("train", *args, option, value, "--out", out)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"{option} {value}" in result.output, result.output
    assert not (out / "model.json").exists()


def test_an_image_size_the_model_cannot_take_is_one_line(tmp_path):
    out = tmp_path / "run"
    args = [a for a in TRAIN_ARGS if a not in ("--img-size", "64", "unet-tiny")]
    args[args.index("--model") + 1:args.index("--model") + 1] = ["segformer-tiny"]  # 40 px: mismatched stages
    result = cli("train", *args, "--epochs", 1, "--img-size", "40", "--out", out)
    assert result.exit_code == 2 and "--img-size 40" in result.output and "multiple of 32" in result.output, \
        result.output
    assert not (out / "model.json").exists()


def _segdeploy(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "240"}
    return subprocess.Popen([sys.executable, "-m", "segdeploy.commands.app", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, child: subprocess.Popen, what: str, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if child.poll() is not None:
            pytest.fail(f"the child exited ({child.returncode}) before {what}: {child.stdout.read()}")
        if time.monotonic() > end:
            child.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_second_train_into_one_folder_is_refused_then_kill_9_and_resume(tmp_path):
    out = tmp_path / "run"
    child = _segdeploy("train", *TRAIN_ARGS, "--epochs", 40, "--patience", 40, "--out", out)
    try:
        history = out / "history.jsonl"
        _wait_for(lambda: bool(_state_files(out)), child, "the first epoch's training state")
        result = cli("train", *TRAIN_ARGS, "--epochs", 40, "--patience", 40, "--out", out, "--resume")
        assert_one_line_error(result, names=out, says=f"in use by segdeploy train (pid {child.pid}")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    # the kernel released the killed process's lock; the run continues from its last saved epoch
    done = len(history.read_text().splitlines())
    assert done >= 1 and (out / "model.safetensors").is_file()
    result = cli("train", *TRAIN_ARGS, "--epochs", done + 1, "--patience", 40, "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    epochs = [json.loads(line)["epoch"] for line in history.read_text().splitlines()]
    assert epochs == list(range(1, done + 2))  # each epoch once: a line the killed run wrote twice is dropped
    assert json.loads((out / "model.json").read_text())["complete"] is True


def test_disk_full_while_saving_the_training_state_says_how_to_go_on(tmp_path, monkeypatch):
    """The disk fills up at the first training state (after the first checkpoint): one line, the checkpoint
    kept, and the way out (--restart, since no state was saved) is the one that works."""
    import safetensors.torch

    real_save, saved = safetensors.torch.save_file, []

    def full_after_first(tensors, filename, metadata=None):
        if saved:
            Path(filename).write_bytes(b"\0" * 100)  # what got written before the disk was full
            raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")
        saved.append(filename)
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", full_after_first)
    out = tmp_path / "run"
    result = cli("train", *TRAIN_ARGS, "--epochs", 2, "--out", out)
    assert_one_line_error(result, names=out / "train_state", says="No space left on device")
    assert "--restart" in result.output
    assert not _state_files(out) and not list(out.glob(".*partial*"))  # no torn state left behind
    assert all(torch.isfinite(t).all() for t in load_file(str(out / "model.safetensors")).values())
    monkeypatch.undo()
    result = cli("train", *TRAIN_ARGS, "--epochs", 1, "--out", out, "--restart")
    assert result.exit_code == 0, result.output
