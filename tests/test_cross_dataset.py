"""Cross-dataset (domain-shift) evaluation with class maps: a tiny model trained on NeoPolyp with its two polyp
classes merged is scored in-domain and on a synthetically shifted copy of the same test images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from segdeploy.data import open_dataset
from segdeploy.errors import SegdeployError

FAST = dict(warmup=0.0, duration=0.0, min_iters=1, progress=False)


def _shift(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another camera and light: colour channels swapped, contrast lowered, sensor noise added."""
    out = image[..., ::-1].astype(np.float64) * 0.6 + 40 + rng.normal(0, 20, image.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.mark.slow
def test_neopolyp_polyp_model_drops_under_shift(shared_datasets, tmp_path):
    from segdeploy.bench.runner import run_bench
    from segdeploy.train import TrainConfig, train_model

    src = open_dataset(shared_datasets / "neopolyp")
    # a subset with polyps large enough for a 64 px tiny model to learn in three epochs
    ids = [i for i in src.ids[:400] if (src.load_mask(i) > 0).mean() > 0.08]
    assert len(ids) >= 50
    split = {i: "test" if j % 5 == 0 else "val" if j % 10 == 1 else "train" for j, i in enumerate(ids)}
    rng = np.random.default_rng(0)
    for name in ("neo", "neo_shifted"):
        root = tmp_path / name
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        for i in ids:
            shutil.copy(src.mask_path(i), root / "masks" / f"{i}.png")
            if name == "neo":
                shutil.copy(src.image_path(i), root / "images" / f"{i}.jpg")
            else:
                Image.fromarray(_shift(src.load(i).image, rng)).save(root / "images" / f"{i}.png")
        (root / "meta.json").write_text(json.dumps({"classes": src.classes}))
        (root / "split.json").write_text(json.dumps(split))

    run = tmp_path / "run"
    meta = train_model(TrainConfig(data=str(tmp_path / "neo"), model="unet-tiny", out=run, epochs=3, img_size=64,
                                   batch_size=4, lr=1e-2, augment=0.0, device="cpu", patience=10,
                                   class_map="polyp=1,2"), progress=False)
    assert meta.classes == ["background", "polyp"]
    # in-domain: the run's own training set, its recorded class map applied without being asked for
    home = run_bench([run], str(tmp_path / "neo"), "torch", "fp32", tmp_path / "r.jsonl", **FAST)[0]
    # out of domain: the other set's labels must be mapped onto the run's classes, or it is refused
    with pytest.raises(SegdeployError, match="predicts 2 classes"):
        run_bench([run], str(tmp_path / "neo_shifted"), "torch", "fp32", tmp_path / "r.jsonl", **FAST)
    away = run_bench([run], str(tmp_path / "neo_shifted"), "torch", "fp32", tmp_path / "r.jsonl",
                     class_map="polyp=1,2", **FAST)[0]
    assert home.status == away.status == "ok" and home.n_images == away.n_images == split_count(split)
    print(f"in-domain Dice {home.dice:.3f}, shifted {away.dice:.3f}, drop {home.dice - away.dice:.3f}")
    assert home.dice > 0.2  # the model learned polyps
    assert away.dice < home.dice - 0.15  # and loses them under the shift


def split_count(split: dict[str, str]) -> int:
    return sum(s == "test" for s in split.values())
