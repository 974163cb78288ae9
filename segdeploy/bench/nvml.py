"""The NVML handle of the GPU that torch calls ``cuda:N``.

NVML numbers GPUs in PCI order, ignoring ``CUDA_VISIBLE_DEVICES``; CUDA numbers them after that variable (and,
unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, fastest first). On a shared server ``cuda:0`` is often not NVML's GPU 0,
so the GPU is matched by its UUID, which both report, with its PCI address as a second key.
"""

from __future__ import annotations

from segdeploy.machine.device import cuda_index


def pci_bus_id(props) -> str:
    """NVML's ``domain:bus:device.function`` string from torch's device properties (integers)."""
    return f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"


def device_handle(pynvml, device: str):
    """NVML handle for torch's ``device`` (``cuda`` or ``cuda:N``); raises whatever NVML raises when it cannot find
    or query it."""
    import torch

    props = torch.cuda.get_device_properties(cuda_index(device))
    try:
        return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{props.uuid}")
    except Exception:  # noqa: BLE001 -- an NVML without this UUID form (MIG, old drivers): try the PCI address
        return pynvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id(props))
