"""``nnunet``: an nnU-Net v2 2d results folder (``DatasetXXX_Name/TRAINER__PLANS__2d``: plans.json, dataset.json,
``fold_N/checkpoint_final.pth`` or ``checkpoint_best.pth``).

Checkpoints are pickles. They are read with ``torch.load(weights_only=True)`` only, allowing the numpy scalar and
dtype types nnU-Net's logs hold (data types, not code); anything else in the file is refused. The network
weights go into ``RUN/source/fold_N.safetensors``, so the run never opens the pickle again. The network is built
from the plans as nnU-Net builds it (``get_network_from_plans(..., deep_supervision=False)``).

What runs: nnU-Net's own 2d pipeline (:mod:`segdeploy.models.importers.nnunet_pipeline`: crop to nonzero,
the plans' normalisation per image, Gaussian-weighted sliding window of the plans' patch at ``--tile-step``,
argmax, crop restored) around a per-tile forward, the exported graph (:class:`segdeploy.models.imported.nnunet.NnUNetDeployed`): every fold's
network with mirroring over the checkpoint's allowed axes, logits averaged over mirrors and folds. The graph
takes normalised tiles, so the run's ``mean``/``std`` (what export's calibration and parity images are made
with) approximate the per-image normalisation with the data set's foreground intensity statistics; bench and the
import parity run the real pipeline.

Training cases: ``splits_final.json`` (in the preprocessed folder the fold's ``debug.json`` names, or
``--preprocessed``) gives each fold's training ids; ``bench`` refuses a data set whose scored images are among the
cases the imported folds were trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from segdeploy.errors import SegdeployError, warn
from segdeploy.models.imported.nnunet import build_network
from segdeploy.models.importers import ModelFormat, register_format
from segdeploy.models.importers.base import ImportOptions, Imported, family_or, read_json_file, require_extra

SCHEMES = ("ZScoreNormalization", "CTNormalization", "NoNormalization", "RescaleTo01Normalization",
           "RGBTo01Normalization")


def safe_globals() -> list:
    """What nnU-Net checkpoints hold besides tensors and builtins: numpy scalars and dtypes in the training log
    (``_best_ema``, ``logging``). Data types: unpickling them runs no code of the file's choosing."""
    import numpy._core.multiarray as multiarray

    dtypes = {type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)}
    return [multiarray.scalar, np.dtype, *sorted(dtypes, key=lambda t: t.__name__)]


def load_checkpoint(path: Path) -> dict:
    """An nnU-Net checkpoint read without running any code it may carry (``torch.load(weights_only=True)``)."""
    import pickle

    try:
        with torch.serialization.safe_globals(safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SegdeployError(f"the checkpoint needs more than tensors and numpy data types to load, so it is refused "
                             f"unread ({first[:200]}).", path=path,
                             fix="use a checkpoint written by nnU-Net's own training; segdeploy never unpickles "
                                 "code.") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("network_weights"), dict):
        raise SegdeployError("not an nnU-Net checkpoint (no network_weights).", path=path,
                             fix="pass an nnU-Net v2 results folder (fold_N/checkpoint_final.pth).")
    return ckpt


def _folds(src: Path, options: ImportOptions, name: str) -> list[int]:
    present = sorted(int(p.name[5:]) for p in src.glob("fold_*") if p.name[5:].isdigit() and (p / name).is_file())
    if options.folds in (None, "", "all"):
        wanted = present
    else:
        try:
            wanted = sorted({int(f) for f in options.folds.split(",") if f.strip()})
        except ValueError:
            raise SegdeployError(f"--folds {options.folds!r}: expected fold numbers like 0,1 or all.",
                                 fix="pass --folds 0 or --folds 0,1,2,3,4 or --folds all.") from None
    missing = [f for f in wanted if f not in present]
    if missing or not wanted:
        raise SegdeployError(f"no {name} for fold(s) {missing or wanted or 'any'} (folds with one: {present}).",
                             path=src, fix="train those folds first, or choose --folds among the ones present "
                                           "(--checkpoint best for checkpoint_best.pth).")
    return wanted


def _training_cases(src: Path, folds: list[int], options: ImportOptions) -> tuple[dict, list[str]]:
    """(``{"train": ids the folds trained on, "validation": their validation ids, "splits_file": path}``, notes)."""
    notes = []
    candidates = [Path(options.preprocessed) / "splits_final.json"] if options.preprocessed else []
    for f in folds:
        debug = src / f"fold_{f}" / "debug.json"
        if debug.is_file():
            info = read_json_file(debug, "debug.json")
            base = info.get("preprocessed_dataset_folder_base")
            if base:
                candidates.append(Path(base) / "splits_final.json")
    splits_file = next((c for c in candidates if c.is_file()), None)
    train: set[str] = set()
    if splits_file is None:
        notes.append("the training cases are unknown (no splits_final.json in the preprocessed folder debug.json "
                     "names; pass --preprocessed DIR): bench cannot refuse in-sample images")
        warn(notes[-1], path=src)
    else:
        splits = json.loads(splits_file.read_text())  # a list of {"train": [...], "val": [...]}, one per fold
        for f in folds:
            train.update(splits[f]["train"])
    validation = sorted({p.name.split(".")[0] for f in folds for p in (src / f"fold_{f}" / "validation").glob("*")
                         if p.is_file() and not p.name.endswith(".json")})
    return {"train": sorted(train), "validation": validation,
            "splits_file": str(splits_file) if splits_file else None}, notes


def _config(src: Path) -> tuple[dict, dict, str]:
    plans = read_json_file(src / "plans.json", "nnU-Net plans.json")
    dataset = read_json_file(src / "dataset.json", "nnU-Net dataset.json")
    name = src.name.split("__")[-1] if "__" in src.name else None
    configs = plans.get("configurations") or {}
    if name is None or name not in configs:
        raise SegdeployError(f"the folder is not named TRAINER__PLANS__CONFIGURATION with a configuration of "
                             f"plans.json ({', '.join(configs)}).", path=src,
                             fix="pass the nnU-Net results folder itself, e.g. Dataset001_X/nnUNetTrainer__"
                                 "nnUNetPlans__2d.")
    if name != "2d" and len(configs[name].get("patch_size", [])) != 2:
        raise SegdeployError(f"configuration {name!r} is 3d; segdeploy imports nnU-Net 2d configurations only.",
                             path=src, fix="import the TRAINER__PLANS__2d folder of this data set.")
    return plans, dataset, name


def scan(src: Path, options: ImportOptions) -> Imported:
    if not src.is_dir():
        raise SegdeployError("an nnU-Net model is a results folder (TRAINER__PLANS__2d).", path=src,
                             fix="pass the folder holding plans.json, dataset.json and fold_N/.")
    plans, dataset, config_name = _config(src)
    require_extra("nnunetv2", "nnunet", "nnunet")
    if options.checkpoint not in ("final", "best"):
        raise SegdeployError(f"--checkpoint {options.checkpoint!r}.", fix="use --checkpoint final or best.")
    ckpt_name = f"checkpoint_{options.checkpoint}.pth"
    if not 0 < options.tile_step <= 1:
        raise SegdeployError(f"--tile-step {options.tile_step}: nnU-Net's sliding window steps by a fraction of "
                             f"the patch.", fix="pass --tile-step 0.5 (nnU-Net's default), 0.75 or 1.0.")
    folds = _folds(src, options, ckpt_name)
    cfg = plans["configurations"][config_name]
    labels = dataset.get("labels") or {}
    if any(not isinstance(v, int) for v in labels.values()):
        raise SegdeployError("dataset.json's labels are regions (lists); segdeploy imports label-based models.",
                             path=src / "dataset.json", fix="train the model with integer labels.")
    classes = [name for name, _ in sorted(labels.items(), key=lambda kv: kv[1])]
    in_chans = len(dataset.get("channel_names") or dataset.get("modality") or {})
    schemes = list(cfg.get("normalization_schemes") or [])
    unknown = [s for s in schemes if s not in SCHEMES]
    if unknown or len(schemes) != in_chans:
        raise SegdeployError(f"normalisation {unknown or schemes} for {in_chans} channel(s) is not supported.",
                             path=src / "plans.json", fix=f"use one of {', '.join(SCHEMES)} per channel.")
    spacing = [float(v) for v in cfg.get("spacing") or [1.0, 1.0]]
    if any(abs(v - 1.0) > 1e-6 for v in spacing):
        # nnU-Net resamples such images to the plans' spacing before the network and back after it; the deployed
        # pipeline does not (yet), and without it its masks would differ from nnU-Net's with no warning
        raise SegdeployError(f"the 2d configuration resamples images to spacing {spacing}; segdeploy's deployed "
                             "pipeline does not resample yet (it imports 2d models of data with spacing 1, such as "
                             "PNG/JPEG datasets).", path=src / "plans.json",
                             fix="train the 2d configuration on images of spacing 1, or wait for resampling support.")
    patch = list(cfg["patch_size"])
    if patch[0] != patch[1]:
        raise SegdeployError(f"the patch is {patch[0]}x{patch[1]}; segdeploy runs square inputs.", path=src,
                             fix="plan the 2d configuration with a square patch.")
    from safetensors.torch import save

    keep: dict = {"plans.json": src / "plans.json", "dataset.json": src / "dataset.json"}
    read = [src / "plans.json", src / "dataset.json"]
    mirror_axes, trainer = None, None
    network = build_network(plans, config_name, in_chans, len(classes))
    for f in folds:
        path = src / f"fold_{f}" / ckpt_name
        ckpt = load_checkpoint(path)
        # clone: nnU-Net's state dict names one tensor under several keys (all_modules.N aliases), which
        # safetensors refuses to write shared
        weights = {k: v.detach().clone().contiguous() for k, v in ckpt["network_weights"].items()}
        missing, unexpected = network.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise SegdeployError(f"the checkpoint does not fit the plans' network (missing {len(missing)}, "
                                 f"unexpected {len(unexpected)} keys).", path=path,
                                 fix="pass the checkpoint trained with this folder's plans.json.")
        keep[f"fold_{f}.safetensors"] = save(weights)
        read.append(path)
        mirror_axes = list(ckpt.get("inference_allowed_mirroring_axes") or [])
        trainer = ckpt.get("trainer_name")
    cases, notes = _training_cases(src, folds, options)
    if cases["splits_file"]:
        read.append(Path(cases["splits_file"]))
    props = plans.get("foreground_intensity_properties_per_channel") or {}
    mirrors = 2 ** len(mirror_axes) if options.mirroring else 1
    pipeline = {"folds": folds, "checkpoint": ckpt_name, "mirroring": options.mirroring, "mirror_axes": mirror_axes,
                "patch_size": patch, "tile_step": options.tile_step, "gaussian": True,
                "network_passes_per_tile": len(folds) * mirrors,
                "average": "logits over mirrors and folds per tile, Gaussian-weighted over tiles (as "
                           "nnUNetPredictor)"}
    setting = (f"folds {','.join(map(str, folds))}, mirroring {'on' if options.mirroring else 'off'}, "
               f"step {options.tile_step:g}")
    mean, std = _calibration_stats(schemes, props)
    return Imported(format="nnunet", model=f"nnunet:{src.parent.name}/{src.name} ({setting})",
                    family=family_or(options, "specialized"), classes=classes, in_chans=in_chans,
                    img_size=patch[0], mean=mean, std=std, keep=keep, read=read,
                    preprocessing={"scheme": "nnU-Net 2d: crop to nonzero, per-image normalisation per the plans, "
                                             "Gaussian sliding window of the patch, crop restored (no resampling: "
                                             "2D natural images have spacing 1)", "size": patch[0],
                                   "normalization_schemes": schemes, "intensity_properties": props,
                                   "use_mask_for_norm": [bool(v) for v in cfg.get("use_mask_for_norm")
                                                         or [False] * in_chans],
                                   "mean_std": "export's calibration and parity inputs only: the data set's "
                                               "foreground statistics standing in for per-image normalisation"},
                    details={"configuration": config_name, "trainer": trainer, "pipeline": pipeline,
                             "training_cases": cases},
                    notes=notes)


def _calibration_stats(schemes: list[str], props: dict) -> tuple[list[float], list[float]]:
    """The run's mean/std on the 0-1 scale (x/255 - mean)/std nearest each channel's normalisation: the data
    set's foreground statistics for z-score and CT, 0-1 for the rescaling schemes."""
    mean, std = [], []
    for c, scheme in enumerate(schemes):
        p = props.get(str(c)) or {}
        if scheme in ("ZScoreNormalization", "CTNormalization") and p.get("std"):
            mean.append(float(p["mean"]) / 255), std.append(float(p["std"]) / 255)
        elif scheme == "NoNormalization":
            mean.append(0.0), std.append(1 / 255)
        else:
            mean.append(0.0), std.append(1.0)
    return mean, std


def sliding_window_pipeline(forward, record, tile_batch: int = 1):
    """nnU-Net's sliding-window pipeline around ``forward`` (tiles -> logits), as ``model.json`` describes it."""
    from segdeploy.models.importers.nnunet_pipeline import sliding_window

    return sliding_window(forward, record, tile_batch=tile_batch)


_cache: dict = {}


def library_predict(src: Path, image: np.ndarray, x: np.ndarray, imp: Imported) -> dict:
    """nnUNetPredictor (crop, normalisation, Gaussian sliding window, mirroring, folds averaged) on the original
    image at the run's tile step, its weights loaded safely here and handed over with manual_initialization"""
    pipeline = imp.details["pipeline"]
    key = (src, tuple(pipeline["folds"]), pipeline["checkpoint"], pipeline["mirroring"],
           pipeline["tile_step"])  # one predictor per setting
    if key not in _cache:
        _cache.clear()
        _cache[key] = _predictor(src, imp)
    predictor = _cache[key]
    raw = np.ascontiguousarray(image.transpose(2, 0, 1)[:, None].astype(np.float32))  # (C, 1, H, W) as its 2D reader
    seg = predictor.predict_single_npy_array(raw, {"spacing": [999.0, 1.0, 1.0]})
    return {"logits": None, "mask": np.asarray(seg)[0]}


def _predictor(src: Path, imp: Imported):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = read_json_file(src / "plans.json", "plans.json")
    dataset = read_json_file(src / "dataset.json", "dataset.json")
    pipeline = imp.details["pipeline"]
    pm = PlansManager(plans)
    cm = pm.get_configuration(imp.details["configuration"])
    network = build_network(plans, imp.details["configuration"], imp.in_chans, len(imp.classes))
    params = [load_checkpoint(src / f"fold_{f}" / pipeline["checkpoint"])["network_weights"]
              for f in pipeline["folds"]]
    predictor = nnUNetPredictor(tile_step_size=pipeline["tile_step"], use_gaussian=True,
                                use_mirroring=pipeline["mirroring"],
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(network, pm, cm, params, dataset, imp.details["trainer"] or "nnUNetTrainer",
                                    tuple(pipeline["mirror_axes"]))
    return predictor


register_format(ModelFormat(name="nnunet", library="nnunetv2", extra="nnunet", scan=scan,
                            library_predict=library_predict, pipeline=sliding_window_pipeline))
