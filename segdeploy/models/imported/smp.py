"""An smp model from its ``save_pretrained`` folder: ``smp.create_model(**config.json)`` + its weights."""

from __future__ import annotations

from pathlib import Path

from segdeploy.models.imported import read_json_file, require_extra

SAFETENSORS, PICKLE = "model.safetensors", "pytorch_model.bin"


def create(folder: Path):
    import segmentation_models_pytorch as smp

    config = read_json_file(folder / "config.json", "smp config.json")
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    kwargs["encoder_weights"] = None  # the weights come from the folder, never from the hub
    return smp.create_model(config["_model_class"], **kwargs)


def load(model, path: Path):
    import torch
    from safetensors.torch import load_file

    state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu",
                                                                                  weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def build(source_dir: Path, record):
    require_extra("segmentation_models_pytorch", "smp", "smp")
    weights = source_dir / SAFETENSORS if (source_dir / SAFETENSORS).is_file() else source_dir / PICKLE
    return load(create(source_dir), weights)
