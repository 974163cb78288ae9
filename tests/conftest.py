"""Shared fixtures.

``tiny_run`` is THE trained run of the suite: unet-tiny, one epoch at 64 px on ``synthetic:24`` (k=2), trained once
per session through the CLI. A test that only needs *a* trained run reads it; a test that changes the run folder
(resumes it, damages it, exports into it) takes ``tiny_run_copy``, its own copy. ``tiny_trained_run`` is the same
model trained long enough (3 epochs on ``synthetic:36``) that an INT8 file's Dice means something; the INT8 tests
copy it. Runs whose weights do not matter (untrained, any classes) are made with ``helpers.make_run``.

Real data lives in ``../shared/datasets`` beside the repository (never inside it). Tests that need it skip
with a clear message when it is absent, except under CI (``CI=true``), where its absence is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("SEGDEPLOY_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))


def _require(path: Path) -> Path:
    if path.is_dir():
        return path
    msg = f"real datasets not found at {path} (set SEGDEPLOY_SHARED_DATASETS or place ../shared/datasets)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + "; CI=true requires them")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Folder holding acdc/, ph2/, hc18/, neopolyp/ in the standard layout."""
    return _require(SHARED_DATASETS)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    # generated datasets go to a per-session cache (shared by all tests), never to the user's ~/.cache
    old = os.environ.get("SEGDEPLOY_CACHE")
    os.environ["SEGDEPLOY_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    yield
    if old is None:
        os.environ.pop("SEGDEPLOY_CACHE", None)
    else:
        os.environ["SEGDEPLOY_CACHE"] = old



@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, _isolated_cache) -> Path:
    """unet-tiny trained for one epoch at 64 px (a complete run: model.safetensors + model.json). Read only."""
    from typer.testing import CliRunner

    from helpers import TINY_TRAIN_ARGS
    from segdeploy.commands.app import app

    out = tmp_path_factory.mktemp("tiny") / "unet-tiny"
    result = CliRunner().invoke(app, ["train", *TINY_TRAIN_ARGS, "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of ``tiny_run``, free to change or damage."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


@pytest.fixture(scope="session")
def tiny_trained_run(tmp_path_factory, _isolated_cache) -> Path:
    """unet-tiny trained for 3 epochs at 64 px on synthetic:36 (k=3): its INT8 Dice is comparable to fp32's. Read
    only: copy it (``shutil.copytree``) before exporting into it."""
    from segdeploy.train import TrainConfig, train_model

    out = tmp_path_factory.mktemp("trained") / "unet-tiny"
    train_model(TrainConfig(data="synthetic:36", model="unet-tiny", out=out, epochs=3, img_size=64, batch_size=4,
                            lr=2e-3, device="cpu", k=3), progress=False)
    return out
