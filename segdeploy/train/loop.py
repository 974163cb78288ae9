"""One training protocol for every model.

The reference study's protocol: AdamW, REX schedule stepped per iteration, cross-entropy (for two classes a
softmax cross-entropy is the same loss as BCE on the logit difference, so binary sets need no special case),
the same augmentations for every model, early stopping on validation Dice with patience and min_delta, the
best checkpoint kept, seed 42. Mixed precision (:mod:`segdeploy.train.precision`): bf16 or fp16 on CUDA, bf16
on a CPU with AMX-BF16 or AVX512-BF16, fp32 elsewhere.

Crash safety: after every epoch the full training state is written atomically to ``train_state.safetensors``
(no pickle, :mod:`segdeploy.train.state`); the best weights go to ``model.safetensors`` + ``model.json`` as soon
as they improve. ``resume=True`` continues from the last completed epoch with the optimizer, schedule,
early-stopping counters and RNG states restored; ``restart=True`` discards an unfinished (or finished) run in the
folder. A non-finite loss stops training with an error; what was saved before it stays. One process at a time
trains into a folder (a lock says who holds it).
"""

from __future__ import annotations

import math
import platform
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segdeploy import __version__
from segdeploy.errors import SegdeployError, WriteFailed
from segdeploy.evaluation.evaluate import PreparedImages
from segdeploy.fileio import append_jsonl, atomic_write_json, atomic_write_text, dumps, read_jsonl
from segdeploy.locks import hold
from segdeploy.machine.device import missing_device_reason, resolve_device
from segdeploy.machine.envinfo import has_native_bf16
from segdeploy.models import count_params, create_model, model_info
from segdeploy.numerics import NonFinite, nonfinite_tensors
from segdeploy.records import DatasetRef, RunMeta, SplitRecord
from segdeploy.run.folder import HISTORY, TRAIN_STATE, read_meta, save_checkpoint
from segdeploy.run.splits import record_splits
from segdeploy.train.config import TrainConfig
from segdeploy.train.guard import check_config, check_input_size, diverged
from segdeploy.train.precision import autocast_dtype, cpu_bf16_path
from segdeploy.train.schedule import rex_factor
from segdeploy.train.state import open_run_dir, save_train_state

# a state's recorded autocast dtype -> the --amp that trains that way again
_AMP_OPTION = {None: "off", "bfloat16": "bf16", "bf16": "bf16", "float16": "fp16"}
# what must match between the original run and a --resume of it
_RESUME_KEYS = ("data", "model", "img_size", "batch_size", "lr", "seed", "k", "fold", "group_regex", "augment",
                "class_map")


def training_device(requested: str) -> torch.device:
    """The device to train on, by the rule every stage uses (:mod:`segdeploy.machine.device`); one that is not here is
    an error, not a silent fallback."""
    device = resolve_device(requested)
    missing = missing_device_reason(device)
    if missing:
        raise SegdeployError(f"--device {requested}: {missing}.",
                             fix="use --device cpu (or auto), or install a CUDA build of torch on a GPU machine.")
    return torch.device(device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    random.setstate(tuple(state["python"]))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _versions() -> dict:
    import segmentation_models_pytorch as smp
    import timm

    return {"segdeploy": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "segmentation_models_pytorch": smp.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def validate(model, dataset, ids: list[str], *, img_size: int, mean, std, batch_size: int, device,
             amp_dtype=None) -> dict:
    """Validation metrics for checkpoint selection: the one evaluation path (``segdeploy.evaluation``), so the
    Dice that picks the checkpoint is the Dice ``bench`` reports, at each image's original resolution."""
    from segdeploy.evaluation.evaluate import evaluate, torch_predictor

    return evaluate(torch_predictor(model, device, amp_dtype), dataset, ids, img_size=img_size, mean=mean, std=std,
                    num_classes=dataset.num_classes, class_names=dataset.classes, batch=batch_size,
                    compute_hd95=False).metrics


def _make_loaders(cfg: TrainConfig, ds, device: torch.device, mean, std):
    from torch.utils.data import DataLoader

    from segdeploy.data.transforms import TorchSegDataset, TrainAugment

    split_kw = dict(seed=cfg.seed, k=cfg.k, fold=cfg.fold, group_regex=cfg.group_regex)
    train_ids, val_ids = ds.split("train", **split_kw), ds.split("val", **split_kw)
    if cfg.max_train_images:
        train_ids = train_ids[: cfg.max_train_images]
    if not train_ids or not val_ids:
        raise SegdeployError(f"the split gives {len(train_ids)} training and {len(val_ids)} validation images.",
                             path=ds.root, fix="add images, lower --k, or provide a split.json with train/val ids.")
    augment = TrainAugment(cfg.img_size, strength=cfg.augment) if cfg.augment > 0 else None
    train_set = TorchSegDataset(ds, train_ids, cfg.img_size, mean, std, augment=augment,
                                cache_bytes=cfg.cache_mb * 2**20)
    workers = cfg.workers if cfg.workers is not None else (4 if device.type == "cuda" else 0)
    gen = torch.Generator().manual_seed(cfg.seed)
    pin = device.type == "cuda"
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train_set) > cfg.batch_size,
                              num_workers=workers, generator=gen, pin_memory=pin, persistent_workers=workers > 0)
    split = ds.split_info(**split_kw)
    split["train_used"] = len(train_ids)
    # the ids themselves are recorded (splits.json): a later change of the folder must not move test images
    split["ids_sha256"] = record_splits(cfg.out, {s: ds.split(s, **split_kw) for s in ("train", "val", "test")},
                                        dataset=ds, resume=cfg.resume)
    return train_loader, val_ids, split


def train_model(cfg: TrainConfig, *, progress: bool = True) -> RunMeta:
    """Train ``cfg.model`` on ``cfg.data`` into ``cfg.out``; returns the run's metadata (model.json)."""

    check_config(cfg)
    out = Path(cfg.out)
    with hold(out / ".segdeploy-train.lock", "train", out):
        try:
            return _train_model(cfg, progress=progress)
        except WriteFailed as e:  # disk full / read-only: say how to continue once it is fixed
            how = ("continue with --resume (from the last saved epoch)" if (out / TRAIN_STATE).is_file()
                   else "train again with --restart (no epoch's state was saved)")
            raise WriteFailed(e.message, path=e.path, fix=f"free disk space (or fix the permissions), then {how}.") \
                from e


def _train_model(cfg: TrainConfig, *, progress: bool = True) -> dict:
    from rich.console import Console

    from segdeploy.data import open_dataset
    from segdeploy.data.class_map import class_map_record

    console = Console(stderr=True)
    out = Path(cfg.out)
    state_file = out / TRAIN_STATE
    state, run_id = open_run_dir(out, resume=cfg.resume, restart_run=cfg.restart)
    if state is not None:
        changed = [k for k in _RESUME_KEYS if state["config"].get(k) != getattr(cfg, k)]
        if changed:
            saved = ", ".join(f"{k}={state['config'][k]!r}" for k in changed)
            raise SegdeployError(f"--resume with different settings: {', '.join(changed)} (saved: {saved}).",
                                 path=state_file, fix="repeat the original options, or train into a new --out.")

    _seed_everything(cfg.seed)
    device = training_device(cfg.device)
    info = model_info(cfg.model)
    ds = open_dataset(cfg.data, class_map=cfg.class_map)
    mean, std = [0.5] * ds.in_chans, [0.5] * ds.in_chans  # the study's normalisation for every model
    train_loader, val_ids, split = _make_loaders(cfg, ds, device, mean, std)
    val_ds = PreparedImages(ds, max_bytes=cfg.cache_mb * 2**20) if cfg.cache_mb > 0 else ds  # decoded once a run

    model = create_model(cfg.model, num_classes=ds.num_classes, in_chans=ds.in_chans, img_size=cfg.img_size,
                         pretrained=cfg.pretrained, weights=cfg.weights).to(device)
    if state is None:
        check_input_size(model, ds.in_chans, cfg.img_size, device, cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: rex_factor(step, total_steps))
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # bf16 needs no loss scaling; fp16 (GPUs without bf16) gets a GradScaler
    amp_dtype = autocast_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    amp_name = str(amp_dtype).replace("torch.", "") if amp_dtype else None
    if state is not None and state.get("amp", amp_name) != amp_name:
        # fp16 and bf16 runs differ in loss scaling and numerics; continuing one as the other changes the run
        raise SegdeployError(f"--resume would train in {amp_name or 'fp32'}, the run was trained in "
                             f"{state['amp'] or 'fp32'} (--amp auto follows the device: bf16 on sm80+ GPUs and "
                             "on CPUs with AMX-BF16/AVX512-BF16, fp16 on older GPUs, else fp32).", path=state_file,
                             fix=f"pass --amp {_AMP_OPTION.get(state['amp'], 'off')} (what the run was trained "
                                 "with), or train into a new --out.")

    start_epoch, best, best_epoch, stale = 0, -1.0, -1, 0
    saved_epoch = -1  # the last epoch whose training state is on disk
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best, best_epoch, stale = state["epoch"] + 1, state["best"], state["best_epoch"], state["stale"]
        saved_epoch = state["epoch"]
        train_loader.generator.set_state(state["loader_rng"])
        _set_rng_state(state["rng"])
        _drop_history_after(out / HISTORY, start_epoch)
        console.print(f"resuming {out} at epoch {start_epoch + 1}/{cfg.epochs} (best val Dice {best:.4f})")

    meta = RunMeta(
        model=cfg.model, family=info.family, run_name=out.name, run_id=run_id, num_classes=ds.num_classes,
        classes=list(ds.classes), in_chans=ds.in_chans, img_size=cfg.img_size, mean=mean, std=std,
        fixed_size=info.fixed_size, params_m=round(count_params(model) / 1e6, 4),
        dataset=DatasetRef(spec=cfg.data, name=ds.name, root=str(ds.root), n_images=len(ds.ids),
                           **class_map_record(ds)),
        split=SplitRecord.from_json(split), seed=cfg.seed, device=str(device),
        amp=amp_name,
        protocol={"optimizer": "AdamW", "lr": cfg.lr, "weight_decay": cfg.weight_decay, "schedule": "REX",
                  "loss": "cross-entropy", "precision": _precision_note(device, amp_dtype),
                  "batch_size": cfg.batch_size, "augment_strength": cfg.augment,
                  "early_stopping": {"metric": "val_dice", "patience": cfg.patience, "min_delta": cfg.min_delta}},
        config=cfg.for_record(), versions=_versions(),
    )
    epoch = start_epoch - 1
    stopped_early = False
    t0 = time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task(f"train {cfg.model}", total=cfg.epochs * len(train_loader),
                            completed=start_epoch * len(train_loader), info="")
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            losses = []
            for step, (images, masks) in enumerate(train_loader):
                images = images.to(device, non_blocking=True)
                if cfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                masks = masks.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = model(images)
                loss = F.cross_entropy(logits.float(), masks)  # the loss in fp32 whatever the autocast dtype
                loss_value = loss.item()
                if not math.isfinite(loss_value):  # stop before the step writes NaN into the weights
                    raise diverged(out, epoch=epoch, step=step, loss=loss_value, lr=cfg.lr, best_epoch=best_epoch,
                                   best=best, saved_epoch=saved_epoch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                losses.append(loss_value)
                bar.update(task, advance=1, info=f"epoch {epoch + 1} loss {np.mean(losses):.4f}")
            if nonfinite_tensors(model.state_dict()):  # a finite loss can still leave inf weights behind
                raise diverged(out, epoch=epoch, step=step, loss=float("nan"), lr=cfg.lr, best_epoch=best_epoch,
                               best=best, saved_epoch=saved_epoch)
            try:
                val = validate(model, val_ds, val_ids, img_size=cfg.img_size, mean=mean, std=std,
                               batch_size=cfg.batch_size, device=device,
                               # CPU: fp32, so the Dice that picks the checkpoint is the Dice bench reports
                               amp_dtype=amp_dtype if device.type == "cuda" else None)
            except NonFinite:  # finite but huge weights can still overflow the logits: the run diverged
                raise diverged(out, epoch=epoch, step=step, loss=float("nan"), lr=cfg.lr, best_epoch=best_epoch,
                               best=best, saved_epoch=saved_epoch) from None
            improved = val["dice"] is not None and val["dice"] > best + cfg.min_delta
            if improved:
                best, best_epoch, stale = val["dice"], epoch, 0
                meta = replace(meta, best_epoch=epoch + 1, epochs_run=epoch + 1, complete=False,
                               val=_val_summary(val))
                save_checkpoint(out, model, meta)
            else:
                stale += 1
            append_jsonl(out / HISTORY, {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_dice": val["dice"],
                                         "val_dice_per_class": val["dice_per_class"], "lr": scheduler.get_last_lr()[0],
                                         "best": improved, "seconds": round(time.perf_counter() - t0, 2)})
            _save_state(state_file, cfg, model, optimizer, scheduler, scaler, train_loader, epoch, best, best_epoch,
                        stale, amp_name, run_id)
            saved_epoch = epoch
            bar.update(task, info=f"epoch {epoch + 1} loss {np.mean(losses):.4f} val Dice {val['dice'] or 0:.4f} "
                                  f"(best {best:.4f})")
            if stale >= cfg.patience:
                stopped_early = True
                break

    if best_epoch < 0:  # no epoch ran (resume of a finished schedule) or val Dice never defined
        raise SegdeployError("training produced no checkpoint (validation Dice never improved from nothing).",
                             path=out, fix="check that the validation split has foreground pixels.")
    meta = replace(read_meta(out), epochs_run=epoch + 1, stopped_early=stopped_early, complete=True,
                   train_seconds=round(time.perf_counter() - t0, 1))
    atomic_write_json(out / "model.json", meta.to_json())
    state_file.unlink(missing_ok=True)
    return meta


def _drop_history_after(path: Path, epochs_done: int) -> None:
    """A crash between an epoch's history line and its state leaves a line that the resumed run writes again."""

    rows = read_jsonl(path)
    kept = [r for r in rows if r.get("epoch", 0) <= epochs_done]
    if len(kept) != len(rows):
        atomic_write_text(path, "".join(dumps(r) + "\n" for r in kept))


def _precision_note(device: torch.device, amp_dtype) -> str:
    if amp_dtype is None:
        return "fp32"
    where = f" on {cpu_bf16_path() or 'an emulated bf16 path'}" if device.type == "cpu" else ""
    return f"{str(amp_dtype).replace('torch.', '')} autocast{where}; fp32 weights, optimizer and loss"


def _val_summary(val: dict) -> dict:
    return {k: val[k] for k in ("dice", "dice_per_class", "iou", "dice_per_image") if k in val}


def _save_state(path: Path, cfg, model, optimizer, scheduler, scaler, loader, epoch, best, best_epoch, stale,
                amp: str | None, run_id: str) -> None:

    save_train_state(path, {"config": cfg.for_record(), "epoch": epoch, "best": best, "best_epoch": best_epoch,
                            "stale": stale, "amp": amp, "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "scaler": scaler.state_dict(), "loader_rng": loader.generator.get_state(),
                            "rng": _rng_state()}, run_id)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), disable=not enabled, transient=False)
