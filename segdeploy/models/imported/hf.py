"""A transformers semantic-segmentation model from its ``save_pretrained`` folder, as segdeploy runs every model:
logits upsampled bilinearly (align_corners=False) to the input size, as the image processor's
``post_process_semantic_segmentation`` does."""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn
import torch.nn.functional as F

from segdeploy.models.imported import require_extra

SAFETENSORS, PICKLE = "model.safetensors", "pytorch_model.bin"


class Upsampled(nn.Module):
    """The transformers model as segdeploy runs every model: (B, C, S, S) -> (B, K, S, S) logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(pixel_values=x).logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def from_pretrained(folder: Path):
    from transformers import AutoModelForSemanticSegmentation

    pickle = not (folder / SAFETENSORS).is_file()  # only there when --allow-pickle accepted it at import
    return AutoModelForSemanticSegmentation.from_pretrained(
        str(folder), use_safetensors=not pickle, local_files_only=True, trust_remote_code=False).eval()


def build(source_dir: Path, record):
    require_extra("transformers", "hf", "hf")
    return Upsampled(from_pretrained(source_dir)).eval()
