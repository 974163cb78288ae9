"""What a result row needs to say about the machine it was measured on: probes, and the typed record they fill
(:class:`Environment`). The ``segdeploy env`` command that shows it is :mod:`segdeploy.commands.env`.

Privacy: no hostname, user name, paths or serial numbers; only hardware models and software versions.
Robustness: every probe is allowed to fail (a missing driver, a locked-down Jetson, no torch): its field is then
null. Nothing heavy is imported at module import; ``probe_environment()`` imports only what each field needs.
"""

from __future__ import annotations

import functools
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from segdeploy import __version__
from segdeploy.machine.cpuinfo import cpu_isa, cpuinfo_model, usable_cpus


def _probe(fn: Callable[[], Any]) -> Any:
    # one broken probe must not lose the whole record (the field becomes null)
    try:
        return fn()
    except Exception:
        return None


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _command(*args: str, timeout: float = 10) -> str | None:
    if shutil.which(args[0]) is None:
        return None
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    return out.stdout if out.returncode == 0 else None


def cpu_model() -> str | None:
    model = cpuinfo_model()
    if model:
        return model
    lscpu = _probe(lambda: _command("lscpu"))  # ARM boards name the core here, not in /proc/cpuinfo
    for line in (lscpu or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or None


def ram_gb() -> float | None:
    import psutil

    return round(psutil.virtual_memory().total / 2**30, 1)


def gpus() -> list[dict]:
    """NVIDIA GPUs: name, compute capability, memory (GiB). From PyTorch when it sees CUDA, else nvidia-smi."""
    import torch

    if torch.cuda.is_available():
        found = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            found.append({"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                          "memory_gb": round(props.total_memory / 2**30, 1)})
        return found
    out = _command("nvidia-smi", "--query-gpu=name,compute_cap,memory.total", "--format=csv,noheader,nounits")
    found = []
    for line in (out or "").strip().splitlines():
        name, cap, mem = (part.strip() for part in line.split(","))
        found.append({"name": name, "compute_capability": cap, "memory_gb": round(float(mem) / 1024, 1)})
    return found


def has_native_bf16(device) -> bool:
    """An sm80+ (Ampere or newer) GPU. ``torch.cuda.is_bf16_supported()`` also says yes where bf16 is only
    emulated (T4, V100), which is slow, and it asks about the current device rather than this one."""
    import torch

    return torch.cuda.get_device_properties(device).major >= 8


def nvidia_driver(version_file: Path = Path("/proc/driver/nvidia/version")) -> str | None:
    out = _command("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    if out and out.strip():
        return out.strip().splitlines()[0]
    if version_file.is_file():
        # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  ..." or, with the open kernel modules (the
        # default since R560), "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  ..."
        first_line = (version_file.read_text().splitlines() or [""])[0]
        match = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", first_line)
        return match.group(1) if match else None
    return None


def cuda_info() -> dict:
    import torch

    available = torch.cuda.is_available()
    return {"torch_cuda": torch.version.cuda, "available": available,
            "cudnn": torch.backends.cudnn.version() if available else None}


def torch_info() -> dict:
    import torch

    return {"version": torch.__version__, "cuda_build": torch.version.cuda,
            "debug": torch.version.debug, "torchvision": _dist_version("torchvision")}


def onnxruntime_info() -> dict | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    package = "onnxruntime-gpu" if _dist_version("onnxruntime-gpu") else "onnxruntime"
    return {"version": ort.__version__, "package": package, "providers": ort.get_available_providers()}


def tensorrt_version() -> str | None:
    # Jetson installs TensorRT from apt (no pip metadata), so ask the module itself
    import tensorrt

    return tensorrt.__version__


def _device_tree_model(root: Path) -> str | None:
    model_file = root / "proc/device-tree/model"
    return model_file.read_text(errors="replace").strip("\x00\n ") if model_file.is_file() else None


def is_jetson(root: Path = Path("/")) -> bool:
    model = _device_tree_model(root)
    return (root / "etc/nv_tegra_release").is_file() or bool(model and "jetson" in model.lower())


def jetson_model(root: Path = Path("/")) -> str | None:
    """The Jetson module's name from the device tree (two file reads, no subprocess); None elsewhere."""
    return _device_tree_model(root) if is_jetson(root) else None


def jetson_info(root: Path = Path("/")) -> dict | None:
    """Jetson model, L4T release and nvpmodel power mode; None on other machines."""
    if not is_jetson(root):
        return None
    model = _device_tree_model(root)
    release_file = root / "etc/nv_tegra_release"
    release = None
    if release_file.is_file():  # "# R36 (release), REVISION: 4.0, GCID: ..., BOARD: generic, ..."
        fields = release_file.read_text(errors="replace").lstrip("# ").split(",")
        major = fields[0].split()[0]
        revision = next((f.split(":")[1].strip() for f in fields if "REVISION" in f), None)
        release = f"{major}.{revision}" if revision else major
    power_mode = None
    nvpmodel = _probe(lambda: _command("nvpmodel", "-q", timeout=5))
    for line in (nvpmodel or "").splitlines():
        if line.startswith("NV Power Mode:"):
            power_mode = line.split(":", 1)[1].strip()
    return {"model": model, "l4t": release, "power_mode": power_mode}


@dataclass(frozen=True)
class Environment:
    """The machine and software a measurement ran on. Nested fields stay plain JSON (they are stored in every
    results row as ``env``); ``None`` where a probe failed."""

    os: str
    platform: str
    machine: str
    python: str
    cpu: str | None
    cpu_isa: dict | None  # the instruction sets int8/bf16/fp16 speed depends on (segdeploy.machine.cpuinfo)
    cpu_cores: int  # the cores this process may use (a container's CPU set): what CPU latency depends on
    ram_gb: float | None
    gpus: list[dict] = field(default_factory=list)  # name, compute_capability, memory_gb
    nvidia_driver: str | None = None
    cuda: dict | None = None  # torch_cuda, available, cudnn
    torch: dict | None = None  # version, cuda_build, debug, torchvision
    onnx: str | None = None
    onnxruntime: dict | None = None  # version, package, providers
    tensorrt: str | None = None
    polygraphy: str | None = None
    segdeploy: str = ""
    jetson: dict | None = None  # model, l4t, power_mode

    def to_dict(self) -> dict:
        return asdict(self)


@functools.lru_cache(maxsize=1)
def probe_environment() -> Environment:
    """Every probe, once per process (versions and devices cannot change within one); never raises."""

    uname = platform.uname()
    return Environment(
        os=f"{uname.system} {uname.release}",
        platform=platform.platform(),
        machine=uname.machine,
        python=platform.python_version(),
        cpu=_probe(cpu_model),
        cpu_isa=_probe(cpu_isa),
        cpu_cores=usable_cpus(),
        ram_gb=_probe(ram_gb),
        gpus=_probe(gpus) or [],
        nvidia_driver=_probe(nvidia_driver),
        cuda=_probe(cuda_info),
        torch=_probe(torch_info),
        onnx=_dist_version("onnx"),
        onnxruntime=_probe(onnxruntime_info),
        tensorrt=_probe(tensorrt_version),
        polygraphy=_dist_version("polygraphy"),
        segdeploy=__version__,
        jetson=_probe(jetson_info),
    )


def environment() -> dict:
    """:func:`probe_environment` as the JSON object a results row stores (a fresh copy each call)."""
    return probe_environment().to_dict()
