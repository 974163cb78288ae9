"""Resumable training state without pickle, and the run folder's way in: resume, restart, or refuse.

The state is one safetensors file: tensors (model, optimizer moments, RNG states as bytes) as tensors, everything
else (epoch, best Dice, early-stopping counters, schedule, loss scaler, Python/NumPy RNG states, config, run id) as
JSON in the file's string metadata. Loading it parses a JSON header and copies tensor bytes; nothing is executed,
unlike ``torch.load(weights_only=False)`` of the old ``train_state.pt``, which is refused, never opened.

A state belongs to one run: its ``run_id`` must be the one in ``model.json``, so a state file copied in from
another run (even one with the same settings) is refused.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.errors import SegdeployError
from segdeploy.fileio import atomic_save_safetensors
from segdeploy.run.splits import SPLITS_FILE
from segdeploy.run.folder import HISTORY, LEGACY_TRAIN_STATE, META, TRAIN_STATE, WEIGHTS, read_meta

SCHEMA = "segdeploy.train_state/1"
_KEY = "segdeploy.train_state"
# what --restart removes: the training outputs and everything derived from the old weights
_DERIVED_DIRS = ("onnx", "engines")


def new_run_id() -> str:
    return uuid.uuid4().hex


# --- encoding: nested state <-> (JSON document, flat tensor dict) ---------------------------------------------

def _encode(obj: Any, tensors: dict, key: str) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous().clone()  # clone: tied weights share storage
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{key}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{key}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, tensors, f"{key}/{k}") for k, v in obj.items()}
        # optimizer states are keyed by parameter index
        return {"__items__": [[k, _encode(v, tensors, f"{key}/{k}")] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"training state holds a {type(obj).__name__} at {key}, which is not saved without pickle")


def _decode(obj: Any, tensors) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors.get_tensor(obj["__tensor__"])
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_train_state(path: Path, state: dict, run_id: str) -> None:
    """Write ``state`` (nested dicts/lists/tuples of tensors, arrays and plain values) atomically to ``path``."""
    tensors: dict = {}
    doc = {"schema": SCHEMA, "run_id": run_id, "state": _encode(state, tensors, "state")}
    atomic_save_safetensors(path, tensors, {_KEY: json.dumps(doc)})


def load_train_state(path: Path) -> tuple[dict, str]:
    """(state, run_id) from ``path``, without unpickling; a truncated or foreign file is a one-line error."""
    from safetensors import safe_open

    fix = ("the file is damaged (a crash or a full disk while it was written?): train again from scratch in this "
           "folder with --restart, or into another --out.")
    try:
        with safe_open(str(path), framework="pt") as f:
            doc = json.loads((f.metadata() or {})[_KEY])
            if doc.get("schema") != SCHEMA:
                raise ValueError(f"schema {doc.get('schema')!r}")
            return _decode(doc["state"], f), doc["run_id"]
    except SegdeployError:
        raise
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own error type for truncated headers and data
        raise SegdeployError(f"the training state is truncated or not a segdeploy training state "
                             f"({type(e).__name__}: {str(e)[:120]}).", path=path, fix=fix) from e


# --- the run folder: resume, restart, or refuse ---------------------------------------------------------------

def _training_files(out: Path) -> list[Path]:
    names = (WEIGHTS, META, TRAIN_STATE, LEGACY_TRAIN_STATE, HISTORY, SPLITS_FILE)
    files = [out / n for n in names if (out / n).exists()]
    files += [p for p in out.glob(".*") if ".partial" in p.name or p.name.endswith(".tmp")]
    return files + [out / d for d in _DERIVED_DIRS if (out / d).exists()]


def restart(out: Path) -> list[Path]:
    """Remove the training outputs of ``out`` and the ONNX files and engines derived from its weights."""
    removed = _training_files(out)
    for p in removed:
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return removed


def open_run_dir(out: Path, *, resume: bool, restart_run: bool) -> tuple[dict | None, str]:
    """Decide how training enters ``out``: (the state to resume or None, the run id).

    Every way out of a folder that cannot be continued is named: --resume when a state is there, --restart to
    discard what is there (a run stuck after a crash or a full disk), another --out otherwise."""
    state_file, legacy = out / TRAIN_STATE, out / LEGACY_TRAIN_STATE
    if resume and restart_run:
        raise SegdeployError("--resume and --restart exclude each other.", path=out,
                             fix="--resume continues the run in this folder, --restart discards it; pass one.")
    if restart_run:
        restart(out)
        return None, new_run_id()
    meta = read_meta(out) if (out / META).is_file() else None
    if not resume:
        if meta is None and not state_file.exists() and not legacy.exists():
            return None, new_run_id()
        if meta is not None and meta.complete:
            raise SegdeployError("a finished run already exists here.", path=out,
                                 fix="choose another --out folder, or pass --restart to discard it and train again.")
        how = ("pass --resume to continue it, " if state_file.exists() else "") + \
              "pass --restart to discard it and train from scratch, or choose another --out folder."
        raise SegdeployError("an unfinished run already exists here" +
                             ("." if state_file.exists() else f" and has no resumable {TRAIN_STATE}."), path=out,
                             fix=how)
    if not state_file.exists():
        if legacy.exists():
            raise SegdeployError(f"{LEGACY_TRAIN_STATE} is a pickle (an older segdeploy, or copied from elsewhere) "
                                 "and is not loaded: unpickling a file can run any code.", path=legacy,
                                 fix="pass --restart to train from scratch in this folder.")
        if meta is not None and meta.complete:
            raise SegdeployError("nothing to resume: training already finished.", path=out,
                                 fix="drop --resume; to train again, pass --restart or choose another --out.")
        raise SegdeployError(f"nothing to resume: no {TRAIN_STATE} (the run stopped before saving one, or it was "
                             "removed).", path=out,
                             fix="pass --restart instead of --resume to train from scratch in this folder.")
    state, run_id = load_train_state(state_file)
    recorded = meta.run_id if meta is not None else None
    if meta is not None and recorded != run_id:
        raise SegdeployError(f"{TRAIN_STATE} belongs to another run (its run id {run_id[:8]}, {META} says "
                             f"{str(recorded)[:8]}).", path=state_file,
                             fix="resume only with the state this run saved; pass --restart to train from scratch.")
    return state, run_id
