"""segdeploy env: the environment record is complete, JSON-serialisable, hostname-free and never fails."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import segdeploy
from segdeploy.machine import envinfo

KEYS = {"os", "platform", "machine", "python", "cpu", "cpu_isa", "cpu_cores", "ram_gb", "gpus", "nvidia_driver", "cuda",
        "torch", "onnx", "onnxruntime", "tensorrt", "polygraphy", "segdeploy", "jetson"}


def test_environment_fields_and_json():
    info = envinfo.environment()
    assert set(info) == KEYS
    text = json.dumps(info)  # plain json: no numpy, no paths
    assert json.loads(text) == info
    assert info["segdeploy"] == segdeploy.__version__
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["cpu_cores"] >= 1 and info["ram_gb"] > 0
    import onnxruntime
    import torch

    assert info["torch"]["version"] == torch.__version__
    assert info["cuda"]["available"] == torch.cuda.is_available()
    assert info["onnxruntime"]["version"] == onnxruntime.__version__
    assert "CPUExecutionProvider" in info["onnxruntime"]["providers"]
    hostname = socket.gethostname()
    if len(hostname) >= 4:
        assert hostname not in text


def test_environment_is_probed_once_and_handed_out_as_copies():
    record = envinfo.probe_environment()
    assert envinfo.probe_environment() is record and isinstance(record, envinfo.Environment)
    row_env = envinfo.environment()
    row_env["cpu"] = "edited by a caller"
    assert envinfo.environment()["cpu"] == record.cpu  # a caller's edit does not reach the next row


def test_a_failing_probe_becomes_null(monkeypatch):
    def broken():
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(envinfo, "cpu_model", broken)
    monkeypatch.setattr(envinfo, "gpus", broken)
    envinfo.probe_environment.cache_clear()
    try:
        record = envinfo.probe_environment()
        assert record.cpu is None and record.gpus == []
        assert record.python == ".".join(map(str, sys.version_info[:3]))  # the other probes still ran
    finally:
        envinfo.probe_environment.cache_clear()


def test_jetson_files_are_parsed(tmp_path):
    assert envinfo.jetson_info(tmp_path) is None and envinfo.jetson_model(tmp_path) is None  # not a Jetson
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8\n")
    info = envinfo.jetson_info(tmp_path)
    assert info["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert info["l4t"] == "R36.4.3"
    assert envinfo.jetson_model(tmp_path) == info["model"]


def test_import_is_light():
    code = "import sys, segdeploy.machine.envinfo, segdeploy.commands.env, segdeploy.commands.engines; print(sorted({'torch', " \
           "'onnxruntime', 'tensorrt', 'onnx'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_env_command_json_and_table():
    runner = CliRunner()
    app = _app()
    result = runner.invoke(app, ["--format", "json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output)) == KEYS
    result = runner.invoke(app, [], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "onnxruntime" in result.output and "segdeploy" in result.output
    result = runner.invoke(app, ["--format", "xml"])
    assert result.exit_code != 0 and "unknown format" in str(result.exception)


def _app():
    import typer

    from segdeploy.commands.env import env

    app = typer.Typer()
    app.command()(env)
    return app


@pytest.mark.parametrize("line,version", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024", "550.54.14"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U16)",
     "580.95.05"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  540.4.0  Release Build", "540.4.0"),
])
def test_driver_version_from_proc_without_nvidia_smi(tmp_path, monkeypatch, line, version):
    monkeypatch.setattr(envinfo, "_command", lambda *args, **kw: None)  # containers and Jetsons: no nvidia-smi
    proc = tmp_path / "version"
    proc.write_text(line + "\nGCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n")
    assert envinfo.nvidia_driver(proc) == version
