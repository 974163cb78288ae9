"""The one device rule (segdeploy.machine.device), on fake CUDA machines: what "auto" and "cuda" mean for every stage, when
a device counts as missing, and that the current CUDA device is restored after a block that changes it."""

from __future__ import annotations

import pytest
import torch

from segdeploy.machine.device import cuda_device, cuda_index, missing_device_reason, resolve_device
from segdeploy.errors import BackendUnavailable, SegdeployError


@pytest.fixture
def gpus(monkeypatch):
    """A machine with ``n`` CUDA devices as torch sees them (0: none), whose current device is 1 when there are
    two or more, so that "cuda" read as "the current device" would show."""

    def machine(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 1 if n > 1 else 0)

    return machine


@pytest.mark.parametrize("n_gpus,expected", [(0, "cpu"), (1, "cuda:0"), (2, "cuda:0")])
def test_auto_prefers_a_gpu_when_the_stage_runs_on_both(gpus, n_gpus, expected):
    gpus(n_gpus)
    assert resolve_device("auto") == expected
    assert resolve_device("auto", ("cpu", "cuda")) == "cpu"  # a stage that prefers the CPU gets it


def test_single_kind_stages_resolve_auto_without_asking_torch(monkeypatch):
    def no_probe():
        raise AssertionError("torch.cuda was asked")

    monkeypatch.setattr(torch.cuda, "is_available", no_probe)
    assert resolve_device("auto", ("cpu",)) == "cpu"
    # a GPU-only stage is pointed at cuda:0 even on a machine without one: its check then says why it cannot run
    assert resolve_device("auto", ("cuda",)) == "cuda:0"
    assert resolve_device("cuda:3") == "cuda:3" and resolve_device("cpu") == "cpu"


def test_cuda_without_an_index_is_cuda_0_not_the_current_device(gpus):
    gpus(2)
    assert torch.cuda.current_device() == 1
    assert resolve_device("cuda") == "cuda:0" and cuda_index("cuda") == 0
    assert cuda_index("cuda:1") == 1 and cuda_index("cpu") is None


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CUDA", "cuda:-1", "mps"])
def test_unknown_names_are_a_user_error(name):
    with pytest.raises(SegdeployError, match="unknown device") as excinfo:
        resolve_device(name)
    assert not isinstance(excinfo.value, BackendUnavailable)  # a typo stops the command, it is not a bench row
    assert "cuda:N" in str(excinfo.value)


def test_missing_device_reasons(gpus):
    gpus(0)
    assert "torch sees no CUDA GPU" in missing_device_reason("cuda:0")
    assert missing_device_reason("cpu") is None
    gpus(1)
    assert missing_device_reason("cuda:0") is None
    assert missing_device_reason("cuda:1") == "no cuda:1 (this machine has 1 CUDA device(s))"


def test_every_stage_resolves_auto_by_the_same_rule(gpus):
    """Training, each backend and the memory probe agree on where "auto" and "cuda" run."""
    from segdeploy.engines import engine_class
    from segdeploy.train.loop import training_device

    expected = {"torch": ("cuda:0", "cpu"), "torch-compile": ("cuda:0", "cpu"), "onnxruntime": ("cpu", "cpu"),
                "onnxruntime-cuda": ("cuda:0", "cuda:0"), "onnxruntime-trt": ("cuda:0", "cuda:0"),
                "tensorrt": ("cuda:0", "cuda:0")}
    for n_gpus, column in ((2, 0), (0, 1)):
        gpus(n_gpus)
        for backend, where in expected.items():
            engine = engine_class(backend)(None, "fp32", "auto", backend=backend)  # nothing is loaded
            assert engine.device == where[column], backend
            assert engine_class(backend)(None, "fp32", "cuda", backend=backend).device == "cuda:0"
    gpus(2)
    assert training_device("auto") == training_device("cuda") == torch.device("cuda:0")
    gpus(0)
    assert training_device("auto") == torch.device("cpu")
    with pytest.raises(SegdeployError, match="torch sees no CUDA GPU"):
        training_device("cuda")


def test_cuda_device_restores_the_previous_device(monkeypatch):
    """torch's own device guard, run against a fake current-device register: inside the block the asked device is
    current, after it (also after an exception) the previous one again."""
    current = {"index": 1}

    def exchange(index):
        previous, current["index"] = current["index"], index
        return previous

    monkeypatch.setattr(torch.cuda, "_exchange_device", exchange)
    monkeypatch.setattr(torch.cuda, "_maybe_exchange_device", exchange)
    with cuda_device("cuda:2"):
        assert current["index"] == 2
    assert current["index"] == 1
    with pytest.raises(RuntimeError, match="build failed"):
        with cuda_device("cuda"):
            assert current["index"] == 0
            raise RuntimeError("build failed")
    assert current["index"] == 1
    with cuda_device("cpu"):  # nothing to switch
        assert current["index"] == 1
