"""Load a local weight file into a model and say exactly which keys matched."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from segdeploy.errors import SegdeployError


EXPECTED = ("a .safetensors file, or a .pt/.pth file that holds tensors only (torch.save(model.state_dict(), "
            "PATH)), optionally under a 'state_dict'/'model' key")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A weight file's tensors by name. Nothing is unpickled beyond tensors (``torch.load(weights_only=True)``);
    a file that needs more (a pickled object, a whole module) or is not what its name says is one error line."""
    path = Path(path)
    if not path.is_file():
        raise SegdeployError("weights file not found.", path=path, fix="pass an existing .safetensors/.pth file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except Exception as e:  # noqa: BLE001 -- safetensors raises its own error types for a bad header or size
            raise SegdeployError(f"not a readable safetensors file ({_first_line(e)}).", path=path,
                                 fix=f"pass {EXPECTED}; re-download or re-save this one.") from e
    else:
        try:
            with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing the file
                warnings.simplefilter("ignore")
                sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 -- UnpicklingError (objects besides tensors), RuntimeError (not torch)
            raise SegdeployError(f"cannot be loaded as weights without running code from it ({_first_line(e)}).",
                                 path=path, fix=f"pass {EXPECTED}.") from e
    for key in ("state_dict", "model", "model_state"):  # common checkpoint wrappers
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not (isinstance(sd, dict) and sd and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in sd.items())):
        raise SegdeployError(f"holds a {type(sd).__name__}, not a state dict (tensor name -> tensor).", path=path,
                             fix=f"pass {EXPECTED}.")
    return sd


def _first_line(error: Exception) -> str:
    """The informative line of a loader's error: for torch's weights-only refusal, what it refused."""
    message = str(error)
    refused = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
    text = refused.group(1).split(". Please")[0] if refused else next((ln.strip() for ln in message.splitlines() if ln.strip()), "")
    return f"{type(error).__name__}: {text[:160]}" if text else type(error).__name__


BACKBONE_PREFIXES = ("backbone.", "encoder.", "encoder.model.")


def load_weights(model: nn.Module, path: str | Path, *, prefix: str = "") -> dict[str, list[str]]:
    """Load matching tensors (by name and shape) and return a report of missing/unexpected/mismatched keys.

    ``prefix`` is prepended to the file's keys, e.g. ``encoder.`` for an ImageNet backbone checkpoint; without one,
    the file is tried as is, then under each of ``BACKBONE_PREFIXES``.
    """
    from rich.console import Console

    raw = read_state_dict(path)
    own = model.state_dict()
    # a backbone-only ImageNet file has no model prefix: try where backbones live when no prefix is given
    for candidate in [prefix] if prefix else ["", *BACKBONE_PREFIXES]:
        sd = {candidate + k: v for k, v in raw.items()}
        mismatched = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
        usable = {k: v for k, v in sd.items() if k in own and k not in mismatched}
        if usable:
            break
    if not usable:
        raise SegdeployError(f"no tensor in the file matches the model (file has {len(sd)} keys, e.g. "
                             f"{next(iter(sd), '-')!r}; model expects e.g. {next(iter(own))!r}).", path=path,
                             fix="check that the file belongs to this architecture, or pass the key prefix.")
    model.load_state_dict(usable, strict=False)
    report = {
        "loaded": sorted(usable),
        "missing": sorted(k for k in own if k not in usable),
        "unexpected": sorted(k for k in sd if k not in own),
        "mismatched": sorted(mismatched),
    }
    Console(stderr=True).print(
        f"[bold]{path}[/]: loaded {len(usable)}/{len(own)} tensors; missing {len(report['missing'])}, "
        f"unexpected {len(report['unexpected'])}, shape-mismatched {len(report['mismatched'])}")
    for kind in ("missing", "unexpected", "mismatched"):
        if report[kind]:
            Console(stderr=True).print(f"  {kind}: {', '.join(report[kind][:8])}"
                                       + (" …" if len(report[kind]) > 8 else ""))
    return report


def refuse_pretrained(name: str, pretrained: bool) -> None:
    """These models are trained from scratch (as in their papers and the study): no weights to download."""
    if pretrained:
        raise SegdeployError(f"{name} has no public pretrained weights: it is trained from scratch.",
                             fix="drop --pretrained, or load a local checkpoint with weights=PATH.")
