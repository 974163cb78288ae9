"""``smp``: a segmentation_models_pytorch folder as ``model.save_pretrained(folder)`` writes it (config.json +
model.safetensors). The run keeps both and rebuilds the model with ``smp.create_model(**config)``.

Normalisation: ``--mean/--std`` when given; else the timm encoder's pretrained config (``tu-`` encoders, known
offline); else ImageNet's, which every smp encoder's ImageNet weights use (smp 0.6 reads an encoder's settings
from the hub, which segdeploy never calls: model.json says the values were assumed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segdeploy.errors import SegdeployError
from segdeploy.models.imported.smp import PICKLE, SAFETENSORS, create, load
from segdeploy.models.importers import ModelFormat, register_format
from segdeploy.models.importers.base import (ImportOptions, Imported, class_names, family_or, read_json_file,
                                             refuse_pickle, require_extra)

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _normalisation(config: dict, options: ImportOptions, in_chans: int) -> tuple[list, list, str]:
    if options.mean and options.std:
        return list(options.mean), list(options.std), "given (--mean/--std)"
    encoder = str(config.get("encoder_name", ""))
    if encoder.startswith("tu-"):
        import timm

        try:
            cfg = timm.models.get_pretrained_cfg(encoder[3:])
            if cfg is not None:
                return list(cfg.mean), list(cfg.std), f"timm pretrained config of {encoder[3:]}"
        except Exception:  # noqa: BLE001 -- unknown to this timm: fall back to ImageNet, and say so
            pass
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if in_chans != 3:
        mean, std = [float(np.mean(IMAGENET_MEAN))] * in_chans, [float(np.mean(IMAGENET_STD))] * in_chans
    return mean, std, "ImageNet (assumed: pass --mean/--std if the model was trained with others)"


def _weights(src: Path, options: ImportOptions) -> Path:
    if (src / SAFETENSORS).is_file():
        return src / SAFETENSORS
    if (src / PICKLE).is_file():
        refuse_pickle(src / PICKLE, options.allow_pickle, "smp")
        return src / PICKLE
    raise SegdeployError(f"no {SAFETENSORS} in the folder.", path=src,
                         fix="pass the folder that model.save_pretrained(folder) wrote.")


def scan(src: Path, options: ImportOptions) -> Imported:
    require_extra("segmentation_models_pytorch", "smp", "smp")
    if not src.is_dir():
        raise SegdeployError("an smp model is a folder (config.json + model.safetensors).", path=src,
                             fix="pass the folder that model.save_pretrained(folder) wrote.")
    config = read_json_file(src / "config.json", "smp config.json")
    if "_model_class" not in config:
        raise SegdeployError("config.json names no _model_class: not written by smp's save_pretrained.",
                             path=src / "config.json", fix="pass a folder written by an smp model's save_pretrained.")
    weights = _weights(src, options)
    in_chans, k = int(config.get("in_channels", 3)), int(config.get("classes", 1))
    if options.in_chans and options.in_chans != in_chans:
        raise SegdeployError(f"--in-chans {options.in_chans} but config.json says in_channels {in_chans}.",
                             path=src / "config.json", fix="drop --in-chans.")
    if config.get("activation"):
        raise SegdeployError(f"the model ends in activation {config['activation']!r}; segdeploy needs logits.",
                             path=src / "config.json", fix='set "activation": null in config.json.')
    mean, std, how = _normalisation(config, options, in_chans)
    size = options.size or 256
    return Imported(format="smp", model=f"smp:{config['_model_class']}({config.get('encoder_name')})",
                    family=family_or(options, "general"), classes=class_names(options, k, None, src),
                    in_chans=in_chans, img_size=size, mean=mean, std=std,
                    keep={"config.json": src / "config.json", weights.name: weights},
                    read=[src / "config.json", weights],
                    preprocessing={"scheme": "letterbox, x/255, (x - mean) / std", "size": size, "mean": mean,
                                   "std": std, "normalisation": how,
                                   "size_from": "--size" if options.size else "default 256 (pass --size)"},
                    details={"model_class": config["_model_class"], "encoder": config.get("encoder_name")})


def library_predict(src: Path, image: np.ndarray, x: np.ndarray, imp: Imported) -> dict:
    """the smp model from the original folder (smp.create_model + its weights) on the same preprocessed input"""
    import torch

    from segdeploy.data.transforms import letterbox_meta, restore

    model = load(create(src), next(p for p in imp.read if p.name in (SAFETENSORS, PICKLE)))
    with torch.inference_mode():
        logits = model(torch.from_numpy(x[None])).float().numpy()[0]
    lb = letterbox_meta(image.shape[0], image.shape[1], imp.img_size)
    return {"logits": logits, "mask": restore(logits, lb).argmax(0)}


register_format(ModelFormat(name="smp", library="segmentation_models_pytorch", extra="smp", scan=scan,
                            library_predict=library_predict))
