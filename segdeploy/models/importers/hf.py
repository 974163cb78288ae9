"""``hf``: a Hugging Face transformers semantic-segmentation folder as ``save_pretrained`` writes it (config.json,
model.safetensors, preprocessor_config.json). SegFormer and UperNet are tested; any model type transformers maps
to ``AutoModelForSemanticSegmentation`` loads the same way.

The run keeps the three files and rebuilds the model with ``from_pretrained(run/source, use_safetensors=True,
local_files_only=True, trust_remote_code=False)``; a config that asks for remote code (``auto_map``) is refused.
Logits are upsampled bilinearly (align_corners=False) to the input size, as the image processor's
``post_process_semantic_segmentation`` does. Preprocessing comes from preprocessor_config.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segdeploy.errors import SegdeployError
from segdeploy.models.imported.hf import PICKLE, SAFETENSORS, from_pretrained
from segdeploy.models.importers import ModelFormat, register_format
from segdeploy.models.importers.base import (ImportOptions, Imported, class_names, family_or, read_json_file,
                                             refuse_pickle, require_extra)

FILES = ("config.json", "preprocessor_config.json")


def _preprocessing(pre: dict, path: Path, options: ImportOptions) -> dict:
    size = pre.get("size") or {}
    h, w = size.get("height"), size.get("width")
    if size.get("shortest_edge") and not h:
        h = w = size["shortest_edge"]
    if options.size:
        h = w = options.size
    if not h or h != w:
        raise SegdeployError(f"the image processor resizes to {size}; segdeploy feeds square images.", path=path,
                             fix="pass --size S to deploy at S x S.")
    # segdeploy normalises (x/255 - mean) / std; a processor's (x * rescale - mean) / std is the same with
    # mean and std divided by 255 * rescale
    scale = float(pre.get("rescale_factor", 1 / 255)) * 255 if pre.get("do_rescale", True) else 255.0
    if pre.get("do_normalize", True):
        mean, std = pre.get("image_mean", [0.5] * 3), pre.get("image_std", [0.5] * 3)
    else:
        mean, std = [0.0], [1.0]
    mean = options.mean or [float(m) / scale for m in mean]
    std = options.std or [float(s) / scale for s in std]
    return {"scheme": "letterbox, x/255, (x - mean) / std; logits upsampled bilinearly to the input (as "
                      "post_process_semantic_segmentation)", "size": int(h), "mean": mean, "std": std,
            "processor": pre.get("image_processor_type"), "processor_resizes": bool(pre.get("do_resize", True))}


def scan(src: Path, options: ImportOptions) -> Imported:
    if not src.is_dir():
        raise SegdeployError("a transformers model is a folder (config.json, model.safetensors, "
                             "preprocessor_config.json).", path=src, fix="pass the folder save_pretrained wrote.")
    config = read_json_file(src / "config.json", "transformers config.json")
    if config.get("auto_map"):
        raise SegdeployError("config.json names custom code (auto_map); segdeploy never runs remote code "
                             "(trust_remote_code).", path=src / "config.json",
                             fix="use a model type transformers itself provides (SegFormer, UperNet, ...).")
    pre_path = src / "preprocessor_config.json"
    pre = read_json_file(pre_path, "preprocessor_config.json")
    if (src / SAFETENSORS).is_file():
        weights = src / SAFETENSORS
    elif (src / PICKLE).is_file():
        refuse_pickle(src / PICKLE, options.allow_pickle, "hf")
        weights = src / PICKLE
    else:
        raise SegdeployError(f"no {SAFETENSORS} in the folder (sharded checkpoints are not supported).", path=src,
                             fix="save the model with save_pretrained(folder, safe_serialization=True).")
    require_extra("transformers", "hf", "hf")  # after the checks that need no library
    from transformers import AutoConfig

    # transformers' own reading: a config saved with the default labels omits id2label
    id2label = {int(k): v for k, v in AutoConfig.from_pretrained(str(src), local_files_only=True,
                                                                 trust_remote_code=False).id2label.items()}
    found = [id2label[i] for i in sorted(id2label)]
    backbone = config.get("backbone_config") or {}
    in_chans = int(config.get("num_channels") or backbone.get("num_channels") or 3)
    prep = _preprocessing(pre, pre_path, options)
    return Imported(format="hf", model=f"hf:{config.get('model_type')}", family=family_or(options, "general"),
                    classes=class_names(options, len(found), found, src), in_chans=in_chans, img_size=prep["size"],
                    mean=prep["mean"], std=prep["std"],
                    keep={**{f: src / f for f in FILES}, weights.name: weights},
                    read=[src / f for f in FILES] + [weights], preprocessing=prep,
                    details={"model_type": config.get("model_type"), "architectures": config.get("architectures")})


_cache: dict = {}


def library_predict(src: Path, image: np.ndarray, x: np.ndarray, imp: Imported) -> dict:
    """transformers' image processor + model + post_process_semantic_segmentation on the original image"""
    import torch
    from transformers import AutoImageProcessor

    if src not in _cache:
        _cache.clear()
        _cache[src] = (AutoImageProcessor.from_pretrained(str(src), local_files_only=True, trust_remote_code=False),
                       from_pretrained(src))
    processor, model = _cache[src]
    inputs = processor(images=image, return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs)
    mask = processor.post_process_semantic_segmentation(out, target_sizes=[image.shape[:2]])[0]
    return {"logits": None, "mask": mask.numpy()}


register_format(ModelFormat(name="hf", library="transformers", extra="hf", scan=scan,
                            library_predict=library_predict))
