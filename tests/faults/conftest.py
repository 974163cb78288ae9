"""Fixtures of the fault catalogue: the CLI invoked in-process and a disk that fills up. The tiny trained run
(``tiny_run``, and ``tiny_run_copy`` for a test that damages it) is the suite's, in tests/conftest.py."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import TINY_DATA as DATA, TINY_TRAIN_ARGS as TRAIN_ARGS


# a bench that measures accuracy on two test images and times three iterations
FAST_BENCH = ["--data", DATA, "--device", "cpu", "--max-images", "2", "--batch", "2", "--warmup", "0",
              "--duration", "0", "--min-iters", "2"]


def cli(*args: str):
    """``segdeploy ARGS`` in this process; the result's ``output`` holds stdout and stderr. Printed 200 columns
    wide, as on a wide terminal: rich wraps a table to its width, and the width it finds when the output is not a
    terminal (80) would make the tests depend on the length of their temporary paths."""
    from segdeploy.commands.app import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def assert_one_line_error(result, *, names: str | Path, says: str, code: int = 2) -> None:
    """Exit ``code``, an ``error:`` line naming the file ``names`` and saying ``says``, and no traceback."""
    text = result.stderr if result.stderr else result.output
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output and not isinstance(result.exception, (AssertionError, TypeError,
                                                                                      KeyError, RuntimeError))
    error = [line for line in text.splitlines() if line.startswith("error:")]
    assert error, text
    assert str(names) in " ".join(text.split()), text  # rich may wrap a long line; compare with spaces collapsed
    assert says.lower() in text.lower(), text


class DiskFull:
    """An open file whose writes stop after ``budget`` bytes with ENOSPC, like a disk that fills up mid-row:
    the first bytes reach the file, the rest raise."""

    def __init__(self, real, budget: int):
        self._real, self._left = real, budget

    def write(self, data):
        size = len(data.encode() if isinstance(data, str) else data)
        if size <= self._left:
            self._left -= size
            return self._real.write(data)
        part = data[: self._left]
        self._real.write(part)
        self._real.flush()
        self._left = 0
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._real.close()


def fill_disk_after(monkeypatch, budget: int) -> None:
    """From now on, files that segdeploy.fileio opens for writing hold at most ``budget`` more bytes."""
    import builtins

    from segdeploy import fileio

    def opener(file, mode="r", *args, **kwargs):
        real = builtins.open(file, mode, *args, **kwargs)
        return DiskFull(real, budget) if any(m in mode for m in "wa+") else real

    monkeypatch.setattr(fileio, "open", opener, raising=False)


@pytest.fixture(scope="session")
def exported_run(tiny_run, tmp_path_factory) -> Path:
    """The trained run with an fp32 ONNX export and its manifest."""
    out = Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("exported") / "unet-tiny"))
    result = cli("export", out, "--precisions", "fp32", "--parity-images", "2")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def exported_copy(exported_run, tmp_path) -> Path:
    return Path(shutil.copytree(exported_run, tmp_path / "run"))


def legacy_onnx(model, path: Path, input_shape) -> Path:
    """``model`` exported by the TorchScript exporter (fast) to ``path``, dynamic batch, no manifest entry."""
    import io
    import warnings

    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(2, *input_shape), buf, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path
