"""CPU training throughput: images/s of the training step for each speed setting, in one run, on one machine.

    PYTHONPATH=. python benchmarks/train_throughput.py [--models unet-tiny,segformer-tiny] [--sizes 128,256]
        [--data synthetic:40] [--batch 8,2] [--steps 2] [--repeats 3] [--threads 2] [--json out.json]

Settings, each adding to the one before (the names say what changes):

* ``baseline``: fp32, every image decoded and letterboxed on every access (``cache_mb=0``), NCHW;
* ``+cache``: decoded, letterboxed images kept in memory (TorchSegDataset's cache, ``TrainConfig.cache_mb``);
* ``+channels_last``: model and inputs in NHWC (``TrainConfig.channels_last``);
* ``+bf16``: bf16 autocast (``--amp bf16``; on a CPU without AMX-BF16/AVX512-BF16 it is emulated and slow);
* ``cache+bf16``: +cache and bf16 without channels_last, to tell the two apart.

Each measurement builds the model, loader and optimizer the way ``segdeploy.train.loop`` does (same dataset
class, augmentation, AdamW, cross-entropy in fp32), trains ``--images`` images of the synthetic set (or
``--data``; default one batch), one warm-up epoch untimed (it fills the cache where there is one, as a long run's
first epoch does), then times ``--steps`` steps. Those steps cycle over the same images, so from the second
step on the cache is what a later epoch sees. Printed per model x size x setting: the median over ``--repeats``
of images/s (wall clock) and of images per CPU-second (``time.process_time``: less sensitive to other processes
on a shared machine), and the validation Dice (fp32, the checkpoint-selection path) after the first repeat's
steps, so a setting that learns worse at the same budget shows. Repeats and settings are interleaved (each
round runs every setting, in a rotated order), and the load average seen is printed, as cpu_int8.py does.

On a shared machine the rounds differ more than the settings do (on a 2-vCPU AMX Xeon at load 5-13 one setting
varied up to 3x between rounds): a speed-up counts only where it holds in every round, on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

SETTINGS = {  # name -> (cache, channels_last, amp)
    "baseline": (False, False, "off"),  # the code before: no bf16, NCHW, and (here) no cache
    "+cache": (True, False, "off"),
    "+channels_last": (True, True, "off"),
    "+bf16": (True, True, "bf16"),
    "cache+bf16": (True, False, "bf16"),
}


def measure(ds, model_name: str, size: int, setting: str, *, images: int, steps: int, batch: int,
            dice: bool) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from segdeploy.data.transforms import TorchSegDataset, TrainAugment
    from segdeploy.evaluation.evaluate import PreparedImages
    from segdeploy.models import create_model
    from segdeploy.train.loop import validate
    from segdeploy.train.precision import autocast_dtype

    cache, channels_last, amp = SETTINGS[setting]
    torch.manual_seed(42)
    np.random.seed(42)
    mean, std = [0.5] * ds.in_chans, [0.5] * ds.in_chans
    train_ids = ds.split("train", seed=42, k=5, fold=0)[:images]
    val_ids = ds.split("val", seed=42, k=5, fold=0)
    train_set = TorchSegDataset(ds, train_ids, size, mean, std, augment=TrainAugment(size, strength=0.5),
                                cache_bytes=None if cache else 0)
    loader = DataLoader(train_set, batch_size=batch, shuffle=True, drop_last=len(train_set) > batch,
                        generator=torch.Generator().manual_seed(42))
    model = create_model(model_name, num_classes=ds.num_classes, in_chans=ds.in_chans, img_size=size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    dtype = autocast_dtype(torch.device("cpu"), amp)

    def batches():
        while True:
            yield from loader

    def step(images, masks):
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    model.train()
    it = batches()
    for _ in range(max(1, -(-len(train_set) // batch))):  # warm-up: one epoch (fills the cache, builds kernels)
        step(*next(it))
    load0 = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    n = 0
    for _ in range(steps):
        images, masks = next(it)
        loss = step(images, masks)
        n += len(images)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    row = {"model": model_name, "size": size, "setting": setting, "images": n, "wall_s": wall, "cpu_s": cpu,
           "img_per_s": n / wall, "img_per_cpu_s": n / cpu, "loss": loss,
           "load_1m": [load0, os.getloadavg()[0]], "amp": str(dtype).replace("torch.", "") if dtype else "fp32"}
    if dice:
        val = validate(model, PreparedImages(ds), val_ids, img_size=size, mean=mean, std=std, batch_size=batch,
                       device=torch.device("cpu"))
        row["val_dice"] = val["dice"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="unet-tiny,segformer-tiny")
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--settings", default="baseline,+cache,+channels_last,+bf16")
    ap.add_argument("--data", default="synthetic:40", help="the synthetic set (default) or a dataset folder")
    ap.add_argument("--images", type=int, default=None,
                    help="training images, cycled over by the timed steps (default: one batch, so a step is an epoch)")
    ap.add_argument("--steps", default="2", help="timed steps per size (one value, or one per --sizes)")
    ap.add_argument("--batch", default="8,2", help="batch per size (one value, or one per --sizes)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--json", default=None, help="write every measurement to this file")
    args = ap.parse_args()

    import torch

    from segdeploy.machine.cpuinfo import cpu_isa, kernel_paths
    from segdeploy.data import open_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    models, settings = args.models.split(","), args.settings.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]

    def per_size(text: str) -> dict:
        values = [int(v) for v in text.split(",")]
        return dict(zip(sizes, values if len(values) == len(sizes) else values[:1] * len(sizes)))

    steps, batches = per_size(args.steps), per_size(args.batch)
    ds = open_dataset(args.data)
    isa = cpu_isa()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {isa['logical_cpus']} CPUs, "
          f"{kernel_paths(isa)}; data {ds.name}: {args.images or 'one batch of'} training images; "
          f"per size: batch, timed steps {', '.join(f'{s} px: {batches[s]}, {steps[s]}' for s in sizes)}", flush=True)
    load_start = os.getloadavg()
    rows = []
    for rep in range(args.repeats):
        for m in models:
            for size in sizes:
                # rotate the order each round, so a burst of load from elsewhere does not always hit one setting
                order = settings[rep % len(settings):] + settings[:rep % len(settings)]
                for setting in order:
                    row = measure(ds, m, size, setting, images=args.images or batches[size], steps=steps[size],
                                  batch=batches[size], dice=rep == 0)
                    row["repeat"] = rep
                    rows.append(row)
                    print(f"  round {rep + 1}: {m} {size} px {setting:15s} {row['img_per_s']:6.2f} img/s "
                          f"{row['img_per_cpu_s']:6.2f} img/CPU-s  load {row['load_1m'][0]:.1f}", flush=True)
    load_end = os.getloadavg()

    print(f"\nload average (1, 5, 15 min) at start {', '.join(f'{x:.1f}' for x in load_start)}, at end "
          f"{', '.join(f'{x:.1f}' for x in load_end)}; 1-min load during the measurements: median "
          f"{statistics.median(x for r in rows for x in r['load_1m']):.1f}, range "
          f"{min(x for r in rows for x in r['load_1m']):.1f}-{max(x for r in rows for x in r['load_1m']):.1f}")
    print(f"medians over {args.repeats} rounds; x = speed-up of the median over the baseline's median\n")
    print(f"{'model':15s} {'px':>4s} {'setting':15s} {'amp':9s} {'img/s':>7s} {'x':>5s} {'img/CPU-s':>9s} "
          f"{'x':>5s} {'val Dice':>8s}")
    for m in models:
        for size in sizes:
            base = None
            for setting in settings:
                sel = [r for r in rows if (r["model"], r["size"], r["setting"]) == (m, size, setting)]
                wall = statistics.median(r["img_per_s"] for r in sel)
                cpu = statistics.median(r["img_per_cpu_s"] for r in sel)
                base = base or (wall, cpu)
                dice = next((r["val_dice"] for r in sel if "val_dice" in r), None)
                print(f"{m:15s} {size:4d} {setting:15s} {sel[0]['amp']:9s} {wall:7.2f} {wall / base[0]:5.2f} "
                      f"{cpu:9.2f} {cpu / base[1]:5.2f} {dice if dice is not None else float('nan'):8.4f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"isa": isa, "load_start": load_start, "load_end": load_end, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
